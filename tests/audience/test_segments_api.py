"""The segments and tags HTTP API on a real server on loopback, and the scheduler task."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.audience.conftest import NOW, load_world, make_world
from tests.audience.conftest import reference_members as ref
from tests.conftest import LiveServer, start_server
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project


class Client:
    def __init__(self, live: LiveServer, token: str) -> None:
        self.url = live.url + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)


@pytest.fixture
def api(live: LiveServer, project: NewProject) -> Client:
    load_world(live.runtime, project.project.id, make_world(8, persons=80))
    return Client(live, project.secret_key)


BUYERS = {"type": "event", "event": "purchase_membership", "window": {"last_days": 30}}


def test_segment_lifecycle_over_http(api: Client, live: LiveServer) -> None:
    world = make_world(8, persons=80)
    now = NOW.isoformat()
    r = api("POST", "/segments", json={"name": "buyers", "rules": BUYERS, "compute": False,
                                        "description": "bought in 30 days"})  # fmt: skip
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["last_computed_at"] is None
    r = api("POST", f"/segments/{sid}/recompute", json={"now": now})
    assert r.status_code == 200, r.text
    want = ref(world, BUYERS)
    assert r.json()["size"] == len(want) > 0
    # by name too
    assert api("GET", "/segments/buyers").json()["id"] == sid
    shown = api("GET", f"/segments/{sid}").json()
    assert [h["size"] for h in shown["sizes"]] == [len(want)]

    page = api("GET", f"/segments/{sid}/members", params={"limit": 3, "offset": 1}).json()
    assert page["total"] == len(want)
    assert [p["person_id"] for p in page["persons"]] == want[1:4]
    assert all(p["distinct_ids"] for p in page["persons"])

    r = api("GET", f"/segments/{sid}/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["person_id", "distinct_id"] and sorted({x[0] for x in rows[1:]}) == want

    r = api("POST", f"/segments/{sid}/snapshot", json={"name": "buyers frozen"})
    assert r.status_code == 201, r.text
    snap = r.json()
    assert snap["kind"] == "static" and snap["size"] == len(want)

    # static upload (CSV body)
    r = api("POST", "/segments", json={"name": "list", "kind": "static"})
    assert r.status_code == 201, r.text
    lid = r.json()["id"]
    dids = sorted(world.distinct)[:5]
    r = api("POST", f"/segments/{lid}/upload", content="distinct_id\n" + "\n".join(dids) + "\nx\n",
            headers={"Content-Type": "text/csv"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert (r.json()["matched"], r.json()["unmatched"]) == (5, 1)
    assert r.json()["segment"]["size"] == len({world.distinct[d] for d in dids})

    r = api("PATCH", f"/segments/{sid}", json={"schedule_minutes": 15, "name": "buyers 30d"})
    assert r.status_code == 200 and r.json()["schedule_minutes"] == 15
    assert r.json()["rules"] == BUYERS

    listed = api("GET", "/segments").json()["segments"]
    assert [s["name"] for s in listed] == ["buyers 30d", "buyers frozen", "list"]

    r = api("POST", "/segments/preview", json={"rules": {"type": "segment", "id": lid}})
    assert r.status_code == 200 and r.json()["size"] == len({world.distinct[d] for d in dids})
    assert "person_values" in r.json()["sql"]

    # membership as an analytics filter and breakdown over HTTP
    body = {"series": ["purchase_membership"], "date_from": "2024-02-01", "date_to": "2024-03-31",
            "filters": [{"field": {"kind": "segment", "name": str(sid)}, "op": "eq",
                         "value": True}],
            "breakdown": {"kind": "segment", "name": str(lid)}}  # fmt: skip
    r = api("POST", "/analytics/trends", json=body)
    assert r.status_code == 200, r.text
    members = set(want)
    bought = [e for e in world.events if e["event"] == "purchase_membership"
              and world.distinct.get(e["distinct_id"], e["person_id"]) in members
              and datetime(2024, 1, 31, 16) <= e["timestamp"] < datetime(2024, 3, 31, 16)]  # fmt: skip
    assert sum(line["total"] for line in r.json()["series"]) == len(bought) > 0
    assert {line["breakdown_value"] for line in r.json()["series"]} <= {"true", "false"}

    assert api("DELETE", f"/segments/{lid}").status_code == 200
    assert api("GET", f"/segments/{lid}").status_code == 404


def test_tags_over_http(api: Client) -> None:
    world = make_world(8, persons=80)
    rule = {"type": "event", "event": "edit_video", "times": 2}
    r = api("POST", "/tags", json={"name": "剪辑达人", "rules": rule})
    assert r.status_code == 201, r.text
    size = r.json()["size"]
    assert size == len(ref(world, rule, now=time_now()))
    r = api(
        "POST", "/segments", json={"name": "tagged", "rules": {"type": "tag", "name": "剪辑达人"}}
    )
    assert r.status_code == 201 and r.json()["size"] == size
    assert api("DELETE", "/tags/剪辑达人").status_code == 409
    r = api("POST", "/segments/recompute", json={"derived": False})
    assert r.status_code == 200, r.text
    assert [c["kind"] for c in r.json()["computed"]] == ["tag", "segment"]
    assert api("GET", "/tags").json()["tags"][0]["name"] == "剪辑达人"
    assert api("GET", "/tags/剪辑达人/members").json()["total"] == size
    r = api("PATCH", "/tags/剪辑达人", json={"rules": {"type": "event", "event": "sign_up"}})
    assert r.status_code == 200 and r.json()["rules"]["event"] == "sign_up"
    assert api("POST", "/tags/剪辑达人/recompute").status_code == 200


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"name": "x", "rules": {"type": "event", "event": "a", "window": {"last_days": 0}}},
     "rules.window.last_days"),
    ({"name": "x", "rules": {"type": "and", "rules": [{"type": "wat"}]}}, "rules.rules.0"),
    ({"name": "x", "rules": {"type": "segment", "id": 77}}, "rules.id"),
    ({"name": "x"}, "rules"),
    ({"name": "", "rules": {"type": "stage", "in": ["new"]}}, "name"),
    ({"name": "x", "kind": "odd"}, "kind"),
    ({"name": "x", "rules": {"type": "stage", "in": ["new"]}, "schedule_minutes": 0},
     "schedule_minutes"),
]  # fmt: skip


def test_errors_name_the_field(api: Client) -> None:
    for body, field in ERRORS:
        r = api("POST", "/segments", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field, r.json()
    r = api("POST", "/segments", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_auth_and_conflicts(api: Client, live: LiveServer, project: NewProject) -> None:
    assert httpx.get(api.url + "/segments").status_code == 401
    other = create_project(live.runtime.state, "other")
    r = api("GET", "/segments", params={"project": "other"})
    assert r.status_code == 403
    mine = Client(live, other.secret_key)
    assert mine("POST", "/segments", json={"name": "a", "rules": {"type": "stage", "in": ["new"]},
                                           "compute": False}).status_code == 201  # fmt: skip
    # the other project's segment is invisible here
    assert api("GET", "/segments/a").status_code == 404
    assert api("POST", "/segments", json={"name": "a", "rules": {"type": "stage", "in": ["new"]},
                                          "compute": False}).status_code == 201  # fmt: skip
    r = api("POST", "/segments", json={"name": "a", "rules": {"type": "stage", "in": ["new"]}})
    assert r.status_code == 409
    sid = api("GET", "/segments/a").json()["id"]
    r = api("POST", "/segments", json={"name": "b", "rules": {"type": "segment", "id": sid}})
    bid = r.json()["id"]
    r = api("PATCH", f"/segments/{sid}", json={"rules": {"type": "segment", "id": bid}})
    assert r.status_code == 409 and "cycle" in r.json()["error"]
    r = api("GET", f"/segments/{sid}/members", params={"limit": 5000})
    assert r.status_code == 422 and r.json()["field"] == "limit"
    r = api("POST", f"/segments/{sid}/upload", content="a\n")
    assert r.status_code == 422 and r.json()["field"] == "kind"


def test_scheduler_computes_due_segments(
    monkeypatch: pytest.MonkeyPatch, runtime: Runtime, project: NewProject
) -> None:
    monkeypatch.setenv("YUNYING_SEGMENT_SCHEDULER_SECONDS", "0.2")
    load_world(runtime, project.project.id, make_world(8, persons=40))
    srv = start_server(runtime)
    try:
        client = Client(srv, project.secret_key)
        r = client("POST", "/segments", json={"name": "s", "schedule_minutes": 60,
                                              "compute": False,
                                              "rules": {"type": "event", "event": None}})  # fmt: skip
        assert r.status_code == 201
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = client("GET", "/segments/s").json()
            if got["last_computed_at"]:
                break
            time.sleep(0.1)
        assert got["last_computed_at"] and got["size"] > 0
    finally:
        srv.server.should_exit = True
        srv.thread.join(10)
