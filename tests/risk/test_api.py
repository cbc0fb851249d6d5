"""/api/v1/risk over a live server: auth, review queue, blocklist, summary, errors naming fields."""

from __future__ import annotations

from typing import Any

import httpx

from yunying.risk import RiskPolicy, assess, on_review_decided
from yunying.state import NewProject, create_project
from yunying.web.risk_api import BlockBody

from ..conftest import LiveServer
from .helpers import make_claim

POLICY = RiskPolicy.from_spec(
    {r: {"enabled": False} for r in ("network", "velocity", "account_age", "invites")}
)


def api(live: LiveServer, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{live.url}/api/v1/risk{path}", headers={"Authorization": f"Bearer {key}"}, **kw
    )


def test_review_queue_over_http(live: LiveServer, project: NewProject) -> None:
    rt, pid, key = live.runtime, project.project.id, project.secret_key
    decided: list[bool] = []
    on_review_decided("api-test", lambda _rt, _review, approved: decided.append(approved))
    ids = []
    for i in range(5):
        claim = make_claim(pid, f"p{i}", device="one-phone", kind="api-test", activity_id=3)
        d = assess(rt, POLICY, claim)
        if d.review_id:
            ids.append(d.review_id)
    assert len(ids) == 2

    r = api(live, key, "GET", "/reviews")
    assert r.status_code == 200
    listed = r.json()["reviews"]
    assert [x["id"] for x in listed] == ids
    assert listed[0]["reasons"][0]["code"] == "device_shared"
    assert listed[0]["claim"]["device_id"] == "one-phone"

    r = api(live, key, "GET", f"/reviews/{ids[0]}")
    assert r.status_code == 200 and r.json()["status"] == "pending"

    r = api(
        live, key, "POST", f"/reviews/{ids[0]}/approve", json={"reviewer": "alice", "note": "ok"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["reviewer"] == "alice"
    r = api(live, key, "POST", f"/reviews/{ids[0]}/deny")
    assert r.status_code == 409
    assert r.json()["current_status"] == "approved" and "already approved" in r.json()["error"]
    r = api(live, key, "POST", f"/reviews/{ids[1]}/deny")  # no body: the caller is the reviewer
    assert r.status_code == 200 and r.json()["reviewer"].startswith("key ysk_")
    assert decided == [True, False]

    r = api(live, key, "GET", "/reviews", params={"status": "all", "activity_id": 3})
    assert [x["id"] for x in r.json()["reviews"]] == ids[::-1]
    r = api(live, key, "GET", "/activities/3/summary")
    assert r.json()["claims"] == {"total": 5, "grant": 3, "hold": 2, "deny": 0}
    assert r.json()["reviews"] == {"pending": 0, "approved": 1, "denied": 1}

    # errors name the field
    r = api(live, key, "GET", "/reviews", params={"status": "maybe"})
    assert r.status_code == 422 and r.json()["field"] == "status"
    r = api(live, key, "GET", "/reviews", params={"limit": 0})
    assert r.status_code == 422 and r.json()["field"] == "limit"
    r = api(live, key, "POST", f"/reviews/{ids[1]}/approve", json={"reviewer": 5})
    assert r.status_code == 422 and r.json()["field"] == "reviewer"
    r = api(live, key, "GET", "/reviews/9999")
    assert r.status_code == 404 and "9999" in r.json()["error"]


def test_auth_and_project_isolation(live: LiveServer, project: NewProject) -> None:
    other = create_project(live.runtime.state, "other")
    d = assess(live.runtime, POLICY, make_claim(project.project.id, "x", device="b"))
    assert d.outcome == "grant"
    for i in range(4):
        assess(live.runtime, POLICY, make_claim(project.project.id, f"y{i}", device="b"))
    assert api(live, "nope", "GET", "/reviews").status_code == 401
    assert httpx.get(f"{live.url}/api/v1/risk/reviews").status_code == 401
    r = api(live, other.secret_key, "GET", "/reviews", params={"project": project.project.name})
    assert r.status_code == 403
    # the other project's key sees none of this project's reviews
    assert api(live, other.secret_key, "GET", "/reviews").json()["reviews"] == []
    rid = api(live, project.secret_key, "GET", "/reviews").json()["reviews"][0]["id"]
    assert api(live, other.secret_key, "GET", f"/reviews/{rid}").status_code == 404
    assert api(live, other.secret_key, "POST", f"/reviews/{rid}/approve").status_code == 404


def test_blocklist_over_http(live: LiveServer, project: NewProject) -> None:
    key = project.secret_key
    r = api(
        live, key, "POST", "/blocklist", json={"kind": "ip", "value": "192.0.2.001", "reason": "x"}
    )
    assert r.status_code == 422 and r.json()["field"] == "value"
    r = api(live, key, "POST", "/blocklist", json={"kind": "router", "value": "v", "reason": "x"})
    assert r.status_code == 422 and r.json()["field"] == "kind"
    r = api(live, key, "POST", "/blocklist", json={"kind": "device", "value": "v"})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = api(
        live,
        key,
        "POST",
        "/blocklist",
        json={
            "kind": "subnet",
            "value": "203.0.113.9/24",
            "reason": "farm",
            "expires_in_hours": 24,
        },
    )
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["value"] == "203.0.113.0/24" and entry["expires_at"]
    r = api(live, key, "POST", "/blocklist", json={"kind": "device", "value": "emu", "reason": "e"})
    assert r.status_code == 201
    assert [e["kind"] for e in api(live, key, "GET", "/blocklist").json()["entries"]] == [
        "device",
        "subnet",
    ]
    assert api(live, key, "GET", f"/blocklist/{entry['id']}").json()["reason"] == "farm"
    d = assess(live.runtime, RiskPolicy(), make_claim(project.project.id, "p", ip="203.0.113.50"))
    assert d.outcome == "deny" and d.reasons[0].code == "blocklisted_subnet"
    assert api(live, key, "DELETE", f"/blocklist/{entry['id']}").status_code == 200
    assert api(live, key, "DELETE", f"/blocklist/{entry['id']}").status_code == 404
    assert len(api(live, key, "GET", "/blocklist").json()["entries"]) == 1


def test_block_body_model() -> None:
    assert BlockBody.model_validate({"kind": "ip", "value": "1.2.3.4", "reason": "r"}).kind == "ip"
