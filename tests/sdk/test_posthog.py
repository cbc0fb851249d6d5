"""PostHog wire protocol: the real posthog-python SDK and raw requests against a live server."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from posthog import Posthog
from posthog.capture_v1 import CaptureV1Error
from posthog.utils import get_os_info

from tests.conftest import LiveServer, rows, yunying_sql
from yunying.config import Settings, load_settings
from yunying.ingest.model import FieldError
from yunying.state import NewProject
from yunying.web.sdk import posthog as ph

LIMIT = 256 * 1024
CST = timezone(timedelta(hours=8))

#: ``LZString.compressToBase64`` of ``LZ_JSON``, made with the lz-string reference port.
LZ_JSON = (
    '[{"event":"lz_event","distinct_id":"lz-user","timestamp":"2026-03-01T10:00:00Z",'
    '"properties":{"plan":"pro","city":"上海"}}]'
)
LZ_DATA = (
    "NobwRApgbhB2AuYBcYA2AvA+tOiA0YAJgJYDO8xsAxvJsYcmugLQCupEATmARQLYRyAQz4AHRgCYADBIBszKQGYFARgAq"
    "KqUiladALR5hRnAPaiuFQcnCjUQ2I2MnDVYvACejQFBygd1swAX38AXSA=="
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A small body limit, so the over-the-limit cases stay quick."""
    return load_settings(data_dir=tmp_path / "data", max_body_bytes=LIMIT)


def q(live: LiveServer, project: NewProject, sql: str) -> list[list[Any]]:
    """Rows of `yunying sql --json` through the live server."""
    return yunying_sql(live, sql, project.project.name)


def count(live: LiveServer, project: NewProject, where: str = "true") -> int:
    sql = f"SELECT count(*) FROM events WHERE {where}"
    return int(rows(live.runtime, project.project.id, sql)[0][0])


def post(
    live: LiveServer,
    path: str,
    body: Any = None,
    *,
    content: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    if content is None:
        content = orjson.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(
        f"{live.url}{path}", content=content, headers=headers or {}, params=params, timeout=10
    )


def ev(name: str = "e", distinct_id: str = "d-1", **extra: Any) -> dict[str, Any]:
    return {"event": name, "distinct_id": distinct_id, "uuid": str(uuid.uuid4()), **extra}


def iso(dt: datetime) -> str:
    """How `yunying sql` shows a stored timestamp (naive UTC)."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat()


def stored_time(live: LiveServer, project: NewProject, event_uuid: str) -> datetime:
    sql = f"SELECT timestamp FROM events WHERE uuid = '{event_uuid}'"
    return datetime.fromisoformat(rows(live.runtime, project.project.id, sql)[0][0])


# -- the official SDK -----------------------------------------------------------------------------


def test_python_sdk_events_identity_and_person_properties(
    live: LiveServer, project: NewProject
) -> None:
    errors: list[Exception] = []
    client = Posthog(
        project.project.write_key,
        host=live.url,
        max_retries=0,
        timeout=5,
        on_error=lambda e, _batch: errors.append(e),
    )
    t = [datetime(2026, 11, 20, 10, 0, i, 123456, tzinfo=CST) for i in range(8)]
    ids = [
        client.capture(
            "app_open",
            distinct_id="dev-1",
            properties={"channel": "douyin", "utm_campaign": "spring", "tags": ["a", "b"]},
            timestamp=t[0],
        ),
        client.capture(
            "$identify",
            distinct_id="user-42",
            properties={
                "$anon_distinct_id": "dev-1",
                "$set": {"name": "Li", "plan": "free"},
                "$set_once": {"first_channel": "douyin"},
            },
            timestamp=t[1],
        ),
        client.capture(
            "export_video",
            distinct_id="user-42",
            properties={"duration_s": 42, "revenue": 9.9, "currency": "CNY"},
            timestamp=t[2],
        ),
        client.set(distinct_id="user-42", properties={"plan": "pro"}, timestamp=t[3]),
        client.set_once(
            distinct_id="user-42",
            properties={"first_channel": "zhihu", "first_plan": "pro"},
            timestamp=t[4],
        ),
        client.alias(previous_id="user-42", distinct_id="wx-42", timestamp=t[5]),
        client.capture(
            "pay",
            distinct_id="wx-42",
            properties={"amount": 30, "$set": {"vip": True}},
            timestamp=t[6],
        ),
        client.group_identify(
            "company", "acme", {"name": "Acme"}, distinct_id="user-42", timestamp=t[7]
        ),
    ]
    client.flush()
    client.shutdown()
    assert errors == []
    assert all(ids)

    got = q(live, project, "SELECT uuid, event, distinct_id, timestamp FROM events ORDER BY 4")
    names = ["app_open", "$identify", "export_video", "$set", "$set_once", "$create_alias", "pay"]
    dids = ["dev-1", "user-42", "user-42", "user-42", "user-42", "user-42", "wx-42", "user-42"]
    assert got == [
        [i, n, d, iso(ts)]
        for i, n, d, ts in zip(ids, [*names, "$groupidentify"], dids, t, strict=True)
    ]

    # one person: the device, the user id and the alias all belong to it
    links = q(live, project, "SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY 1")
    assert [d for d, _ in links] == ["dev-1", "user-42", "wx-42"]
    assert len({p for _, p in links}) == 1
    assert q(live, project, "SELECT count(DISTINCT person_id) FROM events") == [[1]]
    person = q(
        live, project, f"SELECT properties, is_identified FROM persons WHERE id = '{links[0][1]}'"
    )
    props = json.loads(person[0][0]) if isinstance(person[0][0], str) else person[0][0]
    assert props == {
        "name": "Li",
        "plan": "pro",
        "first_channel": "douyin",
        "first_plan": "pro",
        "vip": True,
    }
    assert person[0][1] is True

    cols = q(
        live,
        project,
        "SELECT event, channel, os, amount, properties->>'$.\"$lib\"', properties->>'$.tags[1]' "
        "FROM events WHERE event IN ('app_open', 'export_video', 'pay') ORDER BY timestamp",
    )
    os_name = get_os_info()["$os"]
    assert cols == [
        ["app_open", "douyin", os_name, None, "posthog-python", "b"],
        ["export_video", None, os_name, 9.9, "posthog-python", None],
        ["pay", None, os_name, 30.0, "posthog-python", None],
    ]
    group = q(
        live,
        project,
        "SELECT properties->>'$.\"$group_type\"', properties->>'$.\"$group_set\".name' "
        "FROM events WHERE event = '$groupidentify'",
    )
    assert group == [["company", "Acme"]]


def test_python_sdk_gzip_and_resend_store_once(live: LiveServer, project: NewProject) -> None:
    errors: list[Exception] = []
    kw: dict[str, Any] = {
        "max_retries": 0,
        "timeout": 5,
        "on_error": lambda e, _b: errors.append(e),
    }
    client = Posthog(project.project.write_key, host=live.url, gzip=True, **kw)
    fixed = str(uuid.uuid4())
    for i in range(30):
        client.capture("tick", distinct_id=f"u-{i % 3}", properties={"i": i})
    client.capture("once", distinct_id="u-0", uuid=fixed)
    client.capture_ai("$ai_generation", distinct_id="u-0", properties={"$ai_model": "qwen"})
    client.flush()
    client.capture("once", distinct_id="u-0", uuid=fixed)  # the SDK resending the same event
    client.shutdown()
    assert errors == []
    assert q(live, project, "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 1") == [
        ["$ai_generation", 1],
        ["once", 1],
        ["tick", 30],
    ]
    assert q(live, project, "SELECT count(DISTINCT properties->>'$.i') FROM events") == [[30]]


def test_python_sdk_v1_mode_reports_dropped_events(live: LiveServer, project: NewProject) -> None:
    for compression in ("gzip", "deflate", "none"):
        errors: list[Exception] = []
        client = Posthog(
            project.project.write_key,
            host=live.url,
            capture_mode="v1",
            capture_compression=compression,
            max_retries=0,
            timeout=5,
            on_error=lambda e, _b, errors=errors: errors.append(e),
        )
        ts = datetime(2026, 11, 21, 8, 30, tzinfo=UTC)
        good = client.capture(
            f"v1_{compression}", distinct_id="v1-user", properties={"k": 1}, timestamp=ts
        )
        client.set(distinct_id="v1-user", properties={"mode": compression}, timestamp=ts)
        bad = client.capture("v1_bad", distinct_id="null", timestamp=ts)
        client.flush()
        client.shutdown()
        assert len(errors) == 1, errors
        err = errors[0]
        assert isinstance(err, CaptureV1Error)
        assert [u for u, _ in err.drops] == [bad]
        assert "distinct_id" in (err.drops[0][1] or "")
        got = q(
            live,
            project,
            f"SELECT timestamp, properties->>'$.\"$lib\"', properties->>'$.k' FROM events "
            f"WHERE uuid = '{good}'",
        )
        assert got == [[iso(ts), "posthog-python", "1"]]
    assert count(live, project, "event = 'v1_bad'") == 0
    assert count(live, project) == 6  # three captures and three $set
    props = q(live, project, "SELECT properties->>'$.mode' FROM persons")
    assert props == [["none"]]


# -- raw requests: paths, packings, keys ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/batch/",
        "/batch",
        "/capture/",
        "/capture",
        "/e/",
        "/e",
        "/i/v0/e/",
        "/i/v0/e",
        "/track/",
        "/track",
        "/i/v0/ai/batch/",
    ],
)
def test_every_path_accepts_a_batch_and_a_single_event(
    live: LiveServer, project: NewProject, path: str
) -> None:
    key = project.project.write_key
    r = post(live, path, {"api_key": key, "batch": [ev("a"), ev("b")]})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": 1}
    r = post(live, path, {"api_key": key, **ev("c")})
    assert r.status_code == 200, r.text
    assert count(live, project) == 3


def test_posthog_js_shapes_gzip_form_base64_lz64_and_get(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key

    def js_event(name: str, **props: Any) -> dict[str, Any]:
        return {
            "event": name,
            "uuid": str(uuid.uuid4()),
            "timestamp": "2026-11-22T01:02:03.456Z",
            "properties": {"distinct_id": "web-1", "token": key, "$lib": "web", **props},
        }

    # gzip-js: raw gzip bytes as text/plain (no Content-Encoding), token inside properties
    body = gzip.compress(orjson.dumps([js_event("gz_magic")]))
    r = post(
        live,
        "/e/",
        content=body,
        headers={"Content-Type": "text/plain"},
        params={"compression": "gzip-js", "ip": "0", "ver": "1.200.0"},
    )
    assert r.status_code == 200, r.text
    # gzip with the header
    body = gzip.compress(orjson.dumps({"api_key": key, "batch": [js_event("gz_header")]}))
    r = post(live, "/batch/", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    # form data= base64 (compression in the query, then sniffed without it)
    b64 = base64.b64encode(orjson.dumps([js_event("form_b64")])).decode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = post(
        live, "/e/", content=f"data={quote(b64)}", headers=form, params={"compression": "base64"}
    )
    assert r.status_code == 200, r.text
    b64 = base64.b64encode(orjson.dumps(js_event("form_sniffed"))).decode()
    r = post(live, "/i/v0/e/", content=f"data={quote(b64)}", headers=form)
    assert r.status_code == 200, r.text
    # form with unencoded '+' in the base64 (old clients) and form JSON
    b64 = base64.b64encode(orjson.dumps(js_event("form_plus", pad="?>?>?>"))).decode()
    assert "+" in b64 or "/" in b64
    r = post(live, "/e/", content=f"data={b64}&compression=base64", headers=form)
    assert r.status_code == 200, r.text
    r = post(live, "/e/", content=f"data={quote(json.dumps(js_event('form_json')))}", headers=form)
    assert r.status_code == 200, r.text
    # lz64 (legacy posthog-js), key in the query
    r = post(
        live,
        "/e/",
        content=f"data={quote(LZ_DATA)}&compression=lz64",
        headers=form,
        params={"token": key},
    )
    assert r.status_code == 200, r.text
    # GET with data= in the query (image beacons)
    b64 = base64.b64encode(orjson.dumps(js_event("get_beacon"))).decode()
    r = httpx.get(f"{live.url}/e/", params={"data": b64, "ip": "1"})
    assert r.status_code == 200, r.text

    got = rows(
        live.runtime,
        project.project.id,
        "SELECT event, distinct_id, properties->>'$.token' FROM events ORDER BY event",
    )
    assert got == [
        ["form_b64", "web-1", None],
        ["form_json", "web-1", None],
        ["form_plus", "web-1", None],
        ["form_sniffed", "web-1", None],
        ["get_beacon", "web-1", None],
        ["gz_header", "web-1", None],
        ["gz_magic", "web-1", None],
        ["lz_event", "lz-user", None],
    ]
    lz = rows(
        live.runtime,
        project.project.id,
        "SELECT timestamp, properties->>'$.city' FROM events WHERE event = 'lz_event'",
    )
    assert lz == [["2026-03-01T10:00:00", "上海"]]


def test_posthog_js_identify_alias_and_top_level_set(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    batch = [
        {**ev("$pageview", "anon-7"), "properties": {"$current_url": "https://x.cn/a"}},
        {
            "event": "$identify",
            "uuid": str(uuid.uuid4()),
            "properties": {"distinct_id": "u-7", "$anon_distinct_id": "anon-7"},
            "$set": {"email": "a@x.cn"},
            "$set_once": {"signup": "web"},
        },
        {**ev("$set", "u-7"), "$set": {"email": "b@x.cn"}, "properties": {"$set": {"lang": "zh"}}},
        {**ev("$merge_dangerously", "u-7"), "properties": {"alias": "phone-7"}},
        {**ev("$create_alias", "u-7"), "properties": {"alias": "mail-7"}},
        {**ev("seen", "phone-7"), "properties": {"$unset": ["lang"]}},
    ]
    r = post(live, "/batch/", {"api_key": key, "batch": batch})
    assert r.status_code == 200, r.text
    pid = rows(live.runtime, project.project.id, "SELECT DISTINCT person_id FROM events")
    assert len(pid) == 1
    ids = rows(
        live.runtime, project.project.id, "SELECT distinct_id FROM person_distinct_ids ORDER BY 1"
    )
    assert ids == [["anon-7"], ["mail-7"], ["phone-7"], ["u-7"]]
    props = rows(live.runtime, project.project.id, "SELECT properties FROM persons")
    assert [json.loads(p[0]) for p in props] == [{"email": "b@x.cn", "signup": "web"}]
    merged = rows(
        live.runtime,
        project.project.id,
        "SELECT event, properties->>'$.\"$merge_dangerously\"' FROM events "
        "WHERE properties->>'$.alias' = 'phone-7'",
    )
    assert merged == [["$create_alias", "true"]]


def test_key_from_body_event_query_or_header(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    assert post(live, "/batch/", {"token": key, "batch": [ev()]}).status_code == 200
    assert (
        post(live, "/batch/", [{**ev(), "api_key": key}, {**ev(), "$token": key}]).status_code
        == 200
    )
    assert post(live, "/capture/", ev(), params={"api_key": key}).status_code == 200
    headers = {"Authorization": f"Bearer {key}"}
    assert post(live, "/i/v0/e/", ev(), headers=headers).status_code == 200
    assert count(live, project) == 5


def test_missing_unknown_or_mixed_keys_are_401(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    r = post(live, "/batch/", {"batch": [ev()]})
    assert r.status_code == 401
    assert r.json() == {
        "type": "authentication_error",
        "code": "missing_api_key",
        "detail": r.json()["detail"],
        "attr": "api_key",
    }
    r = post(live, "/batch/", {"api_key": "phc_nope", "batch": [ev()]})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    assert "unknown write key" in r.json()["detail"]
    r = post(live, "/batch/", [{**ev(), "api_key": key}, {**ev(), "api_key": "other"}])
    assert r.status_code == 401 and "inconsistent" in r.json()["detail"]
    r = post(live, "/batch/", {"api_key": project.secret_key, "batch": [ev()]})
    assert r.status_code == 401
    assert count(live, project) == 0


# -- time -----------------------------------------------------------------------------------------


def test_sent_at_corrects_a_wrong_device_clock(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    device_now = datetime.now(UTC) - timedelta(hours=2)  # the phone's clock is 2 h behind
    happened = device_now - timedelta(minutes=10)
    a, b, c = ev("skewed"), ev("ignored"), ev("on_time")
    a["timestamp"] = happened.isoformat()
    b["timestamp"] = happened.isoformat()
    b["properties"] = {"$ignore_sent_at": True}
    body = {"api_key": key, "sent_at": device_now.isoformat(), "batch": [a, b]}
    assert post(live, "/batch/", body).status_code == 200
    corrected = stored_time(live, project, a["uuid"])
    expected = (happened + timedelta(hours=2)).replace(tzinfo=None)
    assert abs(corrected - expected) < timedelta(seconds=10)
    assert stored_time(live, project, b["uuid"]) == happened.replace(tzinfo=None)
    # a right clock: latency is not corrected, the timestamp is kept exactly
    c["timestamp"] = "2026-11-22T12:00:00.5+08:00"
    body = {"api_key": key, "sent_at": datetime.now(UTC).isoformat(), "batch": [c]}
    assert post(live, "/batch/", body).status_code == 200
    assert stored_time(live, project, c["uuid"]) == datetime(2026, 11, 22, 4, 0, 0, 500000)


def test_offset_and_query_cache_buster(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    a = {**ev("offset"), "offset": 60_000}
    assert post(live, "/e/", {"api_key": key, **a}).status_code == 200
    delta = datetime.now(UTC).replace(tzinfo=None) - stored_time(live, project, a["uuid"])
    assert timedelta(seconds=55) < delta < timedelta(seconds=70)
    # posthog-js sends its clock as ?_=<ms>; 1 day behind here
    b = {**ev("buster"), "timestamp": "2026-11-01T00:00:00Z"}
    ms = int((datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000)
    assert post(live, "/e/", {"api_key": key, **b}, params={"_": str(ms)}).status_code == 200
    got = stored_time(live, project, b["uuid"])
    assert abs(got - datetime(2026, 11, 2)) < timedelta(seconds=10)


# -- dedupe ---------------------------------------------------------------------------------------


def test_resends_are_stored_once(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    batch = [
        ev("with_uuid"),
        {"event": "no_uuid", "distinct_id": "d", "timestamp": "2026-11-22T08:00:00Z"},
        {**ev("odd_id"), "uuid": "msg-123"},
        {"event": "no_uuid_no_time", "distinct_id": "d"},
    ]
    for _ in range(2):
        r = post(live, "/batch/", {"api_key": key, "batch": batch})
        assert r.status_code == 200
    got = rows(
        live.runtime, project.project.id, "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 1"
    )
    # without id and time a resend cannot be told from a new event (documented)
    assert got == [["no_uuid", 1], ["no_uuid_no_time", 2], ["odd_id", 1], ["with_uuid", 1]]
    odd = rows(live.runtime, project.project.id, "SELECT uuid FROM events WHERE event = 'odd_id'")
    assert odd == [[str(uuid.uuid5(ph.ID_NAMESPACE, f"posthog:{project.project.id}:msg-123"))]]


# -- malformed input ------------------------------------------------------------------------------


def test_malformed_bodies_are_permanent_400s_in_posthog_shape(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    good = orjson.dumps({"api_key": key, **ev()})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"content": b""}, "invalid_payload", "empty body"),
        ({"content": good[:-5]}, "invalid_payload", "not valid JSON"),
        ({"content": b"\x1f\x8b\x08\x00garbage"}, "invalid_payload", "gzip"),
        ({"content": gzip.compress(good)[:-6]}, "invalid_payload", "truncated"),
        (
            {"content": b"data=%%%%&compression=base64", "headers": form},
            "invalid_payload",
            "base64",
        ),
        (
            {"content": b"data=!!not-lz!!&compression=lz64", "headers": form},
            "invalid_payload",
            "lz64",
        ),
        ({"content": b"data=QUJD&compression=lz64", "headers": form}, "invalid_payload", "lz64"),
        ({"content": b"compression=base64", "headers": form}, "invalid_payload", "'data'"),
        (
            {"content": good, "params": {"compression": "brotli"}},
            "unsupported_compression",
            "brotli",
        ),
        ({"content": b"42"}, "invalid_payload", "body must be"),
        ({"body": {"api_key": key, "batch": {}}}, "invalid_payload", "'batch' must be a list"),
        ({"body": {"api_key": key, "batch": []}}, "empty_batch", "no event"),
        ({"body": {"api_key": key, "sent_at": "yesterday", **ev()}}, "invalid_payload", "sent_at"),
    ]
    for kw, code, fragment in cases:
        r = post(live, "/e/", **kw)
        assert r.status_code == 400, (kw, r.text)
        body = r.json()
        assert body["type"] == "validation_error", body
        assert body["code"] == code, body
        assert fragment in body["detail"], body
    r = post(live, "/e/", content=good, headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_encoding"
    assert count(live, project) == 0


def test_oversized_bodies_are_413(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    big = orjson.dumps({"api_key": key, **ev(), "properties": {"blob": "x" * LIMIT}})
    for path in ("/e/", "/capture/", "/i/v0/e/"):
        r = post(live, path, content=big)
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "payload_too_large"
        assert f"{LIMIT}" in r.json()["detail"]
    bomb = gzip.compress(b'{"batch": [' + b" " * (LIMIT + 10) + b"]}")
    r = post(live, "/e/", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    # the shared paths read the body before the protocol is known: the status is the same
    for path in ("/batch/", "/track/"):
        assert post(live, path, content=big).status_code == 413
    assert count(live, project) == 0


def test_bad_events_are_listed_and_good_ones_stored(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    batch = [
        ev("ok_1"),
        {**ev("bad_props"), "properties": ["x"]},
        {**ev("bad_time"), "timestamp": "last tuesday"},
        {"uuid": str(uuid.uuid4()), "distinct_id": "d"},
        {**ev("bad_id"), "distinct_id": "undefined"},
        "not an event",
        {**ev("bad_offset"), "offset": "soon"},
        {**ev("bad_amount"), "properties": {"amount": "9.9"}},
        ev("ok_2"),
    ]
    r = post(live, "/batch/", {"api_key": key, "batch": batch})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "validation_error" and body["code"] == "invalid_payload"
    assert body["accepted"] == 2 and body["duplicates"] == 0 and body["rejected"] == 7
    assert "7 of 9 events rejected" in body["detail"]
    assert body["attr"] == "batch[1].properties"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "properties"),
        (2, "timestamp"),
        (3, "event"),
        (4, "distinct_id"),
        (5, ""),
        (6, "offset"),
        (7, "properties.amount"),
    ]
    assert all(e["message"] for e in body["errors"])
    got = rows(live.runtime, project.project.id, "SELECT event FROM events ORDER BY event")
    assert got == [["ok_1"], ["ok_2"]]
    # retrying the whole batch stores nothing new and reports the duplicates
    r = post(live, "/batch/", {"api_key": key, "batch": batch})
    assert r.status_code == 400 and r.json()["duplicates"] == 2
    assert count(live, project) == 2


def test_cors_for_browser_pages(live: LiveServer, project: NewProject) -> None:
    origin = {"Origin": "https://shop.example.cn"}
    r = httpx.options(
        f"{live.url}/e/",
        headers={**origin, "Access-Control-Request-Headers": "content-type"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example.cn"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = post(live, "/e/", {"api_key": project.project.write_key, **ev()}, headers=origin)
    assert r.status_code == 200
    assert r.headers["access-control-allow-credentials"] == "true"


# -- capture v1 -----------------------------------------------------------------------------------


def v1_post(
    live: LiveServer,
    key: str | None,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    h = {"Content-Type": "application/json", "PostHog-Sdk-Info": "posthog-go/1.5.0"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    return httpx.post(
        f"{live.url}/i/v1/analytics/events",
        content=orjson.dumps(body) if content is None else content,
        headers={**h, **(headers or {})},
        timeout=10,
    )


def v1_event(name: str = "e", distinct_id: str = "d-1", **extra: Any) -> dict[str, Any]:
    return {
        "event": name,
        "uuid": str(uuid.uuid4()),
        "distinct_id": distinct_id,
        "timestamp": "2026-11-22T03:00:00Z",
        "options": {},
        "properties": {},
        **extra,
    }


def test_v1_results_options_and_headers(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    a = v1_event("a", session_id="s-1", window_id="w-1")
    b = v1_event("b", distinct_id="null")
    c = v1_event("c", options={"process_person_profile": "false", "disable_skew_correction": 1})
    d = v1_event("d", options={"cookieless_mode": {"x": 1}})
    e = v1_event("e", timestamp="tomorrow-ish")
    body = {"created_at": "2026-11-22T03:00:01Z", "batch": [a, b, c, d, e]}
    skewed = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    r = v1_post(live, key, body, headers={"PostHog-Request-Timestamp": skewed})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[a["uuid"]] == {"result": "ok"}
    assert results[c["uuid"]] == {"result": "ok"}
    assert results[b["uuid"]]["result"] == "drop"
    assert results[b["uuid"]]["details"].startswith("invalid_distinct_id: distinct_id:")
    assert results[d["uuid"]]["details"].startswith("invalid_options: options.cookieless_mode")
    assert results[e["uuid"]]["details"].startswith("invalid_event_timestamp: timestamp:")
    got = rows(
        live.runtime,
        project.project.id,
        "SELECT event, properties->>'$.\"$session_id\"', properties->>'$.\"$window_id\"', "
        "properties->>'$.\"$lib\"', properties->>'$.\"$lib_version\"', "
        "properties->>'$.\"$process_person_profile\"' FROM events ORDER BY event",
    )
    assert got == [
        ["a", "s-1", "w-1", "posthog-go", "1.5.0", None],
        ["c", None, None, "posthog-go", "1.5.0", "false"],
    ]
    # the device clock is 3 h behind: a is corrected, c asked not to be
    shifted = stored_time(live, project, a["uuid"]) - datetime(2026, 11, 22, 3)
    assert abs(shifted - timedelta(hours=3)) < timedelta(seconds=10)
    assert stored_time(live, project, c["uuid"]) == datetime(2026, 11, 22, 3)
    # resending: all ok again, nothing new
    r = v1_post(live, key, body)
    assert r.json()["results"][a["uuid"]] == {"result": "ok"}
    assert count(live, project) == 2


def test_v1_batch_level_errors(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    one = v1_event()
    cases: list[tuple[int, Any, str]] = [
        (400, {"created_at": "2026-11-22T03:00:00Z", "batch": []}, "empty_batch"),
        (400, {"batch": [{**one, "uuid": "nope"}]}, "invalid_event_uuid"),
        (400, {"batch": [{k: v for k, v in one.items() if k != "uuid"}]}, "missing_event_uuid"),
        (400, {"batch": [one, dict(one)]}, "duplicate_event_uuid"),
        (400, {"batch": [one, 7]}, "request_parsing_error"),
        (400, {"created_at": "soon", "batch": [one]}, "invalid_batch"),
        (400, [one], "invalid_batch"),
    ]
    for status, body, code in cases:
        r = v1_post(live, key, body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"] == code, r.json()
        assert r.json()["error_description"] and r.json()["error_uri"]
    r = v1_post(live, key, None, content=b'{"batch": [')
    assert r.status_code == 400 and r.json()["error"] == "request_parsing_error"
    r = v1_post(live, key, None, content=b"")
    assert r.status_code == 400 and r.json()["error"] == "empty_body"
    r = v1_post(live, key, None, content=b"\x78\x9cjunk", headers={"Content-Encoding": "deflate"})
    assert r.status_code == 400 and "deflate" in r.json()["error_description"]
    r = v1_post(live, key, None, content=b"{}", headers={"Content-Encoding": "zstd"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_encoding"
    bomb = zlib.compress(b" " * (LIMIT + 10))
    r = v1_post(live, key, None, content=bomb, headers={"Content-Encoding": "deflate"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    r = v1_post(live, key, {"batch": [one]}, headers={"PostHog-Request-Timestamp": "noon"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_header_value"
    r = v1_post(live, None, {"batch": [one]})
    assert r.status_code == 401 and r.json()["error"] == "invalid_api_token"
    r = v1_post(live, "phc_unknown", {"batch": [one]})
    assert r.status_code == 401 and r.json()["error"] == "invalid_api_token"
    assert count(live, project) == 0


# -- pure functions -------------------------------------------------------------------------------


def ctx(**kw: Any) -> ph.Context:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    return ph.Context(**{"project_id": 1, "now": now, "sent_at": None, "write_key": "k", **kw})


def test_map_event_moves_person_operations_and_fills_platform_properties() -> None:
    props_in: dict[str, Any] = {"distinct_id": 7, "token": "k", "$os_name": "Android"}
    raw: dict[str, Any] = {
        "event": "buy",
        "properties": {**props_in, "revenue": 6, "$set": {"b": 2}},
        "$set": {"a": 1, "b": 1},
        "$set_once": {"c": 1},
        "timestamp": "2026-11-22T10:00:00+08:00",
    }
    out = ph.map_event(raw, ctx())
    assert isinstance(out, dict)
    assert out["distinct_id"] == 7  # numbers become text in validation
    assert out["timestamp"] == "2026-11-22T02:00:00+00:00"
    props = out["properties"]
    assert props["$set"] == {"a": 1, "b": 2} and props["$set_once"] == {"c": 1}
    assert "token" not in props
    assert props["$os"] == "Android" and props["$amount"] == 6
    assert uuid.UUID(out["uuid"]).version == 5
    again = ph.map_event(raw, ctx())
    other = ph.map_event({**raw, "event": "buy2"}, ctx())
    assert isinstance(again, dict) and isinstance(other, dict)
    assert again["uuid"] == out["uuid"] != other["uuid"]


def test_event_time_rules() -> None:
    sent = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # one hour behind the server
    c = ctx(sent_at=sent)
    raw = {"timestamp": "2026-11-22T10:00:00Z"}
    assert ph.event_time(raw, {}, c) == ("2026-11-22T11:00:00+00:00", None)
    assert ph.event_time(raw, {"$ignore_sent_at": "true"}, c)[0] == "2026-11-22T10:00:00+00:00"
    near = ctx(sent_at=datetime(2026, 11, 22, 11, 59, 50, tzinfo=UTC))
    assert ph.event_time(raw, {}, near)[0] == "2026-11-22T10:00:00+00:00"
    assert ph.event_time({"offset": 1500}, {}, c)[0] == "2026-11-22T11:59:58.500000+00:00"
    assert ph.event_time({}, {}, c) == (None, None)
    bad = ph.event_time({"timestamp": 1700000000}, {}, c)[1]
    assert isinstance(bad, FieldError) and bad.field == "timestamp"


def test_decode_payload_packings() -> None:
    event = {"event": "e", "distinct_id": "d"}
    raw = orjson.dumps(event)
    b64 = base64.b64encode(raw)
    assert ph.decode_payload(raw, "application/json", {}, LIMIT) == event
    assert ph.decode_payload(b64, "text/plain", {}, LIMIT) == event
    assert ph.decode_payload(base64.urlsafe_b64encode(raw).rstrip(b"="), "", {}, LIMIT) == event
    gz64 = base64.b64encode(gzip.compress(raw))
    assert ph.decode_payload(b"data=" + gz64, "", {}, LIMIT) == event
    assert ph.decode_payload(b"", "", {"data": b64.decode()}, LIMIT) == event
    lz = ph.decode_payload(b"data=" + LZ_DATA.encode(), "", {"compression": "lz64"}, LIMIT)
    assert lz == json.loads(LZ_JSON)
    with pytest.raises(ph.CaptureError) as exc:
        ph.decode_payload(b"data=" + LZ_DATA.encode(), "", {"compression": "lz64"}, 20)
    assert exc.value.status == 413


def test_lz64_decompress_matches_lz_string() -> None:
    assert ph.lz64_decompress(LZ_DATA, 10_000) == LZ_JSON
    assert ph.lz64_decompress("BYUwNmD2Q===", 100) == "hello"
    for broken in ("", "NobwRApgbhB2AuYBcYA2", "***"):
        with pytest.raises(ValueError):
            ph.lz64_decompress(broken, 10_000)


def test_find_write_key_and_sdk_lib() -> None:
    assert ph.find_write_key({"api_key": " k "}, [], {}, None) == "k"
    assert ph.find_write_key({}, [{"properties": {"token": "t"}}], {}, None) == "t"
    assert ph.find_write_key({}, [{}], {"token": "q"}, "h") == "q"
    assert ph.find_write_key({}, [{}], {}, "h") == "h"
    assert ph.find_write_key({}, [{}], {}, None) is None
    assert ph.sdk_lib("posthog-python/7.91.1") == ("posthog-python", "7.91.1")
    assert ph.sdk_lib("posthog/sub/2.0") == ("posthog/sub", "2.0")
    assert ph.sdk_lib("nonsense") is None
