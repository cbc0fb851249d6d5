"""Segment protocol: the official segment-analytics-python SDK and raw HTTP against a live server.

Every assertion about storage goes through `yunying sql` (the CLI, through the live server) or the
same read-only SQL path, so what is checked is what an operator would see.
"""

from __future__ import annotations

import base64
import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import segment.analytics as segment_module
from segment.analytics import Client
from segment.analytics import consumer as segment_consumer
from segment.analytics.request import APIError

from tests.conftest import LiveServer, rows, start_server, yunying_sql
from yunying.config import load_settings
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project
from yunying.web.sdk import segment
from yunying.web.sdk.segment import (
    Envelope,
    MessageError,
    event_time,
    map_message,
    message_uuid,
    write_key_from_header,
)

T0 = datetime(2026, 11, 20, 8, 0, 0, 123000, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)


def iso(ts: datetime) -> str:
    """How `yunying sql --json` prints a stored timestamp (naive UTC)."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(live: LiveServer, path: str, body: Any, key: str | None, **kw: Any) -> httpx.Response:
    headers = {**(basic(key) if key else {}), **kw.pop("headers", {})}
    if isinstance(body, bytes):
        return httpx.post(live.url + path, content=body, headers=headers, **kw)
    return httpx.post(live.url + path, json=body, headers=headers, **kw)


def count(live: LiveServer, project_id: int, where: str = "true") -> int:
    return int(rows(live.runtime, project_id, f"SELECT count(*) FROM events WHERE {where}")[0][0])


def track(distinct: str = "d-1", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "export_video", "userId": distinct, **extra}


def assert_error(r: httpx.Response, status: int, code: str, needle: str) -> dict[str, Any]:
    """The answer is the vendor-shaped error both SDKs read as permanent: status, code, message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == code, body
    assert needle in body["message"], body
    return body  # type: ignore[no-any-return]


# -- the official SDK -------------------------------------------------------------------------


@pytest.fixture
def sdk_errors() -> list[Exception]:
    return []


def make_client(live: LiveServer, key: str, errors: list[Exception], **kw: Any) -> Client:
    """The SDK as a team configures it: host and key; few retries so a failing test ends fast."""
    options = {"max_retries": 1, "timeout": 5, **kw}
    return Client(key, host=live.url, on_error=lambda exc, _b: errors.append(exc), **options)


def test_segment_sdk_events_identity_and_person_properties(
    live: LiveServer, project: NewProject, sdk_errors: list[Exception]
) -> None:
    client = make_client(live, project.project.write_key, sdk_errors)
    device = {
        "os": {"name": "iOS", "version": "18.1"},
        "app": {"version": "3.2.0"},
        "device": {"id": "dev-9"},
        "ip": "203.0.113.7",
        "campaign": {"source": "douyin", "medium": "feed"},
    }
    t = [T0 + timedelta(seconds=i) for i in range(10)]
    client.track(
        anonymous_id="anon-1",
        event="app_open",
        properties={"entry": "push", "$set_once": {"first_entry": "push"}},
        context=device,
        timestamp=t[0],
    )
    client.page(
        anonymous_id="anon-1",
        name="Pricing",
        category="marketing",
        properties={"url": "https://example.cn/pricing", "path": "/pricing"},
        timestamp=t[1],
    )
    client.screen(anonymous_id="anon-1", name="Editor", timestamp=t[2])
    client.track(user_id="old-42", event="legacy_login", timestamp=t[3])
    client.identify(
        user_id="u-1001",
        anonymous_id="anon-1",
        traits={"plan": "pro", "email": "li@example.cn", "$set_once": {"first_plan": "pro"}},
        timestamp=t[4],
    )
    client.track(
        user_id="u-1001",
        event="Order Completed",
        properties={"revenue": 68.0, "currency": "CNY", "$increment": {"orders": 1}},
        timestamp=t[5],
    )
    client.track(
        user_id="u-1001",
        event="Order Completed",
        properties={"revenue": 30, "$increment": {"orders": 2}, "$append": {"skus": "sku-2"}},
        timestamp=t[6],
    )
    client.identify(
        user_id="u-1001",
        traits={"plan": "team", "$set_once": {"first_plan": "free"}, "$unset": ["email"]},
        timestamp=t[7],
    )
    client.alias(previous_id="old-42", user_id="u-1001", timestamp=t[8])
    client.group(user_id="u-1001", group_id="studio-7", traits={"name": "Studio 7"}, timestamp=t[9])
    client.flush()
    client.shutdown()
    assert sdk_errors == []

    name = project.project.name
    got = yunying_sql(
        live,
        "SELECT event, distinct_id, timestamp FROM events ORDER BY timestamp",
        project=name,
    )
    assert got == [
        ["app_open", "anon-1", iso(t[0])],
        ["$pageview", "anon-1", iso(t[1])],
        ["$screen", "anon-1", iso(t[2])],
        ["legacy_login", "old-42", iso(t[3])],
        ["$identify", "u-1001", iso(t[4])],
        ["Order Completed", "u-1001", iso(t[5])],
        ["Order Completed", "u-1001", iso(t[6])],
        ["$identify", "u-1001", iso(t[7])],
        ["$create_alias", "u-1001", iso(t[8])],
        ["$groupidentify", "u-1001", iso(t[9])],
    ]
    first = yunying_sql(
        live,
        "SELECT os, app_version, device_id, ip, utm_source, channel, properties FROM events "
        "WHERE event = 'app_open'",
        project=name,
    )[0]
    assert first[:6] == ["iOS", "3.2.0", "dev-9", "203.0.113.7", "douyin", "douyin"]
    props = orjson.loads(first[6])
    assert props["entry"] == "push" and props["$os_version"] == "18.1"
    assert props["utm_medium"] == "feed" and props["$lib"] == "analytics-python"

    page = orjson.loads(
        yunying_sql(live, "SELECT properties FROM events WHERE event = '$pageview'", name)[0][0]
    )
    assert page["name"] == "Pricing" and page["category"] == "marketing"
    assert page["$current_url"] == "https://example.cn/pricing" and page["$pathname"] == "/pricing"
    screen = orjson.loads(
        yunying_sql(live, "SELECT properties FROM events WHERE event = '$screen'", name)[0][0]
    )
    assert screen["$screen_name"] == "Editor"
    ident = orjson.loads(
        yunying_sql(
            live, "SELECT properties FROM events WHERE event = '$identify' ORDER BY timestamp", name
        )[0][0]
    )
    assert ident["$anon_distinct_id"] == "anon-1" and ident["$set"]["plan"] == "pro"
    amounts = yunying_sql(
        live, "SELECT amount FROM events WHERE event = 'Order Completed' ORDER BY timestamp", name
    )
    assert amounts == [[68.0], [30.0]]
    group = orjson.loads(
        yunying_sql(live, "SELECT properties FROM events WHERE event = '$groupidentify'", name)[0][
            0
        ]
    )
    assert group["$group_key"] == "studio-7" and group["$group_set"] == {"name": "Studio 7"}

    # one person: the device's anonymous events, the old id (alias) and the user id merged
    ids = yunying_sql(
        live, "SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY distinct_id", name
    )
    assert [r[0] for r in ids] == ["anon-1", "old-42", "u-1001"]
    assert len({r[1] for r in ids}) == 1
    persons = yunying_sql(live, "SELECT id, is_identified, properties FROM persons", name)
    assert len(persons) == 1 and persons[0][0] == ids[0][1] and persons[0][1] is True
    assert orjson.loads(persons[0][2]) == {
        "first_entry": "push",
        "plan": "team",
        "first_plan": "pro",
        "orders": 3,
        "skus": ["sku-2"],
    }
    assert yunying_sql(live, "SELECT count(DISTINCT person_id) FROM events", name) == [[1]]


def test_segment_sdk_configured_with_module_settings_and_gzip(
    live: LiveServer, project: NewProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented two lines: ``analytics.write_key`` and ``analytics.host`` (gzip on)."""
    errors: list[Exception] = []
    monkeypatch.setattr(segment_module, "default_client", None)
    monkeypatch.setattr(segment_module, "write_key", project.project.write_key)
    monkeypatch.setattr(segment_module, "host", live.url)
    monkeypatch.setattr(segment_module, "gzip", True)
    monkeypatch.setattr(segment_module, "max_retries", 1)
    monkeypatch.setattr(segment_module, "on_error", lambda exc, _b: errors.append(exc))
    for i in range(30):
        segment_module.track(f"user-{i % 3}", "export_video", {"n": i}, timestamp=T0)
    segment_module.shutdown()
    assert errors == []
    assert count(live, project.project.id, "event = 'export_video'") == 30
    got = rows(
        live.runtime, project.project.id, "SELECT sum((properties->>'$.n')::INT) FROM events"
    )
    assert got == [[sum(range(30))]]


def test_segment_sdk_gives_up_at_once_on_a_permanent_error(
    live: LiveServer, project: NewProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 400/401 reaches on_error as an APIError after one request: the SDK does not retry."""
    calls: list[int] = []
    real_post = segment_consumer.post

    def counting_post(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_post(*args, **kwargs)

    monkeypatch.setattr(segment_consumer, "post", counting_post)
    errors: list[Exception] = []
    client = make_client(live, project.project.write_key, errors, max_retries=3)
    client.track("u-1", "", timestamp=T0)  # the SDK allows an empty event name; we do not
    client.track("u-1", "kept", timestamp=T0)
    client.flush()
    client.shutdown()
    assert len(calls) == 1
    assert len(errors) == 1 and isinstance(errors[0], APIError)
    assert errors[0].status == 400 and errors[0].code == "invalid_request"
    assert "batch[0].event" in errors[0].message
    assert count(live, project.project.id, "event = 'kept'") == 1

    calls.clear()
    errors.clear()
    bad = make_client(live, "wk_not_a_key", errors)
    bad.track("u-1", "lost", timestamp=T0)
    bad.flush()
    bad.shutdown()
    assert len(calls) == 1 and isinstance(errors[0], APIError) and errors[0].status == 401
    assert errors[0].code == "unauthorized"
    assert count(live, project.project.id, "event = 'lost'") == 0


# -- raw HTTP: paths, auth, encodings -----------------------------------------------------------


SINGLE_PATHS: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/track", {"event": "e1"}, "e1"),
    ("/v1/t", {"event": "e1"}, "e1"),
    ("/v1/track/", {"event": "e1"}, "e1"),
    ("/v1/identify", {"traits": {"plan": "pro"}}, "$identify"),
    ("/v1/i", {"traits": {"plan": "pro"}}, "$identify"),
    ("/v1/alias", {"previousId": "old"}, "$create_alias"),
    ("/v1/a", {"previousId": "old"}, "$create_alias"),
    ("/v1/page", {"name": "Home"}, "$pageview"),
    ("/v1/p", {"name": "Home"}, "$pageview"),
    ("/v1/screen", {"name": "Home"}, "$screen"),
    ("/v1/s", {"name": "Home"}, "$screen"),
    ("/v1/group", {"groupId": "g1"}, "$groupidentify"),
    ("/v1/g", {"groupId": "g1"}, "$groupidentify"),
]


def test_single_message_paths(live: LiveServer, project: NewProject) -> None:
    for i, (path, message, stored_as) in enumerate(SINGLE_PATHS):
        user = f"u-{i}"
        body = {"userId": user, "timestamp": "2026-11-20T10:00:00+08:00", **message}
        r = post(live, path, body, project.project.write_key)
        assert r.status_code == 200 and r.json() == {"success": True}, (path, r.text)
        got = rows(
            live.runtime,
            project.project.id,
            f"SELECT event, timestamp FROM events WHERE distinct_id = '{user}'",
        )
        assert got == [[stored_as, "2026-11-20T02:00:00"]], path


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/batch/", "/v1/b", "/v1/import", "/v1/import/"])
def test_batch_paths(live: LiveServer, project: NewProject, path: str) -> None:
    r = post(live, path, {"batch": [track("a"), track("b")]}, project.project.write_key)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert count(live, project.project.id) == 2


def test_write_key_in_body_with_text_plain_as_analytics_js_sends(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    one = orjson.dumps({**track("w1"), "writeKey": key, "sentAt": "2026-11-23T09:00:00Z"})
    r = post(live, "/v1/t", one, None, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    # analytics.js batching: writeKey at the top (and in each message)
    batch = {
        "writeKey": key,
        "batch": [{**track("w2"), "writeKey": key}],
        "sentAt": "2026-11-23T09:00:00Z",
    }
    assert post(live, "/v1/b", orjson.dumps(batch), None).status_code == 200
    only_inside = {"batch": [{**track("w3"), "writeKey": key}]}
    assert post(live, "/v1/b", only_inside, None).status_code == 200
    bearer = {"Authorization": f"Bearer {key}"}
    assert (
        post(live, "/v1/batch", {"batch": [track("w4")]}, None, headers=bearer).status_code == 200
    )
    assert count(live, project.project.id) == 4


def test_browser_preflight_and_cors_headers(live: LiveServer, project: NewProject) -> None:
    origin = {"Origin": "https://app.example.cn"}
    pre = httpx.options(
        live.url + "/v1/track",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example.cn"
    assert "authorization" in pre.headers["access-control-allow-headers"]
    r = post(live, "/v1/t", track(), project.project.write_key, headers=origin)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin["Origin"]
    bad = post(live, "/v1/t", track(), "wk_nope", headers=origin)
    assert bad.status_code == 401 and bad.headers["access-control-allow-origin"] == origin["Origin"]


def test_gzip_bodies_with_and_without_header(live: LiveServer, project: NewProject) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track(f"g{i}") for i in range(40)]}))
    key = project.project.write_key
    r = post(live, "/v1/batch", body, key, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {"success": True}
    more = gzip.compress(orjson.dumps({"batch": [track("h")]}))
    assert post(live, "/v1/batch", more, key).status_code == 200  # gzip magic, no header
    assert count(live, project.project.id) == 41


# -- raw HTTP: malformed input ------------------------------------------------------------------


def test_unreadable_bodies_are_permanent_400s_and_store_nothing(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    good = orjson.dumps({"batch": [track()]})
    cases: list[tuple[bytes, dict[str, str], int, str, str]] = [
        (b"", {}, 400, "invalid_request", "empty body"),
        (good[:-5], {}, 400, "invalid_json", "not valid JSON"),
        (b"[1, 2]", {}, 400, "invalid_request", "must be a JSON object"),
        (b'{"sentAt": "2026-11-23T09:00:00Z"}', {}, 400, "invalid_request", "'batch' is required"),
        (b'{"batch": {"type": "track"}}', {}, 400, "invalid_request", "must be a list"),
        (b'{"batch": []}', {}, 400, "invalid_request", "'batch' is empty"),
        (
            b'{"batch": [], "context": []}',
            {},
            400,
            "invalid_request",
            "'context' must be an object",
        ),
        (b'{"batch": [{}], "sentAt": "yesterday"}', {}, 400, "invalid_request", "'sentAt'"),
        (gzip.compress(good)[:-8], {"Content-Encoding": "gzip"}, 400, "invalid_request", "gzip"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400, "invalid_request", "not valid gzip"),
        (good, {"Content-Encoding": "br"}, 415, "unsupported_media_type", "'br'"),
    ]
    for body, headers, status, code, needle in cases:
        r = post(live, "/v1/batch", body, key, headers=headers)
        assert_error(r, status, code, needle)
    assert count(live, project.project.id) == 0


BAD_MESSAGES: list[tuple[Any, str, str]] = [
    ("not an object", "", "must be a JSON object"),
    ({"event": "e", "userId": "u"}, "type", "required"),
    ({"type": "purchase", "userId": "u"}, "type", "'purchase' is not a message type"),
    ({"type": "track", "event": "e"}, "userId", "userId or anonymousId is required"),
    ({"type": "track", "event": "e", "userId": {"id": 1}}, "userId", "must be a string"),
    ({"type": "track", "event": "e", "userId": True}, "userId", "must be a string"),
    ({"type": "track", "userId": "u"}, "event", "required for track"),
    ({"type": "track", "event": 7, "userId": "u"}, "event", "required for track"),
    ({"type": "track", "event": "e", "userId": "u", "properties": [1]}, "properties", "object"),
    ({"type": "identify", "userId": "u", "traits": "pro"}, "traits", "must be an object"),
    ({"type": "track", "event": "e", "userId": "u", "context": {"os": "iOS"}}, "context.os", "object"),
    ({"type": "track", "event": "e", "userId": "u", "context": {"ip": ["1"]}}, "context.ip", "string"),
    ({"type": "track", "event": "e", "userId": "u", "timestamp": 1700000000}, "timestamp", "ISO-8601"),
    ({"type": "track", "event": "e", "userId": "u", "timestamp": "soon"}, "timestamp", "not an ISO"),
    ({"type": "track", "event": "e", "userId": "u", "timestamp": "2031-01-01T00:00:00Z"}, "timestamp", "future"),
    ({"type": "track", "event": "e", "userId": "u", "originalTimestamp": "1999-01-01T00:00:00Z"}, "originalTimestamp", "before the year 2000"),
    ({"type": "track", "event": "e", "userId": "undefined"}, "userId", "placeholder"),
    ({"type": "track", "event": "e", "anonymousId": "x" * 201}, "anonymousId", "at most 200"),
    ({"type": "track", "event": "e" * 201, "userId": "u"}, "event", "at most 200"),
    ({"type": "track", "event": "e", "userId": "u", "properties": {"amount": "9.9"}}, "properties.amount", "number"),
    ({"type": "alias", "userId": "u"}, "previousId", "required for alias"),
    ({"type": "alias", "previousId": "p", "anonymousId": "a"}, "userId", "required for alias"),
    ({"type": "group", "userId": "u"}, "groupId", "required for group"),
    ({"type": "page", "userId": "u", "name": 5}, "name", "must be a string"),
    ({"type": "identify", "userId": "u", "traits": {"$increment": {"n": "1"}}}, "traits.$increment.n", "finite number"),
    ({"type": "identify", "userId": "u", "traits": {"$unset": "plan"}}, "traits.$unset", "list"),
    ({"type": "identify", "userId": "u", "context": {"traits": 1}}, "context.traits", "object"),
    ({"type": "track", "event": "e", "userId": "u", "messageId": {"a": 1}}, "messageId", "string"),
    ({"type": "track", "event": "e", "userId": "u", "properties": {"blob": "x" * 40_000}}, "", "over the limit of 32768 bytes"),
]  # fmt: skip


def test_each_bad_message_is_reported_by_index_and_field_and_good_ones_are_kept(
    live: LiveServer, project: NewProject
) -> None:
    """Every kind of bad message in one batch between good ones: all good ones are stored."""
    batch: list[Any] = []
    for i, (message, _field, _needle) in enumerate(BAD_MESSAGES):
        batch += [track(f"ok-{i}"), message]
    r = post(live, "/v1/batch", {"batch": batch}, project.project.write_key)
    n = len(BAD_MESSAGES)
    body = assert_error(r, 400, "invalid_request", f"{n} of {2 * n} messages rejected: batch[1]")
    assert "; and " in body["message"]  # the first few in the text, every one in `errors`
    assert body["accepted"] == n and body["rejected"] == n
    got = [(e["index"], e["field"], e["message"]) for e in body["errors"]]
    assert len(got) == n
    for k, ((index, field, message), (bad, want_field, needle)) in enumerate(
        zip(got, BAD_MESSAGES, strict=True)
    ):
        assert (index, field) == (2 * k + 1, want_field), bad
        assert needle in message, (bad, message)
    assert count(live, project.project.id) == n
    assert count(live, project.project.id, "distinct_id LIKE 'ok-%'") == n


def test_one_bad_message_between_good_ones(live: LiveServer, project: NewProject) -> None:
    batch = [track("ok-1"), {"type": "track", "userId": "u"}, track("ok-2")]
    r = post(live, "/v1/batch", {"batch": batch}, project.project.write_key)
    body = assert_error(r, 400, "invalid_request", "1 of 3 messages rejected: batch[1].event:")
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 1)
    assert body["errors"] == [
        {
            "index": 1,
            "field": "event",
            "message": "required for track: a non-empty string naming the event",
        }
    ]
    assert count(live, project.project.id) == 2


def test_a_bad_single_message_is_a_400_naming_the_field(
    live: LiveServer, project: NewProject
) -> None:
    r = post(live, "/v1/track", {"userId": "u"}, project.project.write_key)
    body = assert_error(r, 400, "invalid_request", "track message.event: required for track")
    assert body["errors"] == [
        {"index": 0, "field": "event", "message": body["errors"][0]["message"]}
    ]
    assert count(live, project.project.id) == 0


def test_body_over_the_limit_is_413_in_the_protocol_shape(tmp_path: Path) -> None:
    rt = Runtime.open(load_settings(data_dir=tmp_path / "small", max_body_bytes=2048))
    srv = start_server(rt)
    try:
        p = create_project(rt.state, "small")
        big = {"batch": [track(f"u{i}", properties={"pad": "x" * 100}) for i in range(40)]}
        r = post(srv, "/v1/batch", big, p.project.write_key)
        assert_error(r, 413, "payload_too_large", "larger than the limit of 2048 bytes")
        bomb = gzip.compress(orjson.dumps(big))  # small on the wire, too big unpacked
        assert len(bomb) < 2048
        r = post(srv, "/v1/batch", bomb, p.project.write_key, headers={"Content-Encoding": "gzip"})
        assert_error(r, 413, "payload_too_large", "decompressed body is larger")
        assert count(srv, p.project.id) == 0
    finally:
        srv.server.should_exit = True
        srv.thread.join(10)
        rt.close()


def test_store_failure_is_a_retryable_503_in_the_protocol_shape(
    live: LiveServer, project: NewProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from yunying.web.http import HTTPProblem

    async def failing(*_a: Any, **_k: Any) -> Any:
        raise HTTPProblem(503, "events could not be stored; nothing was saved, retry")

    monkeypatch.setattr(segment, "store_events", failing)
    r = post(live, "/v1/batch", {"batch": [track()]}, project.project.write_key)
    assert_error(r, 503, "unavailable", "nothing was saved")


# -- raw HTTP: auth -----------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401_and_stores_nothing(
    live: LiveServer, project: NewProject
) -> None:
    body = {"batch": [track()]}
    assert_error(
        post(live, "/v1/batch", body, "wk_unknown"), 401, "unauthorized", "unknown write key"
    )
    assert_error(post(live, "/v1/batch", body, None), 401, "unauthorized", "missing write key")
    for header in ("Basic %%%not-base64", "Basic " + base64.b64encode(b"\xff\xfe").decode()):
        r = post(live, "/v1/batch", body, None, headers={"Authorization": header})
        assert_error(r, 401, "unauthorized", "not valid Basic credentials")
    empty_user = "Basic " + base64.b64encode(b":secret").decode()
    r = post(live, "/v1/batch", body, None, headers={"Authorization": empty_user})
    assert_error(r, 401, "unauthorized", "empty user name")
    r = post(live, "/v1/batch", {**body, "writeKey": 12}, None)
    assert_error(r, 401, "unauthorized", "'writeKey' must be a string")
    # a valid key in the body does not rescue a wrong key in the header
    r = post(live, "/v1/batch", {**body, "writeKey": project.project.write_key}, "wk_unknown")
    assert_error(r, 401, "unauthorized", "unknown write key")
    assert count(live, project.project.id) == 0


def test_key_of_another_project_stores_there(live: LiveServer, project: NewProject) -> None:
    other = create_project(live.runtime.state, "other")
    assert post(live, "/v1/batch", {"batch": [track()]}, other.project.write_key).status_code == 200
    assert count(live, project.project.id) == 0 and count(live, other.project.id) == 1


# -- dedupe -------------------------------------------------------------------------------------


def test_resent_messages_are_stored_once(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    batch = [
        track("a", messageId=str(uuid.uuid4()), timestamp="2026-11-20T08:00:00Z"),
        track("b", messageId="ajs-next-1732345678-abc", timestamp="2026-11-20T08:00:01Z"),
        track("c", timestamp="2026-11-20T08:00:02.5Z", properties={"k": 1}),  # no messageId
    ]
    first = post(live, "/v1/batch", {"batch": batch, "sentAt": "2026-11-23T09:00:00Z"}, key)
    again = post(live, "/v1/batch", {"batch": batch, "sentAt": "2026-11-23T09:00:05Z"}, key)
    assert first.status_code == again.status_code == 200
    for one in batch:  # and one by one on the single-message path
        assert post(live, "/v1/track", one, key).status_code == 200
    assert count(live, project.project.id) == 3
    # a different messageId is a different event
    post(
        live,
        "/v1/batch",
        {"batch": [track("b", messageId="ajs-next-2", timestamp="2026-11-20T08:00:01Z")]},
        key,
    )
    assert count(live, project.project.id) == 4


def test_resent_mixed_batch_reports_good_ones_as_duplicates(
    live: LiveServer, project: NewProject
) -> None:
    batch = [track("a", messageId="m-1"), {"type": "track", "userId": "u"}]
    key = project.project.write_key
    first = post(live, "/v1/batch", {"batch": batch}, key).json()
    again = post(live, "/v1/batch", {"batch": batch}, key).json()
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (1, 0, 1)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (1, 1, 1)
    assert count(live, project.project.id) == 1


# -- the mapping, as plain functions ------------------------------------------------------------


def mapped(msg: dict[str, Any], kind: str | None = None, **envelope: Any) -> dict[str, Any]:
    return map_message(msg, kind, 1, Envelope([msg], **envelope), RECEIVED).event


def test_mapping_of_identify_variants() -> None:
    both = mapped({"type": "identify", "userId": 42, "anonymousId": "a-1", "traits": {"x": 1}})
    assert both["event"] == "$identify" and both["distinct_id"] == "42"
    assert both["properties"]["$anon_distinct_id"] == "a-1"
    assert both["properties"]["$set"] == {"x": 1}
    # anonymous traits are a property update, not a login: the device stays mergeable
    anon = mapped({"type": "identify", "anonymousId": "a-1", "traits": {"x": 1}})
    assert anon["event"] == "$set" and anon["distinct_id"] == "a-1"
    assert "$anon_distinct_id" not in anon["properties"]
    same = mapped({"type": "identify", "userId": "u", "anonymousId": "u"})
    assert "$anon_distinct_id" not in same["properties"]
    ctx = mapped(
        {
            "type": "identify",
            "userId": "u",
            "context": {"traits": {"a": 1, "b": 1}},
            "traits": {"b": 2},
        }
    )
    assert ctx["properties"]["$set"] == {"a": 1, "b": 2}
    ops = mapped(
        {
            "type": "identify",
            "userId": "u",
            "traits": {"a": 1, "$set": {"b": 2}, "$set_once": {"c": 3}, "$increment": {"n": 1}},
        }
    )
    assert ops["properties"]["$set"] == {"a": 1, "b": 2}
    assert ops["properties"]["$set_once"] == {"c": 3} and ops["properties"]["$increment"] == {
        "n": 1
    }


def test_mapping_of_context_and_revenue() -> None:
    ev = mapped(
        track(
            "u",
            properties={"revenue": 19.9, "currency": "CNY", "$os": "HarmonyOS"},
            context={
                "os": {"name": "Android"},
                "ip": "0.0.0.0",
                "library": {"name": "analytics.js", "version": "5.0"},
                "page": {"url": "https://x/", "path": "/"},
                "location": {"city": "杭州", "country": "CN"},
            },
        ),
        context={"app": {"version": "1.2"}, "os": {"name": "ignored"}},
    )
    p = ev["properties"]
    assert p["$os"] == "HarmonyOS"  # the message's own property wins over context
    assert p["$app_version"] == "1.2"  # batch-level context applies to every message
    assert "$ip" not in p  # a placeholder address: the peer address is used instead
    assert p["$amount"] == 19.9 and p["$currency"] == "CNY"
    assert (
        p["$lib"] == "analytics.js" and p["$current_url"] == "https://x/" and p["$city"] == "杭州"
    )
    text = mapped(track("u", properties={"revenue": "19.9"}))
    assert "$amount" not in text["properties"]  # not clearly a number: left as it came


def test_message_ids_become_uuids() -> None:
    u = str(uuid.uuid4())
    assert message_uuid(1, u, {}) == u
    derived = message_uuid(1, "ajs-123", {})
    assert derived is not None and derived == message_uuid(1, "ajs-123", {"other": 1})
    assert derived != message_uuid(2, "ajs-123", {})
    content = {
        "event": "e",
        "distinct_id": "d",
        "time": "2026-11-20T00:00:00Z",
        "properties": {"a": 1},
    }
    assert message_uuid(1, None, content) == message_uuid(1, None, dict(reversed(content.items())))
    assert message_uuid(1, None, {**content, "time": None}) is None


def test_clock_skew_correction() -> None:
    sent = {"timestamp": "2026-11-23T07:00:00Z", "sentAt": "2026-11-23T07:00:10Z"}
    ts, where = event_time(sent, None, RECEIVED)  # device clock two hours slow
    assert (ts, where) == ("2026-11-23T08:59:50+00:00", "timestamp")
    batch_sent = datetime(2026, 11, 23, 11, 0, 0, tzinfo=UTC)  # two hours fast, from the batch
    ts, where = event_time({"originalTimestamp": "2026-11-23T10:59:00Z"}, batch_sent, RECEIVED)
    assert (ts, where) == ("2026-11-23T08:59:00+00:00", "originalTimestamp")
    # latency-sized differences are not skew: explicit timestamps are kept exactly
    close = {"timestamp": "2026-01-01T00:00:00.123+08:00", "sentAt": "2026-11-23T08:59:59Z"}
    assert event_time(close, None, RECEIVED)[0] == "2025-12-31T16:00:00.123000+00:00"
    assert event_time({"timestamp": "2026-11-20T00:00:00Z"}, None, RECEIVED)[0] == (
        "2026-11-20T00:00:00+00:00"
    )
    assert event_time({}, batch_sent, RECEIVED) == (None, None)
    with pytest.raises(MessageError) as bad:
        event_time({"timestamp": "2026-11-20T00:00:00Z", "sentAt": 5}, None, RECEIVED)
    assert bad.value.field == "sentAt"
    with pytest.raises(MessageError, match="out of range") as bad:
        event_time({"timestamp": "0001-01-01T00:00:00+01:00"}, None, RECEIVED)
    assert bad.value.field == "timestamp"
    with pytest.raises(MessageError, match="out of range"):  # skew pushes it past year 9999
        event_time(
            {"timestamp": "9999-12-31T00:00:00Z", "sentAt": "2000-01-01T00:00:00Z"}, None, RECEIVED
        )


def test_write_key_from_header() -> None:
    assert write_key_from_header(basic("wk_1")["Authorization"]) == "wk_1"
    assert write_key_from_header("Basic " + base64.b64encode(b"wk_2:pw").decode()) == "wk_2"
    assert write_key_from_header("Bearer wk_3") == "wk_3"
    assert write_key_from_header("") is None and write_key_from_header("Digest x") is None
    with pytest.raises(segment.SegmentError):
        write_key_from_header("Basic @@@")


def test_field_errors_from_validation_name_message_fields() -> None:
    m = map_message(track("u"), None, 1, Envelope([]), RECEIVED)
    assert segment.message_field("distinct_id", m) == "userId"
    assert segment.message_field("properties.amount", m) == "properties.amount"
    ident = map_message({"type": "identify", "anonymousId": "a"}, None, 1, Envelope([]), RECEIVED)
    assert segment.message_field("distinct_id", ident) == "anonymousId"
    assert segment.message_field("properties.$set_once", ident) == "traits.$set_once"
