"""Amplitude's protocol: the real amplitude-analytics SDK against a live server, raw HTTP, mapping."""

from __future__ import annotations

import datetime as dt
import gzip
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from amplitude import (
    Amplitude,
    BaseEvent,
    Config,
    EventOptions,
    Identify,
    Revenue,
)
from amplitude.exception import InvalidAPIKeyError
from amplitude.http_client import HttpClient, HttpStatus
from amplitude.processor import ResponseProcessor

from tests.conftest import LiveServer, yunying_sql
from yunying.config import Settings, load_settings
from yunying.state import NewProject
from yunying.web.sdk import amplitude as amp_proto

LIMIT = 256 * 1024
UTC = dt.UTC


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A small body limit, so that the 413 answers are cheap to reach."""
    return load_settings(data_dir=tmp_path / "data", max_body_bytes=LIMIT)


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def iso(t: dt.datetime) -> str:
    """How `yunying sql` shows a stored timestamp (naive UTC)."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat()


def sql(live: LiveServer, project: NewProject, query: str) -> list[list[Any]]:
    return yunying_sql(live, query, project.project.name)


def count(live: LiveServer, project: NewProject, where: str = "true") -> int:
    return int(sql(live, project, f"SELECT count(*) FROM events WHERE {where}")[0][0])


def upload(live: LiveServer, body: Any, path: str = "/2/httpapi", **kw: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{live.url}{path}", content=body, **kw)
    return httpx.post(f"{live.url}{path}", json=body, **kw)


def ev(**fields: Any) -> dict[str, Any]:
    return {"event_type": "open_app", "device_id": "device-0001", **fields}


# -- the official SDK ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/2/httpapi", "/batch"])
def test_amplitude_python_sdk_end_to_end(live: LiveServer, project: NewProject, path: str) -> None:
    results: list[tuple[str, int, str | None]] = []
    client = Amplitude(
        project.project.write_key,
        Config(
            server_url=f"{live.url}{path}",  # the host (and the key above) are all that change
            callback=lambda e, code, message: results.append((e.event_type, code, message)),
            flush_max_retries=2,  # a failing test must not retry for minutes
        ),
    )
    t1 = dt.datetime(2026, 11, 20, 8, 0, 0, 123000, tzinfo=UTC)
    t2 = dt.datetime(2026, 11, 20, 8, 1, 0, tzinfo=UTC)
    t3 = dt.datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
    t4 = dt.datetime(2026, 11, 20, 9, 5, 0, tzinfo=UTC)
    device, user = "device-7f3a9c", "user-1001"

    # an anonymous device
    client.track(
        BaseEvent(
            "open_app",
            device_id=device,
            time=ms(t1),
            event_properties={"channel": "douyin", "template": "vlog", "n": 3},
            os_name="iOS",
            os_version="18.1",
            app_version="3.2.0",
            platform="iOS",
            ip="1.2.3.4",
        )
    )
    client.identify(
        Identify().set_once("first_channel", "douyin").set("temp", 1),
        EventOptions(device_id=device, time=ms(t2)),
    )
    # login: both ids on an identify, then person operations
    client.identify(
        Identify()
        .set("plan", "pro")
        .set_once("first_channel", "xiaohongshu")
        .add("exports", 2)
        .append("tags", ["vlog", "travel"])
        .post_insert("badges", "early")
        .unset("temp"),
        EventOptions(user_id=user, device_id=device, time=ms(t3)),
    )
    client.track(
        BaseEvent("export_video", user_id=user, device_id=device, time=ms(t4), insert_id="exp-1")
    )
    client.revenue(
        Revenue(price=9.9, quantity=2, product_id="vip_month", currency="CNY"),
        EventOptions(user_id=user, time=ms(t4) + 1000),
    )
    client.track(
        BaseEvent(
            "export_video",
            user_id=user,
            time=ms(t4) + 2000,
            user_properties={"$add": {"exports": 3}},
        )
    )
    client.shutdown()

    assert sorted(results) == sorted(
        [
            ("open_app", 200, "Event sent successfully."),
            ("$identify", 200, "Event sent successfully."),
            ("$identify", 200, "Event sent successfully."),
            ("export_video", 200, "Event sent successfully."),
            ("revenue_amount", 200, "Event sent successfully."),
            ("export_video", 200, "Event sent successfully."),
        ]
    )
    events = sql(
        live,
        project,
        "SELECT event, distinct_id, timestamp, channel, os, app_version, device_id, ip, amount "
        "FROM events ORDER BY timestamp, event, distinct_id",
    )
    assert events == [
        ["open_app", device, iso(t1), "douyin", "iOS", "3.2.0", device, "1.2.3.4", None],
        ["$set", device, iso(t2), None, None, None, device, None, None],
        ["$identify", user, iso(t3), None, None, None, device, None, None],
        ["$set", user, iso(t3), None, None, None, None, None, None],  # second tags value
        ["export_video", user, iso(t4), None, None, None, device, None, None],
        ["revenue_amount", user, iso(t4 + dt.timedelta(seconds=1)), None, None, None, None,
         None, 19.8],
        ["export_video", user, iso(t4 + dt.timedelta(seconds=2)), None, None, None, None, None,
         None],
    ]  # fmt: skip
    props = orjson.loads(
        sql(live, project, "SELECT properties FROM events WHERE event = 'open_app'")[0][0]
    )
    assert props["template"] == "vlog" and props["n"] == 3 and props["os_version"] == "18.1"
    assert props["$os_version"] == "18.1" and props["$lib"] == "amplitude-python"
    assert props["platform"] == "iOS" and uuid.UUID(props["insert_id"])
    revenue = orjson.loads(
        sql(live, project, "SELECT properties FROM events WHERE event = 'revenue_amount'")[0][0]
    )
    assert revenue["$price"] == 9.9 and revenue["$quantity"] == 2
    assert revenue["$currency"] == "CNY" and revenue["$productId"] == "vip_month"

    ids = sql(live, project, "SELECT distinct_id, person_id FROM person_distinct_ids")
    assert {d for d, _ in ids} == {device, user}
    assert len({p for _, p in ids}) == 1
    persons = sql(live, project, "SELECT properties, is_identified FROM persons")
    assert len(persons) == 1 and persons[0][1] is True
    assert orjson.loads(persons[0][0]) == {
        "first_channel": "douyin",
        "plan": "pro",
        "exports": 5,
        "tags": ["vlog", "travel"],
        "badges": ["early"],
    }


def person_of(live: LiveServer, project: NewProject, distinct_id: str) -> dict[str, Any]:
    got = sql(
        live,
        project,
        "SELECT p.properties FROM persons p JOIN person_distinct_ids d ON d.person_id = p.id "
        f"WHERE d.distinct_id = '{distinct_id}'",
    )
    assert len(got) == 1, got
    return orjson.loads(got[0][0])


@pytest.mark.parametrize("path", ["/2/httpapi", "/batch"])
def test_sdk_identify_remove_post_insert_and_clear_all(
    live: LiveServer, project: NewProject, path: str
) -> None:
    results: list[tuple[str, int]] = []
    client = Amplitude(
        project.project.write_key,
        Config(
            server_url=f"{live.url}{path}",
            callback=lambda e, code, message: results.append((e.event_type, code)),
            flush_max_retries=2,
        ),
    )

    def send(identify: Identify, user: str, t: int, device: str | None = None) -> None:
        """One identify, flushed and acknowledged before the next (the SDK sends in parallel)."""
        client.identify(identify, EventOptions(user_id=user, device_id=device, time=t))
        for future in client.flush():
            if future is not None:
                future.result()

    t = ms(dt.datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC))
    user = "user-2002"
    send(Identify().set("tags", ["vlog", "travel", "vlog"]).set("flags", [1, True, "1"]), user, t)
    send(Identify().post_insert("tags", ["food", "vlog"]).set("plan", "pro"), user, t + 1)
    send(Identify().post_insert("tags", "diy").post_insert("flags", 1.5), user, t + 2)
    send(Identify().remove("tags", ["vlog", "nope"]).remove("flags", 1), user, t + 3)
    person = person_of(live, project, user)
    assert person["tags"] == ["travel", "food", "diy"]  # every "vlog" removed
    assert [(type(v).__name__, v) for v in person["flags"]] == [
        ("bool", True),
        ("str", "1"),
        ("float", 1.5),
    ]
    assert person["plan"] == "pro"

    # clear_all on a login: the device's person merges first, then the merged person is cleared
    device = "device-5e6f7a"
    client.track(BaseEvent("open_app", device_id=device, time=t + 4))
    send(Identify().set("device_model", "iPhone 15"), "", t + 5, device)
    send(Identify().clear_all(), user, t + 6, device)
    assert person_of(live, project, user) == {}
    assert person_of(live, project, device) == {}
    send(Identify().set_once("first_channel", "xhs"), user, t + 7)
    assert person_of(live, project, device) == {"first_channel": "xhs"}
    assert int(sql(live, project, "SELECT count(*) FROM persons")[0][0]) == 1
    got = sql(live, project, "SELECT distinct_id, person_id IS NOT NULL FROM events "
              "WHERE event = 'open_app'")  # fmt: skip
    assert got == [[device, True]]
    assert count(live, project, "event = '$delete_person'") == 1
    client.shutdown()
    assert results and all(code == 200 for _, code in results), results


def test_sdk_reports_refused_events_by_index(live: LiveServer, project: NewProject) -> None:
    """The SDK's own HTTP client and response processor read our 400 as Amplitude's."""
    events = [
        BaseEvent("ok", device_id="device-0001", insert_id=str(uuid.uuid4())),
        BaseEvent("short", user_id="u1"),
        BaseEvent("ok", device_id="device-0002", insert_id=str(uuid.uuid4())),
    ]
    payload = orjson.dumps(
        {"api_key": project.project.write_key, "events": [e.get_event_body() for e in events]}
    )
    res = HttpClient.post(f"{live.url}/2/httpapi", payload)
    assert res.status == HttpStatus.INVALID_REQUEST
    assert res.invalid_or_silenced_index() == {1}
    assert res.events_with_invalid_id_lengths == {"user_id": [1]}

    class Storage:
        def __init__(self) -> None:
            self.pushed: list[BaseEvent] = []

        def push(self, event: BaseEvent, delay: int = 0) -> tuple[bool, None]:
            self.pushed.append(event)
            return True, None

    failed: list[tuple[str, int]] = []
    storage = Storage()
    processor = ResponseProcessor()
    processor.setup(Config(callback=lambda e, c, m: failed.append((e.event_type, c))), storage)
    processor.process_response(res, events)
    assert failed == [("short", 400)]
    # the SDK resends the others: recognised by insert_id, stored once, answered 200
    assert [e.event_type for e in storage.pushed] == ["ok", "ok"]
    again = HttpClient.post(
        f"{live.url}/2/httpapi",
        orjson.dumps(
            {
                "api_key": project.project.write_key,
                "events": [e.get_event_body() for e in storage.pushed],
            }
        ),
    )
    assert again.status == HttpStatus.SUCCESS and again.body["events_ingested"] == 2
    assert count(live, project) == 2

    bad_key = HttpClient.post(
        f"{live.url}/2/httpapi", orjson.dumps({"api_key": "nope", "events": [ev()]})
    )
    with pytest.raises(InvalidAPIKeyError):
        processor.process_response(bad_key, events)

    unreadable = HttpClient.post(f"{live.url}/2/httpapi", b'{"api_key": "x", "events": [')
    failed.clear()
    processor.process_response(unreadable, events)
    assert [code for _, code in failed] == [400, 400, 400]  # reported, not retried


# -- raw HTTP: paths, encodings, answers ---------------------------------------------------------


def test_success_shape_paths_and_gzip(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    body = {"api_key": key, "events": [ev(device_id=f"device-{i:04}") for i in range(3)]}
    r = upload(live, body)
    assert r.status_code == 200
    out = r.json()
    assert out["code"] == 200 and out["events_ingested"] == 3
    assert (
        out["payload_size_bytes"] > 0
        and abs(out["server_upload_time"] - time.time() * 1000) < 60_000
    )
    assert upload(live, body, "/2/httpapi/").json()["events_ingested"] == 3
    assert upload(live, body, "/batch").json()["events_ingested"] == 3
    zipped = gzip.compress(orjson.dumps({**body, "options": {"min_id_length": 1}}))
    r = upload(
        live, zipped, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )
    assert r.json()["events_ingested"] == 3
    r = upload(live, zipped, "/batch", headers={"Content-Type": "application/json"})
    assert r.json()["events_ingested"] == 3
    assert count(live, project) == 15  # no insert_id and no time: each upload is new


def test_resend_is_stored_once(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    events = [
        ev(insert_id=str(uuid.uuid4()), time=1763800000000),
        ev(insert_id="order-77-paid", time=1763800000001),
        ev(time=1763800000002),  # no insert_id: recognised by its content and time
        ev(user_id="user-0042", time=1763800000003),  # + a device-to-user link, stored once
    ]
    for _ in range(3):
        r = upload(live, {"api_key": key, "events": events})
        assert r.json()["events_ingested"] == 4
    assert count(live, project) == 5
    assert count(live, project, "event = '$identify'") == 1


def test_ip_remote_and_explicit(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    events = [
        ev(device_id="device-remote", ip="$remote"),
        ev(device_id="device-given", ip="5.6.7.8"),
        ev(device_id="device-none"),
    ]
    upload(live, {"api_key": key, "events": events})
    got = sql(live, project, "SELECT distinct_id, ip FROM events ORDER BY distinct_id")
    assert got == [
        ["device-given", "5.6.7.8"],
        ["device-none", None],
        ["device-remote", "127.0.0.1"],
    ]


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "missing", "message"),
    [
        (b'{"api_key": "k", "events": [{"event_type"', "events", "Invalid JSON"),
        (b"", "api_key", "empty"),
        (b"[1, 2]", "api_key", "JSON object"),
        (b'{"events": []}', "api_key", "api_key"),
        (b'{"api_key": 5, "events": []}', "api_key", "api_key"),
        (b'{"api_key": "KEY"}', "events", "events"),
        (b'{"api_key": "KEY", "events": {"a": 1}}', "events", "must be a list"),
        (b'{"api_key": "KEY", "events": []}', "events", "empty"),
        (b'{"api_key": "KEY", "events": [{}], "options": []}', "options", "options"),
        (
            b'{"api_key": "KEY", "events": [{}], "options": {"min_id_length": 0}}',
            "options",
            "min_id",
        ),
    ],
)
def test_unreadable_uploads_are_400_with_missing_field(
    live: LiveServer, project: NewProject, body: bytes, missing: str, message: str
) -> None:
    body = body.replace(b"KEY", project.project.write_key.encode())
    r = upload(live, body)
    assert r.status_code == 400
    out = r.json()
    assert out["code"] == 400 and out["missing_field"] == missing and message in out["error"]
    assert count(live, project) == 0


def test_wrong_key_bad_gzip_encoding_and_size(live: LiveServer, project: NewProject) -> None:
    r = upload(live, {"api_key": "not-a-key", "events": [ev()]})
    assert r.status_code == 400
    assert r.json() == {"code": 400, "error": "Invalid API key: not-a-key"}
    good = gzip.compress(orjson.dumps({"api_key": project.project.write_key, "events": [ev()]}))
    r = upload(live, good[:-6], headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"] and r.json()["code"] == 400
    r = upload(live, b'{"api_key": "k", "events": []}', headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and r.json()["code"] == 415
    huge = {"api_key": project.project.write_key, "events": [ev(pad="x" * 1000)] * 300}
    r = upload(live, huge)
    assert r.status_code == 413 and r.json()["code"] == 413
    bomb = gzip.compress(b" " * (LIMIT * 4))
    r = upload(live, bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["code"] == 413
    assert count(live, project) == 0


def test_mixed_upload_stores_valid_events_and_lists_refused_ones(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    events = [
        ev(device_id="device-good-1", time=1763800000000),
        {"device_id": "device-0002"},  # no event_type
        ev(user_id="u1"),  # too short
        ev(time="yesterday"),
        ev(user_properties={"$prepend": {"tags": "x"}}),
        "not an object",
        ev(device_id=None),  # no id at all
        ev(user_id="undefined"),  # a placeholder, refused by the platform's rules
        ev(time=int(time.time() * 1000) + 5 * 86_400_000),  # days in the future
        ev(event_properties=["not", "an", "object"]),
        ev(device_id="device-good-2", price="9.9"),
        ev(device_id="device-good-3", insert_id=str(uuid.uuid4())),
        ev(device_id="0000"),  # shorter than a custom min_id_length allows
    ]
    r = upload(live, {"api_key": key, "events": events, "options": {"min_id_length": 5}})
    assert r.status_code == 400
    out = r.json()
    assert out["code"] == 400 and out["events_ingested"] == 2
    assert out["events_with_missing_fields"] == {"event_type": [1], "device_id": [6]}
    assert out["events_with_invalid_id_lengths"] == {"user_id": [2], "device_id": [12]}
    assert out["events_with_invalid_fields"] == {
        "time": [3, 8],
        "user_properties": [4],
        "event": [5],
        "user_id": [7],
        "event_properties": [9],
        "price": [10],
    }
    assert "11 of 13 events failed validation" in out["error"]
    assert [d["index"] for d in out["details"]] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert "$prepend" in out["details"][3]["message"]
    got = sql(live, project, "SELECT distinct_id FROM events ORDER BY 1")
    assert got == [["device-good-1"], ["device-good-3"]]


# -- pure mapping -------------------------------------------------------------------------------


def test_map_event_fields_and_platform_properties() -> None:
    [native] = amp_proto.map_event(
        {
            "event_type": "page_view",
            "device_id": "device-web-1",
            "time": 1700000000123,
            "platform": "Web",
            "os_name": "Chrome",
            "os_version": "120",
            "device_model": "Mac OS",
            "library": "amplitude-ts/2.1.0",
            "session_id": 1700000000000,
            "event_properties": {"path": "/pricing", "$os": "macOS 14"},
            "groups": {"company": "acme"},
            "android_app_set_id": "kept-too",
        },
        1,
        5,
        None,
    )
    assert native["event"] == "page_view" and native["distinct_id"] == "device-web-1"
    assert native["timestamp"] == "2023-11-14T22:13:20.123000+00:00"
    p = native["properties"]
    assert (p["$browser"], p["$browser_version"], p["$os"]) == ("Chrome", "120", "macOS 14")
    assert (p["$lib"], p["$lib_version"]) == ("amplitude-ts", "2.1.0")
    assert p["$session_id"] == 1700000000000 and p["$groups"] == {"company": "acme"}
    assert p["path"] == "/pricing" and p["android_app_set_id"] == "kept-too"
    assert p["platform"] == "Web" and "time" not in p and "event_type" not in p


def test_user_properties_operations() -> None:
    user_ops = amp_proto.user_operations(
        {
            "$set": {"a": 1},
            "$setOnce": {"b": 2},
            "$add": {"n": 3},
            "$append": {"tags": ["x", "y"]},
            "$postInsert": {"badges": "z"},
            "$remove": {"old": ["p", "q"]},
            "$unset": {"gone": "-"},
            "plain": "value",
        }
    )
    assert user_ops.ops == {
        "$set": {"a": 1, "plain": "value"},
        "$set_once": {"b": 2},
        "$increment": {"n": 3},
        "$union": {"badges": "z"},
        "$remove": {"old": ["p", "q"]},
        "$unset": ["gone"],
    }
    assert user_ops.appends == {"tags": ["x", "y"]} and not user_ops.clear_all
    assert amp_proto.user_operations({"$clearAll": "-"}).clear_all
    with pytest.raises(amp_proto.Bad, match=r"\$clearAll cannot be combined"):
        amp_proto.user_operations({"$clearAll": "-", "$set": {"a": 1}})
    for op in ("$prepend", "$preInsert"):
        with pytest.raises(amp_proto.Bad, match=r"\$"):
            amp_proto.user_operations({op: {"k": "v"}})
    assert amp_proto.spread_appends({"$append": {"tags": "w"}}, {"tags": ["x", "y"]}) == [
        {"$append": {"tags": "w"}},
        {"$append": {"tags": "x"}},
        {"$append": {"tags": "y"}},
    ]


def test_identify_without_user_is_not_a_login_and_amount_rules() -> None:
    [anon] = amp_proto.map_event(
        {"event_type": "$identify", "device_id": "device-1", "user_properties": {"$set": {"a": 1}}},
        1,
        5,
        None,
    )
    assert anon["event"] == "$set" and anon["properties"]["$set"] == {"a": 1}
    link, main = amp_proto.map_event(
        {"event_type": "buy", "user_id": "user-1", "device_id": "device-1", "revenue": 5},
        1,
        5,
        None,
    )
    assert link["event"] == "$identify" and link["properties"]["$anon_distinct_id"] == "device-1"
    assert link["uuid"] == amp_proto.link_uuid(1, "user-1", "device-1")
    assert main["properties"]["$amount"] == 5.0
    assert amp_proto.amount_of({"price": 2.5, "quantity": 4, "revenue": 1}, {}) == 10.0
    assert amp_proto.amount_of({}, {"$price": 3}) == 3.0
    assert amp_proto.amount_of({}, {}) is None
