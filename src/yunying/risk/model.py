"""What the operations engine hands anti-fraud for each claim, and what it gets back.

The activities engine (:mod:`yunying.activities`) builds a :class:`Claim` whenever a rule or an
app call is about to grant a reward, asks :func:`yunying.risk.assess` for a
:class:`RiskDecision`, and grants, holds (review queue) or denies accordingly. The invite graph
the referral template keeps is reached through :class:`InviteGraph`, so risk rules do not depend
on how activities store invites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Outcome = Literal["grant", "hold", "deny"]


@dataclass(frozen=True)
class Claim:
    """One attempt to receive a reward."""

    project_id: int
    activity_id: int
    #: The activity's template: checkin, referral, task, signup, gift, promotion.
    activity_kind: str
    #: The current person (after merges) and the distinct id the trigger came from.
    person_id: str
    distinct_id: str
    #: UTC, timezone-aware.
    at: datetime
    #: points, coupon, membership_days, cash, badge.
    reward_kind: str
    #: Reward amount in the ledger's unit (points, fen for cash, days, count).
    amount: float = 0.0
    #: Device and network the trigger came from (event properties or the app call).
    device_id: str | None = None
    ip: str | None = None
    #: Referral claims: "inviter" or "invitee", and the other side of the invite.
    role: str | None = None
    counterpart_person_id: str | None = None
    #: Free-form details kept with the claim in the review queue (rule, trigger event uuid...).
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RiskReason:
    """Why a rule fired: a stable code, a sentence for reviewers, the measured value and limit."""

    code: str
    message: str
    value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class RiskDecision:
    outcome: Outcome
    reasons: tuple[RiskReason, ...] = ()
    #: The review-queue item created for a ``hold`` (None otherwise).
    review_id: int | None = None


@dataclass(frozen=True)
class InviteEdge:
    inviter_person_id: str
    invitee_person_id: str
    created_at: datetime
    activated_at: datetime | None = None


class InviteGraph(Protocol):
    """The referral invites of a project, as the activities engine records them."""

    def edges(self, project_id: int, activity_id: int | None = None) -> Sequence[InviteEdge]:
        """Every invite of the project (of one activity when given)."""
        ...
