"""Post-mortem (复盘) of an activity: reach, completions, rewards and cost, risk outcomes, new
users, conversion against a comparable non-participant group, ROI, and the referral K-factor.

Comparable group: every person first seen before the activity ended who did not take part, in the
same stratum as participants — first-seen week × first channel. Their conversion rate per stratum
is weighted by the participants' stratum mix (direct standardisation), so a difference in mix
(e.g. participants coming mostly from one channel) does not pass for an effect of the activity.
Conversion is doing ``conversion_event`` at or after the activity's start (or the first-seen
time, for persons first seen later). ROI uses the ``amount`` of conversion events (in yuan) of
participants above what the comparable group's rate predicts, against the rewards' cost.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlglot import exp

from yunying.activities.ledger import aware, utcnow
from yunying.activities.service import Activity, seat_counts
from yunying.activities.tables import (
    activity_budgets,
    activity_progress,
    claims,
    invite_codes,
    invites,
    ledger_transactions,
)

if TYPE_CHECKING:
    from yunying.runtime import Runtime

DEFAULT_CONVERSION_EVENT = "purchase_membership"


def _lit_ts(dt: datetime) -> exp.Expr:
    naive = dt.astimezone(UTC).replace(tzinfo=None)
    return exp.cast(exp.Literal.string(naive.isoformat(sep=" ")), "TIMESTAMP")


def _persons_table(
    runtime: Runtime, project_id: int, start: datetime, end: datetime, conversion_event: str
) -> pa.Table:
    """Per person: first seen, first channel, converted since the start, conversion amount."""
    e = runtime.store.scoped("events", project_id).subquery("e")
    ts = exp.column("timestamp")
    after = ts >= _lit_ts(start)
    is_conv = exp.and_(exp.column("event").eq(exp.Literal.string(conversion_event)), after)
    q = (
        exp.select(
            exp.cast(exp.column("person_id"), "VARCHAR").as_("pid"),
            exp.Min(this=ts).as_("first_ts"),
            exp.ArgMin(
                this=exp.func("COALESCE", exp.column("channel"), exp.Literal.string("")),
                expression=ts,
            ).as_("channel"),
            exp.Max(
                this=exp.If(this=is_conv, true=exp.Literal.number(1), false=exp.Literal.number(0))
            ).as_("converted"),
            exp.Sum(
                this=exp.If(
                    this=is_conv,
                    true=exp.func("COALESCE", exp.column("amount"), exp.Literal.number(0)),
                    false=exp.Literal.number(0),
                )
            ).as_("revenue"),
        )
        .from_(e)
        .where(ts < _lit_ts(end))
        .group_by(exp.column("person_id"))
    )
    return runtime.store.query_arrow(q.sql(dialect=runtime.store.dialect))


Strata = dict[tuple[str, str], list[float]]


def _strata(
    runtime: Runtime,
    project_id: int,
    start: datetime,
    end: datetime,
    conversion_event: str,
    participants: set[str],
) -> tuple[Strata, Strata, int]:
    """Persons, conversions and conversion revenue per stratum (first-seen ISO week × first
    channel) of participants and of everyone else, and the participants first seen since the
    start, counted in Arrow (one row per person never reaches Python)."""
    persons = _persons_table(runtime, project_id, start, end, conversion_event)
    part: Strata = defaultdict(lambda: [0, 0, 0.0])
    rest: Strata = defaultdict(lambda: [0, 0, 0.0])
    if not persons.num_rows:
        return part, rest, 0
    first = persons.column("first_ts").cast(pa.timestamp("us"))  # UTC, as stored
    member = pc.is_in(persons.column("pid"), value_set=pa.array(sorted(participants), pa.string()))
    since = pc.greater_equal(
        first, pa.scalar(start.astimezone(UTC).replace(tzinfo=None), first.type)
    )
    new_users = pc.sum(pc.and_(member, since).cast(pa.int64())).as_py() or 0
    table = pa.table(
        {
            "week": pc.strftime(first, format="%G-W%V"),
            "channel": pc.fill_null(persons.column("channel").cast(pa.string()), ""),
            "member": member,
            "converted": persons.column("converted").cast(pa.int64()),
            "revenue": pc.fill_null(persons.column("revenue").cast(pa.float64()), 0.0),
        }
    )
    groups = table.group_by(["week", "channel", "member"]).aggregate(
        [("converted", "count"), ("converted", "sum"), ("revenue", "sum")]
    )
    for row in groups.to_pylist():
        target = part if row["member"] else rest
        target[(row["week"], row["channel"])] = [
            row["converted_count"],
            row["converted_sum"],
            row["revenue_sum"],
        ]
    return part, rest, int(new_users)


def activity_report(
    runtime: Runtime, act: Activity, conversion_event: str = DEFAULT_CONVERSION_EVENT
) -> dict[str, Any]:
    """The post-mortem numbers of ``act`` (see the module docstring)."""
    engine = runtime.state
    now = utcnow()
    start, end = act.window()
    start = start or act.created_at
    end = min(end, now) if end else now
    with engine.connect() as conn:
        part_rows = conn.execute(
            sa.select(
                activity_progress.c.user_id,
                activity_progress.c.person_id,
                activity_progress.c.completed_at,
            ).where(activity_progress.c.activity_id == act.id)
        ).all()
        claim_rows: dict[str, int] = dict(
            conn.execute(
                sa.select(claims.c.status, sa.func.count())
                .where(claims.c.activity_id == act.id)
                .group_by(claims.c.status)
            ).all()
        )
        t = ledger_transactions.c
        money = conn.execute(
            sa.select(
                t.asset, t.kind, sa.func.count(), sa.func.sum(t.amount), sa.func.sum(t.cost_fen)
            )
            .where(t.activity_id == act.id, t.kind.in_(["grant", "reversal"]))
            .group_by(t.asset, t.kind)
        ).all()
        budget = conn.execute(
            sa.select(activity_budgets).where(activity_budgets.c.activity_id == act.id)
        ).one()
        inv = conn.execute(
            sa.select(
                invites.c.inviter_id,
                invites.c.invitee_id,
                invites.c.invitee_person_id,
                invites.c.activated_at,
            ).where(invites.c.activity_id == act.id)
        ).all()
        code_holders = {
            r.user_id: r.person_id
            for r in conn.execute(
                sa.select(invite_codes.c.user_id, invite_codes.c.person_id).where(
                    invite_codes.c.activity_id == act.id
                )
            )
        }
    participants = {r.user_id: r.person_id for r in part_rows}
    for uid, pid in code_holders.items():
        participants.setdefault(uid, pid)
    rewards: dict[str, dict[str, int]] = defaultdict(
        lambda: {"grants": 0, "amount": 0, "cost_fen": 0}
    )
    for asset, kind, n, amount, cost in money:
        sign = 1 if kind == "grant" else -1
        rewards[asset]["grants"] += sign * int(n)
        rewards[asset]["amount"] += sign * int(amount or 0)
        rewards[asset]["cost_fen"] += int(cost or 0)  # reversals carry a negative cost
    cost_fen = sum(r["cost_fen"] for r in rewards.values())

    # persons: new users, conversion vs comparable group
    part_people = {p for p in participants.values() if p}
    strata_part, strata_rest, new_users = _strata(
        runtime, act.project_id, start, end, conversion_event, part_people
    )
    n_part = sum(int(s[0]) for s in strata_part.values())
    conv_part = sum(int(s[1]) for s in strata_part.values())
    rev_part = sum(s[2] for s in strata_part.values())
    expected_conv = 0.0
    expected_rev = 0.0
    matched = 0
    for key, s in strata_part.items():
        ref = strata_rest.get(key)
        if not ref or not ref[0]:
            continue
        matched += int(s[0])
        expected_conv += s[0] * ref[1] / ref[0]
        expected_rev += s[0] * ref[2] / ref[0]
    rate_part = conv_part / n_part if n_part else None
    rate_ref = expected_conv / matched if matched else None
    matched_conv = sum(int(s[1]) for k, s in strata_part.items() if strata_rest.get(k, [0])[0])
    matched_rev = sum(s[2] for k, s in strata_part.items() if strata_rest.get(k, [0])[0])
    incremental_rev = matched_rev - expected_rev if matched else None
    cost_yuan = cost_fen / 100
    roi = (
        (incremental_rev - cost_yuan) / cost_yuan
        if incremental_rev is not None and cost_yuan > 0
        else None
    )

    out: dict[str, Any] = {
        "activity": {
            "id": act.id,
            "name": act.name,
            "template": act.template,
            "state": act.state,
            "killed": act.killed,
        },
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "participants": len(participants),
        "completions": sum(1 for r in part_rows if r.completed_at is not None),
        "claims": {k: int(claim_rows.get(k, 0)) for k in ("granted", "held", "denied", "rejected")},
        "rewards": dict(rewards),
        "cost_fen": cost_fen,
        "cost_per_participant_fen": round(cost_fen / len(participants), 2)
        if participants
        else None,
        "budget": {
            "total_fen": act.spec.budget.total_fen,
            "remaining_fen": budget.remaining_fen,
            "total_count": act.spec.budget.total_count,
            "remaining_count": budget.remaining_count,
            "frozen": bool(budget.frozen),
        },
        "new_users": len([r for r in inv if r.activated_at is not None])
        if act.template == "referral"
        else new_users,
        "conversion": {
            "event": conversion_event,
            "participants": n_part,
            "participants_converted": conv_part,
            "participant_rate": rate_part,
            "matched_participants": matched,
            "matched_participant_rate": matched_conv / matched if matched else None,
            "comparable_rate": rate_ref,
            "lift": (matched_conv / matched - rate_ref)
            if matched and rate_ref is not None
            else None,
            "comparable_group": "non-participants standardised to participants' first-seen week x first channel",
        },
        "revenue": {
            "participants": rev_part,
            "incremental": incremental_rev,
            "unit": "yuan (event amount)",
        },
        "roi": roi,
    }
    if act.spec.goal is not None:
        out["goal"] = goal_progress(act, out)
    if act.template == "referral":
        inviters = {r.inviter_id for r in inv}
        activated = sum(1 for r in inv if r.activated_at is not None)
        out["referral"] = {
            "code_holders": len(code_holders),
            "inviters": len(inviters),
            "invites": len(inv),
            "activated": activated,
            "invites_per_inviter": len(inv) / len(inviters) if inviters else None,
            "activation_rate": activated / len(inv) if inv else None,
            #: activated invitees per participant (every code holder and invitee), as in metrics.md
            "k_factor": activated / len(participants) if participants else None,
        }
    if act.template == "signup":
        out["seats"] = seat_counts(engine, act)
    return out


def goal_progress(act: Activity, numbers: dict[str, Any]) -> dict[str, Any]:
    """Where the activity stands against its goal."""
    goal = act.spec.goal
    value = {
        "participants": numbers["participants"],
        "completions": numbers["completions"],
        "new_users": numbers["new_users"],
        "rewards": numbers["claims"]["granted"],
        "cost_fen": numbers["cost_fen"],
    }[goal.metric]
    return {
        "metric": goal.metric,
        "target": goal.target,
        "value": value,
        "progress": value / goal.target,
    }


def live_numbers(runtime: Runtime, act: Activity) -> dict[str, Any]:
    """Cheap live figures (state DB only) for monitoring and goal progress."""
    with runtime.state.connect() as conn:
        part = conn.execute(
            sa.select(sa.func.count(), sa.func.count(activity_progress.c.completed_at)).where(
                activity_progress.c.activity_id == act.id
            )
        ).one()
        by_status: dict[str, int] = dict(
            conn.execute(
                sa.select(claims.c.status, sa.func.count())
                .where(claims.c.activity_id == act.id)
                .group_by(claims.c.status)
            ).all()
        )
        b = conn.execute(
            sa.select(activity_budgets).where(activity_budgets.c.activity_id == act.id)
        ).one()
        activated = conn.execute(
            sa.select(sa.func.count()).where(
                invites.c.activity_id == act.id, invites.c.activated_at.is_not(None)
            )
        ).scalar_one()
    numbers = {
        "participants": int(part[0]),
        "completions": int(part[1]),
        "claims": {k: int(by_status.get(k, 0)) for k in ("granted", "held", "denied", "rejected")},
        "cost_fen": int(b.spent_fen),
        "new_users": int(activated),
        "budget": {
            "remaining_fen": b.remaining_fen,
            "remaining_count": b.remaining_count,
            "spent_fen": int(b.spent_fen),
            "granted_count": int(b.granted_count),
            "frozen": bool(b.frozen),
        },
        "as_of": aware(utcnow()).isoformat(),  # type: ignore[union-attr]
    }
    if act.spec.goal is not None:
        numbers["goal"] = goal_progress(act, numbers)
    return numbers


def activity_detail(runtime: Runtime, act: Activity) -> dict[str, Any]:
    """An activity as the API shows it: spec, state, live numbers, seats."""
    out = act.as_dict()
    out["live"] = live_numbers(runtime, act)
    if act.template == "signup":
        out["seats"] = seat_counts(runtime.state, act)
    return out
