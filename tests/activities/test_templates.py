"""Referral, task, sign-up, gift and promotion end to end: real events and app calls over HTTP."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from tests.activities.conftest import NO_RISK, App

CASH_30 = {"kind": "cash", "amount": 3000}


def test_referral_invite_activation_rewards_both_sides_once_with_cap(app: App) -> None:
    act = app.create(
        {
            "template": "referral",
            "name": "邀请好友得 30 元",
            "activation_event": "export_video",
            "inviter_reward": CASH_30,
            "invitee_reward": {"kind": "membership_days", "amount": 7},
            "max_invites_per_inviter": 2,
            "risk": NO_RISK,
        }
    )
    aid = act["id"]
    code = app.as_user("alice", "GET", f"/v1/activities/{aid}/invite-code").json()["code"]
    assert app.as_user("alice", "GET", f"/v1/activities/{aid}/invite-code").json()["code"] == code
    own = app.as_user("alice", "POST", f"/v1/activities/{aid}/invite", key="x", json={"code": code})
    assert own.status_code == 409
    missing = app.as_user("bob", "POST", f"/v1/activities/{aid}/invite", key="x", json={})
    assert missing.status_code == 422 and missing.json()["field"] == "code"
    # bob redeems through the API, carol and dave through an event carrying the code
    r = app.as_user("bob", "POST", f"/v1/activities/{aid}/invite", key="b1", json={"code": code})
    assert r.status_code == 200, r.text
    app.events(
        [
            app.event("carol", "invite_accepted", invite_code=code),
            app.event("dave", "invite_accepted", invite_code=code),
        ]
    )
    # activation: first export; a second export does not pay again
    app.events([app.event(u, "export_video") for u in ("bob", "carol", "bob", "dave")])
    wallet = app.as_user("alice", "GET", "/v1/rewards").json()
    assert wallet["cash_fen"] == 6000  # capped at 2 rewarded invites
    assert app.as_user("bob", "GET", "/v1/rewards").json()["membership_days_granted"] == 7
    progress = app.as_user("alice", "GET", f"/v1/activities/{aid}/progress").json()
    assert (progress["invited"], progress["activated"]) == (3, 3)
    statuses = Counter(c["status"] for c in progress["claims"])
    assert statuses == {"granted": 2, "rejected": 1}
    rep = app.manage("GET", f"/api/v1/activities/{aid}/report").json()
    assert rep["referral"]["activated"] == 3
    assert rep["new_users"] == 3
    assert rep["cost_fen"] == 6000
    assert rep["referral"]["k_factor"] == 3 / 4  # 3 activated invitees per 4 participants


def test_task_challenge_stages_coupon_and_redemption(app: App) -> None:
    act = app.create(
        {
            "template": "task",
            "name": "剪 10 个视频送 100 元券",
            "stages": [
                {
                    "name": "edit",
                    "event": "edit_video",
                    "filters": [{"property": "duration", "op": "gte", "value": 10}],
                    "count": 10,
                    "reward": {"kind": "coupon", "threshold_fen": 20000, "discount_fen": 10000},
                },
                {
                    "name": "export",
                    "event": "export_video",
                    "count": 2,
                    "reward": {"kind": "badge", "badge": "剪辑达人"},
                },
            ],
            "risk": NO_RISK,
        }
    )
    aid = act["id"]
    # exports before the first stage is done do not count (sequential)
    app.events([app.event("eve", "export_video")])
    app.events([app.event("eve", "edit_video", duration=30) for _ in range(9)])
    app.events([app.event("eve", "edit_video", duration=3)])  # filtered out
    p = app.as_user("eve", "GET", f"/v1/activities/{aid}/progress").json()
    assert p["stages"][0]["count"] == 9 and p["stages"][1]["count"] == 0
    app.events([app.event("eve", "edit_video", duration=12), app.event("eve", "export_video")])
    app.events([app.event("eve", "export_video")])
    p = app.as_user("eve", "GET", f"/v1/activities/{aid}/progress").json()
    assert [s["done"] for s in p["stages"]] == [True, True]
    assert p["completed_at"] is not None
    wallet = app.as_user("eve", "GET", "/v1/rewards").json()
    assert wallet["badges"] == ["剪辑达人"]
    [coupon] = wallet["coupons"]
    path = f"/v1/coupons/{coupon['code']}/redeem"
    low = app.as_user("eve", "POST", path, key="o1", json={"order_fen": 15000})
    assert low.status_code == 409 and "at least 20000" in low.json()["error"]
    other = app.as_user("mallory", "POST", path, key="o2", json={"order_fen": 30000})
    assert other.status_code == 409
    ok = app.as_user("eve", "POST", path, key="o3", json={"order_fen": 30000})
    assert ok.status_code == 200 and ok.json()["pay_fen"] == 20000
    assert app.as_user("eve", "POST", path, key="o3", json={"order_fen": 30000}).json()["duplicate"]
    assert app.as_user("eve", "POST", path, key="o4", json={"order_fen": 30000}).status_code == 409


def test_limited_seats_exact_under_concurrency_with_waitlist(app: App) -> None:
    act = app.create(
        {"template": "signup", "name": "前 10 名免费直播课", "seats": 10, "risk": NO_RISK}
    )
    aid = act["id"]
    users = [f"s{i}" for i in range(25)]
    tokens = {u: app.token(u) for u in users}
    results: dict[str, str] = {}
    gate = threading.Barrier(len(users))

    def go(u: str) -> None:
        gate.wait()
        r = app.client.post(
            f"/v1/activities/{aid}/signup",
            headers={"Authorization": f"Bearer {tokens[u]}", "Idempotency-Key": u},
        )
        assert r.status_code == 200, r.text
        results[u] = r.json()["status"]

    threads = [threading.Thread(target=go, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(results.values()) == {"seated": 10, "waitlisted": 15}
    seated = next(u for u, s in results.items() if s == "seated")
    waiting = sorted(
        (app.as_user(u, "GET", f"/v1/activities/{aid}/progress").json()["signup"]["position"], u)
        for u, s in results.items()
        if s == "waitlisted"
    )
    assert [p for p, _ in waiting] == list(range(1, 16))
    r = app.as_user(seated, "POST", f"/v1/activities/{aid}/signup/cancel")
    assert r.json()["promoted"] == waiting[0][1]
    seats = app.manage("GET", f"/api/v1/activities/{aid}").json()["seats"]
    assert (seats["seats_taken"], seats["seated"], seats["waitlisted"]) == (10, 10, 14)


def test_new_user_gift_once_per_person(app: App) -> None:
    act = app.create(
        {
            "template": "gift",
            "name": "新人 15 天会员",
            "event": "sign_up",
            "reward": {"kind": "membership_days", "amount": 15},
            "new_users_within_days": 3,
            "goal": {"metric": "participants", "target": 4},
            "risk": NO_RISK,
        }
    )
    app.events([app.event("n1", "sign_up"), app.event("n1", "sign_up"), app.event("n2", "sign_up")])
    # an old user (first seen 10 days ago) gets nothing
    old = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    app.events([app.event("old", "app_install") | {"timestamp": old}])
    app.events([app.event("old", "sign_up")])
    assert app.as_user("n1", "GET", "/v1/rewards").json()["membership_days_granted"] == 15
    assert app.as_user("old", "GET", "/v1/rewards").json()["membership_days_granted"] == 0
    live = app.manage("GET", f"/api/v1/activities/{act['id']}").json()["live"]
    assert live["goal"] == {"metric": "participants", "target": 4, "value": 2, "progress": 0.5}


def test_member_day_coupons_audience_window_and_kill_switch(app: App) -> None:
    end = datetime.now(UTC) + timedelta(days=1)
    act = app.create(
        {
            "template": "promotion",
            "name": "会员日 满 100 减 30",
            "event": "view_content",
            "reward": {"kind": "coupon", "threshold_fen": 10000, "discount_fen": 3000},
            "claim_limit": 2,
            "schedule": {"end": end.isoformat()},
            "audience": {"properties": [{"property": "plan", "op": "eq", "value": "vip"}]},
            "risk": NO_RISK,
        }
    )
    aid = act["id"]
    app.events(
        [
            app.event("vip1", "$set", **{"$set": {"plan": "vip"}}),
            app.event("free1", "$set", **{"$set": {"plan": "free"}}),
        ]
    )
    app.events([app.event(u, "view_content") for u in ("vip1", "vip1", "vip1", "free1")])
    coupons = app.as_user("vip1", "GET", "/v1/rewards").json()["coupons"]
    assert len(coupons) == 2  # claim_limit
    assert coupons[0]["valid_to"].startswith(end.isoformat()[:16])
    assert app.as_user("free1", "GET", "/v1/rewards").json()["coupons"] == []
    r = app.as_user("free1", "POST", f"/v1/activities/{aid}/claim", key="c1")
    assert r.status_code == 409 and "audience" in r.json()["error"]
    # pause from draft is refused, kill stops everything and is audited
    assert app.manage("POST", f"/api/v1/activities/{aid}/resume").status_code == 409
    killed = app.manage("POST", f"/api/v1/activities/{aid}/kill").json()
    assert (killed["state"], killed["killed"], killed["live"]["budget"]["frozen"]) == (
        "ended",
        True,
        True,
    )
    app.events([app.event("vip2", "$set", **{"$set": {"plan": "vip"}})])
    app.events([app.event("vip2", "view_content")])
    assert app.as_user("vip2", "GET", "/v1/rewards").json()["coupons"] == []
    audit = app.manage("GET", f"/api/v1/activities/{aid}/audit").json()["audit"]
    assert [a["action"] for a in audit] == ["create", "start", "kill"]
    assert audit[-1]["before"] == {"state": "running", "killed": False}
    assert audit[-1]["after"] == {"state": "ended", "killed": True}
    assert audit[-1]["actor"].startswith("key:")


def test_spec_errors_name_the_field(app: App) -> None:
    bad = {
        "template": "checkin",
        "name": "x",
        "milestones": [{"days": 7, "reward": {"kind": "coupon", "amount": 1}}],
    }
    r = app.manage("POST", "/api/v1/activities", json=bad)
    assert r.status_code == 422
    assert r.json()["field"] == "milestones.0.reward"
    r = app.manage("POST", "/api/v1/activities", content=b"template: nope\nname: x\n")
    assert r.status_code == 422 and r.json()["field"] == "template"
    r = app.manage(
        "POST",
        "/api/v1/activities",
        json={
            **bad,
            "milestones": [{"days": 1, "reward": CASH_30}],
            "risk": {"device": {"max_accounts": 0}},
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "risk"
    assert app.client.get("/api/v1/activities").status_code == 401


def test_segment_audience(app: App) -> None:
    """Only members of segment 5 (person_values scope segment:5) take part."""
    import pyarrow as pa

    from yunying.activities.engine import person_of

    app.events([app.event("in", "app_open"), app.event("out", "app_open")])
    rt = app.live.runtime
    pid = app.project.project.id
    member = person_of(rt, pid, "in")
    rt.store.replace_person_values(
        pid, "segment:5", pa.table({"person_id": [member], "label": [None], "value": [None]})
    )
    act = app.create(
        {
            "template": "gift",
            "name": "segment gift",
            "event": "edit_video",
            "reward": {"kind": "points", "amount": 3},
            "audience": {"segment_id": 5},
            "risk": NO_RISK,
        }
    )
    app.events([app.event("in", "edit_video"), app.event("out", "edit_video")])
    assert app.as_user("in", "GET", "/v1/rewards").json()["points"] == 3
    assert app.as_user("out", "GET", "/v1/rewards").json()["points"] == 0
    assert app.manage("GET", f"/api/v1/activities/{act['id']}").json()["live"]["participants"] == 1


def test_update_spec_keeps_spending_and_is_audited(app: App) -> None:
    spec = {
        "template": "promotion",
        "name": "满减",
        "event": "view_content",
        "reward": {"kind": "coupon", "discount_fen": 500},
        "budget": {"total_count": 2},
        "risk": NO_RISK,
    }
    act = app.create(spec)
    aid = act["id"]
    app.events([app.event("a", "view_content"), app.event("b", "view_content")])
    r = app.manage("PUT", f"/api/v1/activities/{aid}", json={**spec, "budget": {"total_count": 5}})
    assert r.status_code == 200, r.text
    assert r.json()["live"]["budget"]["remaining_count"] == 3  # 5 minus the 2 already granted
    bad = app.manage("PUT", f"/api/v1/activities/{aid}", json={**spec, "template": "gift"})
    assert bad.status_code == 422
    audit = app.manage("GET", f"/api/v1/activities/{aid}/audit").json()["audit"]
    assert audit[-1]["action"] == "update"
    assert audit[-1]["before"]["budget"]["total_count"] == 2
    assert audit[-1]["after"]["budget"]["total_count"] == 5
