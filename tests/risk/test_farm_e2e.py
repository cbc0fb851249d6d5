"""The farm scenario end to end: a referral activity with the default risk policy, driven by real
events and app calls over HTTP, scored from the activity's own claims."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.activities.conftest import App
from tests.conftest import LiveServer
from yunying.state import NewProject

PRECISION_FLOOR = 0.95
RECALL_FLOOR = 0.95


def event(user: str, name: str, device: str, ip: str, at: datetime | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event": name,
        "distinct_id": user,
        "properties": {"$device_id": device, "$ip": ip},
    }
    if at is not None:
        e["timestamp"] = at.isoformat()
    return e


@pytest.mark.slow
def test_farm_through_the_referral_api(live: LiveServer, project: NewProject) -> None:
    app = App(live, project)
    act = app.create(
        {
            "template": "referral",
            "name": "邀请好友得 30 元",
            "activation_event": "export_video",
            "inviter_reward": {"kind": "cash", "amount": 3000},
            "invitee_reward": {"kind": "membership_days", "amount": 7},
        }
    )
    aid = act["id"]
    now = datetime.now(UTC)
    farm: set[str] = set()
    devices: dict[str, tuple[str, str]] = {}

    # honest: three long-standing inviters, each bringing two friends who really use the app
    history = []
    for i in range(3):
        host = f"host-{i}"
        devices[host] = (f"phone-h{i}", f"{30 + i * 40}.{i + 7}.{i * 9}.{20 + i}")
        d, ip = devices[host]
        history.append(event(host, "sign_up", d, ip, now - timedelta(days=40 + i)))
        history += [event(host, "edit_video", d, ip, now - timedelta(days=k + 1)) for k in range(5)]
        for j in range(2):
            friend = f"buddy-{i}-{j}"
            devices[friend] = (f"phone-b{i}{j}", f"{120 + i * 9 + j}.{40 + j}.{i}.{60 + j}")
    # the farm: 12 accounts on 3 phones in one /24, plus their invite ring
    for k in range(12):
        acct = f"acct-{k:02d}"
        farm.add(acct)
        devices[acct] = (f"farm-phone-{k % 3}", f"203.0.113.{10 + k}")
    app.events(history)

    def sign_up(users: list[str]) -> None:
        app.events([event(u, "sign_up", *devices[u]) for u in users])

    def invite(inviter: str, invitee: str) -> None:
        code = app.as_user(inviter, "GET", f"/v1/activities/{aid}/invite-code").json()["code"]
        r = app.as_user(
            invitee,
            "POST",
            f"/v1/activities/{aid}/invite",
            key=f"inv-{invitee}",
            json={"code": code},
        )
        assert r.status_code == 200, r.text

    # honest friends join, edit, then export (the qualifying event)
    friends = [f"buddy-{i}-{j}" for i in range(3) for j in range(2)]
    sign_up(friends)
    for f in friends:
        invite(f"host-{f.split('-')[1]}", f)
    app.events([event(f, "edit_video", *devices[f]) for f in friends for _ in range(3)])
    app.events([event(f, "export_video", *devices[f]) for f in friends])

    # the farm signs up, invites in a ring, a chain and a fan, and exports nothing else
    accts = sorted(farm)
    sign_up(accts)
    edges = [("acct-00", "acct-01"), ("acct-01", "acct-02"), ("acct-02", "acct-00")]
    edges += [("acct-02", "acct-03"), ("acct-03", "acct-04"), ("acct-04", "acct-05")]
    edges += [("acct-06", a) for a in accts[7:]]
    for inviter, invitee in edges:
        invite(inviter, invitee)
    app.events([event(b, "export_video", *devices[b]) for _, b in edges])

    claims = app.manage("GET", f"/api/v1/activities/{aid}/claims", params={"limit": 1000}).json()[
        "claims"
    ]
    assert claims, "no claims were made"
    tp = fp = fn = tn = 0
    reasons: Counter[str] = Counter()
    for c in claims:
        flagged = c["status"] in ("held", "denied")
        is_farm = c["user_id"] in farm
        reasons.update({r["code"] for r in c["reasons"]} if flagged else set())
        tp += is_farm and flagged
        fp += (not is_farm) and flagged
        fn += is_farm and not flagged
        tn += (not is_farm) and not flagged
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    print(
        f"\nfarm through the referral API: {tp + fn} farm claims, {tp} flagged; "
        f"{fp + tn} honest claims, {fp} flagged; precision {precision:.3f} recall {recall:.3f}; "
        f"statuses {dict(Counter(c['status'] for c in claims))}; reasons {dict(reasons)}"
    )
    flagged_honest = [(c["user_id"], c["reasons"]) for c in claims if c["user_id"] not in farm
                      and c["status"] in ("held", "denied")]  # fmt: skip
    assert precision >= PRECISION_FLOOR, flagged_honest
    assert recall >= RECALL_FLOOR
    assert tn == 12  # every honest claim (3 hosts x 2 friends, both sides) granted
