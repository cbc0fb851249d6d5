"""Sensors Data (神策) endpoints: the official Python SDK end to end, raw HTTP, and the mapping."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import sensorsanalytics as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import LiveServer, rows, start_server, yunying_sql
from yunying.cli.remote import advertise, withdraw
from yunying.config import Settings
from yunying.errors import ConfigError
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project
from yunying.web.http import HTTPProblem
from yunying.web.sdk.sensors import (
    ProjectNames,
    RecordProblem,
    decode_payload,
    epoch_ms_to_iso,
    form_fields,
    in_networks,
    map_record,
    map_records,
    parse_networks,
    record_uuid,
    records_from_fields,
    sensors_field,
)

T0 = datetime(2025, 6, 1, 10, 0, 0, 123000, tzinfo=UTC)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def iso(dt: datetime) -> str:
    """How `yunying sql` shows a stored timestamp (naive UTC)."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat()


def sa_url(live: LiveServer, project: NewProject, path: str = "/sa", **extra: str) -> str:
    query = {"project": project.project.name, "token": project.project.write_key, **extra}
    return f"{live.url}{path}?{urllib.parse.urlencode(query)}"


def b64(records: Any, *, gz: bool = True) -> str:
    raw = orjson.dumps(records)
    return base64.b64encode(gzip.compress(raw) if gz else raw).decode()


def track(distinct_id: str, event: str = "view_item", at: datetime = T0, **props: Any) -> dict:
    return {
        "type": "track",
        "event": event,
        "distinct_id": distinct_id,
        "time": ms(at),
        "properties": {"$lib": "python", **props},
        "lib": {"$lib": "python", "$lib_version": "1.11.0"},
    }


def count(live: LiveServer, project: NewProject, where: str = "true") -> int:
    q = f"SELECT count(*) FROM events WHERE {where}"
    return int(rows(live.runtime, project.project.id, q)[0][0])


def person_props(live: LiveServer, distinct_id: str) -> dict[str, Any]:
    got = yunying_sql(
        live,
        "SELECT p.properties FROM persons p JOIN person_distinct_ids d ON d.person_id = p.id "
        f"WHERE d.distinct_id = '{distinct_id}'",
    )
    assert len(got) == 1, got
    return orjson.loads(got[0][0])  # type: ignore[no-any-return]


# -- the official SDK ---------------------------------------------------------------------------


def test_python_sdk_events_identity_and_profiles_arrive_exactly_once(
    live: LiveServer, project: NewProject
) -> None:
    url = sa_url(live, project)  # only host and key (token) differ from a Sensors server_url
    batch = sa.SensorsAnalytics(sa.BatchConsumer(url, max_size=50, request_timeout=5))
    single = sa.SensorsAnalytics(sa.DefaultConsumer(url, request_timeout=5))
    t = [T0 + timedelta(seconds=i) for i in range(10)]
    naive_local = datetime(2025, 6, 2, 8, 30, 0, 456000)  # the SDK reads naive times as local

    batch.register_super_properties({"$app_version": "3.2.1"})
    batch.track("anon-1", "ViewProduct", {"$time": ms(t[0]), "price": 12.5, "$os": "iOS"})
    batch.track("anon-1", "AddToCart", {"$time": naive_local, "sku": "A-1", "qty": 2})
    batch.profile_set("anon-1", {"device_model": "iPhone 15"})
    batch.track_signup("user-1", "anon-1", {"$time": ms(t[1]), "method": "wechat"})
    batch.profile_set("user-1", {"city": "Beijing", "plan": "pro"}, is_login_id=True)
    batch.profile_set_once("user-1", {"first_channel": "douyin"}, is_login_id=True)
    batch.profile_set_once("user-1", {"first_channel": "xhs"}, is_login_id=True)
    batch.profile_increment("user-1", {"videos": 2}, is_login_id=True)
    batch.profile_increment("user-1", {"videos": 3}, is_login_id=True)
    batch.profile_append("user-1", {"tags": ["a", "b"]}, is_login_id=True)
    batch.profile_append("user-1", {"tags": ["c"]}, is_login_id=True)
    batch.profile_unset("user-1", ["plan"], is_login_id=True)
    batch.track("user-1", "Purchase", {"$time": ms(t[2]), "price": 99.0}, is_login_id=True)
    # ID-Mapping 3.0: a mobile-only user first, then bound to the login id
    mobile = sa.SensorsAnalyticsIdentity(sa.SensorsAnalyticsIdentity.MOBILE, "13800000000")
    login = sa.SensorsAnalyticsIdentity(sa.SensorsAnalyticsIdentity.LOGIN_ID, "user-1")
    batch.track_by_id("OpenSms", {"$time": ms(t[3])}, mobile)
    batch.profile_set_by_id({"sms_opt_in": True}, mobile)
    batch.bind(login, mobile)
    batch.close()
    for _ in range(2):  # the same call twice: an SDK resend of the same record is stored once
        single.track("user-2", "Share", {"$time": ms(t[4]), "target": "moments"})
    single.track("user-2", "Share", {"$time": ms(t[5]), "target": "weibo"})
    single.close()

    got = yunying_sql(
        live,
        "SELECT event, distinct_id, timestamp, os, app_version, ip FROM events "
        "WHERE event NOT LIKE '$%' OR event = '$SignUp' ORDER BY timestamp, event",
    )
    assert got == [
        ["ViewProduct", "anon-1", iso(t[0]), "iOS", "3.2.1", "127.0.0.1"],
        ["$SignUp", "user-1", iso(t[1]), None, "3.2.1", "127.0.0.1"],
        ["Purchase", "user-1", iso(t[2]), None, "3.2.1", "127.0.0.1"],
        ["OpenSms", "$identity_mobile+13800000000", iso(t[3]), None, "3.2.1", "127.0.0.1"],
        ["Share", "user-2", iso(t[4]), None, None, "127.0.0.1"],
        ["Share", "user-2", iso(t[5]), None, None, "127.0.0.1"],
        ["AddToCart", "anon-1", iso(datetime.fromtimestamp(naive_local.timestamp(), UTC)), None,
         "3.2.1", "127.0.0.1"],
    ]  # fmt: skip
    props = yunying_sql(
        live,
        "SELECT properties->>'$.price', properties->>'$.$lib', properties->>'$.$lib_version', "
        "properties->>'$.qty', properties->>'$.method' FROM events "
        "WHERE event IN ('ViewProduct', 'AddToCart', '$SignUp') ORDER BY event",
    )
    assert props == [
        [None, "python", "1.11.0", None, "wechat"],
        [None, "python", "1.11.0", "2", None],
        ["12.5", "python", "1.11.0", None, None],
    ]
    ops = yunying_sql(live, "SELECT event, count(*) FROM events GROUP BY event ORDER BY event")
    assert ops == [
        ["$BindID", 1], ["$SignUp", 1], ["$append", 3], ["$identify", 2], ["$increment", 2],
        ["$set", 3], ["$set_once", 2], ["$unset", 1], ["AddToCart", 1], ["OpenSms", 1],
        ["Purchase", 1], ["Share", 2], ["ViewProduct", 1],
    ]  # fmt: skip

    # one person: the anonymous device, the login id and the bound mobile id
    ids = yunying_sql(
        live, "SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY distinct_id"
    )
    assert [d for d, _ in ids] == ["$identity_mobile+13800000000", "anon-1", "user-1", "user-2"]
    assert len({p for d, p in ids if d != "user-2"}) == 1
    assert yunying_sql(live, "SELECT count(*) FROM persons") == [[2]]
    assert person_props(live, "user-1") == {
        "device_model": "iPhone 15",
        "city": "Beijing",
        "first_channel": "douyin",
        "videos": 5,
        "tags": ["a", "b", "c"],
        "sms_opt_in": True,
    }
    merged = yunying_sql(
        live,
        "SELECT p.is_identified, count(*) FROM events e JOIN persons p ON p.id = e.person_id "
        "WHERE e.distinct_id = 'anon-1' GROUP BY 1",
    )
    assert merged == [[True, 3]]  # the pre-login events belong to the identified user


def test_python_sdk_raises_on_a_wrong_token_and_stores_nothing(
    live: LiveServer, project: NewProject
) -> None:
    url = f"{live.url}/sa?project={urllib.parse.quote(project.project.name)}&token=ywk_wrong"
    client = sa.SensorsAnalytics(sa.DefaultConsumer(url, request_timeout=5))
    with pytest.raises(sa.SensorsAnalyticsNetworkException, match="401"):
        client.track("d1", "ViewProduct", {"$time": ms(T0)})
    assert count(live, project) == 0


# -- raw HTTP -----------------------------------------------------------------------------------


def test_batch_form_with_gzip_is_stored(live: LiveServer, project: NewProject) -> None:
    records = [track(f"d{i}", at=T0 + timedelta(seconds=i), n=i) for i in range(5)]
    r = httpx.post(sa_url(live, project), data={"data_list": b64(records), "gzip": "1"})
    assert r.status_code == 200
    assert r.json() == {"code": 0, "accepted": 5, "rejected": 0, "duplicates": 0}
    assert count(live, project) == 5
    got = rows(live.runtime, project.project.id, "SELECT timestamp FROM events ORDER BY 1")
    assert [g[0] for g in got] == [iso(T0 + timedelta(seconds=i)) for i in range(5)]


def test_path_and_encoding_variants(live: LiveServer, project: NewProject) -> None:
    one = track("d-plain", event="plain")
    r = httpx.post(sa_url(live, project), data={"data": b64(one, gz=False), "gzip": "0"})
    assert r.status_code == 200, r.text
    # web SDK batch: no gzip field, URL-safe base64 left unpadded, extra crc/ext fields
    urlsafe = base64.urlsafe_b64encode(orjson.dumps([track("d-web", event="web")])).decode()
    r = httpx.post(
        sa_url(live, project), data={"data_list": urlsafe.rstrip("="), "crc": "123", "ext": "x"}
    )
    assert r.status_code == 200, r.text
    # beacon: GET /sa and GET /sa.gif with ?data=
    r = httpx.get(sa_url(live, project, data=b64(track("d-get", event="get"), gz=False)))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    r = httpx.get(sa_url(live, project, "/sa.gif", data=b64(track("d-gif", event="gif"))))
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert r.content.startswith(b"GIF89a")
    # the whole form gzipped at the HTTP level
    body = gzip.compress(
        urllib.parse.urlencode({"data_list": b64([track("d-ce", event="ce")])}).encode()
    )
    r = httpx.post(
        sa_url(live, project),
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    # a lax client that left '+' unescaped (form decoding turns it into a space)
    record = track("d-lax", event="lax", note="\u00ff\u00fe>>>")
    raw = base64.b64encode(orjson.dumps(record)).decode()
    assert "+" in raw
    r = httpx.post(
        sa_url(live, project),
        content=f"data={raw}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    got = rows(live.runtime, project.project.id, "SELECT event FROM events ORDER BY event")
    assert [g[0] for g in got] == ["ce", "get", "gif", "lax", "plain", "web"]


def test_browsers_may_read_the_answer(live: LiveServer, project: NewProject) -> None:
    origin = {"Origin": "https://shop.example.com"}
    r = httpx.options(
        sa_url(live, project), headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://shop.example.com"
    r = httpx.post(sa_url(live, project), data={"data_list": b64([track("d")])}, headers=origin)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example.com"


def test_resent_batch_is_stored_once(live: LiveServer, project: NewProject) -> None:
    records = [track("d1", n=1), track("d1", n=2), {**track("d2"), "_track_id": 17}]
    form = {"data_list": b64(records), "gzip": "1"}
    assert httpx.post(sa_url(live, project), data=form).json()["duplicates"] == 0
    # a retry of the same records; the SDKs restamp _flush_time on every send
    again = [{**r, "_flush_time": 99} for r in records]
    r = httpx.post(sa_url(live, project), data={"data_list": b64(again), "gzip": "1"})
    assert r.json() == {"code": 0, "accepted": 3, "rejected": 0, "duplicates": 3}
    assert count(live, project) == 3


MALFORMED: list[tuple[str, dict[str, str], str]] = [
    ("bad base64", {"data_list": "%%%not base64%%%", "gzip": "1"}, "not valid base64"),
    ("bad gzip", {"data_list": base64.b64encode(b"\x1f\x8bxxxx").decode()}, "not valid gzip"),
    (
        "truncated gzip",
        {"data_list": base64.b64encode(gzip.compress(b"[{}]" * 50)[:-12]).decode()},
        "truncated",
    ),
    ("truncated JSON", {"data_list": base64.b64encode(b'[{"type": "tr').decode()}, "not valid JSON"),
    ("JSON string", {"data_list": base64.b64encode(b'"track"').decode()}, "array of records"),
    ("empty list", {"data_list": base64.b64encode(b"[]").decode()}, "no records"),
    ("gzip=1 on plain text", {"data_list": base64.b64encode(b"hello").decode(), "gzip": "1"},
     "not gzip"),
    ("encrypted", {"data_list": base64.b64encode(b"{}").decode(), "gzip": "9"}, "encrypt"),
    ("unknown gzip", {"data_list": base64.b64encode(b"{}").decode(), "gzip": "2"}, "must be 0 or 1"),
    ("no data field", {"foo": "bar"}, "missing field"),
    ("empty data", {"data": ""}, "is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "form", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_are_refused_with_400(
    live: LiveServer, project: NewProject, name: str, form: dict[str, str], message: str
) -> None:
    r = httpx.post(sa_url(live, project), data=form)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == 400 and message in body["error"], body
    assert count(live, project) == 0


def test_non_form_bodies_are_refused(live: LiveServer, project: NewProject) -> None:
    for content in (b"\xff\xfe\x00binary", b"just text"):
        r = httpx.post(sa_url(live, project), content=content)
        assert r.status_code == 400 and "url-encoded form" in r.json()["error"]
    r = httpx.get(sa_url(live, project))
    assert r.status_code == 400 and "missing field" in r.json()["error"]


def test_mixed_batch_stores_the_good_records_and_names_the_bad_ones(
    live: LiveServer, project: NewProject
) -> None:
    records = [
        track("good-1"),
        {**track("x"), "type": "track_mystery"},
        {**track("x"), "time": "yesterday"},
        track("x", amount="12 yuan"),
        {**track("x"), "event": None},
        {**track("x"), "distinct_id": None},
        ["not", "an", "object"],
        {"type": "item_set", "item_type": "book", "item_id": "1", "time": ms(T0)},
        {"type": "track_signup", "event": "$SignUp", "distinct_id": "u", "time": ms(T0)},
        {"type": "profile_increment", "distinct_id": "u", "time": ms(T0), "properties": {"n": "x"}},
        {"type": "profile_append", "distinct_id": "u", "time": ms(T0), "properties": {"t": "x"}},
        {**track("x"), "time": ms(datetime.now(UTC) + timedelta(days=3))},
        {"type": "track_signup", "event": "$SignUp", "original_id": "a", "time": ms(T0)},
        track("good-2"),
    ]
    r = httpx.post(sa_url(live, project), data={"data_list": b64(records), "gzip": "1"})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 400 and body["accepted"] == 2 and body["rejected"] == 12
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "type"),
        (2, "time"),
        (3, "properties.amount"),
        (4, "event"),
        (5, "distinct_id"),
        (6, ""),
        (7, "type"),
        (8, "original_id"),
        (9, "properties.n"),
        (10, "properties.t"),
        (11, "time"),
        (12, "distinct_id"),  # once, though both the $identify and the $SignUp lack it
    ]
    assert "item catalogue" in body["errors"][6]["message"]
    got = rows(live.runtime, project.project.id, "SELECT distinct_id FROM events ORDER BY 1")
    assert got == [["good-1"], ["good-2"]]
    # resending the whole batch stores nothing new
    r = httpx.post(sa_url(live, project), data={"data_list": b64(records), "gzip": "1"})
    assert r.status_code == 400 and r.json()["duplicates"] == 2
    assert count(live, project) == 2


def test_token_rules(live: LiveServer, project: NewProject) -> None:
    form = {"data_list": b64([track("d")])}
    name = project.project.name
    r = httpx.post(f"{live.url}/sa?project={urllib.parse.quote(name)}", data=form)
    assert r.status_code == 401 and "missing token" in r.json()["error"]
    r = httpx.post(f"{live.url}/sa?token=ywk_nope", data=form)
    assert r.status_code == 401 and r.json() == {
        "code": 401,
        "error": "unknown token: use the project's write key",
        "field": "token",
    }
    other = create_project(live.runtime.state, "other")
    r = httpx.post(f"{live.url}/sa?project=other&token={project.project.write_key}", data=form)
    assert r.status_code == 401 and "not the write key of project 'other'" in r.json()["error"]
    # the token alone chooses its project
    r = httpx.post(f"{live.url}/sa?token={other.project.write_key}", data=form)
    assert r.status_code == 200
    assert count(live, project) == 0
    assert rows(live.runtime, other.project.id, "SELECT count(*) FROM events") == [[1]]


def test_dry_run_validates_without_storing(live: LiveServer, project: NewProject) -> None:
    form = {"data_list": b64([track("d"), {**track("d"), "time": None}])}
    r = httpx.post(sa_url(live, project), data=form, headers={"Dry-Run": "true"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "time"
    r = httpx.post(
        sa_url(live, project), data={"data_list": b64([track("d")])}, headers={"Dry-Run": "true"}
    )
    assert r.status_code == 200
    assert count(live, project) == 0


def test_profile_delete_empties_the_person_but_keeps_ids_and_events(
    live: LiveServer, project: NewProject
) -> None:
    url = sa_url(live, project)
    client = sa.SensorsAnalytics(sa.DefaultConsumer(url, request_timeout=5))
    client.track("anon-9", "ViewProduct", {"$time": ms(T0)})
    client.track_signup("u9", "anon-9", {"$time": ms(T0 + timedelta(seconds=1))})
    client.profile_set("u9", {"a": 1, "tags": ["x"]}, is_login_id=True)
    client.profile_set("other", {"b": 2})
    assert person_props(live, "anon-9") == {"a": 1, "tags": ["x"]}
    client.profile_delete("u9", is_login_id=True)
    assert person_props(live, "u9") == {}
    assert person_props(live, "anon-9") == {}
    assert person_props(live, "other") == {"b": 2}
    client.profile_set_once("u9", {"first": "douyin"}, is_login_id=True)
    client.close()
    assert person_props(live, "anon-9") == {"first": "douyin"}
    got = yunying_sql(
        live,
        "SELECT e.distinct_id FROM events e JOIN person_distinct_ids d "
        "ON d.person_id = e.person_id WHERE e.event = 'ViewProduct' AND d.distinct_id = 'u9'",
    )
    assert got == [["anon-9"]]
    assert count(live, project, "event = '$delete_person' AND distinct_id = 'u9'") == 1


def test_profile_delete_by_id_and_its_resend(live: LiveServer, project: NewProject) -> None:
    profile = {"type": "profile_set", "distinct_id": "u9", "time": ms(T0), "properties": {"a": 1}}
    delete = {"type": "profile_delete", "distinct_id": "u9", "time": ms(T0) + 1, "properties": {}}
    later = {**profile, "time": ms(T0) + 2, "properties": {"b": 2}}
    r = httpx.post(sa_url(live, project), data={"data_list": b64([profile, delete, later])})
    assert r.status_code == 200 and "warnings" not in r.json()
    assert person_props(live, "u9") == {"b": 2}
    # a resend of the same delete is the same record: stored once, nothing emptied again
    r = httpx.post(sa_url(live, project), data={"data_list": b64([delete])})
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    assert person_props(live, "u9") == {"b": 2}
    mobile = sa.SensorsAnalyticsIdentity(sa.SensorsAnalyticsIdentity.MOBILE, "13900000000")
    client = sa.SensorsAnalytics(sa.DefaultConsumer(sa_url(live, project), request_timeout=5))
    client.profile_set_by_id({"sms_opt_in": True}, mobile)
    assert person_props(live, "$identity_mobile+13900000000") == {"sms_opt_in": True}
    client.profile_delete_by_id(mobile)
    client.close()
    assert person_props(live, "$identity_mobile+13900000000") == {}


# -- servers with other settings ----------------------------------------------------------------


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server whose settings differ from the defaults."""
    started: list[tuple[LiveServer, Runtime]] = []

    def start(**changes: Any) -> LiveServer:
        runtime = Runtime.open(dataclasses.replace(settings, **changes))
        srv = start_server(runtime)
        advertise(runtime.settings, srv.url)
        started.append((srv, runtime))
        return srv

    yield start
    for srv, runtime in started:
        withdraw(runtime.settings)
        srv.server.should_exit = True
        srv.thread.join(10)
        runtime.close()


def test_allowed_networks_need_no_token(serve: Callable[..., LiveServer]) -> None:
    live = serve(sensors_allow_networks=("10.0.0.0/8", "127.0.0.0/8"))
    form = {"data_list": b64([track("d")])}
    only = create_project(live.runtime.state, "only")
    r = httpx.post(f"{live.url}/sa", data=form)  # no project named: the only one
    assert r.status_code == 200, r.text
    r = httpx.post(f"{live.url}/sa?project=nope", data=form)
    assert r.status_code == 400 and "no project named 'nope'" in r.json()["error"]
    second = create_project(live.runtime.state, "second")
    # the records' own project (the SDK's project_name) chooses when the URL names none
    named = {"data_list": b64([{**track("d2"), "project": "second"}])}
    assert httpx.post(f"{live.url}/sa", data=named).status_code == 200
    mixed = [{**track("a"), "project": "only"}, {**track("b"), "project": "second"}]
    r = httpx.post(f"{live.url}/sa", data={"data_list": b64(mixed)})
    assert r.status_code == 400 and "several projects" in r.json()["error"]
    assert rows(live.runtime, only.project.id, "SELECT count(*) FROM events") == [[1]]
    assert rows(live.runtime, second.project.id, "SELECT count(*) FROM events") == [[1]]


def test_project_lookup_without_a_name(runtime: Runtime) -> None:
    with pytest.raises(HTTPProblem) as exc:
        ProjectNames(runtime).get(None)
    assert exc.value.status == 400 and "no project yet" in str(exc.value)
    assert "?project=NAME" in str(exc.value)
    create_project(runtime.state, "a")
    create_project(runtime.state, "b")
    with pytest.raises(HTTPProblem, match="several projects"):
        ProjectNames(runtime).get(None)
    assert ProjectNames(runtime).get("b").name == "b"


def test_oversized_bodies_are_refused_with_413(serve: Callable[..., LiveServer]) -> None:
    live = serve(max_body_bytes=20_000)
    project = create_project(live.runtime.state, "p")
    url = f"{live.url}/sa?token={project.project.write_key}"
    big = [track(f"d{i}", filler="x" * 100) for i in range(200)]
    r = httpx.post(url, data={"data_list": b64(big, gz=False)})
    assert r.status_code == 413 and r.json()["code"] == 413
    bomb = base64.b64encode(gzip.compress(b"[" + b" " * 1_000_000 + b"]")).decode()
    r = httpx.post(url, data={"data_list": bomb})
    assert r.status_code == 413 and "data_list" in r.json()["error"]
    assert rows(live.runtime, project.project.id, "SELECT count(*) FROM events") == [[0]]


# -- the mapping, as plain functions ------------------------------------------------------------


def test_decode_payload_variants() -> None:
    records = [{"type": "track"}]
    raw = orjson.dumps(records)
    assert decode_payload(base64.b64encode(gzip.compress(raw)).decode(), "d", "1", 10**6) == records
    assert decode_payload(base64.b64encode(raw).decode(), "d", "0", 10**6) == records
    assert decode_payload(base64.b64encode(raw).decode(), "d", None, 10**6) == records
    with pytest.raises(HTTPProblem) as exc:
        decode_payload("@@@", "data_list", "1", 10**6)
    assert exc.value.status == 400 and exc.value.body["field"] == "data_list"


def test_records_from_fields_and_form_fields() -> None:
    one = base64.b64encode(b'{"type": "track"}').decode()
    assert records_from_fields({"data": one}, 10**6) == [{"type": "track"}]
    assert form_fields(b"data_list=abc&gzip=1", [("data", "q"), ("token", "t")]) == {
        "data_list": "abc",
        "gzip": "1",
    }
    assert form_fields(b"", [("data", "q"), ("token", "t")]) == {"data": "q"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1748772000123, "2025-06-01T10:00:00.123000+00:00"),
        (1748772000, "2025-06-01T10:00:00+00:00"),
        ("1748772000123", "2025-06-01T10:00:00.123000+00:00"),
        (1748772000123.5, "2025-06-01T10:00:00.123500+00:00"),
    ],
)
def test_epoch_ms_to_iso(value: Any, expected: str) -> None:
    assert epoch_ms_to_iso(value) == expected


@pytest.mark.parametrize("value", ["yesterday", True, None, -5, float("nan"), float("inf"), 1e15])
def test_epoch_ms_to_iso_refuses(value: Any) -> None:
    with pytest.raises(RecordProblem) as exc:
        epoch_ms_to_iso(value)
    assert exc.value.field == "time"


def test_track_keeps_properties_and_fills_platform_names() -> None:
    record = {
        "type": "track",
        "event": "$pageview",
        "distinct_id": 42,
        "time": 1748772000123,
        "_track_id": 123456,
        "_flush_time": 1748772009999,
        "anonymous_id": "cookie-1",
        "lib": {"$lib": "js", "$lib_version": "1.26.0", "$lib_method": "code"},
        "properties": {"$url": "https://a.cn/x?y=1", "$url_path": "/x", "$lib": "js"},
    }
    [event], warnings = map_record(record, 7)
    assert warnings == []
    assert event["event"] == "$pageview" and event["distinct_id"] == 42
    assert event["timestamp"] == "2025-06-01T10:00:00.123000+00:00"
    assert event["properties"] == {
        "$lib": "js",
        "$lib_version": "1.26.0",
        "$lib_method": "code",
        "$track_id": 123456,
        "$anonymous_id": "cookie-1",
        "$url": "https://a.cn/x?y=1",
        "$url_path": "/x",
        "$current_url": "https://a.cn/x?y=1",
        "$pathname": "/x",
    }
    assert event["uuid"] == record_uuid(7, record)
    assert event["uuid"] == record_uuid(7, {**record, "_flush_time": 1})  # resend → same id
    assert event["uuid"] != record_uuid(7, {**record, "_track_id": 9})  # another event
    assert event["uuid"] != record_uuid(8, record)  # another project


def test_signup_is_an_identify_plus_the_signup_event() -> None:
    record = {
        "type": "track_signup",
        "event": "$SignUp",
        "distinct_id": "user-1",
        "original_id": "anon-1",
        "time": 1748772000123,
        "properties": {"method": "sms"},
    }
    identify, signup = map_record(record, 1)[0]
    assert identify["event"] == "$identify" and identify["distinct_id"] == "user-1"
    assert identify["properties"] == {
        "$anon_distinct_id": "anon-1",
        "$sensors_type": "track_signup",
    }
    assert signup["event"] == "$SignUp" and signup["properties"]["method"] == "sms"
    assert identify["uuid"] != signup["uuid"]
    assert map_record(record, 1)[0] == [identify, signup]  # deterministic


def test_profile_records_become_person_operations() -> None:
    def one(kind: str, props: dict[str, Any]) -> list[dict[str, Any]]:
        record = {"type": kind, "distinct_id": "u", "time": 1748772000123, "properties": props}
        return map_record(record, 1)[0]

    [ev] = one("profile_set", {"a": 1, "$is_login_id": True})
    assert ev["event"] == "$set"
    assert ev["properties"] == {
        "$is_login_id": True,
        "$sensors_type": "profile_set",
        "$set": {"a": 1},
    }
    assert one("profile_set_once", {"a": 1})[0]["properties"]["$set_once"] == {"a": 1}
    assert one("profile_increment", {"n": 2})[0]["properties"]["$increment"] == {"n": 2}
    assert one("profile_unset", {"a": True, "b": True})[0]["properties"]["$unset"] == ["a", "b"]
    appends = one("profile_append", {"tags": ["x", "y"], "cats": ["c"]})
    assert [e["properties"]["$append"] for e in appends] == [
        {"tags": "x", "cats": "c"},
        {"tags": "y"},
    ]
    assert len({e["uuid"] for e in appends}) == 2
    assert "$append" not in one("profile_append", {"tags": []})[0]["properties"]


def test_bind_with_a_login_id_identifies_and_without_one_aliases() -> None:
    record = {
        "type": "track_id_bind",
        "event": "$BindID",
        "distinct_id": "user-1",
        "time": 1748772000123,
        "identities": {"$identity_login_id": "user-1", "$identity_mobile": "138"},
        "properties": {"$is_login_id": True},
    }
    identify, bind = map_record(record, 1)[0]
    assert (identify["event"], identify["properties"]["$anon_distinct_id"]) == (
        "$identify",
        "$identity_mobile+138",
    )
    assert bind["event"] == "$BindID" and bind["properties"]["$identities"] == record["identities"]
    no_login = {
        **record,
        "distinct_id": "device-9",
        "anonymous_id": "device-9",
        "identities": {"$identity_android_id": "device-9", "$identity_email": "a@b.cn"},
    }
    alias, _ = map_record(no_login, 1)[0]
    assert (
        alias["event"] == "$create_alias"
        and alias["properties"]["alias"] == "$identity_email+a@b.cn"
    )
    with pytest.raises(RecordProblem, match="two identities"):
        map_record({**record, "identities": {"$identity_login_id": "user-1"}}, 1)
    with pytest.raises(RecordProblem) as exc:
        map_record({**record, "identities": {"$identity_mobile": 138}}, 1)
    assert exc.value.field == "identities"


def test_unbind_is_an_event_with_a_warning_and_profile_delete_deletes() -> None:
    unbind = {
        "type": "track_id_unbind",
        "event": "$UnbindID",
        "distinct_id": "$identity_mobile+138",
        "time": 1748772000123,
        "identities": {"$identity_mobile": "138"},
    }
    [ev], warnings = map_record(unbind, 1)
    assert ev["event"] == "$UnbindID" and "no id was unlinked" in warnings[0]
    delete = {"type": "profile_delete", "distinct_id": "u", "time": 1748772000123}
    [ev], warnings = map_record(delete, 1)
    assert ev["event"] == "$delete_person" and warnings == []
    assert ev["properties"]["$sensors_type"] == "profile_delete"


def test_map_records_reports_errors_by_index() -> None:
    good = {"type": "track", "event": "e", "distinct_id": "d", "time": 1748772000123}
    mapped = map_records([good, {**good, "properties": [1]}, {**good, "lib": "x"}, good], 1)
    assert mapped.origin == [0, 3]
    assert mapped.errors == [
        {"index": 1, "field": "properties", "message": "must be an object"},
        {"index": 2, "field": "lib", "message": "must be an object"},
    ]


def test_native_field_names_are_translated_back() -> None:
    assert sensors_field("timestamp") == "time"
    assert sensors_field("properties.$increment.n") == "properties.n"
    assert sensors_field("properties.$set") == "properties"
    assert sensors_field("properties.amount") == "properties.amount"


def test_networks() -> None:
    nets = parse_networks(["10.0.0.0/8", "fd00::/8", " 192.168.1.7 "])
    assert in_networks("10.1.2.3", nets) and in_networks("::ffff:10.1.2.3", nets)
    assert in_networks("192.168.1.7", nets) and in_networks("fd00::1", nets)
    assert not in_networks("11.0.0.1", nets) and not in_networks(None, nets)
    assert not in_networks("not-an-ip", nets) and not in_networks("10.0.0.1", [])
    with pytest.raises(ConfigError, match="10.0.0.0/33"):
        parse_networks(["10.0.0.0/33"])


INTS = st.integers(-(2**63), 2**64 - 1)  # what orjson reads as integers from the wire
JSON = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["type", "event", "distinct_id", "original_id", "time", "properties", "lib", "identities"]
)
TYPES = st.sampled_from(
    ["track", "track_signup", "track_id_bind", "profile_append", "profile_unset"]
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.fixed_dictionaries({"type": TYPES, "time": INTS, "distinct_id": JSON}),
    extra=st.dictionaries(FIELDS, JSON, max_size=4),
)
def test_any_record_maps_or_is_reported(base: dict[str, Any], extra: dict[str, Any]) -> None:
    record = orjson.loads(orjson.dumps({**base, **extra}))  # as it arrives
    mapped = map_records([record, "junk"], 1)  # never raises: events or an error per record
    assert mapped.errors[-1]["index"] == 1
    assert bool(mapped.events) != any(e["index"] == 0 for e in mapped.errors)
    validate_batch(mapped.events, sdk=True)  # the native validator accepts their shape
