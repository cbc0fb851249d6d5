"""Random and mutated payloads at every ingestion endpoint: never a 5xx, and valid events in a
mixed batch are never lost (hypothesis)."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LiveServer, rows
from yunying.state import NewProject

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NOW_MS = 1_795_000_000_000  # 2026-11-18


@dataclass
class Protocol:
    """How to wrap events for one wire protocol and post them."""

    name: str
    path: str
    good: Callable[
        [str, int], dict[str, Any]
    ]  # (marker, n) -> one valid event in the protocol's shape
    bad: list[dict[str, Any]]  # invalid events that must be reported, not stored
    build: Callable[[LiveServer, NewProject, list[dict[str, Any]]], httpx.Request]

    def send(self, live: LiveServer, p: NewProject, events: list[dict[str, Any]]) -> httpx.Response:
        with httpx.Client() as client:
            return client.send(self.build(live, p, events))


def _auth(p: NewProject) -> dict[str, str]:
    return {"Authorization": f"Bearer {p.project.write_key}"}


def _native_build(live: LiveServer, p: NewProject, events: list[dict[str, Any]]) -> httpx.Request:
    return httpx.Request("POST", f"{live.url}/v1/events", json={"batch": events}, headers=_auth(p))


def _posthog_build(live: LiveServer, p: NewProject, events: list[dict[str, Any]]) -> httpx.Request:
    return httpx.Request(
        "POST", f"{live.url}/batch/", json={"api_key": p.project.write_key, "batch": events}
    )


def _segment_build(live: LiveServer, p: NewProject, events: list[dict[str, Any]]) -> httpx.Request:
    token = base64.b64encode(f"{p.project.write_key}:".encode()).decode()
    return httpx.Request(
        "POST",
        f"{live.url}/v1/batch",
        json={"batch": events},
        headers={"Authorization": f"Basic {token}"},
    )


def _mixpanel_build(live: LiveServer, p: NewProject, events: list[dict[str, Any]]) -> httpx.Request:
    for e in events:
        if isinstance(e.get("properties"), dict):
            e["properties"].setdefault("token", p.project.write_key)
    data = base64.b64encode(json.dumps(events).encode()).decode()
    return httpx.Request("POST", f"{live.url}/track?verbose=1", data={"data": data})


def _amplitude_build(
    live: LiveServer, p: NewProject, events: list[dict[str, Any]]
) -> httpx.Request:
    return httpx.Request(
        "POST", f"{live.url}/2/httpapi", json={"api_key": p.project.write_key, "events": events}
    )


def _sensors_build(live: LiveServer, p: NewProject, events: list[dict[str, Any]]) -> httpx.Request:
    data = base64.b64encode(gzip.compress(json.dumps(events).encode())).decode()
    return httpx.Request(
        "POST",
        f"{live.url}/sa",
        params={"project": p.project.name, "token": p.project.write_key},
        data={"data_list": data, "gzip": "1"},
    )


PROTOCOLS = [
    Protocol(
        "native",
        "/v1/events",
        lambda m, n: {
            "event": "fuzz",
            "distinct_id": f"d{n}",
            "uuid": str(uuid.uuid4()),
            "properties": {"marker": m},
        },
        [
            {"event": "", "distinct_id": "x"},
            {"event": "fuzz"},
            {"event": "fuzz", "distinct_id": "x", "properties": 3},
        ],
        _native_build,
    ),
    Protocol(
        "posthog",
        "/batch/",
        lambda m, n: {
            "event": "fuzz",
            "distinct_id": f"d{n}",
            "uuid": str(uuid.uuid4()),
            "properties": {"marker": m},
        },
        [
            {"event": "fuzz"},
            {"distinct_id": "x"},
            {"event": "fuzz", "distinct_id": "x", "properties": 3},
        ],
        _posthog_build,
    ),
    Protocol(
        "segment",
        "/v1/batch",
        lambda m, n: {
            "type": "track",
            "event": "fuzz",
            "userId": f"u{n}",
            "messageId": str(uuid.uuid4()),
            "properties": {"marker": m},
        },
        [
            {"type": "track", "event": "fuzz"},
            {"type": "nonsense", "userId": "x"},
            {"type": "track", "userId": "x"},
        ],
        _segment_build,
    ),
    Protocol(
        "mixpanel",
        "/track",
        lambda m, n: {
            "event": "fuzz",
            "properties": {
                "distinct_id": f"d{n}",
                "time": NOW_MS // 1000,
                "$insert_id": uuid.uuid4().hex,
                "marker": m,
            },
        },
        [{"properties": {"distinct_id": "x"}}, {"event": "fuzz", "properties": "nope"}],
        _mixpanel_build,
    ),
    Protocol(
        "amplitude",
        "/2/httpapi",
        lambda m, n: {
            "event_type": "fuzz",
            "user_id": f"user-{n}",
            "time": NOW_MS,
            "insert_id": str(uuid.uuid4()),
            "event_properties": {"marker": m},
        },
        [
            {"event_type": "fuzz"},
            {"user_id": "x"},
            {"event_type": "fuzz", "user_id": "x", "event_properties": 3},
        ],
        _amplitude_build,
    ),
    Protocol(
        "sensors",
        "/sa",
        lambda m, n: {
            "type": "track",
            "event": "fuzz",
            "distinct_id": f"d{n}",
            "time": NOW_MS,
            "_track_id": n * 7919 + len(m),
            "properties": {"marker": m},
        },
        [
            {"type": "track", "distinct_id": "x", "time": NOW_MS},
            {"type": "bogus", "distinct_id": "x", "time": NOW_MS},
            {"type": "track", "event": "fuzz", "time": NOW_MS},
        ],
        _sensors_build,
    ),
]
IDS = [p.name for p in PROTOCOLS]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def stored_markers(live: LiveServer, project: NewProject, marker: str) -> int:
    q = f"SELECT count(*) FROM events WHERE properties->>'$.marker' = '{marker}'"
    return int(rows(live.runtime, project.project.id, q)[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("proto", PROTOCOLS, ids=IDS)
@FUZZ
@given(
    n_good=st.integers(0, 5),
    bad_picks=st.lists(st.integers(0, 2), max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_valid_events_in_a_mixed_batch_are_never_lost(
    live: LiveServer,
    project: NewProject,
    proto: Protocol,
    n_good: int,
    bad_picks: list[int],
    order: Any,
) -> None:
    marker = uuid.uuid4().hex
    good = [proto.good(marker, i) for i in range(n_good)]
    bad = [dict(proto.bad[i % len(proto.bad)]) for i in bad_picks]
    batch = good + bad
    order.shuffle(batch)
    if not batch:
        return
    r = proto.send(live, project, batch)
    assert r.status_code < 500, r.text
    if not bad:
        assert r.status_code < 300, r.text
    assert stored_markers(live, project, marker) == n_good


@pytest.mark.slow
@pytest.mark.parametrize("proto", PROTOCOLS, ids=IDS)
@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda v: json.dumps({"batch": v, "events": v, "api_key": "k"}).encode(), json_values
        ),
    ),
    gzipped=st.booleans(),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain"]
    ),
)
def test_random_bodies_never_cause_a_server_error(
    live: LiveServer,
    project: NewProject,
    proto: Protocol,
    payload: bytes,
    gzipped: bool,
    content_type: str,
) -> None:
    body = gzip.compress(payload) if gzipped else payload
    headers = {"Content-Type": content_type, **_auth(project)}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    for path in {proto.path, "/track", "/batch", "/track/", "/batch/"}:
        r = httpx.post(
            f"{live.url}{path}",
            content=body,
            headers=headers,
            params={"project": project.project.name},
        )
        assert r.status_code < 500, (path, r.status_code, r.text)


@pytest.mark.slow
@pytest.mark.parametrize("proto", PROTOCOLS, ids=IDS)
@FUZZ
@given(cut=st.integers(1, 400), flip=st.integers(0, 400), byte=st.integers(0, 255))
def test_mutated_valid_payloads_never_cause_a_server_error(
    live: LiveServer, project: NewProject, proto: Protocol, cut: int, flip: int, byte: int
) -> None:
    """Take a valid request, truncate it or change one byte, and send it raw."""
    req = proto.build(live, project, [proto.good("m", 1)])
    req.read()
    body = bytearray(req.content)
    if flip < len(body):
        body[flip] = byte
    body = body[: max(1, len(body) - cut % max(1, len(body)))]
    headers = {k: v for k, v in req.headers.items() if k.lower() not in ("content-length", "host")}
    r = httpx.post(str(req.url), content=bytes(body), headers=headers)
    assert r.status_code < 500, (proto.name, r.status_code, r.text)
