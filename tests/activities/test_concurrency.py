"""Exactly-once under concurrency: 200 identical claims grant once, 200 distinct claims against a
budget of 50 grant exactly 50, on SQLite and PostgreSQL state; the same over HTTP."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.activities.conftest import NO_RISK, App
from yunying.activities import ledger, service
from yunying.activities.spec import Reward
from yunying.activities.tables import activity_budgets, claims, ledger_entries, ledger_transactions
from yunying.config import load_settings
from yunying.runtime import Runtime
from yunying.state import create_project

N = 200
BUDGET = 50


@pytest.fixture(params=["sqlite", "postgresql"])
def state_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_postgres_url")
    rt = Runtime.open(load_settings(data_dir=tmp_path / "data", state_url=url))
    yield rt
    rt.close()


def promotion(budget: int) -> dict[str, Any]:
    return {
        "template": "promotion",
        "name": "会员日 满100减30",
        "reward": {"kind": "coupon", "threshold_fen": 10_000, "discount_fen": 3_000},
        "budget": {"total_count": budget},
        "risk": NO_RISK,
    }


def hammer(fn: Callable[[int], Any], n: int = N, workers: int = 50) -> list[Any]:
    """Call ``fn(i)`` for i < n from many threads released at once."""
    gate = threading.Barrier(workers)

    def run(i: int) -> Any:
        if i < workers:
            gate.wait()
        return fn(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(n)))


def count_grants(rt: Runtime, activity_id: int) -> tuple[int, int, Any]:
    with rt.state.connect() as conn:
        txns = conn.execute(
            sa.select(sa.func.count()).where(ledger_transactions.c.activity_id == activity_id)
        ).scalar_one()
        granted = conn.execute(
            sa.select(sa.func.count()).where(
                claims.c.activity_id == activity_id, claims.c.status == "granted"
            )
        ).scalar_one()
        budget = conn.execute(
            sa.select(activity_budgets).where(activity_budgets.c.activity_id == activity_id)
        ).one()
        unbalanced = conn.execute(
            sa.select(ledger_entries.c.transaction_id)
            .group_by(ledger_entries.c.transaction_id)
            .having(sa.func.sum(ledger_entries.c.amount) != 0)
        ).all()
    assert unbalanced == []  # double entry: every transaction sums to zero
    return int(txns), int(granted), budget


def started(rt: Runtime, budget: int) -> service.Activity:
    project = create_project(rt.state, "p").project
    act = service.create_activity(rt.state, project.id, promotion(budget), "test")
    return service.transition(rt.state, project.id, act.id, "start", "test")


def test_identical_claims_grant_once(state_runtime: Runtime) -> None:
    act = started(state_runtime, BUDGET)
    reward = Reward(kind="coupon", threshold_fen=10_000, discount_fen=3_000)
    results = hammer(
        lambda i: service.settle(
            state_runtime, act, user_id="same-user", person_id=None, reward=reward, key="same-key"
        )
    )
    statuses = Counter((r.status, r.duplicate) for r in results)
    assert statuses[("granted", False)] == 1, statuses
    assert sum(statuses.values()) == N
    txns, granted, budget = count_grants(state_runtime, act.id)
    assert (txns, granted, budget.remaining_count) == (1, 1, BUDGET - 1)


def test_distinct_claims_never_exceed_budget(state_runtime: Runtime) -> None:
    act = started(state_runtime, BUDGET)
    reward = Reward(kind="coupon", threshold_fen=10_000, discount_fen=3_000)
    results = hammer(
        lambda i: service.settle(
            state_runtime, act, user_id=f"user-{i}", person_id=None, reward=reward, key=f"k-{i}"
        )
    )
    statuses = Counter(r.status for r in results)
    assert statuses == {"granted": BUDGET, "rejected": N - BUDGET}, statuses
    txns, granted, budget = count_grants(state_runtime, act.id)
    assert (txns, granted, budget.remaining_count) == (BUDGET, BUDGET, 0)
    wallets = [
        ledger.wallet(state_runtime.state, act.project_id, f"user-{i}")["coupons"] for i in range(N)
    ]
    assert sum(len(w) for w in wallets) == BUDGET


@pytest.mark.slow
def test_over_http_identical_and_distinct(app: App) -> None:
    act = app.create(promotion(BUDGET))
    path = f"{app.url}/v1/activities/{act['id']}/claim"
    headers = {"Authorization": f"Bearer {app.secret}"}

    def call(user: str, key: str) -> httpx.Response:
        return httpx.post(
            path, params={"user_id": user}, headers={**headers, "Idempotency-Key": key}, timeout=120
        )

    same = hammer(lambda i: call("one", "same"), workers=20)
    assert all(r.status_code == 200 for r in same), [r.text for r in same if r.status_code != 200]
    granted = [c for r in same for c in r.json()["results"] if c["status"] == "granted"]
    assert len(granted) == 1
    distinct = hammer(lambda i: call(f"d{i}", f"k{i}"), workers=20)
    assert all(r.status_code == 200 for r in distinct)
    statuses = Counter(c["status"] for r in distinct for c in r.json()["results"])
    assert statuses == {"granted": BUDGET - 1, "rejected": N - BUDGET + 1}, statuses
    live = app.manage("GET", f"/api/v1/activities/{act['id']}").json()["live"]
    assert live["budget"]["remaining_count"] == 0
    assert live["claims"]["granted"] == BUDGET
