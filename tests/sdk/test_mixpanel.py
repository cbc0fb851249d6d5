"""Mixpanel's protocol: the real mixpanel-python SDK against a live server, raw HTTP, mapping."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mixpanel
import orjson
import pytest
import uvicorn

from tests.conftest import LiveServer, free_port, yunying_sql
from yunying.config import Settings, load_settings
from yunying.state import NewProject, create_project
from yunying.web import create_app
from yunying.web.sdk import mixpanel as mp_proto

LIMIT = 256 * 1024
UTC = dt.UTC


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A small body limit, so that the 413 answers are cheap to reach."""
    return load_settings(data_dir=tmp_path / "data", max_body_bytes=LIMIT)


def iso(t: dt.datetime) -> str:
    """How `yunying sql` shows a stored timestamp (naive UTC)."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat()


def sql(live: LiveServer, project: NewProject, query: str) -> list[list[Any]]:
    return yunying_sql(live, query, project.project.name)


def count(live: LiveServer, project: NewProject, where: str = "true") -> int:
    return int(sql(live, project, f"SELECT count(*) FROM events WHERE {where}")[0][0])


def form(records: Any, **params: Any) -> dict[str, Any]:
    return {"data": orjson.dumps(records).decode(), **params}


def b64(records: Any) -> str:
    return base64.b64encode(orjson.dumps(records)).decode()


def event(key: str, name: str = "open_app", did: str = "dev-1", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"token": key, "distinct_id": did, **props}}


# -- a TLS server, so that mixpanel-python needs nothing but api_host ----------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_host(live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``127.0.0.1:PORT`` of an HTTPS server on the live server's runtime, trusted by requests."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    config = uvicorn.Config(
        create_app(live.runtime),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",  # the live server owns the writer's lifetime
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "TLS test server did not start"
        time.sleep(0.02)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    yield f"127.0.0.1:{port}"
    # idle keep-alive TLS connections of the SDK's session would hold a graceful exit
    server.should_exit = server.force_exit = True
    thread.join(10)


# -- the official SDK ----------------------------------------------------------------------------


def test_mixpanel_python_sdk_end_to_end(
    live: LiveServer, project: NewProject, tls_host: str
) -> None:
    key = project.project.write_key
    # only the host and the token change; retry_limit=0 keeps a failing test fast
    mp = mixpanel.Mixpanel(key, consumer=mixpanel.Consumer(api_host=tls_host, retry_limit=0))
    buffered = mixpanel.BufferedConsumer(api_host=tls_host, retry_limit=0)
    mpb = mixpanel.Mixpanel(key, consumer=buffered)

    t1 = dt.datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
    t2 = dt.datetime(2026, 11, 20, 8, 5, 30, 250000, tzinfo=UTC)
    t3 = dt.datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
    old = dt.datetime(2024, 2, 29, 12, 0, 0, tzinfo=UTC)

    # anonymous device, before login
    mp.track(
        "dev-7f3a",
        "open_app",
        {"time": int(t1.timestamp()), "$os": "iOS", "channel": "douyin", "$device_id": "dev-7f3a"},
    )
    mp.track("dev-7f3a", "view_template", {"time": t2.timestamp(), "template": "vlog", "n": 3})
    mp.people_set_once("dev-7f3a", {"first_channel": "douyin"})
    # login: mixpanel-js style $identify, then an alias and a merge of other ids
    mp.track("user-1001", "$identify", {"$anon_distinct_id": "dev-7f3a", "time": t3.timestamp()})
    mp.track("user-1001", "$create_alias", {"alias": "wx-openid-9", "time": t3.timestamp()})
    mp.merge(None, "user-1001", "mail-zhang@example.com")
    # profile operations
    mp.people_set("user-1001", {"plan": "pro", "name": "张三", "temp": 1})
    mp.people_set_once("user-1001", {"first_channel": "xiaohongshu"})  # already set: ignored
    mp.people_increment("user-1001", {"exports": 2})
    mp.people_increment("user-1001", {"exports": 3})
    mp.people_append("user-1001", {"devices": "iPhone 15"})
    mp.people_union("user-1001", {"tags": ["vlog", "travel", "vlog"]})
    mp.people_unset("user-1001", ["temp"])
    # historical import (timestamp in seconds) and a buffered batch
    mp.import_data(None, "user-1001", "legacy_purchase", int(old.timestamp()), {"amount": 30})
    for i in range(3):
        mpb.track("user-1001", "export_video", {"time": int(t3.timestamp()) + 60 + i, "i": i})
    buffered.flush()

    events = sql(
        live,
        project,
        "SELECT event, distinct_id, timestamp, channel, os, amount FROM events "
        "WHERE event NOT IN ('$set') ORDER BY timestamp, event, distinct_id",
    )
    assert events[:4] == [
        ["legacy_purchase", "user-1001", iso(old), None, None, 30.0],
        ["open_app", "dev-7f3a", iso(t1), "douyin", "iOS", None],
        ["view_template", "dev-7f3a", iso(t2), None, None, None],
        ["$create_alias", "user-1001", iso(t3), None, None, None],
    ]
    assert events[4] == ["$identify", "user-1001", iso(t3), None, None, None]
    assert [e[0] for e in events[5:]] == ["export_video"] * 3 + ["$create_alias"]
    assert [e[2] for e in events[5:8]] == [iso(t3 + dt.timedelta(seconds=60 + i)) for i in range(3)]
    # every call stored exactly once: 9 events, 8 profile updates
    assert count(live, project) == 9 + 8
    props = orjson.loads(
        sql(live, project, "SELECT properties FROM events WHERE event = 'view_template'")[0][0]
    )
    assert props["template"] == "vlog" and props["n"] == 3
    assert props["$lib"] == "python" and props["$lib_version"] == mixpanel.__version__
    assert "token" not in props and "time" not in props

    # one person for every id, with the profile operations applied once each
    ids = sql(live, project, "SELECT distinct_id, person_id FROM person_distinct_ids")
    assert {d for d, _ in ids} == {
        "dev-7f3a",
        "user-1001",
        "wx-openid-9",
        "mail-zhang@example.com",
    }
    assert len({p for _, p in ids}) == 1
    assert count(live, project, "person_id IS NULL") == 0
    assert int(sql(live, project, "SELECT count(DISTINCT person_id) FROM events")[0][0]) == 1
    persons = sql(live, project, "SELECT properties, is_identified FROM persons")
    assert len(persons) == 1
    person = orjson.loads(persons[0][0])
    assert person == {
        "first_channel": "douyin",
        "plan": "pro",
        "name": "张三",
        "exports": 5,
        "devices": ["iPhone 15"],
        "tags": ["vlog", "travel"],
    }
    assert persons[0][1] is True


def typed(values: list[Any]) -> list[tuple[str, Any]]:
    """Values with their JSON types, so that ``1``, ``1.0`` and ``true`` stay apart."""
    return [(type(v).__name__, v) for v in values]


def person_of(live: LiveServer, project: NewProject, distinct_id: str) -> dict[str, Any]:
    got = sql(
        live,
        project,
        "SELECT p.properties FROM persons p JOIN person_distinct_ids d ON d.person_id = p.id "
        f"WHERE d.distinct_id = '{distinct_id}'",
    )
    assert len(got) == 1, got
    return orjson.loads(got[0][0])


def test_mixpanel_sdk_union_remove_and_delete(
    live: LiveServer, project: NewProject, tls_host: str
) -> None:
    key = project.project.write_key
    mp = mixpanel.Mixpanel(key, consumer=mixpanel.Consumer(api_host=tls_host, retry_limit=0))

    mp.people_set("u-7", {"tags": ["vlog"], "flags": [1, True, "1"], "plan": "pro"})
    mp.people_union("u-7", {"tags": ["travel", "vlog", "food", "travel"]})
    mp.people_union("u-7", {"tags": ["food", "diy"], "flags": [True, 1.5, "1"], "new": ["n"]})
    assert person_of(live, project, "u-7")["tags"] == ["vlog", "travel", "food", "diy"]
    mp.people_remove("u-7", {"tags": "travel"})
    mp.people_remove("u-7", {"flags": 1})  # the number 1 only: not true, not "1"
    mp.people_remove("u-7", {"plan": "pro"})  # not a list: nothing to remove from
    person = person_of(live, project, "u-7")
    assert person["tags"] == ["vlog", "food", "diy"]
    assert typed(person["flags"]) == [("bool", True), ("str", "1"), ("float", 1.5)]
    assert person["plan"] == "pro" and person["new"] == ["n"]

    # $delete: the profile's properties go; its ids and events stay
    mp.track("dev-8", "open_app", {"time": 1763800000})
    mp.track("u-8", "$identify", {"$anon_distinct_id": "dev-8", "time": 1763800001})
    mp.people_set("u-8", {"plan": "free", "city": "Hangzhou"})
    mp.people_delete("u-8")
    assert person_of(live, project, "u-8") == {}
    assert person_of(live, project, "dev-8") == {}
    mp.people_set_once("u-8", {"first_channel": "xhs"})
    assert person_of(live, project, "dev-8") == {"first_channel": "xhs"}
    persons = sql(
        live,
        project,
        "SELECT d.distinct_id, count(e.uuid) FROM person_distinct_ids d "
        "JOIN events e ON e.person_id = d.person_id "
        "WHERE d.distinct_id IN ('u-8', 'dev-8') AND e.event = 'open_app' "
        "GROUP BY d.distinct_id ORDER BY d.distinct_id",
    )
    assert persons == [["dev-8", 1], ["u-8", 1]]
    assert count(live, project, "event = '$delete_person' AND distinct_id = 'u-8'") == 1
    # the first person is untouched by the second one's deletion
    assert person_of(live, project, "u-7")["plan"] == "pro"


def test_sdk_errors_raise_mixpanel_exception(
    live: LiveServer, project: NewProject, tls_host: str
) -> None:
    consumer = mixpanel.Consumer(api_host=tls_host, retry_limit=0)
    with pytest.raises(mixpanel.MixpanelException, match=r"\$add\.n: increment must be"):
        mixpanel.Mixpanel(project.project.write_key, consumer=consumer).people_increment(
            "u-1", {"n": "lots"}
        )
    with pytest.raises(mixpanel.MixpanelException, match="unknown token"):
        mixpanel.Mixpanel("not-a-key", consumer=consumer).track("u-1", "e")
    # /track is shared with PostHog: a body too large to read is still a Mixpanel error
    # (``status`` 0 and ``error``), not a KeyError, and a 413 is not retried (5xx only)
    with pytest.raises(mixpanel.MixpanelException, match=f"limit of {LIMIT} bytes"):
        mixpanel.Mixpanel(project.project.write_key, consumer=consumer).track(
            "u-1", "e", {"pad": "x" * LIMIT}
        )
    assert count(live, project) == 0


# -- raw HTTP: paths, encodings, answers ---------------------------------------------------------


def test_track_form_plain_and_base64_and_get(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    r = httpx.post(f"{live.url}/track", data=form([event(key, did="d-1")], verbose=1))
    assert r.status_code == 200 and r.json() == {"status": 1, "error": None}
    r = httpx.post(f"{live.url}/track/", data={"data": b64(event(key, did="d-2"))})
    assert r.status_code == 200 and r.text == "1"
    r = httpx.get(f"{live.url}/track", params={"data": b64([event(key, did="d-3")]), "ip": 1})
    assert r.status_code == 200 and r.text == "1"
    urlsafe = base64.urlsafe_b64encode(orjson.dumps(event(key, did="d-4", s="~~~>>>"))).decode()
    r = httpx.post(f"{live.url}/track", data={"data": urlsafe.rstrip("=")})
    assert r.text == "1"
    # a '+' of base64 sent unescaped arrives as a space
    raw = b64(event(key, did="d-5", s=">>>>"))
    assert "+" in raw
    r = httpx.post(
        f"{live.url}/track",
        content=f"data={raw}&verbose=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.json() == {"status": 1, "error": None}
    got = sql(live, project, "SELECT distinct_id, ip FROM events ORDER BY distinct_id")
    assert got == [
        ["d-1", "127.0.0.1"],
        ["d-2", "127.0.0.1"],
        ["d-3", "127.0.0.1"],
        ["d-4", "127.0.0.1"],
        ["d-5", "127.0.0.1"],
    ]


def test_ip_parameter_and_jsonp(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    httpx.post(f"{live.url}/track", data=form(event(key, did="no-ip"), ip=0))
    httpx.post(f"{live.url}/track", data=form(event(key, did="own-ip", ip="8.8.4.4"), ip=0))
    r = httpx.get(
        f"{live.url}/track", params={"data": b64(event(key, did="cb")), "callback": "mp.cb_1"}
    )
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.text == "mp.cb_1(1);"
    got = sql(live, project, "SELECT distinct_id, ip FROM events ORDER BY distinct_id")
    assert got == [["cb", "127.0.0.1"], ["no-ip", None], ["own-ip", "8.8.4.4"]]


def test_gzip_form_body(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    body = gzip.compress(
        f"data={b64([event(key, did=f'g-{i}') for i in range(20)])}&verbose=1".encode()
    )
    r = httpx.post(
        f"{live.url}/track",
        content=body,
        headers={
            "Content-Encoding": "gzip",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.json() == {"status": 1, "error": None}
    assert count(live, project) == 20


def test_engage_paths_and_methods(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    update = {"$token": key, "$distinct_id": "p-1", "$set": {"plan": "free"}}
    r = httpx.get(f"{live.url}/engage", params={"data": b64(update), "verbose": 1})
    assert r.json() == {"status": 1, "error": None}
    update2 = {"$token": key, "$distinct_id": "p-1", "$add": {"n": 1.5}, "$time": 1763800000}
    r = httpx.post(f"{live.url}/engage/", data=form([update2], verbose=1))
    assert r.json() == {"status": 1, "error": None}
    person = sql(live, project, "SELECT properties FROM persons")
    assert orjson.loads(person[0][0]) == {"plan": "free", "n": 1.5}
    t = sql(
        live, project, "SELECT timestamp FROM events WHERE properties->>'$.$increment.n' = '1.5'"
    )
    assert t == [[iso(dt.datetime.fromtimestamp(1763800000, UTC))]]


def test_import_json_ndjson_and_auth(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    ms = 1700000000123
    records = [
        {"event": "imp", "properties": {"distinct_id": "i-1", "time": ms, "$insert_id": "a-1"}},
        {"event": "imp", "properties": {"distinct_id": "i-2", "time": 1700000000}},
    ]
    r = httpx.post(f"{live.url}/import", json=records, params={"strict": 1}, auth=(key, ""))
    assert r.status_code == 200
    assert r.json() == {"code": 200, "status": "OK", "num_records_imported": 2}
    nd = [{"event": "nd", "properties": {**r["properties"], "$insert_id": None}} for r in records]
    ndjson = b"\n".join(orjson.dumps(rec) for rec in nd) + b"\n"
    r = httpx.post(
        f"{live.url}/import/",
        content=ndjson,
        headers={"Content-Type": "application/x-ndjson"},
        auth=(project.secret_key, ""),
    )
    assert r.json()["num_records_imported"] == 2
    # mixpanel-python's legacy import: api_secret as Basic user, api_key in the form
    r = httpx.post(
        f"{live.url}/import",
        data={"data": orjson.dumps(records[:1]).decode(), "api_key": key, "verbose": 1},
        auth=("whatever-secret-mixpanel-had", ""),
    )
    assert r.json() == {"status": 1, "error": None}
    r = httpx.post(f"{live.url}/import", json=records, auth=("wrong-key-0123456789abc", ""))
    assert r.status_code == 401
    assert r.json()["code"] == 401 and r.json()["status"] == "Unauthorized"
    got = sql(live, project, "SELECT event, distinct_id, timestamp FROM events ORDER BY 1, 2")
    assert got == [
        ["imp", "i-1", "2023-11-14T22:13:20.123000"],  # milliseconds, by magnitude
        ["imp", "i-2", "2023-11-14T22:13:20"],
        ["nd", "i-1", "2023-11-14T22:13:20.123000"],
        ["nd", "i-2", "2023-11-14T22:13:20"],
    ]


def test_groups_become_groupidentify(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    update = {"$token": key, "$group_key": "company", "$group_id": "acme", "$set": {"seats": 9}}
    r = httpx.post(f"{live.url}/groups", data=form(update, verbose=1))
    assert r.json() == {"status": 1, "error": None}
    got = sql(live, project, "SELECT event, distinct_id, properties FROM events")
    assert got[0][:2] == ["$groupidentify", "$company_acme"]
    assert orjson.loads(got[0][2]) == {
        "$group_type": "company",
        "$group_key": "acme",
        "$group_set": {"seats": 9},
    }
    r = httpx.post(f"{live.url}/groups", data=form({**update, "$delete": ""}, verbose=1))
    assert r.status_code == 400 and "$delete on group profiles" in r.json()["error"]


# -- dedupe -------------------------------------------------------------------------------------


def test_resend_is_stored_once(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    records = [
        event(key, did="r-1", time=1763800000, **{"$insert_id": uuid.uuid4().hex}),
        event(key, did="r-2", time=1763800000, **{"$insert_id": "not-a-uuid-42"}),
        event(key, did="r-3", time=1763800000.5),  # no id: recognised by content and time
    ]
    for _ in range(3):
        r = httpx.post(f"{live.url}/track", data=form(records, verbose=1))
        assert r.json() == {"status": 1, "error": None}
    update = {"$token": key, "$distinct_id": "r-1", "$add": {"n": 1}, "$time": 1763800001.25}
    for _ in range(2):
        httpx.post(f"{live.url}/engage", data=form(update, verbose=1))
    assert count(live, project) == 4
    person = sql(
        live,
        project,
        "SELECT p.properties FROM persons p JOIN person_distinct_ids d ON d.person_id = p.id "
        "WHERE d.distinct_id = 'r-1'",
    )
    assert orjson.loads(person[0][0]) == {"n": 1}


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("data=%%%not-base64%%%&verbose=1", "neither JSON nor valid base64"),
        ("data=eyJldmVudCI6&verbose=1", "not of JSON"),  # base64 of a truncated object
        ('data={"event": "x", "prop&verbose=1', "not valid JSON"),
        ("verbose=1", "field 'data' is required"),
        ("data=&verbose=1", "field 'data' is empty"),
        ("data=[]&verbose=1", "empty array"),
        ("data=42&verbose=1", "base64 but not of JSON"),
        ('data="x"&verbose=1', "neither JSON nor valid base64"),
    ],
)
def test_unreadable_bodies_are_400(
    live: LiveServer, project: NewProject, body: str, message: str
) -> None:
    r = httpx.post(
        f"{live.url}/track",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert r.json()["status"] == 0 and message in r.json()["error"]
    assert count(live, project) == 0


def test_bad_gzip_and_oversized_bodies(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    good = gzip.compress(f"data={b64(event(key))}&verbose=1".encode())
    r = httpx.post(f"{live.url}/engage", content=good[:-8], headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["status"] == 0
    assert "gzip" in r.json()["error"]
    huge = f"data={b64([event(key, pad='x' * 1000)] * 300)}&verbose=1".encode()
    assert len(huge) > LIMIT
    r = httpx.post(f"{live.url}/engage", content=huge)
    assert r.status_code == 413 and r.json()["status"] == 0
    r = httpx.post(f"{live.url}/import", content=b"[" + b" " * LIMIT + b"]", auth=(key, ""))
    assert r.status_code == 413
    assert r.json()["code"] == 413 and "limit" in r.json()["error"]
    bomb = gzip.compress(b"data=" + b"A" * (LIMIT * 4))
    r = httpx.post(f"{live.url}/groups", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert count(live, project) == 0


def test_wrong_or_missing_token_is_401(live: LiveServer, project: NewProject) -> None:
    r = httpx.post(f"{live.url}/track", data=form(event("nope"), verbose=1))
    assert r.status_code == 401
    assert r.json()["status"] == 0 and "unknown token" in r.json()["error"]
    r = httpx.post(f"{live.url}/track", data=form({"event": "e", "properties": {}}))
    assert r.status_code == 401 and r.text == "0"
    r = httpx.post(f"{live.url}/engage", data=form({"$distinct_id": "x", "$set": {}}, verbose=1))
    assert r.status_code == 401 and "$token" in r.json()["error"]
    r = httpx.post(f"{live.url}/import", json=[{"event": "e", "properties": {}}])
    assert r.status_code == 401 and r.json()["status"] == "Unauthorized"
    assert count(live, project) == 0


def test_mixed_batch_stores_good_records_and_reports_bad_ones(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    other = create_project(live.runtime.state, "other").project.write_key
    records = [
        event(key, did="ok-1", time=1763800000),
        event(key, did="bad-time", time="yesterday"),
        {"event": "no-props"},
        event(key, did="ok-2", time=1763800001, **{"$insert_id": "ins-2"}),
        event(other, did="other-project"),
        "not an object",
        event(key, did="undefined"),
        {"event": 5, "properties": {"token": key, "distinct_id": "x"}},
        event(key, did="future", time=int(time.time()) + 5 * 86400),
        {"event": "$merge", "properties": {"token": key, "$distinct_ids": ["a"]}},
    ]
    r = httpx.post(f"{live.url}/track", data=form(records, verbose=1))
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 0 and body["num_records_imported"] == 2
    failed = {(f["index"], f["field"]) for f in body["failed_records"]}
    assert failed == {
        (1, "properties.time"),
        (2, "properties.token"),
        (4, "properties.token"),
        (5, ""),
        (6, "properties.distinct_id"),
        (7, "event"),
        (8, "properties.time"),
        (9, "properties.$distinct_ids"),
    }
    assert "8 of 10 records failed validation" in body["error"]
    # the same batch without verbose: a plain 0
    r = httpx.post(f"{live.url}/track", data=form(records))
    assert r.status_code == 400 and r.text == "0"
    assert sorted(sql(live, project, "SELECT distinct_id FROM events")) == [["ok-1"], ["ok-2"]]


def test_import_mixed_batch_has_strict_failed_records(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    records = [
        {"event": "a", "properties": {"distinct_id": "i-1", "time": 1700000000}},
        {"event": "b", "properties": {"distinct_id": "", "time": 1, "$insert_id": "x-1"}},
    ]
    r = httpx.post(f"{live.url}/import", json=records, auth=(key, ""))
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 400 and body["status"] == "Bad Request"
    assert body["num_records_imported"] == 1
    assert {(f["index"], f["field"], f.get("$insert_id")) for f in body["failed_records"]} == {
        (1, "properties.distinct_id", "x-1"),
        (1, "properties.time", "x-1"),
    }
    assert count(live, project) == 1


def test_engage_refuses_malformed_operations_but_keeps_the_rest(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    updates = [
        {"$token": key, "$distinct_id": "e-1", "$set": {"a": 1, "tags": ["x", "y"]}},
        {"$token": key, "$distinct_id": "e-1", "$remove": ["tags", "x"]},
        {"$token": key, "$distinct_id": "e-1", "$unset": "a"},
        {"$token": key, "$distinct_id": "e-1", "$add": {"n": "lots"}},
        {"$token": key, "$distinct_id": "e-1"},
        {"$token": key, "$distinct_id": "e-1", "$union": ["not", "an", "object"]},
        {"$token": key, "$distinct_id": "e-1", "$remove": {"tags": "x"}},
    ]
    r = httpx.post(f"{live.url}/engage", data=form(updates, verbose=1))
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 0 and body["num_records_imported"] == 2
    assert [(f["index"], f["field"]) for f in body["failed_records"]] == [
        (1, "$remove"),
        (2, "$unset"),
        (3, "$add.n"),
        (4, ""),
        (5, "$union"),
    ]
    assert "$remove must be an object" in body["failed_records"][0]["message"]
    assert "$unset must be a list of property names" in body["failed_records"][1]["message"]
    assert "no profile operation" in body["failed_records"][3]["message"]
    assert count(live, project) == 2
    [[props]] = sql(live, project, "SELECT properties FROM persons")
    assert orjson.loads(props) == {"a": 1, "tags": ["y"]}


def test_engage_json_body_remove_takes_a_list_value_as_one_element(
    live: LiveServer, project: NewProject
) -> None:
    """Mixpanel's ``$remove`` removes one value: a list value is one element, not several."""
    key = project.project.write_key
    updates = [
        {"$token": key, "$distinct_id": "e-2", "$set": {"pairs": [["a", "b"], "a", "b"]}},
        {"$token": key, "$distinct_id": "e-2", "$remove": {"pairs": ["a", "b"]}},
    ]
    r = httpx.post(f"{live.url}/engage", data=form(updates, verbose=1))
    assert r.status_code == 200 and r.json() == {"status": 1, "error": None}
    [[props]] = sql(live, project, "SELECT properties FROM persons")
    assert orjson.loads(props) == {"pairs": ["a", "b"]}


# -- pure mapping -------------------------------------------------------------------------------


def test_decode_data_variants() -> None:
    doc = {"event": "e", "properties": {"s": "é>?"}}
    raw = orjson.dumps(doc)
    assert mp_proto.decode_data(raw.decode()) == doc
    assert mp_proto.decode_data(base64.b64encode(raw).decode()) == doc
    assert mp_proto.decode_data(base64.b64encode(raw).decode().rstrip("=")) == doc
    assert mp_proto.decode_data(base64.urlsafe_b64encode(raw).decode()) == doc
    assert mp_proto.decode_data(base64.b64encode(raw).decode().replace("+", " ")) == doc


def test_epoch_to_iso_seconds_and_milliseconds() -> None:
    f = mp_proto.epoch_to_iso
    assert f(1700000000, "t") == "2023-11-14T22:13:20+00:00"
    assert f(1700000000123, "t") == "2023-11-14T22:13:20.123000+00:00"
    assert f(1700000000.5, "t") == "2023-11-14T22:13:20.500000+00:00"
    assert f("1700000000", "t") == "2023-11-14T22:13:20+00:00"
    assert f("2026-11-20T08:00:00", "t") == "2026-11-20T08:00:00"
    for bad in (True, None, {}, "soon", float("nan")):
        with pytest.raises(mp_proto.Bad):
            f(bad, "t")


def test_record_uuid_rules() -> None:
    u = uuid.uuid4()
    assert mp_proto.record_uuid(1, u.hex, None) == str(u)
    a = mp_proto.record_uuid(1, "insert-1", None)
    assert (
        a == mp_proto.record_uuid(1, "insert-1", None) != mp_proto.record_uuid(2, "insert-1", None)
    )
    c = {"event": "e", "time": 1}
    assert mp_proto.record_uuid(1, None, c) == mp_proto.record_uuid(1, None, dict(c))
    assert mp_proto.record_uuid(1, None, None) != mp_proto.record_uuid(1, None, None)


def test_map_engage_operations() -> None:
    record = {
        "$token": "k",
        "$distinct_id": "u",
        "$time": 1763800000,
        "$ip": "1.2.3.4",
        "$set": {"a": 1},
        "$add": {"n": 2},
        "$append": {"tags": "x"},
        "$union": {"tags": ["y", "z"], "other": "single"},
        "$remove": {"old": "w", "pairs": ["p", "q"]},
        "$unset": ["gone"],
    }
    [event] = mp_proto.map_engage(record, 7)
    assert event["event"] == "$set" and event["distinct_id"] == "u"
    assert event["properties"] == {
        "$ip": "1.2.3.4",
        "$set": {"a": 1},
        "$increment": {"n": 2},
        "$append": {"tags": "x"},
        "$union": {"tags": ["y", "z"], "other": "single"},
        "$remove": {"old": ["w"], "pairs": [["p", "q"]]},
        "$unset": ["gone"],
    }
    assert mp_proto.map_engage(dict(record), 7) == [event]  # a resend: the same uuid
    [delete] = mp_proto.map_engage({"$token": "k", "$distinct_id": "u", "$delete": ""}, 7)
    assert delete["event"] == "$delete_person" and delete["properties"] == {}


def test_map_track_identity_events() -> None:
    ident = mp_proto.map_track(
        {"event": "$identify", "properties": {"$identified_id": "u", "$anon_id": "d"}}, 1
    )[0]
    assert ident["distinct_id"] == "u" and ident["properties"]["$anon_distinct_id"] == "d"
    merge = mp_proto.map_track({"event": "$merge", "properties": {"$distinct_ids": ["a", "b"]}}, 1)[
        0
    ]
    assert (merge["event"], merge["distinct_id"], merge["properties"]["alias"]) == (
        "$create_alias",
        "a",
        "b",
    )
