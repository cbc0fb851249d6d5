"""The review queue: held claims wait here until a person approves or denies them.

:func:`yunying.risk.assess` creates an item for every ``hold``. A decision is stored first and
then handed to the handler the claim's activity kind registered with :func:`on_review_decided`
(the activities engine grants the reward on approval, records the denial otherwise). Deciding is
atomic and happens once: deciding an item that is no longer pending raises
:class:`ReviewAlreadyDecided` naming its status, so two reviewers clicking at once cannot grant
twice. A handler that raises leaves the decision in place and its error on the item
(``handler_error``) for an operator to look at; handlers should be idempotent (the ledger's
idempotency keys make them so).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from yunying.errors import Conflict, NotFound, YunyingError
from yunying.risk.blocklist import utc
from yunying.risk.model import Claim, RiskReason
from yunying.risk.tables import codes_text, risk_claims, risk_reviews

if TYPE_CHECKING:
    from yunying.runtime import Runtime

log = logging.getLogger("yunying.risk")

ReviewStatus = Literal["pending", "approved", "denied"]
STATUSES: tuple[str, ...] = get_args(ReviewStatus)

#: ``handler(runtime, review, approved)``: what an activity kind does once a review is decided.
ReviewHandler = Callable[["Runtime", "Review", bool], None]


class InvalidReviewQuery(YunyingError):
    """A review-queue filter or decision is malformed (unknown status, empty reviewer...)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        #: The request field at fault (``status``, ``limit``, ``reviewer``...).
        self.field = field


class ReviewAlreadyDecided(Conflict):
    """The review was decided before; the message names its current status."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class ReviewHandlerFailed(YunyingError):
    """The decision is stored, but the activity's handler failed (see ``handler_error``)."""


@dataclass(frozen=True)
class Review:
    """One review-queue item with the claim it holds and why."""

    id: int
    project_id: int
    activity_id: int
    activity_kind: str
    claim_id: int
    person_id: str
    status: str
    claim: Claim
    reasons: tuple[RiskReason, ...]
    created_at: datetime
    decided_at: datetime | None = None
    reviewer: str | None = None
    note: str | None = None
    handler_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "activity_id": self.activity_id,
            "activity_kind": self.activity_kind,
            "claim_id": self.claim_id,
            "person_id": self.person_id,
            "status": self.status,
            "claim": claim_to_json(self.claim),
            "reasons": [asdict(r) for r in self.reasons],
            "created_at": self.created_at.isoformat(),
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
            "reviewer": self.reviewer,
            "note": self.note,
            "handler_error": self.handler_error,
        }


def claim_to_json(claim: Claim) -> dict[str, Any]:
    """A claim as JSON-friendly data (``at`` as ISO-8601)."""
    data = asdict(claim)
    data["at"] = utc(claim.at).isoformat()
    return data


def claim_from_json(data: dict[str, Any]) -> Claim:
    """The :class:`Claim` stored by :func:`claim_to_json`."""
    fields = dict(data)
    fields["at"] = utc(datetime.fromisoformat(fields["at"]))
    known = set(Claim.__dataclass_fields__)
    return Claim(**{k: v for k, v in fields.items() if k in known})


def reasons_from_json(data: list[dict[str, Any]]) -> tuple[RiskReason, ...]:
    return tuple(RiskReason(**r) for r in data)


def _review(r: sa.Row[Any]) -> Review:
    return Review(
        id=r.id,
        project_id=r.project_id,
        activity_id=r.activity_id,
        activity_kind=r.activity_kind,
        claim_id=r.claim_id,
        person_id=r.person_id,
        status=r.status,
        claim=claim_from_json(r.claim),
        reasons=reasons_from_json(r.reasons),
        created_at=utc(r.created_at),
        decided_at=None if r.decided_at is None else utc(r.decided_at),
        reviewer=r.reviewer,
        note=r.note,
        handler_error=r.handler_error,
    )


# -- handlers -------------------------------------------------------------------------------------

_handlers: dict[str, ReviewHandler] = {}
_handlers_lock = threading.Lock()


def on_review_decided(activity_kind: str, handler: ReviewHandler) -> None:
    """Register what happens when a held claim of ``activity_kind`` is approved or denied.

    One handler per kind; registering again replaces it (module reloads, tests).
    """
    with _handlers_lock:
        _handlers[activity_kind] = handler


def _handler_for(kind: str) -> ReviewHandler | None:
    if kind not in _handlers:
        # the activities engine registers its handlers when it is imported
        with contextlib.suppress(ImportError):
            importlib.import_module("yunying.activities")
    return _handlers.get(kind)


# -- queue ----------------------------------------------------------------------------------------


def create_review(
    conn: Connection,
    claim_id: int,
    claim: Claim,
    reasons: tuple[RiskReason, ...],
    now: datetime,
) -> int:
    """Add a pending item for a held claim (inside the assessment's transaction)."""
    return int(
        conn.execute(
            risk_reviews.insert().values(
                project_id=claim.project_id,
                activity_id=claim.activity_id,
                activity_kind=claim.activity_kind,
                claim_id=claim_id,
                person_id=claim.person_id,
                status="pending",
                claim=claim_to_json(claim),
                reasons=[asdict(r) for r in reasons],
                reason_codes=codes_text([r.code for r in reasons]),
                created_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def list_reviews(
    engine: Engine,
    project_id: int,
    *,
    status: str | None = "pending",
    activity_id: int | None = None,
    person_id: str | None = None,
    reason: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Review]:
    """Items of a project, oldest pending first (newest first for decided ones)."""
    if status is not None and status not in STATUSES:
        raise InvalidReviewQuery(
            f"field 'status' must be one of {', '.join(STATUSES)}, not {status!r}", "status"
        )
    if not 1 <= limit <= 1000:
        raise InvalidReviewQuery("field 'limit' must be between 1 and 1000", "limit")
    if offset < 0:
        raise InvalidReviewQuery("field 'offset' must not be negative", "offset")
    q = sa.select(risk_reviews).where(risk_reviews.c.project_id == project_id)
    if status is not None:
        q = q.where(risk_reviews.c.status == status)
    if activity_id is not None:
        q = q.where(risk_reviews.c.activity_id == activity_id)
    if person_id is not None:
        q = q.where(risk_reviews.c.person_id == person_id)
    if reason is not None:
        q = q.where(risk_reviews.c.reason_codes.contains(f",{reason},", autoescape=True))
    order = risk_reviews.c.id.asc() if status == "pending" else risk_reviews.c.id.desc()
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(order).limit(limit).offset(offset)).all()
    return [_review(r) for r in rows]


def get_review(engine: Engine, project_id: int, review_id: int) -> Review:
    """One item; :class:`NotFound` if the project has no review ``review_id``."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(risk_reviews).where(
                risk_reviews.c.project_id == project_id, risk_reviews.c.id == review_id
            )
        ).first()
    if row is None:
        raise NotFound(f"no review {review_id} in this project")
    return _review(row)


def decide(
    runtime: Runtime,
    project_id: int,
    review_id: int,
    *,
    approved: bool,
    reviewer: str,
    note: str | None = None,
) -> Review:
    """Approve or deny a pending item, then run its activity kind's handler.

    Raises :class:`NotFound`, :class:`ReviewAlreadyDecided` (naming the current status) or,
    after storing the decision, :class:`ReviewHandlerFailed`.
    """
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise InvalidReviewQuery("field 'reviewer' is required: who decides", "reviewer")
    status = "approved" if approved else "denied"
    now = datetime.now(UTC)
    where = (risk_reviews.c.project_id == project_id) & (risk_reviews.c.id == review_id)
    with runtime.state.begin() as conn:
        done = conn.execute(
            risk_reviews.update()
            .where(where, risk_reviews.c.status == "pending")
            .values(status=status, decided_at=now, reviewer=reviewer[:200], note=note)
        ).rowcount
        row = conn.execute(sa.select(risk_reviews).where(where)).first()
        if row is None:
            raise NotFound(f"no review {review_id} in this project")
        if not done:
            by = f" by {row.reviewer}" if row.reviewer else ""
            when = f" at {utc(row.decided_at).isoformat()}" if row.decided_at else ""
            raise ReviewAlreadyDecided(
                f"review {review_id} is already {row.status}{by}{when}", row.status
            )
    review = _review(row)
    handler = _handler_for(review.activity_kind)
    if handler is None:
        log.warning("no review handler", extra={"activity_kind": review.activity_kind})
        return review
    try:
        handler(runtime, review, approved)
    except Exception as exc:
        log.exception("review handler failed", extra={"review_id": review_id})
        message = f"{type(exc).__name__}: {exc}"[:2000]
        with runtime.state.begin() as conn:
            conn.execute(risk_reviews.update().where(where).values(handler_error=message))
        raise ReviewHandlerFailed(
            f"review {review_id} is {status}, but the {review.activity_kind} handler failed: "
            f"{message}"
        ) from exc
    return review


def activity_summary(engine: Engine, project_id: int, activity_id: int) -> dict[str, Any]:
    """Assessed claims of an activity by outcome, claims with reasons by reason code (in
    ``monitor`` mode granted claims have reasons too), and its reviews by status."""
    with engine.connect() as conn:
        outcomes = dict.fromkeys(("grant", "hold", "deny"), 0)
        for outcome, n in conn.execute(
            sa.select(risk_claims.c.outcome, sa.func.count())
            .where(risk_claims.c.project_id == project_id, risk_claims.c.activity_id == activity_id)
            .group_by(risk_claims.c.outcome)
        ):
            outcomes[outcome] = int(n)
        reasons: dict[str, int] = {}
        flagged = conn.execute(
            sa.select(risk_claims.c.reason_codes).where(
                risk_claims.c.project_id == project_id,
                risk_claims.c.activity_id == activity_id,
                risk_claims.c.flagged.is_(True),
            )
        )
        for (text,) in flagged:
            for code in set(text.strip(",").split(",")) - {""}:
                reasons[code] = reasons.get(code, 0) + 1
        reviews = dict.fromkeys(STATUSES, 0)
        for status, n in conn.execute(
            sa.select(risk_reviews.c.status, sa.func.count())
            .where(
                risk_reviews.c.project_id == project_id, risk_reviews.c.activity_id == activity_id
            )
            .group_by(risk_reviews.c.status)
        ):
            reviews[status] = int(n)
    return {
        "activity_id": activity_id,
        "claims": {"total": sum(outcomes.values()), **outcomes},
        "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reviews": reviews,
    }
