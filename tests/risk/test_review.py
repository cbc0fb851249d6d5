"""Review queue and blocklist as plain functions: listing, deciding once, handlers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from yunying.errors import NotFound
from yunying.risk import (
    InvalidBlockEntry,
    InvalidReviewQuery,
    Review,
    ReviewAlreadyDecided,
    ReviewHandlerFailed,
    RiskPolicy,
    activity_summary,
    add_block,
    assess,
    decide,
    get_review,
    list_blocks,
    list_reviews,
    on_review_decided,
    remove_block,
)
from yunying.runtime import Runtime
from yunying.state import NewProject

from .helpers import make_claim

DEVICE_ONLY = RiskPolicy.from_spec(
    {r: {"enabled": False} for r in ("network", "velocity", "account_age", "blocklist")}
)


def held(runtime: Runtime, pid: int, n: int, kind: str, activity_id: int = 1) -> list[int]:
    """Review ids of ``n`` claims held for a shared device (the first 3 accounts pass).

    Each test uses its own activity kind: decision handlers are registered per kind.
    """
    ids = []
    for i in range(n + 3):
        claim = make_claim(
            pid,
            f"{kind}-{activity_id}-{i}",
            device=f"dev-{kind}",
            kind=kind,
            activity_id=activity_id,
        )
        d = assess(runtime, DEVICE_ONLY, claim)
        if d.outcome == "hold":
            assert d.review_id is not None
            ids.append(d.review_id)
    assert len(ids) == n
    return ids


def test_queue_lists_and_filters(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    a = held(runtime, pid, 3, "queue-a", activity_id=1)
    b = held(runtime, pid, 2, "queue-b", activity_id=2)
    assert [r.id for r in list_reviews(runtime.state, pid)] == a + b
    assert [r.id for r in list_reviews(runtime.state, pid, activity_id=2)] == b
    assert [r.id for r in list_reviews(runtime.state, pid, limit=2, offset=1)] == a[1:3]
    assert [r.id for r in list_reviews(runtime.state, pid, reason="device_shared")] == a + b
    assert list_reviews(runtime.state, pid, reason="invite_cycle") == []
    one = get_review(runtime.state, pid, a[0])
    assert one.claim.device_id == "dev-queue-a" and one.reasons[0].code == "device_shared"
    assert one.claim.at.tzinfo is not None
    with pytest.raises(InvalidReviewQuery, match="status"):
        list_reviews(runtime.state, pid, status="maybe")
    with pytest.raises(NotFound):
        get_review(runtime.state, pid + 1, a[0])  # another project's review is not visible


def test_decisions_call_handlers_once(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    calls: list[tuple[int, bool]] = []

    def handler(rt: Runtime, review: Review, approved: bool) -> None:
        assert rt is runtime
        calls.append((review.id, approved))

    on_review_decided("once", handler)
    first, second = held(runtime, pid, 2, "once")
    r = decide(runtime, pid, first, approved=True, reviewer="alice", note="known customer")
    assert r.status == "approved" and r.reviewer == "alice" and r.note == "known customer"
    with pytest.raises(ReviewAlreadyDecided, match=f"review {first} is already approved by alice"):
        decide(runtime, pid, first, approved=False, reviewer="bob")
    decide(runtime, pid, second, approved=False, reviewer="bob")
    assert calls == [(first, True), (second, False)]
    assert [x.id for x in list_reviews(runtime.state, pid, status="approved")] == [first]
    assert list_reviews(runtime.state, pid) == []
    with pytest.raises(InvalidReviewQuery, match="reviewer"):
        decide(runtime, pid, second, approved=True, reviewer=" ")
    with pytest.raises(NotFound):
        decide(runtime, pid, 999, approved=True, reviewer="alice")


def test_concurrent_decisions_decide_once(runtime: Runtime, project: NewProject) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pid = project.project.id
    calls: list[bool] = []
    on_review_decided("race", lambda rt, review, approved: calls.append(approved))
    (rid,) = held(runtime, pid, 1, "race")

    def one(i: int) -> str:
        try:
            decide(runtime, pid, rid, approved=i % 2 == 0, reviewer=f"r{i}")
            return "ok"
        except ReviewAlreadyDecided:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert results.count("ok") == 1 and len(calls) == 1


def test_failing_handler_keeps_the_decision(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id

    def broken(rt: Runtime, review: Review, approved: bool) -> None:
        raise RuntimeError("ledger unavailable")

    on_review_decided("flaky", broken)
    (rid,) = held(runtime, pid, 1, "flaky")
    with pytest.raises(ReviewHandlerFailed, match="ledger unavailable"):
        decide(runtime, pid, rid, approved=True, reviewer="alice")
    r = get_review(runtime.state, pid, rid)
    assert r.status == "approved" and r.handler_error == "RuntimeError: ledger unavailable"


def test_summary(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    ids = held(runtime, pid, 2, "summary", activity_id=5)
    decide(runtime, pid, ids[0], approved=False, reviewer="ops")
    s: dict[str, Any] = activity_summary(runtime.state, pid, 5)
    assert s["claims"] == {"total": 5, "grant": 3, "hold": 2, "deny": 0}
    assert s["reasons"] == {"device_shared": 2}
    assert s["reviews"] == {"pending": 1, "approved": 0, "denied": 1}


def test_blocklist_crud(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    e = add_block(runtime.state, pid, "subnet", "203.0.113.77/24", "farm network", created_by="ops")
    assert e.value == "203.0.113.0/24" and e.expires_at is None
    later = datetime.now(UTC) + timedelta(days=7)
    again = add_block(
        runtime.state, pid, "subnet", "203.0.113.0/24", "still farming", expires_at=later
    )
    assert again.id == e.id and again.reason == "still farming" and again.expires_at == later
    add_block(runtime.state, pid, "device", "emu", "emulator")
    assert [x.kind for x in list_blocks(runtime.state, pid)] == ["device", "subnet"]
    assert [x.kind for x in list_blocks(runtime.state, pid, "device")] == ["device"]
    assert remove_block(runtime.state, pid, e.id).value == "203.0.113.0/24"
    with pytest.raises(NotFound):
        remove_block(runtime.state, pid, e.id)
    for kind, value, field in (
        ("router", "x", "kind"),
        ("ip", "300.1.1.1", "value"),
        ("subnet", "nonsense", "value"),
        ("device", "  ", "value"),
    ):
        with pytest.raises(InvalidBlockEntry) as info:
            add_block(runtime.state, pid, kind, value, "why")
        assert info.value.field == field
    with pytest.raises(InvalidBlockEntry, match="reason"):
        add_block(runtime.state, pid, "device", "d", " ")
    with pytest.raises(InvalidBlockEntry, match="future"):
        add_block(
            runtime.state, pid, "device", "d", "x", expires_at=datetime.now(UTC) - timedelta(1)
        )


def test_summary_counts_reasons_in_monitor_mode(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    monitor = RiskPolicy.from_spec({"mode": "monitor", "velocity": {"max_per_person": 1}})
    for _ in range(3):
        assert assess(runtime, monitor, make_claim(pid, "m", activity_id=9)).outcome == "grant"
    s = activity_summary(runtime.state, pid, 9)
    assert s["claims"] == {"total": 3, "grant": 3, "hold": 0, "deny": 0}
    assert s["reasons"] == {"velocity_person": 2}
    assert list_reviews(runtime.state, pid) == []
