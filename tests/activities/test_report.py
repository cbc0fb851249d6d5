"""The post-mortem numbers on a small hand-computed data set."""

from __future__ import annotations

import pytest

from tests.activities.conftest import NO_RISK, App


def test_report_against_hand_computed_figures(app: App) -> None:
    act = app.create(
        {
            "template": "gift",
            "name": "新人礼",
            "event": "sign_up",
            "reward": {"kind": "points", "amount": 10, "cost_fen": 100},
            "goal": {"metric": "new_users", "target": 6},
            "risk": NO_RISK,
        }
    )
    channels = {"p1": "douyin", "p2": "douyin", "p3": "zhihu"}
    channels |= {f"n{i}": "douyin" for i in range(1, 5)} | {"n5": "zhihu", "n6": "zhihu"}
    app.events([app.event(u, "app_install", **{"$channel": ch}) for u, ch in channels.items()])
    app.events([app.event(u, "sign_up") for u in ("p1", "p2", "p3")])
    app.events(
        [app.event(u, "purchase_membership", **{"$amount": 30}) for u in ("p1", "n1", "n5", "n6")]
    )
    r = app.manage("GET", f"/api/v1/activities/{act['id']}/report").json()
    assert (r["participants"], r["completions"], r["new_users"]) == (3, 3, 3)
    assert r["claims"]["granted"] == 3
    assert r["rewards"]["points"] == {"grants": 3, "amount": 30, "cost_fen": 300}
    conv = r["conversion"]
    # douyin: participants 1/2 convert, non-participants 1/4; zhihu: 0/1 vs 2/2
    assert conv["participant_rate"] == pytest.approx(1 / 3)
    assert conv["comparable_rate"] == pytest.approx((2 * 1 / 4 + 1 * 2 / 2) / 3)
    assert conv["lift"] == pytest.approx(1 / 3 - 0.5)
    # revenue: participants 30 yuan; the comparable group predicts 2*30/4 + 1*60/2 = 45
    assert r["revenue"]["incremental"] == pytest.approx(-15)
    assert r["roi"] == pytest.approx((-15 - 3) / 3)
    assert r["goal"] == {"metric": "new_users", "target": 6, "value": 3, "progress": 0.5}
