"""Concurrent assessments: a device's account cap holds; on SQLite and on PostgreSQL state."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from yunying.config import load_settings
from yunying.risk import RiskPolicy, assess, decide, list_reviews
from yunying.risk.tables import risk_claims
from yunying.runtime import Runtime
from yunying.state import create_project

from .farm import build, score, to_claim
from .helpers import EdgeList, ingest, make_claim, person_of

CAP = 3


def fifty_on_one_device(rt: Runtime) -> None:
    pid = create_project(rt.state, "并发").project.id
    policy = RiskPolicy.from_spec({"device": {"max_accounts": CAP}})

    def one(i: int) -> str:
        return assess(rt, policy, make_claim(pid, f"acct-{i}", device="shared-phone")).outcome

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(one, range(50)))
    assert outcomes.count("grant") == CAP, outcomes
    assert outcomes.count("hold") == 50 - CAP
    # every assessment is recorded, and every hold has its review item
    with rt.state.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(risk_claims)).scalar_one()
    assert n == 50
    assert len(list_reviews(rt.state, pid, limit=1000)) == 50 - CAP


def test_device_cap_under_concurrency_sqlite(runtime: Runtime) -> None:
    fifty_on_one_device(runtime)


@pytest.fixture
def pg_runtime(tmp_path: Path, fresh_postgres_url: str) -> Iterator[Runtime]:
    rt = Runtime.open(load_settings(data_dir=tmp_path / "data", state_url=fresh_postgres_url))
    yield rt
    rt.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_device_cap_under_concurrency_postgres(pg_runtime: Runtime) -> None:
    fifty_on_one_device(pg_runtime)


@pytest.mark.postgres
@pytest.mark.slow
def test_farm_and_reviews_on_postgres(pg_runtime: Runtime) -> None:
    """The farm scenario and a review decision with PostgreSQL as the state database."""
    rt = pg_runtime
    pid = create_project(rt.state, "pg").project.id
    s = build()
    ingest(rt, pid, s.events)
    persons = {did: person_of(rt, pid, did) for did in s.accounts}
    graph = EdgeList()
    for inviter, invitee, at in s.invites:
        graph.add(persons[inviter], persons[invitee], at)
    policy = RiskPolicy()
    decisions = [
        assess(rt, policy, to_claim(s, pid, persons, c), graph if c[1] == "referral" else None)
        for c in s.claims
    ]
    result = score(s, s.claims, decisions)
    print("\n(PostgreSQL state) " + result.report())
    assert result.precision >= 0.95 and result.recall >= 0.95
    held = next(d for d in decisions if d.outcome == "hold")
    assert held.review_id is not None
    review = decide(rt, pid, held.review_id, approved=False, reviewer="ops")
    assert review.status == "denied"
