"""POST /v1/events over a real loopback server: statuses, bodies, durability contract, dedupe."""

from __future__ import annotations

import gzip
import uuid

import httpx
import orjson

from tests.conftest import LiveServer, rows
from yunying.state import NewProject, create_project


def count(live: LiveServer, project_id: int, where: str = "true") -> int:
    return int(rows(live.runtime, project_id, f"SELECT count(*) FROM events WHERE {where}")[0][0])


def test_one_event_is_stored_and_counted(live: LiveServer, project: NewProject) -> None:
    r = live.post_events(project.project.write_key, {"event": "app_install", "distinct_id": "d1"})
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    assert count(live, project.project.id) == 1


def test_batch_is_stored_with_properties_and_columns(live: LiveServer, project: NewProject) -> None:
    u = str(uuid.uuid4())
    batch = [
        {
            "event": "sign_up",
            "distinct_id": "u1",
            "uuid": u,
            "timestamp": "2026-11-20T10:00:00+08:00",
            "properties": {"channel": "zhihu", "$os": "Android", "amount": 12.5, "tags": ["a"]},
        },
        {"event": "edit_video", "distinct_id": "u1"},
    ]
    r = live.post_events(project.project.write_key, {"batch": batch})
    assert r.status_code == 200 and r.json()["accepted"] == 2
    got = rows(
        live.runtime,
        project.project.id,
        f"SELECT event, timestamp, channel, os, amount, properties->>'$.tags[0]', ip FROM events WHERE uuid = '{u}'",
    )
    assert got == [["sign_up", "2026-11-20T02:00:00", "zhihu", "Android", 12.5, "a", "127.0.0.1"]]


def test_gzip_bodies_are_accepted(live: LiveServer, project: NewProject) -> None:
    body = gzip.compress(
        orjson.dumps({"batch": [{"event": "e", "distinct_id": f"d{i}"} for i in range(50)]})
    )
    r = live.post_events(project.project.write_key, body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 50
    # also recognised by its magic bytes when the header is missing
    r = live.post_events(project.project.write_key, body)
    assert r.status_code == 200 and r.json()["accepted"] == 50


def test_resent_uuid_is_stored_once(live: LiveServer, project: NewProject) -> None:
    ev = {"event": "export_video", "distinct_id": "d", "uuid": str(uuid.uuid4())}
    first = live.post_events(project.project.write_key, {"batch": [ev, ev]})
    again = live.post_events(project.project.write_key, ev)
    assert first.json() == {"accepted": 2, "duplicates": 1, "rejected": 0}
    assert again.json() == {"accepted": 1, "duplicates": 1, "rejected": 0}
    assert count(live, project.project.id) == 1


def test_same_uuid_in_two_projects_is_two_events(live: LiveServer, project: NewProject) -> None:
    other = create_project(live.runtime.state, "other")
    ev = {"event": "e", "distinct_id": "d", "uuid": str(uuid.uuid4())}
    assert live.post_events(project.project.write_key, ev).json()["duplicates"] == 0
    assert live.post_events(other.project.write_key, ev).json()["duplicates"] == 0
    assert count(live, project.project.id) == 1 and count(live, other.project.id) == 1


def test_mixed_batch_stores_good_events_and_answers_400_with_each_bad_one(
    live: LiveServer, project: NewProject
) -> None:
    batch = [
        {"event": "ok1", "distinct_id": "a"},
        {"event": "", "distinct_id": "b"},
        {"event": "ok2", "distinct_id": "c", "properties": {"amount": "free"}},
        {"event": "ok3", "distinct_id": "d"},
    ]
    r = live.post_events(project.project.write_key, {"batch": batch})
    assert r.status_code == 400
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert {(e["index"], e["field"]) for e in body["errors"]} == {
        (1, "event"),
        (2, "properties.amount"),
    }
    assert sorted(
        x[0] for x in rows(live.runtime, project.project.id, "SELECT event FROM events")
    ) == ["ok1", "ok3"]


def test_missing_or_unknown_key_is_401(live: LiveServer, project: NewProject) -> None:
    r = httpx.post(f"{live.url}/v1/events", json={"event": "e", "distinct_id": "d"})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    r = live.post_events("ywk_nope", {"event": "e", "distinct_id": "d"})
    assert r.status_code == 401 and "unknown write key" in r.json()["error"]
    r = live.post_events(project.secret_key, {"event": "e", "distinct_id": "d"})
    assert r.status_code == 401
    assert count(live, project.project.id) == 0


def test_body_over_the_limit_is_413(live: LiveServer, project: NewProject) -> None:
    limit = live.runtime.settings.max_body_bytes
    big = {"event": "e", "distinct_id": "d", "properties": {"blob": "x" * (limit + 10)}}
    r = live.post_events(project.project.write_key, orjson.dumps(big))
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_gzip_bomb_is_413_not_a_crash(live: LiveServer, project: NewProject) -> None:
    limit = live.runtime.settings.max_body_bytes
    payload = b'{"batch": [' + b" " * (limit + 100) + b"]}"
    r = live.post_events(
        project.project.write_key, gzip.compress(payload), headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 413 and "decompressed" in r.json()["error"]


def test_chunked_body_over_the_limit_is_413(live: LiveServer, project: NewProject) -> None:
    limit = live.runtime.settings.max_body_bytes

    def chunks():  # no Content-Length: the server must count as it reads
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    r = httpx.post(
        f"{live.url}/v1/events",
        content=chunks(),
        headers={"Authorization": f"Bearer {project.project.write_key}"},
    )
    assert r.status_code == 413


def test_malformed_bodies_are_400_with_a_message(live: LiveServer, project: NewProject) -> None:
    key = project.project.write_key
    cases = {
        b"": "empty body",
        b"{not json": "not valid JSON",
        b"[1, 2]": "one event object",
        b'{"batch": {}}': "'batch' must be a list",
        b'{"batch": []}': "'batch' is empty",
        b"\x1f\x8b\x08\x00garbage": "gzip",
        gzip.compress(b'{"event": "e", "distinct_id": "d"}')[:-6]: "truncated",
    }
    for body, fragment in cases.items():
        r = live.post_events(key, body)
        assert r.status_code == 400, (body, r.text)
        assert fragment in r.json()["error"], (body, r.json())
    r = live.post_events(
        key, b'{"event": "e", "distinct_id": "d"}', headers={"Content-Encoding": "br"}
    )
    assert r.status_code == 415
    assert count(live, project.project.id) == 0


def test_health_reports_both_engines(live: LiveServer) -> None:
    r = httpx.get(f"{live.url}/health")
    assert r.status_code == 200
    assert r.json()["checks"] == {"state": "ok", "events": "ok"}


def test_sql_api_needs_the_projects_secret_key(live: LiveServer, project: NewProject) -> None:
    other = create_project(live.runtime.state, "other")
    live.post_events(project.project.write_key, {"event": "e", "distinct_id": "d"})
    r = live.sql(None, "SELECT count(*) AS n FROM events", project.secret_key)
    assert r.status_code == 200 and r.json() == {"columns": ["n"], "rows": [[1]]}
    assert live.sql(None, "SELECT count(*) FROM events", other.secret_key).json()["rows"] == [[0]]
    assert live.sql(project.project.name, "SELECT 1", other.secret_key).status_code == 403
    assert live.sql(None, "SELECT 1", project.project.write_key).status_code == 401
    bad = live.sql(None, "DROP TABLE events", project.secret_key)
    assert bad.status_code == 400 and "only queries" in bad.json()["error"]
    bad = live.sql(None, "SELECT nope FROM events", project.secret_key)
    assert bad.status_code == 400 and "nope" in bad.json()["error"]
