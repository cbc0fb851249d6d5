"""The issue's farm scenario: a bonus-hunter farm next to honest users, scored.

Documented floors (docs/risk.md): precision ≥ 0.95 and recall ≥ 0.95 with the default policy.
"""

from __future__ import annotations

import pytest

from yunying.risk import RiskPolicy, assess
from yunying.runtime import Runtime
from yunying.state import NewProject

from .farm import build, score, to_claim
from .helpers import EdgeList, ingest, person_of

PRECISION_FLOOR = 0.95
RECALL_FLOOR = 0.95


@pytest.mark.slow
def test_farm_is_flagged_and_honest_users_are_granted(
    runtime: Runtime, project: NewProject
) -> None:
    pid = project.project.id
    s = build()
    ingest(runtime, pid, s.events)
    persons = {did: person_of(runtime, pid, did) for did in s.accounts}
    graph = EdgeList()
    for inviter, invitee, at in s.invites:
        graph.add(persons[inviter], persons[invitee], at)
    policy = RiskPolicy.from_spec(None)
    decisions = []
    for c in s.claims:
        claim = to_claim(s, pid, persons, c)
        decisions.append(assess(runtime, policy, claim, graph if c[1] == "referral" else None))
    result = score(s, s.claims, decisions)
    print("\n" + result.report())
    assert result.precision >= PRECISION_FLOOR, result.report()
    assert result.recall >= RECALL_FLOOR, result.report()
    # every hold is in the review queue
    assert all(d.review_id is not None for d in decisions if d.outcome == "hold")
