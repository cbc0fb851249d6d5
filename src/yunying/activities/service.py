"""Activities as plain functions: create from a spec, state machine, audit log, claims through
anti-fraud, invites, seats, progress. The HTTP API, the CLI and the live processor call these.

State machine: ``draft → scheduled → running ⇄ paused → ended``; ``start`` on a draft whose
schedule starts later lands in ``scheduled`` and the processor moves it to ``running`` at the
start time (and to ``ended`` at the end). ``kill`` ends the activity at once and freezes its
budget in the same transaction, so no grant can pass after it commits. Every change writes an
audit row with the actor and the before/after values.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from yunying import risk
from yunying.activities import ledger
from yunying.activities.ledger import BudgetExhausted, aware, insert_ignore, iso, utcnow
from yunying.activities.rules import Due
from yunying.activities.spec import Reward, SpecError, parse_spec, spec_dict
from yunying.activities.tables import (
    activities,
    activity_audit,
    activity_budgets,
    activity_outbox,
    activity_progress,
    claims,
    invite_codes,
    invites,
    signups,
)
from yunying.errors import Conflict, NotFound, YunyingError
from yunying.state.models import projects

if TYPE_CHECKING:
    from yunying.runtime import Runtime

log = logging.getLogger("yunying.activities")

STATES = ("draft", "scheduled", "running", "paused", "ended")
#: action → (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "schedule": (("draft",), "scheduled"),
    "start": (("draft", "scheduled"), "running"),
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "end": (("scheduled", "running", "paused"), "ended"),
    "kill": (("draft", "scheduled", "running", "paused", "ended"), "ended"),
}


class InvalidTransition(Conflict):
    """The activity's state does not allow this action."""


class AlreadyDone(Conflict):
    """An app call repeated with an Idempotency-Key already used: nothing changed."""


class NotEligible(YunyingError):
    """The user may not take part (audience, own invite code, no seat, not running...)."""


@dataclass(frozen=True)
class Activity:
    id: int
    project_id: int
    name: str
    template: str
    state: str
    killed: bool
    spec: Any
    created_at: datetime
    updated_at: datetime
    timezone: str = "Asia/Shanghai"

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.spec.schedule.timezone or self.timezone)

    @cached_property
    def _window(self) -> tuple[datetime | None, datetime | None]:
        s = self.spec.schedule
        return _sched(s.start, self.tz), _sched(s.end, self.tz)

    def window(self) -> tuple[datetime | None, datetime | None]:
        """Start and end in UTC (None: open)."""
        return self._window

    def live_at(self, at: datetime) -> bool:
        """Running, not killed, and ``at`` inside the schedule."""
        if self.state != "running" or self.killed:
            return False
        start, end = self.window()
        return (start is None or at >= start) and (end is None or at < end)

    def as_dict(self) -> dict[str, Any]:
        start, end = self.window()
        return {
            "id": self.id,
            "name": self.name,
            "template": self.template,
            "state": self.state,
            "killed": self.killed,
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None,
            "timezone": str(self.tz),
            "spec": spec_dict(self.spec),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _sched(dt: datetime | None, tz: ZoneInfo) -> datetime | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).astimezone(UTC)


def _row(r: Any, timezone: str) -> Activity:
    return Activity(
        r.id,
        r.project_id,
        r.name,
        r.template,
        r.state,
        bool(r.killed),
        parse_spec(r.spec),
        aware(r.created_at),  # type: ignore[arg-type]
        aware(r.updated_at),  # type: ignore[arg-type]
        timezone,
    )


def validate_risk(spec: Any) -> None:
    """The ``risk:`` section must be a policy anti-fraud accepts (error names the field)."""
    try:
        risk.RiskPolicy.from_spec(spec.risk)
    except YunyingError as exc:
        raise SpecError([{"field": "risk", "message": exc.message}]) from None


def _audit(
    conn: Connection,
    project_id: int,
    activity_id: int,
    actor: str,
    action: str,
    before: Any,
    after: Any,
) -> None:
    conn.execute(
        activity_audit.insert().values(
            project_id=project_id,
            activity_id=activity_id,
            at=utcnow(),
            actor=actor,
            action=action,
            before=before,
            after=after,
        )
    )


def _budget_values(spec: Any, spent_fen: int = 0, granted: int = 0) -> dict[str, Any]:
    b = spec.budget
    return {
        "remaining_fen": None if b.total_fen is None else b.total_fen - spent_fen,
        "remaining_count": None if b.total_count is None else b.total_count - granted,
        "seats": getattr(spec, "seats", None),
    }


def create_activity(engine: Engine, project_id: int, data: Any, actor: str) -> Activity:
    """Validate ``data`` (dict, YAML or JSON) and store it as a draft."""
    spec = parse_spec(data)
    validate_risk(spec)
    now = utcnow()
    stored = spec_dict(spec)
    with engine.begin() as conn:
        aid = conn.execute(
            activities.insert().values(
                project_id=project_id,
                name=spec.name,
                template=spec.template,
                state="draft",
                killed=False,
                spec=stored,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(activity_budgets.insert().values(activity_id=aid, **_budget_values(spec)))
        _audit(conn, project_id, aid, actor, "create", None, stored)
    return get_activity(engine, project_id, aid)


def _tz_of(conn: Connection, project_id: int) -> str:
    return str(
        conn.execute(sa.select(projects.c.timezone).where(projects.c.id == project_id)).scalar()
        or "Asia/Shanghai"
    )


def get_activity(engine: Engine | Connection, project_id: int, activity_id: int) -> Activity:
    a = activities.c

    def run(conn: Connection) -> Activity:
        r = conn.execute(
            sa.select(activities).where(a.id == activity_id, a.project_id == project_id)
        ).first()
        if r is None:
            raise NotFound(f"no activity {activity_id} in this project")
        return _row(r, _tz_of(conn, project_id))

    if isinstance(engine, Connection):
        return run(engine)
    with engine.connect() as conn:
        return run(conn)


def list_activities(
    engine: Engine, project_id: int | None = None, state: str | None = None
) -> list[Activity]:
    """Activities of a project (of every project when None), newest first."""
    a = activities.c
    q = sa.select(activities, projects.c.timezone.label("tz")).join(
        projects, projects.c.id == a.project_id
    )
    if project_id is not None:
        q = q.where(a.project_id == project_id)
    if state is not None:
        q = q.where(a.state == state)
    with engine.connect() as conn:
        return [_row(r, r.tz) for r in conn.execute(q.order_by(a.id.desc()))]


def update_activity(
    engine: Engine, project_id: int, activity_id: int, data: Any, actor: str
) -> Activity:
    """Replace the spec (same template; not once ended); budgets keep what was spent."""
    spec = parse_spec(data)
    validate_risk(spec)
    with engine.begin() as conn:
        cur = get_activity(conn, project_id, activity_id)
        if cur.state == "ended":
            raise InvalidTransition(f"activity {activity_id} has ended; its spec is final")
        if spec.template != cur.template:
            raise SpecError(
                [{"field": "template", "message": f"cannot change template of a {cur.template}"}]
            )
        b = activity_budgets.c
        used = conn.execute(
            sa.select(b.spent_fen, b.granted_count).where(b.activity_id == activity_id)
        ).one()
        new = spec_dict(spec)
        conn.execute(
            activities.update()
            .where(activities.c.id == activity_id)
            .values(spec=new, name=spec.name, updated_at=utcnow())
        )
        conn.execute(
            activity_budgets.update()
            .where(b.activity_id == activity_id)
            .values(**_budget_values(spec, int(used.spent_fen), int(used.granted_count)))
        )
        _audit(conn, project_id, activity_id, actor, "update", spec_dict(cur.spec), new)
    return get_activity(engine, project_id, activity_id)


def transition(
    engine: Engine,
    project_id: int,
    activity_id: int,
    action: str,
    actor: str,
    now: datetime | None = None,
) -> Activity:
    """Apply ``action`` (schedule, start, pause, resume, end, kill) if the state allows it."""
    if action not in TRANSITIONS:
        raise InvalidTransition(f"unknown action {action!r}: use {', '.join(TRANSITIONS)}")
    allowed, target = TRANSITIONS[action]
    now = now or utcnow()
    with engine.begin() as conn:
        cur = get_activity(conn, project_id, activity_id)
        if action == "kill" and cur.killed:
            return cur
        if cur.state not in allowed:
            raise InvalidTransition(
                f"cannot {action} activity {activity_id}: it is {cur.state} "
                f"({action} applies to {', '.join(allowed)})"
            )
        start, end = cur.window()
        if action == "start" and start is not None and start > now:
            target = "scheduled"
        if action in ("start", "resume") and end is not None and end <= now:
            raise InvalidTransition(f"activity {activity_id} ended at {end.isoformat()}")
        values: dict[str, Any] = {"state": target, "updated_at": now}
        if action == "kill":
            values["killed"] = True
            conn.execute(
                activity_budgets.update()
                .where(activity_budgets.c.activity_id == activity_id)
                .values(frozen=True)
            )
        done = conn.execute(
            activities.update()
            .where(activities.c.id == activity_id, activities.c.state == cur.state)
            .values(**values)
        ).rowcount
        if not done:
            raise InvalidTransition(f"activity {activity_id} changed meanwhile; try again")
        _audit(
            conn,
            project_id,
            activity_id,
            actor,
            action,
            {"state": cur.state, "killed": cur.killed},
            {"state": target, "killed": cur.killed or action == "kill"},
        )
    return get_activity(engine, project_id, activity_id)


def advance_schedules(engine: Engine, now: datetime | None = None) -> list[Activity]:
    """Start scheduled activities whose start passed, end running/paused ones past their end."""
    now = now or utcnow()
    changed = []
    for act in list_activities(engine):
        start, end = act.window()
        action = None
        if act.state in ("scheduled", "running", "paused") and end is not None and end <= now:
            action = "end"
        elif act.state == "scheduled" and (start is None or start <= now):
            action = "start"
        if action:
            with contextlib.suppress(InvalidTransition):
                changed.append(transition(engine, act.project_id, act.id, action, "schedule", now))
    return changed


def audit_log(engine: Engine, project_id: int, activity_id: int) -> list[dict[str, Any]]:
    t = activity_audit.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(activity_audit)
            .where(t.project_id == project_id, t.activity_id == activity_id)
            .order_by(t.id)
        ).all()
    return [
        {
            "id": r.id,
            "at": aware(r.at).isoformat(),  # type: ignore[union-attr]
            "actor": r.actor,
            "action": r.action,
            "before": r.before,
            "after": r.after,
        }
        for r in rows
    ]


# -- claims -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimResult:
    """What became of one claim: granted, held, denied, rejected (budget), inactive."""

    status: str
    key: str
    claim_id: int | None = None
    transaction_id: int | None = None
    review_id: int | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False
    reward: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "key": self.key,
            "claim_id": self.claim_id,
            "transaction_id": self.transaction_id,
            "review_id": self.review_id,
            "reasons": self.reasons,
            "duplicate": self.duplicate,
            "reward": self.reward,
        }


def _claim_result(r: Any, duplicate: bool) -> ClaimResult:
    return ClaimResult(
        r.status,
        r.idempotency_key,
        r.id,
        r.transaction_id,
        r.review_id,
        list(r.reasons or []),
        duplicate,
        dict(r.reward or {}),
    )


def claim_by_key(engine: Engine, project_id: int, key: str) -> ClaimResult | None:
    with engine.connect() as conn:
        r = conn.execute(
            sa.select(claims).where(
                claims.c.project_id == project_id, claims.c.idempotency_key == key
            )
        ).first()
    return _claim_result(r, True) if r else None


class InviteStore:
    """:class:`yunying.risk.InviteGraph` over the invites table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def edges(self, project_id: int, activity_id: int | None = None) -> list[risk.InviteEdge]:
        i = invites.c
        q = sa.select(invites).where(i.project_id == project_id)
        if activity_id is not None:
            q = q.where(i.activity_id == activity_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(i.id)).all()
        return [
            risk.InviteEdge(
                r.inviter_person_id or r.inviter_id,
                r.invitee_person_id or r.invitee_id,
                aware(r.created_at),  # type: ignore[arg-type]
                aware(r.activated_at),
            )
            for r in rows
        ]


#: Parsed risk policies by (activity, last change): parsing per claim would cost more than it.
_policies: dict[tuple[int, datetime], risk.RiskPolicy] = {}


def _assess(runtime: Runtime, act: Activity, claim: risk.Claim) -> risk.RiskDecision:
    """Anti-fraud's decision on ``claim`` under the activity's ``risk:`` policy."""
    cache_key = (act.id, act.updated_at)
    policy = _policies.get(cache_key)
    if policy is None:
        policy = risk.RiskPolicy.from_spec(act.spec.risk)
        if len(_policies) > 10_000:
            _policies.clear()
        _policies[cache_key] = policy
    return risk.assess(runtime, policy, claim, InviteStore(runtime.state))


def _reward_dict(reward: Reward) -> dict[str, Any]:
    return dict(reward.model_dump(mode="json", exclude_none=True))


def settle(
    runtime: Runtime,
    act: Activity,
    *,
    user_id: str,
    person_id: str | None,
    reward: Reward,
    key: str,
    at: datetime | None = None,
    role: str | None = None,
    counterpart: str | None = None,
    device_id: str | None = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
    cap_key: str | None = None,
    check_live: bool = True,
) -> ClaimResult:
    """Claim ``reward`` for ``user_id`` under ``key``: anti-fraud first, then grant exactly once.

    A key seen before returns the first outcome (``duplicate=True``). Granted claims take the
    budget and post to the ledger in one transaction with the claim row; held claims wait for a
    reviewer (``review_id``); denied ones keep their reasons; claims the budget cannot cover are
    recorded as ``rejected``.
    """
    engine = runtime.state
    at = at or utcnow()
    details = dict(details or {})
    existing = claim_by_key(engine, act.project_id, key)
    if existing is not None:
        return existing
    if check_live and not act.live_at(utcnow()):
        return ClaimResult(
            "inactive", key, reasons=[{"code": "inactive", "message": f"activity is {act.state}"}]
        )
    claim = risk.Claim(
        project_id=act.project_id,
        activity_id=act.id,
        activity_kind=act.template,
        person_id=person_id or user_id,
        distinct_id=user_id,
        at=at,
        reward_kind=reward.kind,
        amount=float(reward.amount),
        device_id=device_id,
        ip=ip,
        role=role,
        counterpart_person_id=counterpart,
        details={**details, "key": key},
    )
    decision = _assess(runtime, act, claim)
    reasons = [
        {"code": r.code, "message": r.message, "value": r.value, "threshold": r.threshold}
        for r in decision.reasons
    ]
    base = {
        "project_id": act.project_id,
        "activity_id": act.id,
        "idempotency_key": key,
        "user_id": user_id,
        "person_id": person_id,
        "reward": _reward_dict(reward),
        "reasons": reasons,
        "details": {**details, "role": role, "cap_key": cap_key, "counterpart": counterpart},
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    if decision.outcome == "grant":
        return _grant(engine, act, base, reward, cap_key)
    status = "held" if decision.outcome == "hold" else "denied"
    with engine.begin() as conn:
        insert_ignore(conn, claims, {**base, "status": status, "review_id": decision.review_id})
    found = claim_by_key(engine, act.project_id, key)
    assert found is not None
    return ClaimResult(**{**found.__dict__, "duplicate": found.status != status})


def _grant(
    engine: Engine, act: Activity, base: dict[str, Any], reward: Reward, cap_key: str | None
) -> ClaimResult:
    key = base["idempotency_key"]
    budget = act.spec.budget
    try:
        with engine.begin() as conn:
            cid = conn.execute(
                claims.insert().values(**base, status="granted")
            ).inserted_primary_key[0]  # type: ignore[index]
            ledger.reserve_budget(
                conn,
                act.id,
                base["user_id"],
                reward.cost(),
                per_user_fen=budget.per_user_fen,
                per_user_count=budget.per_user_count,
            )
            if cap_key is not None:
                cap = getattr(act.spec, "max_invites_per_inviter", None)
                if cap is not None:
                    _reserve_cap(conn, act.id, cap_key, cap)
            start, end = act.window()
            txn = ledger.post_grant(
                conn,
                project_id=act.project_id,
                activity_id=act.id,
                user_id=base["user_id"],
                reward=reward,
                key=key,
                valid_from=start if reward.kind == "coupon" else None,
                valid_to=end if reward.kind == "coupon" and not reward.valid_days else None,
                memo={"claim": cid, **{k: v for k, v in base["details"].items() if v is not None}},
            )
            conn.execute(claims.update().where(claims.c.id == cid).values(transaction_id=txn))
        return ClaimResult("granted", key, cid, txn, reward=base["reward"])
    except IntegrityError:
        found = claim_by_key(engine, act.project_id, key)
        if found is None:
            raise
        return found
    except BudgetExhausted as exc:
        reasons = [{"code": f"budget_{exc.scope}", "message": str(exc)}]
        with engine.begin() as conn:
            insert_ignore(conn, claims, {**base, "status": "rejected", "reasons": reasons})
        found = claim_by_key(engine, act.project_id, key)
        assert found is not None
        return ClaimResult(**{**found.__dict__, "duplicate": found.status != "rejected"})


def _reserve_cap(conn: Connection, activity_id: int, cap_key: str, cap: int) -> None:
    from yunying.activities.tables import activity_user_budgets as ub

    insert_ignore(conn, ub, {"activity_id": activity_id, "user_id": cap_key})
    done = conn.execute(
        ub.update()
        .where(ub.c.activity_id == activity_id, ub.c.user_id == cap_key, ub.c.used_count + 1 <= cap)
        .values(used_count=ub.c.used_count + 1)
    ).rowcount
    if not done:
        raise BudgetExhausted(
            f"this inviter has reached the limit of {cap} rewarded invites", "inviter"
        )


def decide_review(runtime: Runtime, review: Any, approved: bool) -> None:
    """Anti-fraud's verdict on a held claim: grant it (budget permitting) or record the denial."""
    review_id = review if isinstance(review, int) else getattr(review, "id", None)
    if review_id is None and isinstance(review, dict):
        review_id = review.get("id")
    engine = runtime.state
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(claims).where(claims.c.review_id == review_id, claims.c.status == "held")
        ).all()
    for r in rows:
        if not approved:
            with engine.begin() as conn:
                conn.execute(
                    claims.update()
                    .where(claims.c.id == r.id, claims.c.status == "held")
                    .values(
                        status="denied",
                        updated_at=utcnow(),
                        reasons=[
                            *(r.reasons or []),
                            {"code": "review", "message": "denied by a reviewer"},
                        ],
                    )
                )
            continue
        act = get_activity(engine, r.project_id, r.activity_id)
        reward = Reward.model_validate(r.reward)
        budget = act.spec.budget
        try:
            with engine.begin() as conn:
                done = conn.execute(
                    claims.update()
                    .where(claims.c.id == r.id, claims.c.status == "held")
                    .values(status="granted", updated_at=utcnow())
                ).rowcount
                if not done:
                    continue
                ledger.reserve_budget(
                    conn,
                    act.id,
                    r.user_id,
                    reward.cost(),
                    per_user_fen=budget.per_user_fen,
                    per_user_count=budget.per_user_count,
                )
                txn = ledger.post_grant(
                    conn,
                    project_id=r.project_id,
                    activity_id=act.id,
                    user_id=r.user_id,
                    reward=reward,
                    key=r.idempotency_key,
                    memo={"claim": r.id, "review": review_id},
                )
                conn.execute(claims.update().where(claims.c.id == r.id).values(transaction_id=txn))
        except BudgetExhausted as exc:
            with engine.begin() as conn:
                conn.execute(
                    claims.update()
                    .where(claims.c.id == r.id, claims.c.status == "held")
                    .values(
                        status="rejected",
                        updated_at=utcnow(),
                        reasons=[
                            *(r.reasons or []),
                            {"code": f"budget_{exc.scope}", "message": str(exc)},
                        ],
                    )
                )


def register_review_handlers() -> None:
    """Tell anti-fraud how to finish held claims of every template (idempotent)."""
    from yunying.activities.spec import TEMPLATES

    for kind in TEMPLATES:
        risk.on_review_decided(kind, decide_review)


def list_claims(
    engine: Engine, project_id: int, activity_id: int, status: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    c = claims.c
    q = sa.select(claims).where(c.project_id == project_id, c.activity_id == activity_id)
    if status:
        q = q.where(c.status == status)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(c.id.desc()).limit(limit)).all()
    return [
        {
            **_claim_result(r, False).as_dict(),
            "user_id": r.user_id,
            "created_at": iso(r.created_at),
        }
        for r in rows
    ]


# -- outbox -------------------------------------------------------------------------------------


def due_payload(
    due: Due, user_id: str, person_id: str | None, ev: dict[str, Any]
) -> dict[str, Any]:
    return {
        "user_id": due.user_id or user_id,
        "person_id": person_id if due.user_id is None else due.details.get("person_id"),
        "reward": _reward_dict(due.reward),
        "role": due.role,
        "counterpart": due.counterpart,
        "cap_key": due.cap_key,
        "details": {**due.details, **ev},
    }


def enqueue_dues(
    conn: Connection,
    act: Activity,
    dues: list[Due],
    user_id: str,
    person_id: str | None,
    ev: dict[str, Any],
) -> None:
    """Write rewards due to the outbox (a key already there is left alone)."""
    now = utcnow()
    ledger.insert_ignore_many(
        conn,
        activity_outbox,
        [
            {
                "project_id": act.project_id,
                "activity_id": act.id,
                "key": due.key,
                "payload": due_payload(due, user_id, person_id, ev),
                "created_at": now,
                "done": False,
            }
            for due in dues
        ],
    )


def drain_outbox(
    runtime: Runtime,
    project_id: int | None = None,
    keys: list[str] | None = None,
    limit: int = 10_000,
) -> list[ClaimResult]:
    """Grant (through risk) every reward still due (or those under ``keys``); safe to repeat:
    the claim keys make it exactly-once."""
    o = activity_outbox.c
    q = sa.select(activity_outbox).where(o.done == sa.false())
    if project_id is not None:
        q = q.where(o.project_id == project_id)
    if keys is not None:
        q = q.where(o.key.in_(keys))
    with runtime.state.connect() as conn:
        rows = conn.execute(q.order_by(o.id).limit(limit)).all()
    results = []
    done: list[int] = []
    cache: dict[int, Activity] = {}
    for r in rows:
        act = cache.get(r.activity_id) or get_activity(runtime.state, r.project_id, r.activity_id)
        cache[act.id] = act
        p = r.payload
        d = dict(p.get("details") or {})
        at = datetime.fromisoformat(d["at"]) if d.get("at") else None
        result = settle(
            runtime,
            act,
            user_id=p["user_id"],
            person_id=p.get("person_id"),
            reward=Reward.model_validate(p["reward"]),
            key=r.key,
            at=at,
            role=p.get("role"),
            counterpart=p.get("counterpart"),
            device_id=d.get("device_id"),
            ip=d.get("ip"),
            details=d,
            cap_key=p.get("cap_key"),
            check_live=False,
        )
        results.append(result)
        done.append(r.id)
        if len(done) >= 200:
            _mark_done(runtime, done)
    _mark_done(runtime, done)
    return results


def _mark_done(runtime: Runtime, ids: list[int]) -> None:
    """Outbox rows whose claim is settled (a crash before this only repeats idempotent claims)."""
    if ids:
        with runtime.state.begin() as conn:
            conn.execute(
                activity_outbox.update().where(activity_outbox.c.id.in_(ids)).values(done=True)
            )
        ids.clear()


# -- progress -----------------------------------------------------------------------------------


def load_progress(
    conn: Connection, act: Activity, user_id: str, person_id: str | None
) -> dict[str, Any]:
    """The participant's progress row, created (and locked on PostgreSQL) for this transaction."""
    now = utcnow()
    p = activity_progress.c
    insert_ignore(
        conn,
        activity_progress,
        {
            "activity_id": act.id,
            "user_id": user_id,
            "person_id": person_id,
            "data": {},
            "joined_at": now,
            "updated_at": now,
        },
    )
    data = conn.execute(
        sa.select(p.data).where(p.activity_id == act.id, p.user_id == user_id).with_for_update()
    ).scalar_one()
    return dict(data or {})


def save_progress(
    conn: Connection, act: Activity, user_id: str, data: dict[str, Any], completed: bool = False
) -> None:
    p = activity_progress.c
    values: dict[str, Any] = {"data": data, "updated_at": utcnow()}
    if completed:
        values["completed_at"] = utcnow()
    conn.execute(
        activity_progress.update()
        .where(p.activity_id == act.id, p.user_id == user_id)
        .values(**values)
    )


def progress_of(engine: Engine, act: Activity, user_id: str) -> dict[str, Any]:
    """What the app shows: the user's progress, rewards claimed and (per template) extras."""
    p = activity_progress.c
    with engine.connect() as conn:
        r = conn.execute(
            sa.select(activity_progress).where(p.activity_id == act.id, p.user_id == user_id)
        ).first()
        my_claims = conn.execute(
            sa.select(claims)
            .where(claims.c.activity_id == act.id, claims.c.user_id == user_id)
            .order_by(claims.c.id)
        ).all()
        extra: dict[str, Any] = {}
        if act.template == "referral":
            rows = conn.execute(
                sa.select(invites.c.invitee_id, invites.c.activated_at).where(
                    invites.c.activity_id == act.id, invites.c.inviter_id == user_id
                )
            ).all()
            extra["invited"] = len(rows)
            extra["activated"] = sum(1 for x in rows if x.activated_at is not None)
        if act.template == "signup":
            s = conn.execute(
                sa.select(signups).where(
                    signups.c.activity_id == act.id, signups.c.user_id == user_id
                )
            ).first()
            extra["signup"] = _signup_dict(conn, s) if s else None
    data = dict(r.data) if r else {}
    if act.template == "task":
        spec = act.spec
        counts = data.get("counts", [0] * len(spec.stages))
        extra["stages"] = [
            {
                "name": s.name,
                "event": s.event,
                "count": min(c, s.count),
                "target": s.count,
                "done": c >= s.count,
            }
            for s, c in zip(
                spec.stages, counts + [0] * (len(spec.stages) - len(counts)), strict=True
            )
        ]
    if act.template == "checkin":
        extra["next_milestone"] = next(
            (m.days for m in act.spec.milestones if m.days > int(data.get("streak", 0))), None
        )
    return {
        "activity_id": act.id,
        "user_id": user_id,
        "joined": r is not None,
        "progress": data,
        "completed_at": iso(r.completed_at) if r is not None else None,
        "claims": [_claim_result(c, False).as_dict() for c in my_claims],
        **extra,
    }


# -- invites ------------------------------------------------------------------------------------

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def invite_code(engine: Engine, act: Activity, user_id: str, person_id: str | None) -> str:
    """The user's personal invite code in this activity (made on first request)."""
    if act.template != "referral":
        raise NotEligible(f"activity {act.id} is a {act.template}, not a referral")
    c = invite_codes.c
    for _ in range(5):
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
        try:
            with engine.begin() as conn:
                insert_ignore(
                    conn,
                    invite_codes,
                    {
                        "project_id": act.project_id,
                        "activity_id": act.id,
                        "user_id": user_id,
                        "person_id": person_id,
                        "code": code,
                        "created_at": utcnow(),
                    },
                )
                got = conn.execute(
                    sa.select(c.code).where(c.activity_id == act.id, c.user_id == user_id)
                ).scalar_one()
            return str(got)
        except IntegrityError:  # code collision with another user: draw again
            continue
    raise Conflict("could not allocate an invite code; retry")


def accept_invite(
    conn: Connection,
    act: Activity,
    invitee_id: str,
    invitee_person: str | None,
    code: str,
    at: datetime,
) -> dict[str, Any]:
    """Record that ``invitee_id`` joined through ``code`` (caller's transaction)."""
    c = invite_codes.c
    owner = conn.execute(
        sa.select(c.user_id, c.person_id).where(
            c.project_id == act.project_id, c.activity_id == act.id, c.code == code.strip().upper()
        )
    ).first()
    if owner is None:
        raise NotFound(f"no invite code {code!r} in activity {act.id}")
    if owner.user_id == invitee_id or (invitee_person and owner.person_id == invitee_person):
        raise NotEligible("you cannot accept your own invite code")
    existing = conn.execute(
        sa.select(invites).where(
            invites.c.activity_id == act.id, invites.c.invitee_id == invitee_id
        )
    ).first()
    if existing is not None:
        if existing.inviter_id != owner.user_id:
            raise Conflict("this user has already accepted another invite in this activity")
        return {"inviter_id": owner.user_id, "created": False}
    insert_ignore(
        conn,
        invites,
        {
            "project_id": act.project_id,
            "activity_id": act.id,
            "inviter_id": owner.user_id,
            "inviter_person_id": owner.person_id,
            "invitee_id": invitee_id,
            "invitee_person_id": invitee_person,
            "created_at": at,
        },
    )
    return {"inviter_id": owner.user_id, "created": True}


def activate_invite(
    conn: Connection, act: Activity, invitee_id: str, invitee_person: str | None, at: datetime
) -> list[Due]:
    """The invitee did the qualifying event: mark the invite activated once, rewards due."""
    from datetime import timedelta

    spec = act.spec
    r = conn.execute(
        sa.select(invites).where(
            invites.c.activity_id == act.id, invites.c.invitee_id == invitee_id
        )
    ).first()
    if r is None or r.activated_at is not None:
        return []
    created = aware(r.created_at)
    if created is not None and at > created + timedelta(days=spec.activation_days):
        return []
    done = conn.execute(
        invites.update()
        .where(invites.c.id == r.id, invites.c.activated_at.is_(None))
        .values(activated_at=at, invitee_person_id=r.invitee_person_id or invitee_person)
    ).rowcount
    if not done:
        return []
    inviter_person = r.inviter_person_id or r.inviter_id
    dues = [
        Due(
            key=f"act:{act.id}:ref:inviter:{invitee_id}",
            reward=spec.inviter_reward,
            role="inviter",
            user_id=r.inviter_id,
            counterpart=invitee_person or invitee_id,
            details={"invitee": invitee_id, "person_id": r.inviter_person_id},
            cap_key=f"invites:{r.inviter_id}",
        )
    ]
    if spec.invitee_reward is not None:
        dues.append(
            Due(
                key=f"act:{act.id}:ref:invitee:{invitee_id}",
                reward=spec.invitee_reward,
                role="invitee",
                counterpart=inviter_person,
                details={"inviter": r.inviter_id},
            )
        )
    return dues


# -- seats --------------------------------------------------------------------------------------


def _signup_dict(conn: Connection, r: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"status": r.status, "since": aware(r.updated_at).isoformat()}  # type: ignore[union-attr]
    if r.status == "waitlisted":
        out["position"] = 1 + int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    signups.c.activity_id == r.activity_id,
                    signups.c.status == "waitlisted",
                    signups.c.id < r.id,
                )
            ).scalar_one()
        )
    return out


def sign_up(engine: Engine, act: Activity, user_id: str) -> dict[str, Any]:
    """Take a seat if one is left (exactly ``seats`` ever seated at once), else the waitlist."""
    if act.template != "signup":
        raise NotEligible(f"activity {act.id} is a {act.template}, not a sign-up")
    if not act.live_at(utcnow()):
        raise NotEligible(f"activity {act.id} is not open for sign-up (it is {act.state})")
    s = signups.c
    b = activity_budgets.c
    now = utcnow()
    with engine.begin() as conn:
        inserted = insert_ignore(
            conn,
            signups,
            {
                "activity_id": act.id,
                "user_id": user_id,
                "status": "pending",
                "created_at": now,
                "updated_at": now,
            },
        )
        row = conn.execute(
            sa.select(signups)
            .where(s.activity_id == act.id, s.user_id == user_id)
            .with_for_update()
        ).one()
        if not inserted and row.status in ("seated", "waitlisted"):
            return {**_signup_dict(conn, row), "created": False}
        seated = conn.execute(
            activity_budgets.update()
            .where(b.activity_id == act.id, b.frozen == sa.false(), b.seats_taken < b.seats)
            .values(seats_taken=b.seats_taken + 1)
        ).rowcount
        if seated:
            status = "seated"
        elif act.spec.waitlist:
            status = "waitlisted"
        else:
            conn.execute(
                signups.delete().where(s.id == row.id, s.status == "pending")
            ) if inserted else None
            raise NotEligible("no seats left and this activity has no waitlist")
        # a re-signup after cancelling goes to the back of the queue: a new row id
        if not inserted:
            conn.execute(signups.delete().where(s.id == row.id))
            conn.execute(
                signups.insert().values(
                    activity_id=act.id,
                    user_id=user_id,
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            conn.execute(
                signups.update().where(s.id == row.id).values(status=status, updated_at=now)
            )
        row = conn.execute(
            sa.select(signups).where(s.activity_id == act.id, s.user_id == user_id)
        ).one()
        return {**_signup_dict(conn, row), "created": True}


def cancel_signup(engine: Engine, act: Activity, user_id: str) -> dict[str, Any]:
    """Give the seat back: the first on the waitlist gets it in the same transaction."""
    s = signups.c
    b = activity_budgets.c
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(signups).where(s.activity_id == act.id, s.user_id == user_id)
        ).first()
        if row is None or row.status == "cancelled":
            raise NotFound("this user has no sign-up to cancel")
        done = conn.execute(
            signups.update()
            .where(s.id == row.id, s.status == row.status)
            .values(status="cancelled", updated_at=now)
        ).rowcount
        if not done:
            raise Conflict("the sign-up changed meanwhile; retry")
        promoted = None
        if row.status == "seated":
            while True:
                q = (
                    sa.select(s.id, s.user_id)
                    .where(s.activity_id == act.id, s.status == "waitlisted")
                    .order_by(s.id)
                    .limit(1)
                )
                if conn.dialect.name == "postgresql":
                    q = q.with_for_update(skip_locked=True)
                nxt = conn.execute(q).first()
                if nxt is None:
                    conn.execute(
                        activity_budgets.update()
                        .where(b.activity_id == act.id)
                        .values(seats_taken=b.seats_taken - 1)
                    )
                    break
                ok = conn.execute(
                    signups.update()
                    .where(s.id == nxt.id, s.status == "waitlisted")
                    .values(status="seated", updated_at=now)
                ).rowcount
                if ok:
                    promoted = nxt.user_id
                    break
    return {"status": "cancelled", "promoted": promoted}


def seat_counts(engine: Engine, act: Activity) -> dict[str, int]:
    s = signups.c
    with engine.connect() as conn:
        rows: dict[str, int] = dict(
            conn.execute(
                sa.select(s.status, sa.func.count())
                .where(s.activity_id == act.id)
                .group_by(s.status)
            ).all()
        )
        b = conn.execute(
            sa.select(activity_budgets.c.seats, activity_budgets.c.seats_taken).where(
                activity_budgets.c.activity_id == act.id
            )
        ).one()
    return {
        "seats": int(b.seats or 0),
        "seats_taken": int(b.seats_taken),
        "seated": int(rows.get("seated", 0)),
        "waitlisted": int(rows.get("waitlisted", 0)),
        "cancelled": int(rows.get("cancelled", 0)),
    }
