"""The paths two protocols share (``/track``, ``/batch``): dispatch by shape, unreadable bodies.

Each unreadable-body answer is checked with the SDKs' own response handling (posthog-python's
``batch_post``, amplitude-analytics' ``HttpClient`` and ``ResponseProcessor``), so "permanent
error" means what those SDKs do with it, not what we think they do.
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from amplitude import BaseEvent, Config
from amplitude.http_client import HttpClient, HttpStatus
from amplitude.processor import ResponseProcessor
from posthog.request import APIError, batch_post

from tests.conftest import LiveServer, yunying_sql
from yunying.config import Settings, load_settings
from yunying.state import NewProject

LIMIT = 64 * 1024
SHARED = ["/track", "/track/", "/batch", "/batch/"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A small body limit, so that the 413 answers are cheap to reach."""
    return load_settings(data_dir=tmp_path / "data", max_body_bytes=LIMIT)


def sql(live: LiveServer, project: NewProject, query: str) -> list[list[Any]]:
    return yunying_sql(live, query, project.project.name)


def count(live: LiveServer, project: NewProject, where: str = "true") -> int:
    return int(sql(live, project, f"SELECT count(*) FROM events WHERE {where}")[0][0])


def mp_event(key: str, did: str, name: str = "open_app", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"token": key, "distinct_id": did, **props}}


def ph_event(name: str, did: str, **props: Any) -> dict[str, Any]:
    return {"event": name, "distinct_id": did, "uuid": str(uuid.uuid4()), "properties": props}


def amp_event(name: str, device: str, **fields: Any) -> dict[str, Any]:
    return {"event_type": name, "device_id": device, "insert_id": str(uuid.uuid4()), **fields}


# -- dispatch by shape --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/track", "/track/"])
def test_json_track_with_token_in_properties_is_mixpanel(
    live: LiveServer, project: NewProject, path: str
) -> None:
    key = project.project.write_key
    # Mixpanel's HTTP API: a JSON array of {event, properties: {token, distinct_id, time}}
    records = [
        mp_event(key, "mp-1", time=1763800000, **{"$insert_id": "ins-1"}),
        mp_event(key, "mp-2", time=1763800001.5),
    ]
    r = httpx.post(f"{live.url}{path}", json=records)
    assert r.status_code == 200 and r.text == "1"  # Mixpanel's plain answer
    r = httpx.post(f"{live.url}{path}", params={"verbose": 1}, json=records[0])
    assert r.status_code == 200 and r.json() == {"status": 1, "error": None}  # a resend
    got = sql(live, project, "SELECT distinct_id, timestamp, properties FROM events ORDER BY 1")
    assert [(d, ts) for d, ts, _ in got] == [
        ("mp-1", "2025-11-22T08:26:40"),
        ("mp-2", "2025-11-22T08:26:41.500000"),
    ]
    assert all("token" not in orjson.loads(p) for _, _, p in got)  # the key is not a property
    # Mixpanel's errors, per record, in Mixpanel's verbose shape
    bad = [mp_event(key, "mp-3"), mp_event("not-this-projects-key", "mp-4")]
    r = httpx.post(f"{live.url}{path}", params={"verbose": 1}, json=bad)
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 0 and body["num_records_imported"] == 1
    assert [(f["index"], f["field"]) for f in body["failed_records"]] == [(1, "properties.token")]
    assert count(live, project) == 3


@pytest.mark.parametrize("path", ["/track", "/track/"])
def test_json_track_without_mixpanel_shape_is_posthog(
    live: LiveServer, project: NewProject, path: str
) -> None:
    key = project.project.write_key
    # posthog-js shape: top-level uuid and timestamp beside event/properties.token
    js = {
        "event": "js_event",
        "uuid": str(uuid.uuid4()),
        "timestamp": "2026-11-22T01:02:03.456Z",
        "properties": {"token": key, "distinct_id": "ph-1"},
    }
    r = httpx.post(f"{live.url}{path}", json=[js])
    assert r.status_code == 200 and r.json() == {"status": 1}  # PostHog's answer
    r = httpx.post(f"{live.url}{path}", json={"api_key": key, **ph_event("py_event", "ph-2")})
    assert r.status_code == 200 and r.json() == {"status": 1}
    got = sql(live, project, "SELECT event, distinct_id, timestamp FROM events ORDER BY 1")
    assert got[0] == ["js_event", "ph-1", "2026-11-22T01:02:03.456000"]
    assert got[1][:2] == ["py_event", "ph-2"]


def test_batch_is_told_apart_by_top_level_keys_not_by_substrings(
    live: LiveServer, project: NewProject
) -> None:
    key = project.project.write_key
    # Amplitude, with the word "batch" in its first bytes (the old sniffing sent it to PostHog)
    amp = {
        "api_key": key,
        "events": [amp_event("upload", "device-0001", event_properties={"batch": "b-7"})],
    }
    r = httpx.post(f"{live.url}/batch", json=amp)
    assert r.status_code == 200 and r.json()["code"] == 200
    assert r.json()["events_ingested"] == 1
    # PostHog, with "events" in its first bytes and no "batch" before them
    ph = {
        "api_key": key,
        "sent_at": None,
        "batch": [ph_event("export", "ph-1", events=3)],
    }
    body = orjson.dumps({"events_note": '"events"', **ph})
    r = httpx.post(f"{live.url}/batch/", content=body)
    assert r.status_code == 200 and r.json() == {"status": 1}
    got = sql(live, project, "SELECT event, distinct_id FROM events ORDER BY 1")
    assert got == [["export", "ph-1"], ["upload", "device-0001"]]
    # Amplitude's own errors on the shared path: Amplitude's shape
    r = httpx.post(f"{live.url}/batch", json={"api_key": key, "events": []})
    assert r.status_code == 400
    assert r.json() == {"code": 400, "error": "Field 'events' is empty", "missing_field": "events"}
    r = httpx.post(f"{live.url}/batch", json={"events": [amp_event("e", "device-0002")]})
    assert r.status_code == 400 and r.json()["missing_field"] == "api_key"
    assert count(live, project) == 2


# -- unreadable bodies --------------------------------------------------------------------------


def shared_error(r: httpx.Response, status: int, words: str) -> dict[str, Any]:
    """The answer to an unreadable body: every SDK's error fields at once."""
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["error"] and body["detail"] == body["error"]
    assert body["status"] == 0 and body["code"] == status
    assert ("missing_field" in body) is (status != 413)
    return body


@pytest.mark.parametrize("path", SHARED)
def test_unreadable_bodies_name_the_problem(
    live: LiveServer, project: NewProject, path: str
) -> None:
    key = project.project.write_key
    good = orjson.dumps({"api_key": key, "batch": [ph_event("e", "d-1")]})
    zipped = gzip.compress(good)
    r = httpx.post(f"{live.url}{path}", content=zipped[:-8], headers={"Content-Encoding": "gzip"})
    shared_error(r, 400, "gzip")
    r = httpx.post(f"{live.url}{path}", content=b"\x1f\x8bnot gzip at all")
    shared_error(r, 400, "not valid gzip")
    r = httpx.post(f"{live.url}{path}", content=good, headers={"Content-Encoding": "br"})
    shared_error(r, 415, "'br' is not supported")
    r = httpx.post(f"{live.url}{path}", content=good[:-5])
    shared_error(r, 400, "not valid JSON")
    r = httpx.post(f"{live.url}{path}", content=b"[" + b" " * LIMIT + b"]")
    shared_error(r, 413, f"larger than the limit of {LIMIT} bytes")
    bomb = gzip.compress(b"[" + b" " * (LIMIT * 4) + b"]")
    r = httpx.post(f"{live.url}{path}", content=bomb, headers={"Content-Encoding": "gzip"})
    shared_error(r, 413, "decompressed body is larger")
    r = httpx.post(
        f"{live.url}{path}", content=zipped[:-8], headers={"Origin": "https://app.example"}
    )
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.status_code == 400
    assert count(live, project) == 0


@pytest.mark.parametrize("path", ["/batch/", "/track/"])
def test_posthog_sdk_takes_unreadable_body_answers_as_final(
    live: LiveServer, project: NewProject, path: str
) -> None:
    """posthog-python's batch_post raises APIError(status, detail); its consumer retries only
    5xx, 408 and 429 (consumer.py ``is_retryable``)."""
    key = project.project.write_key
    big = [ph_event("e", "d-1", pad="x" * 1000) for _ in range(LIMIT // 1000 + 10)]
    with pytest.raises(APIError) as exc:
        batch_post(key, live.url, gzip=False, path=path, batch=big)
    assert exc.value.status == 413 and f"limit of {LIMIT} bytes" in exc.value.message
    with pytest.raises(APIError) as exc:  # gzipped: small on the wire, over the limit unzipped
        batch_post(key, live.url, gzip=True, path=path, batch=big)
    assert exc.value.status == 413 and "decompressed body is larger" in exc.value.message
    batch_post(key, live.url, gzip=True, path=path, batch=big[:3])  # and a good one goes in
    assert count(live, project) == 3


class Storage:
    """Where amplitude-analytics' ResponseProcessor puts the events it will resend."""

    def __init__(self) -> None:
        self.pushed: list[BaseEvent] = []

    def push(self, event: BaseEvent, delay: int = 0) -> tuple[bool, None]:
        self.pushed.append(event)
        return True, None


def sdk_outcome(res: Any, events: list[BaseEvent]) -> tuple[list[tuple[str, int]], list[BaseEvent]]:
    """What amplitude-analytics does with an answer: (failed events and codes, events resent)."""
    failed: list[tuple[str, int]] = []
    storage = Storage()
    processor = ResponseProcessor()
    processor.setup(Config(callback=lambda e, c, m: failed.append((e.event_type, c))), storage)
    processor.process_response(res, events)
    return failed, storage.pushed


def test_amplitude_sdk_takes_unreadable_batch_answers_as_final(
    live: LiveServer, project: NewProject
) -> None:
    """amplitude-analytics fails the events of a 400 with ``missing_field`` instead of resending
    them; without it (the old ``{"error"}`` answer) it would resend every event."""
    key = project.project.write_key
    events = [BaseEvent("e", device_id=f"device-{i:04}") for i in range(2)]
    good = orjson.dumps({"api_key": key, "events": [e.get_event_body() for e in events]})
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    for payload, hdrs, code in [
        (gzip.compress(good)[:-8], headers, 400),
        (good[:-3], None, 400),
        (good, {**headers, "Content-Encoding": "br"}, 415),
    ]:
        res = HttpClient.post(f"{live.url}/batch", payload, hdrs)
        assert res.status == HttpStatus.INVALID_REQUEST and res.code == code, res.body
        assert res.missing_field == "events"
        assert sdk_outcome(res, events) == ([("e", code), ("e", code)], [])
    # 413: the SDK splits a batch and retries; one event alone is reported as failed
    big = BaseEvent("e", device_id="device-0009")
    body = orjson.dumps({"api_key": key, "events": [big.get_event_body()]}) + b" " * LIMIT
    res = HttpClient.post(f"{live.url}/batch", body)
    assert res.status == HttpStatus.PAYLOAD_TOO_LARGE and "limit" in res.error
    assert sdk_outcome(res, [big]) == ([("e", 413)], [])
    assert count(live, project) == 0
