"""The rules of each template as pure functions: progress in, new progress and rewards due out.

Progress is a small JSON document per (activity, user). The live processor and the app-facing
API both feed these functions and store what they return, so a check-in sent as an event and one
made through ``POST /v1/activities/{id}/checkin`` count the same way. Each reward due carries an
idempotency key derived from the activity, the user and the rule (milestone, stage), so it is
granted once however often the input arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from yunying.activities.spec import CheckinSpec, PropertyFilter, Reward, TaskSpec


@dataclass(frozen=True)
class Due:
    """A reward the rules decided on; granted (after risk) under ``key``."""

    key: str
    reward: Reward
    role: str | None = None
    user_id: str | None = None  # None: the participant themself
    counterpart: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    cap_key: str | None = None


def filters_match(filters: list[PropertyFilter], props: dict[str, Any]) -> bool:
    return all(f.matches(props) for f in filters)


def checkin(
    spec: CheckinSpec, activity_id: int, user_id: str, data: dict[str, Any], day: date
) -> tuple[dict[str, Any], list[Due]]:
    """Apply a check-in on local ``day``: a second one the same day (or an older day) is a no-op.

    The streak grows by one for the next day; with ``on_break: grace`` up to ``grace_days``
    missed days are forgiven, otherwise a gap starts a new streak at 1. Reaching a milestone's
    day count grants its reward once per cycle (``repeat`` starts a new cycle after the last).
    """
    data = dict(data)
    last = date.fromisoformat(data["last_day"]) if data.get("last_day") else None
    if last is not None and day <= last:
        return data, []
    streak = int(data.get("streak", 0))
    if last is None:
        streak = 1
    else:
        gap = (day - last).days
        missed = gap - 1
        if missed == 0 or (spec.on_break == "grace" and missed <= spec.grace_days):
            streak += 1
            if missed:
                data["graced"] = int(data.get("graced", 0)) + missed
        else:
            streak = 1
    cycle = int(data.get("cycle", 0))
    data.update(
        last_day=day.isoformat(),
        streak=streak,
        best=max(int(data.get("best", 0)), streak),
        days=int(data.get("days", 0)) + 1,
    )
    dues = [
        Due(
            key=f"act:{activity_id}:checkin:{user_id}:{cycle}:{m.days}",
            reward=m.reward,
            details={"milestone_days": m.days, "cycle": cycle, "day": day.isoformat()},
        )
        for m in spec.milestones
        if m.days == streak
    ]
    if dues:
        data["milestones"] = sorted({*data.get("milestones", []), streak})
    if spec.repeat and streak >= spec.milestones[-1].days:
        data["cycle"] = cycle + 1
        data["streak"] = 0
    return data, dues


def task(
    spec: TaskSpec,
    activity_id: int,
    user_id: str,
    data: dict[str, Any],
    event: str,
    props: dict[str, Any],
) -> tuple[dict[str, Any], list[Due], bool]:
    """Count an event towards the stages it matches; returns progress, dues, completed-now."""
    counts = list(data.get("counts", [0] * len(spec.stages)))
    counts += [0] * (len(spec.stages) - len(counts))
    dues = []
    was_done = all(c >= s.count for c, s in zip(counts, spec.stages, strict=True))
    for i, stage in enumerate(spec.stages):
        if counts[i] >= stage.count:
            continue
        if spec.sequential and any(counts[j] < spec.stages[j].count for j in range(i)):
            break
        if stage.event != event or not filters_match(stage.filters, props):
            continue
        counts[i] += 1
        if counts[i] >= stage.count and stage.reward is not None:
            dues.append(
                Due(
                    key=f"act:{activity_id}:task:{user_id}:{i}",
                    reward=stage.reward,
                    details={"stage": stage.name},
                )
            )
    done = all(c >= s.count for c, s in zip(counts, spec.stages, strict=True))
    new = {
        **data,
        "counts": counts,
        "stages_done": sum(c >= s.count for c, s in zip(counts, spec.stages, strict=True)),
    }
    return new, dues, done and not was_done
