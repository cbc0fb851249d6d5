"""RudderStack protocol (Segment's message spec): rudder-sdk-python and raw HTTP, live server."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import rudderstack.analytics as rudder_analytics
from rudderstack.analytics import Client
from rudderstack.analytics import consumer as rudder_consumer
from rudderstack.analytics.request import APIError

from tests.conftest import LiveServer, rows, yunying_sql
from yunying.state import NewProject

T0 = datetime(2026, 11, 21, 12, 30, 0, 654321, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def count(live: LiveServer, project_id: int, where: str = "true") -> int:
    return int(rows(live.runtime, project_id, f"SELECT count(*) FROM events WHERE {where}")[0][0])


def make_client(live: LiveServer, key: str, errors: list[Exception], **kw: Any) -> Client:
    """The SDK as a team configures it (write key, data plane URL); few retries for fast tests."""
    options = {"max_retries": 1, "timeout": 5, **kw}
    return Client(key, host=live.url, on_error=lambda exc, _b: errors.append(exc), **options)


def test_rudderstack_sdk_events_identity_and_person_properties(
    live: LiveServer, project: NewProject
) -> None:
    errors: list[Exception] = []
    client = make_client(live, project.project.write_key, errors)  # gzip is on by default
    t = [T0 + timedelta(seconds=i) for i in range(9)]
    mobile = {
        "os": {"name": "Android", "version": "14"},
        "app": {"version": "5.1.0", "build": "510"},
        "device": {"id": "android-77"},
        "ip": "198.51.100.4",
        "campaign": {"source": "xiaohongshu", "name": "spring"},
    }
    client.track(
        anonymous_id="anon-r",
        event="template_view",
        properties={"template": "vlog-01", "$set_once": {"first_template": "vlog-01"}},
        context=mobile,
        timestamp=t[0],
    )
    client.page(
        anonymous_id="anon-r",
        name="Templates",
        properties={"url": "https://m.example.cn/t"},
        timestamp=t[1],
    )
    client.screen(anonymous_id="anon-r", name="Preview", properties={"tab": 2}, timestamp=t[2])
    client.track(user_id="crm-9", event="crm_import", timestamp=t[3])
    client.identify(
        user_id="r-2002",
        anonymous_id="anon-r",
        traits={"plan": "free", "city": "成都", "$set_once": {"signup_channel": "xiaohongshu"}},
        timestamp=t[4],
    )
    client.track(
        user_id="r-2002",
        event="Order Completed",
        properties={"revenue": 128, "currency": "CNY", "$increment": {"credits": 10}},
        timestamp=t[5],
    )
    client.identify(
        user_id="r-2002",
        traits={"plan": "pro", "$increment": {"credits": 5}, "$append": {"badges": "early"}},
        timestamp=t[6],
    )
    client.alias(previous_id="crm-9", user_id="r-2002", timestamp=t[7])
    client.group(user_id="r-2002", group_id="mcn-3", traits={"tier": "gold"}, timestamp=t[8])
    client.flush()
    client.shutdown()
    assert errors == []

    name = project.project.name
    got = yunying_sql(
        live, "SELECT event, distinct_id, timestamp FROM events ORDER BY timestamp", name
    )
    assert got == [
        ["template_view", "anon-r", iso(t[0])],
        ["$pageview", "anon-r", iso(t[1])],
        ["$screen", "anon-r", iso(t[2])],
        ["crm_import", "crm-9", iso(t[3])],
        ["$identify", "r-2002", iso(t[4])],
        ["Order Completed", "r-2002", iso(t[5])],
        ["$identify", "r-2002", iso(t[6])],
        ["$create_alias", "r-2002", iso(t[7])],
        ["$groupidentify", "r-2002", iso(t[8])],
    ]
    first = yunying_sql(
        live,
        "SELECT os, app_version, device_id, ip, utm_source, properties FROM events "
        "WHERE event = 'template_view'",
        name,
    )[0]
    assert first[:5] == ["Android", "5.1.0", "android-77", "198.51.100.4", "xiaohongshu"]
    props = orjson.loads(first[5])
    assert props["template"] == "vlog-01" and props["utm_campaign"] == "spring"
    assert props["$lib"] == "analytics-python"
    screen = orjson.loads(
        yunying_sql(live, "SELECT properties FROM events WHERE event = '$screen'", name)[0][0]
    )
    assert screen == {**screen, "$screen_name": "Preview", "name": "Preview", "tab": 2}
    ident = orjson.loads(
        yunying_sql(
            live, "SELECT properties FROM events WHERE event = '$identify' ORDER BY timestamp", name
        )[0][0]
    )
    assert ident["$anon_distinct_id"] == "anon-r"
    assert ident["$set"] == {"plan": "free", "city": "成都"}  # traits arrive in context.traits
    order = yunying_sql(
        live,
        "SELECT amount, properties->>'$.$currency' FROM events WHERE event = 'Order Completed'",
        name,
    )
    assert order == [[128.0, "CNY"]]

    ids = yunying_sql(
        live, "SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY distinct_id", name
    )
    assert [r[0] for r in ids] == ["anon-r", "crm-9", "r-2002"]
    assert len({r[1] for r in ids}) == 1
    persons = yunying_sql(live, "SELECT id, is_identified, properties FROM persons", name)
    assert len(persons) == 1 and persons[0][0] == ids[0][1] and persons[0][1] is True
    assert orjson.loads(persons[0][2]) == {
        "first_template": "vlog-01",
        "plan": "pro",
        "city": "成都",
        "signup_channel": "xiaohongshu",
        "credits": 15,
        "badges": ["early"],
    }
    assert yunying_sql(live, "SELECT count(DISTINCT person_id) FROM events", name) == [[1]]


def test_rudderstack_module_settings_write_key_and_data_plane_url(
    live: LiveServer, project: NewProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented two lines: ``rudder_analytics.write_key`` and ``.dataPlaneUrl``."""
    errors: list[Exception] = []
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    monkeypatch.setattr(rudder_analytics, "write_key", project.project.write_key)
    monkeypatch.setattr(rudder_analytics, "dataPlaneUrl", live.url, raising=False)
    monkeypatch.setattr(rudder_analytics, "max_retries", 1)
    monkeypatch.setattr(rudder_analytics, "on_error", lambda exc, _b: errors.append(exc))
    for i in range(25):
        rudder_analytics.track(f"user-{i % 5}", "export_video", {"n": i}, timestamp=T0)
    rudder_analytics.shutdown()
    assert errors == []
    assert count(live, project.project.id, "event = 'export_video'") == 25
    assert rows(live.runtime, project.project.id, "SELECT count(DISTINCT uuid) FROM events") == [
        [25]
    ]


def test_rudderstack_sdk_gives_up_at_once_on_a_permanent_error(
    live: LiveServer, project: NewProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Errors carry ``code`` and ``message``: rudder-sdk-python raises APIError and stops.

    (Without ``code`` in a JSON error it raises KeyError instead, which it retries as if the
    network had failed.)
    """
    calls: list[int] = []
    real_post = rudder_consumer.post

    def counting_post(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_post(*args, **kwargs)

    monkeypatch.setattr(rudder_consumer, "post", counting_post)
    errors: list[Exception] = []
    client = make_client(live, project.project.write_key, errors, max_retries=3)
    client.track("u-1", "kept", timestamp=T0)
    client.track("u-1", "", timestamp=T0)
    client.flush()
    client.shutdown()
    assert len(calls) == 1
    assert len(errors) == 1 and isinstance(errors[0], APIError), errors
    assert errors[0].status == 400 and errors[0].code == "invalid_request"
    assert "batch[1].event" in errors[0].message
    assert count(live, project.project.id, "event = 'kept'") == 1

    calls.clear()
    errors.clear()
    bad = make_client(live, "wk_not_a_key", errors, max_retries=3)
    bad.track("u-1", "lost", timestamp=T0)
    bad.flush()
    bad.shutdown()
    assert len(calls) == 1 and isinstance(errors[0], APIError)
    assert (errors[0].status, errors[0].code) == (401, "unauthorized")
    assert count(live, project.project.id, "event = 'lost'") == 0


# -- raw HTTP as the JS and mobile SDKs send it --------------------------------------------------


def test_js_style_message_with_original_timestamp_is_corrected_for_clock_skew(
    live: LiveServer, project: NewProject
) -> None:
    """RudderStack JS sends originalTimestamp + sentAt: a device clock 2 h slow is corrected."""
    now = datetime.now(UTC)
    device_now = now - timedelta(hours=2)
    message = {
        "type": "track",
        "event": "play",
        "anonymousId": "anon-js",
        "channel": "web",
        "messageId": str(uuid.uuid4()),
        "originalTimestamp": (device_now - timedelta(seconds=5)).isoformat(),
        "sentAt": device_now.isoformat(),
        "context": {"library": {"name": "RudderLabs JavaScript SDK", "version": "3.11.0"}},
        "properties": {"video": "v-1"},
        "integrations": {"All": True},
    }
    r = httpx.post(f"{live.url}/v1/track", json=message, headers=basic(project.project.write_key))
    assert r.status_code == 200 and r.json() == {"success": True}
    got = rows(live.runtime, project.project.id, "SELECT timestamp, properties FROM events")
    stored = datetime.fromisoformat(got[0][0]).replace(tzinfo=UTC)
    assert abs(stored - (now - timedelta(seconds=5))) < timedelta(seconds=3)
    assert orjson.loads(got[0][1])["$lib"] == "RudderLabs JavaScript SDK"


def test_explicit_timestamp_of_a_well_synced_client_is_kept_exactly(
    live: LiveServer, project: NewProject
) -> None:
    sent = datetime.now(UTC).isoformat()
    batch = {
        "batch": [
            {"type": "track", "event": "e", "userId": "u", "timestamp": "2026-11-01T00:00:00.5Z"}
        ],
        "sentAt": sent,
    }
    r = httpx.post(f"{live.url}/v1/batch", json=batch, headers=basic(project.project.write_key))
    assert r.status_code == 200
    assert rows(live.runtime, project.project.id, "SELECT timestamp FROM events") == [
        ["2026-11-01T00:00:00.500000"]
    ]


def test_beacon_path_with_write_key_in_query(live: LiveServer, project: NewProject) -> None:
    body = orjson.dumps({"batch": [{"type": "page", "anonymousId": "b-1", "name": "Bye"}]})
    url = f"{live.url}/beacon/v1/batch?writeKey={project.project.write_key}"
    r = httpx.post(url, content=body, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200
    assert rows(live.runtime, project.project.id, "SELECT event, distinct_id FROM events") == [
        ["$pageview", "b-1"]
    ]
    bad = httpx.post(f"{live.url}/beacon/v1/batch?writeKey=wk_nope", content=body)
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"


def test_source_config_for_js_and_mobile_sdks(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    r = httpx.get(f"{live.url}/sourceConfig/?p=npm&v=3.11.0", headers=basic(key))
    assert r.status_code == 200
    source = r.json()["source"]
    assert source["enabled"] is True and source["writeKey"] == key
    assert source["destinations"] == [] and source["name"] == project.project.name
    bad = httpx.get(f"{live.url}/sourceConfig", headers=basic("wk_nope"))
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    assert httpx.get(f"{live.url}/sourceConfig").status_code == 401


def test_rudderstack_messages_may_be_larger_than_segment_allows(
    live: LiveServer, project: NewProject
) -> None:
    """Messages with RudderStack's ``channel`` field get its 4 MB limit; Segment's are 32 KB."""
    key = project.project.write_key
    props = {"transcript": "字" * 40_000}  # about 120 KB of UTF-8
    rudder = {
        "type": "track",
        "event": "long",
        "userId": "u",
        "channel": "server",
        "properties": props,
    }
    segment = {"type": "track", "event": "long", "userId": "v", "properties": props}
    huge = {**rudder, "userId": "w", "properties": {"blob": "x" * (4 * 1024 * 1024)}}
    r = httpx.post(
        f"{live.url}/v1/batch", json={"batch": [rudder, segment, huge]}, headers=basic(key)
    )
    body = r.json()
    assert r.status_code == 400 and body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, ""), (2, "")]
    assert "limit of 32768 bytes" in body["errors"][0]["message"]
    assert "limit of 4194304 bytes" in body["errors"][1]["message"]
    assert rows(live.runtime, project.project.id, "SELECT distinct_id FROM events") == [["u"]]


def test_anonymous_identify_sets_traits_and_keeps_the_device_mergeable(
    live: LiveServer, project: NewProject
) -> None:
    """identify with only anonymousId is not a login: a later identify still merges the device."""
    key = project.project.write_key
    anon = {"type": "identify", "anonymousId": "dev-5", "context": {"traits": {"theme": "dark"}}}
    login = {
        "type": "identify",
        "anonymousId": "dev-5",
        "userId": "u-5",
        "context": {"traits": {"plan": "pro"}},
    }
    for message in (anon, login):
        r = httpx.post(f"{live.url}/v1/identify", json=message, headers=basic(key))
        assert r.status_code == 200, r.text
    assert rows(
        live.runtime, project.project.id, "SELECT event FROM events ORDER BY timestamp"
    ) == [
        ["$set"],
        ["$identify"],
    ]
    persons = rows(
        live.runtime, project.project.id, "SELECT is_identified, properties FROM persons"
    )
    assert len(persons) == 1 and persons[0][0] is True
    assert orjson.loads(persons[0][1]) == {"theme": "dark", "plan": "pro"}
    ids = rows(
        live.runtime,
        project.project.id,
        "SELECT count(DISTINCT person_id) FROM person_distinct_ids",
    )
    assert ids == [[1]]


def test_error_bodies_always_carry_code_and_message(live: LiveServer, project: NewProject) -> None:
    """Every error path answers JSON with both keys, or rudder-sdk-python would retry it."""
    key = project.project.write_key
    answers = [
        httpx.post(f"{live.url}/v1/batch", content=b"{", headers=basic(key)),
        httpx.post(
            f"{live.url}/v1/batch", content=b"x", headers={**basic(key), "Content-Encoding": "gzip"}
        ),
        httpx.post(
            f"{live.url}/v1/batch",
            content=b"{}",
            headers={**basic(key), "Content-Encoding": "zstd"},
        ),
        httpx.post(f"{live.url}/v1/batch", json={"batch": [{"type": "track"}]}, headers=basic(key)),
        httpx.post(f"{live.url}/v1/track", json={}, headers=basic("wk_nope")),
        httpx.post(f"{live.url}/v1/track", json={}, headers={"Authorization": "Basic !!"}),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500 and r.status_code != 429, r.text
        body = r.json()
        assert (
            isinstance(body["code"], str) and isinstance(body["message"], str) and body["message"]
        )
    assert count(live, project.project.id) == 0
