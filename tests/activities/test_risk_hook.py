"""Claims go through anti-fraud: held claims wait for a reviewer, approval grants, denial records."""

from __future__ import annotations

from tests.activities.conftest import App
from yunying.activities.service import register_review_handlers


def test_held_claims_granted_on_approval_denied_on_denial(app: App) -> None:
    register_review_handlers()  # other tests may have put their own handlers in place
    act = app.create(
        {
            "template": "gift",
            "name": "新人礼 (risk: brand-new accounts held)",
            "event": "sign_up",
            "reward": {"kind": "points", "amount": 20},
            "risk": {"account_age": {"exempt_kinds": [], "min_age_minutes": 60}},
        }
    )
    app.events([app.event("h1", "sign_up"), app.event("h2", "sign_up")])
    claims = app.manage("GET", f"/api/v1/activities/{act['id']}/claims").json()["claims"]
    assert sorted(c["status"] for c in claims) == ["held", "held"]
    assert all(c["review_id"] for c in claims)
    assert any(r["code"] for c in claims for r in c["reasons"])
    by_user = {c["user_id"]: c for c in claims}
    r = app.manage("POST", f"/api/v1/risk/reviews/{by_user['h1']['review_id']}/approve", json={})
    assert r.status_code == 200, r.text
    r = app.manage("POST", f"/api/v1/risk/reviews/{by_user['h2']['review_id']}/deny", json={})
    assert r.status_code == 200, r.text
    assert app.as_user("h1", "GET", "/v1/rewards").json()["points"] == 20
    assert app.as_user("h2", "GET", "/v1/rewards").json()["points"] == 0
    claims = app.manage("GET", f"/api/v1/activities/{act['id']}/claims").json()["claims"]
    assert {c["user_id"]: c["status"] for c in claims} == {"h1": "granted", "h2": "denied"}
    rep = app.manage("GET", f"/api/v1/activities/{act['id']}/report").json()
    assert rep["claims"]["granted"] == 1 and rep["claims"]["denied"] == 1
