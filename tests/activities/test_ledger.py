"""Ledger rules called directly: points expiry, membership extension, reversals, coupons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from yunying.activities import ledger, service
from yunying.activities.spec import Reward
from yunying.runtime import Runtime
from yunying.state import NewProject


def grant(runtime: Runtime, pid: int, reward: Reward, key: str, now: datetime) -> int:
    with runtime.state.begin() as conn:
        return ledger.post_grant(
            conn, project_id=pid, activity_id=None, user_id="u", reward=reward, key=key, now=now
        )


def test_points_expire_membership_extends_reversal_restores(
    runtime: Runtime, project: NewProject
) -> None:
    pid = project.project.id
    now = datetime.now(UTC)
    grant(
        runtime,
        pid,
        Reward(kind="points", amount=100, valid_days=7),
        "old",
        now - timedelta(days=8),
    )
    grant(runtime, pid, Reward(kind="points", amount=30, valid_days=7), "new", now)
    w = ledger.wallet(runtime.state, pid, "u")
    assert (w["points"], w["points_expired"]) == (30, 100)
    t1 = grant(runtime, pid, Reward(kind="membership_days", amount=30), "m1", now)
    grant(runtime, pid, Reward(kind="membership_days", amount=15), "m2", now)
    until = datetime.fromisoformat(ledger.wallet(runtime.state, pid, "u")["membership_until"])
    assert abs(until - (now + timedelta(days=45))) < timedelta(minutes=1)
    rid = ledger.reverse(runtime.state, pid, t1, "fraud")
    assert ledger.reverse(runtime.state, pid, t1, "again") == rid  # once only
    until = datetime.fromisoformat(ledger.wallet(runtime.state, pid, "u")["membership_until"])
    assert abs(until - (now + timedelta(days=15))) < timedelta(minutes=1)
    kinds = [t["kind"] for t in ledger.entries(runtime.state, pid, user_id="u")]
    assert kinds.count("reversal") == 1 and kinds.count("grant") == 4  # nothing deleted
    with pytest.raises(sa.exc.IntegrityError):
        grant(runtime, pid, Reward(kind="points", amount=1), "new", now)  # same key


def test_expired_coupon_cannot_be_redeemed(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    past = datetime.now(UTC) - timedelta(days=10)
    grant(runtime, pid, Reward(kind="coupon", discount_fen=500, valid_days=3), "c", past)
    [c] = ledger.wallet(runtime.state, pid, "u")["coupons"]
    assert c["status"] == "expired"
    with pytest.raises(ledger.CouponError, match="expired"):
        ledger.redeem_coupon(runtime.state, pid, "u", c["code"], 10_000)


def test_state_machine_refuses_invalid_transitions(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    spec = {"template": "gift", "name": "g", "reward": {"kind": "points"}}
    act = service.create_activity(runtime.state, pid, spec, "t")
    with pytest.raises(service.InvalidTransition, match="cannot pause"):
        service.transition(runtime.state, pid, act.id, "pause", "t")
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    act = service.update_activity(
        runtime.state, pid, act.id, {**spec, "schedule": {"start": later}}, "t"
    )
    assert service.transition(runtime.state, pid, act.id, "start", "t").state == "scheduled"
    assert service.advance_schedules(runtime.state, datetime.now(UTC) + timedelta(days=2))
    assert service.get_activity(runtime.state, pid, act.id).state == "running"
    assert service.transition(runtime.state, pid, act.id, "end", "t").state == "ended"
    with pytest.raises(service.InvalidTransition):
        service.transition(runtime.state, pid, act.id, "resume", "t")
