"""Lifecycle stages of persons (新增 / 活跃 / 留存 / 沉默 / 流失 / 回流) as of a local day, their
distribution over time and the transitions between consecutive periods.

This is the user-operations model of the seeds, not the PostHog-style lifecycle of
:mod:`yunying.analytics.lifecycle` (which classifies activity *in* a period). Here every person
who has been active at least once up to and including day D has exactly one stage as of D,
decided in this order (all counts are local calendar days in the project's time zone, "active
on a day" means at least one activity event that day, see :class:`ActivitySettings`):

1. ``churned``  — ``D - last_active >= churned_days``
2. ``silent``   — ``D - last_active >= silent_days``
3. ``new``      — ``D - first_active < new_days``
4. ``returned`` — came back from churned (a gap of more than ``churned_days`` days between two
   consecutive active days) on a day R with ``D - R < returned_days``
5. ``active``   — active on at least ``active_min_days`` of the ``active_window_days`` days
   ending on D
6. ``retained`` — otherwise (still around, less often: the seeds' low-frequency retained users)

Persons with no activity up to D have no stage. Events are read through the ``events`` relation,
whose person ids are re-resolved through the distinct-id map, so merged persons count once.
"""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from sqlglot import exp

from yunying.analytics.common import (
    EPOCH,
    DateRange,
    InvalidQuery,
    Source,
    Sql,
    as_int,
    fn,
    lit,
    periods,
    run,
)
from yunying.analytics.local_periods import LocalPeriods
from yunying.audience.settings import ActivitySettings, AudienceSettings, LifecycleSettings

if TYPE_CHECKING:
    from yunying.runtime import Runtime
    from yunying.state import Project

STAGES = ("new", "active", "retained", "silent", "churned", "returned")
#: The Chinese names the seeds use.
STAGE_NAMES_ZH = {
    "new": "新增",
    "active": "活跃",
    "retained": "留存",
    "silent": "沉默",
    "churned": "流失",
    "returned": "回流",
}
#: ``from`` of a transition for persons who had no stage at the start of the period.
NONE = "none"
#: Scope in ``person_values`` written by :func:`store_stages`.
SCOPE = "stage"
INTERVALS = ("day", "week", "month")
#: A "previous active day" far in the future, so a person's first active day is never a return.
_NO_PREVIOUS = 1_000_000_000


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def local_today(timezone: str) -> date:
    """Today's date in ``timezone``."""
    return datetime.now(ZoneInfo(timezone)).date()


def day_number(day: date) -> int:
    """Days since 1970-01-01 (what :meth:`Sql.day_number` computes for a local day)."""
    return (day - EPOCH).days


def person_key(sql: Sql, person: exp.Expr) -> exp.Expr:
    """A person id as the audience queries match and group persons on: the UUID as it is on
    DuckDB (no text per event; its order is its text's), its text on ClickHouse (whose UUID
    order is not)."""
    return sql.text(person) if sql.ch else person


def person_is(sql: Sql, person: exp.Expr, person_id: str) -> exp.Expr:
    """``person`` is the person with id ``person_id`` (text): compared as a UUID on DuckDB."""
    if sql.ch:
        return sql.text(person).eq(lit(person_id))
    try:
        text = str(uuid.UUID(person_id))
    except ValueError:
        return exp.false()
    return person.eq(exp.cast(lit(text), "UUID", copy=False))


def activity_condition(activity: ActivitySettings) -> exp.Expr:
    """The events that make a person active: the listed ones, or any (platform ones optional)."""
    event = _c("event")
    if activity.events:
        return exp.In(this=event, expressions=[lit(e) for e in activity.events])
    if activity.include_platform:
        return exp.true()
    return exp.Not(this=exp.Like(this=event, expression=lit("$%")))


def day_list(sql: Sql, days: list[int]) -> exp.Select:
    """A one-column relation ``d`` holding the given day numbers."""
    arr = exp.Array(expressions=[lit(d) for d in days])
    return exp.select(
        exp.alias_(fn("arrayJoin" if sql.ch else "unnest", arr), "d", copy=False), copy=False
    )


def _gaps_sql(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    last: int,
    timezone: str,
    person_id: str | None = None,
) -> exp.Select:
    """(person_id, day, ret): every person's active local days up to day number ``last``, ``ret``
    1 on a return from churned (more than ``churned_days`` since the previous active day)."""
    sql = Sql(source.dialect)
    lc: LifecycleSettings = settings.lifecycle
    last_day = EPOCH + timedelta(days=last)
    _, end = DateRange(last_day, last_day, timezone).utc_bounds()
    ts = _c("timestamp")
    local = LocalPeriods(sql, timezone, None, end)
    act = (
        exp.select(
            exp.alias_(person_key(sql, _c("person_id")), "person_id", copy=False),
            exp.alias_(local.day(ts, bounded=False), "day", copy=False),
            copy=False,
        )
        .from_(source.scoped("events", project_id).subquery("e", copy=False), copy=False)
        .where(
            exp.and_(
                activity_condition(settings.activity),
                exp.LT(this=ts.copy(), expression=sql.ts_literal(end)),
                exp.true() if person_id is None else person_is(sql, _c("person_id"), person_id),
                copy=False,
            ),
            copy=False,
        )
        .group_by(_c("person_id"), _c("day"), copy=False)
    )
    prev = exp.Window(
        this=fn("lag", _c("day"), lit(1), lit(_NO_PREVIOUS)),
        partition_by=[_c("person_id")],
        order=exp.Order(expressions=[exp.Ordered(this=_c("day"))]),
    )
    gap = exp.Sub(this=_c("day"), expression=prev)
    gaps = exp.select(
        _c("person_id"),
        _c("day"),
        exp.alias_(
            exp.Case(ifs=[exp.If(this=exp.GT(this=gap, expression=lit(lc.churned_days)),
                                 true=lit(1))], default=lit(0)),
            "ret",
        copy=False),
    copy=False).from_(act.subquery("a", copy=False), copy=False)  # fmt: skip
    return gaps


def _stage_case(
    lc: LifecycleSettings,
    d: exp.Expr,
    first_day: exp.Expr,
    last_day: exp.Expr,
    last_return: exp.Expr,
    recent: exp.Expr,
) -> exp.Expr:
    """The stage as of day ``d`` of a person with these facts up to ``d`` (see the module)."""

    def since(day: exp.Expr) -> exp.Expr:
        return exp.Sub(this=d.copy(), expression=day.copy())

    return exp.Case(
        ifs=[
            exp.If(this=exp.GTE(this=since(last_day), expression=lit(lc.churned_days)),
                   true=lit("churned")),
            exp.If(this=exp.GTE(this=since(last_day), expression=lit(lc.silent_days)),
                   true=lit("silent")),
            exp.If(this=exp.LT(this=since(first_day), expression=lit(lc.new_days)),
                   true=lit("new")),
            exp.If(this=exp.LT(this=since(last_return), expression=lit(lc.returned_days)),
                   true=lit("returned")),
            exp.If(this=exp.GTE(this=recent.copy(), expression=lit(lc.active_min_days)),
                   true=lit("active")),
        ],
        default=lit("retained"),
    )  # fmt: skip


def stage_rows_sql(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    days: list[int],
    timezone: str,
    person_id: str | None = None,
) -> exp.Select:
    """(person_id, d, stage) for every person (or only ``person_id``) with activity up to each
    day number ``d``."""
    if not days:
        raise InvalidQuery("no days to compute stages for")
    sql = Sql(source.dialect)
    lc: LifecycleSettings = settings.lifecycle
    gaps = _gaps_sql(source, project_id, settings, max(days), timezone, person_id)
    g_day, d = _c("day", "g"), _c("d", "dd")
    window_start = exp.Sub(this=d.copy(), expression=lit(lc.active_window_days))
    per = (
        exp.select(
            _c("person_id", "g"),
            exp.alias_(d.copy(), "d", copy=False),
            exp.alias_(exp.Min(this=g_day.copy()), "first_day", copy=False),
            exp.alias_(exp.Max(this=g_day.copy()), "last_day", copy=False),
            exp.alias_(
                exp.Sum(
                    this=exp.Case(
                        ifs=[exp.If(this=exp.GT(this=g_day.copy(), expression=window_start),
                                    true=lit(1))],
                        default=lit(0),
                    )
                ),
                "recent",
            copy=False),
            exp.alias_(
                exp.Max(
                    this=exp.Case(
                        ifs=[exp.If(this=_c("ret", "g").eq(1), true=g_day.copy())],
                        default=lit(-_NO_PREVIOUS),
                    )
                ),
                "last_return",
            copy=False),
        copy=False)
        .from_(gaps.subquery("g", copy=False), copy=False)
        .join(day_list(sql, days).subquery("dd", copy=False), join_type="cross", copy=False)
        .where(exp.LTE(this=g_day.copy(), expression=d.copy()), copy=False)
        .group_by(_c("person_id", "g"), d.copy(), copy=False)
    )  # fmt: skip

    stage = _stage_case(
        lc, _c("d"), _c("first_day"), _c("last_day"), _c("last_return"), _c("recent")
    )
    return exp.select(
        _c("person_id"), _c("d"), exp.alias_(stage, "stage", copy=False), copy=False
    ).from_(per.subquery("p", copy=False), copy=False)


# -- as of one day ------------------------------------------------------------------------------


def person_stages(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    as_of: date,
    timezone: str,
    person_id: str | None = None,
) -> dict[str, str]:
    """The stage of every person (or of ``person_id`` only) with activity up to ``as_of``
    (person id → stage)."""
    tree = stage_rows_sql(source, project_id, settings, [day_number(as_of)], timezone, person_id)
    return {str(pid): str(stage) for pid, _d, stage in run(source, tree)}


def _shares(counts: dict[str, int]) -> list[dict[str, Any]]:
    total = sum(counts.values())
    return [
        {"stage": s, "name_zh": STAGE_NAMES_ZH[s], "persons": counts.get(s, 0),
         "share": counts.get(s, 0) / total if total else None}
        for s in STAGES
    ]  # fmt: skip


def stage_distribution(
    source: Source, project_id: int, settings: AudienceSettings, as_of: date, timezone: str
) -> dict[str, Any]:
    """Persons per stage as of ``as_of``: ``{"as_of", "total", "stages": [...]}``."""
    rows = stage_rows_sql(source, project_id, settings, [day_number(as_of)], timezone)
    tree = (
        exp.select(_c("stage"), exp.alias_(exp.Count(this=exp.Star()), "n", copy=False), copy=False)
        .from_(rows.subquery("s", copy=False), copy=False)
        .group_by(_c("stage"), copy=False)
    )
    counts = {str(s): as_int(n) for s, n in run(source, tree)}
    return {
        "as_of": as_of.isoformat(),
        "total": sum(counts.values()),
        "stages": _shares(counts),
    }


# -- over time and transitions ----------------------------------------------------------------------


@dataclass(frozen=True)
class StagePeriod:
    """One period of a stage timeline: its label, the day stages are taken at (its last day,
    clipped to the range) and the day of the previous period's stages (for transitions)."""

    label: str
    as_of: date
    previous_as_of: date


def period_end(start: date, interval: str) -> date:
    """Last local day of the period starting on ``start``."""
    if interval == "day":
        return start
    if interval == "week":
        return start + timedelta(days=6)
    if interval == "month":
        return start.replace(day=calendar.monthrange(start.year, start.month)[1])
    raise InvalidQuery(f"stage interval must be day, week or month, not {interval!r}")


def stage_periods(date_range: DateRange, interval: str) -> list[StagePeriod]:
    """The periods overlapping ``date_range``, each with its as-of day and the previous one's."""
    if interval not in INTERVALS:
        raise InvalidQuery(f"stage interval must be day, week or month, not {interval!r}")
    out = []
    for p in periods(date_range, interval):
        start = date.fromisoformat(p.label)
        end = min(period_end(start, interval), date_range.date_to)
        out.append(StagePeriod(p.label, end, start - timedelta(days=1)))
    return out


def stages_over_time(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    date_range: DateRange,
    interval: str = "day",
) -> dict[str, Any]:
    """Persons per stage at the end of each period (the last period ends at ``date_to``)."""
    ps = stage_periods(date_range, interval)
    days = sorted({day_number(p.as_of) for p in ps})
    rows = stage_rows_sql(source, project_id, settings, days, date_range.timezone)
    tree = (
        exp.select(
            _c("d"),
            _c("stage"),
            exp.alias_(exp.Count(this=exp.Star()), "n", copy=False),
            copy=False,
        )
        .from_(rows.subquery("s", copy=False), copy=False)
        .group_by(_c("d"), _c("stage"), copy=False)
    )
    index = {day_number(p.as_of): i for i, p in enumerate(ps)}
    series = {s: [0] * len(ps) for s in STAGES}
    for d, stage, n in run(source, tree):
        series[str(stage)][index[as_int(d)]] += as_int(n)
    return {
        "interval": interval,
        "labels": [p.label for p in ps],
        "as_of": [p.as_of.isoformat() for p in ps],
        "stages": series,
        "totals": [sum(series[s][i] for s in STAGES) for i in range(len(ps))],
    }


def _transition_rows(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    days: list[int],
    timezone: str,
) -> exp.Select:
    """(person_id, d, from_stage, stage) for each listed day but the first (stage on the previous
    listed day, ``none`` when the person had none)."""
    rows = stage_rows_sql(source, project_id, settings, days, timezone)
    prev = exp.Window(
        this=fn("lag", _c("stage"), lit(1), lit(NONE)),
        partition_by=[_c("person_id")],
        order=exp.Order(expressions=[exp.Ordered(this=_c("d"))]),
    )
    with_prev = exp.select(
        _c("person_id"),
        _c("d"),
        exp.alias_(prev, "from_stage", copy=False),
        _c("stage"),
        copy=False,
    ).from_(rows.subquery("s", copy=False), copy=False)
    # a person seen on the previous listed day has a row there (stages never disappear), so the
    # lag is that day's stage; a person first seen later gets ``none``
    return (
        exp.select(_c("person_id"), _c("d"), _c("from_stage"), _c("stage"), copy=False)
        .from_(with_prev.subquery("w", copy=False), copy=False)
        .where(exp.GT(this=_c("d"), expression=lit(min(days))), copy=False)
    )


def _count_moves(rows: exp.Select) -> exp.Select:
    """Persons per (day, stage before, stage after) of rows ``d, from_stage, stage``."""
    return (
        exp.select(
            _c("d"),
            _c("from_stage"),
            _c("stage"),
            exp.alias_(exp.Count(this=exp.Star()), "n", copy=False),
            copy=False,
        )
        .from_(rows.subquery("t", copy=False), copy=False)
        .group_by(_c("d"), _c("from_stage"), _c("stage"), copy=False)
    )


def stage_transitions(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    date_range: DateRange,
    interval: str = "week",
) -> dict[str, Any]:
    """Per period, persons moving from their stage at the end of the previous period to their
    stage at its end (``from`` is ``none`` for persons first active in the period); unchanged
    stages are included (``from == to``)."""
    ps = stage_periods(date_range, interval)
    days = sorted({day_number(p.as_of) for p in ps} | {day_number(ps[0].previous_as_of)})
    rows = _transition_rows(source, project_id, settings, days, date_range.timezone)
    tree = _count_moves(rows)
    by_day: dict[int, list[dict[str, Any]]] = {}
    for d, frm, to, n in run(source, tree):
        by_day.setdefault(as_int(d), []).append(
            {"from": str(frm), "to": str(to), "persons": as_int(n)}
        )
    return _transitions_out(interval, ps, by_day)


def _transition_counts_sql(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    days: list[int],
    timezone: str,
) -> exp.Select:
    """(d, from_stage, stage, n): persons per transition for each listed day but the first,
    as :func:`_transition_rows` counted, in one pass over the active days without a row per
    person and day: each person's facts as of every listed day are aggregated at once into
    lists (last active day, recent active days, last return), and each listed day's stage and
    the previous listed day's (``none`` when the person had no activity by then) are read from
    them."""
    sql = Sql(source.dialect)
    lc: LifecycleSettings = settings.lifecycle
    gaps = _gaps_sql(source, project_id, settings, max(days), timezone)
    day = _c("day")

    def listed(per_day: list[exp.Expr]) -> exp.Expr:
        return fn("array" if sql.ch else "list_value", *per_day)

    def at(column: str, index: exp.Expr) -> exp.Expr:
        return fn("arrayElement" if sql.ch else "list_extract", _c(column), index)

    upto = [exp.LTE(this=day.copy(), expression=lit(d)) for d in days]
    per = (
        exp.select(
            _c("person_id"),
            exp.alias_(exp.Min(this=day.copy()), "first_day", copy=False),
            exp.alias_(
                listed([exp.Max(this=_when(u.copy(), day.copy())) for u in upto]),
                "last_days",
                copy=False,
            ),
            exp.alias_(
                listed(
                    [
                        exp.Sum(
                            this=_when(
                                exp.and_(
                                    u.copy(),
                                    exp.GT(
                                        this=day.copy(), expression=lit(d - lc.active_window_days)
                                    ),
                                    copy=False,
                                ),
                                lit(1),
                                lit(0),
                            )
                        )
                        for u, d in zip(upto, days, strict=True)
                    ]
                ),
                "recents",
                copy=False,
            ),
            exp.alias_(
                listed(
                    [
                        exp.Max(
                            this=_when(
                                exp.and_(u.copy(), _c("ret").eq(1), copy=False),
                                day.copy(),
                                lit(-_NO_PREVIOUS),
                            )
                        )
                        for u in upto
                    ]
                ),
                "returns",
                copy=False,
            ),
            copy=False,
        )
        .from_(gaps.subquery("g", copy=False), copy=False)
        .group_by(_c("person_id"), copy=False)
    )
    steps: exp.Query | None = None
    for j in range(1, len(days)):
        row = exp.select(
            exp.alias_(lit(j + 1), "j", copy=False),
            exp.alias_(lit(days[j]), "d", copy=False),
            exp.alias_(lit(days[j - 1]), "dp", copy=False),
            copy=False,
        )
        steps = row if steps is None else exp.union(steps, row, distinct=False, copy=False)
    assert steps is not None
    now, before = _c("j"), exp.Sub(this=_c("j"), expression=lit(1))

    def stage_at(d: exp.Expr, index: exp.Expr) -> exp.Expr:
        return _stage_case(
            lc, d, _c("first_day"), at("last_days", index), at("returns", index.copy()),
            at("recents", index.copy()),
        )  # fmt: skip

    moves = (
        exp.select(
            _c("d"),
            exp.alias_(
                _when(
                    exp.Is(this=at("last_days", before), expression=exp.null()),
                    lit(NONE),
                    stage_at(_c("dp"), before.copy()),
                ),
                "from_stage",
                copy=False,
            ),
            exp.alias_(stage_at(_c("d"), now), "stage", copy=False),
            copy=False,
        )
        .from_(per.subquery("p", copy=False), copy=False)
        .join(steps.subquery("s", copy=False), join_type="cross", copy=False)
        .where(
            exp.Not(this=exp.Is(this=at("last_days", now.copy()), expression=exp.null())),
            copy=False,
        )
    )
    return _count_moves(moves)


def _when(cond: exp.Expr, value: exp.Expr, default: exp.Expr | None = None) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=cond, true=value)], default=default)


def stages_and_transitions(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    date_range: DateRange,
    interval: str = "week",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`stages_over_time` and :func:`stage_transitions` of the same range and interval
    from one query (the 用户分层 page shows both): every period's stage counts are the sums of
    its transitions over their ``from`` stage."""
    ps = stage_periods(date_range, interval)
    as_of = [day_number(p.as_of) for p in ps]
    days = sorted(set(as_of) | {day_number(ps[0].previous_as_of)})
    tree = _transition_counts_sql(source, project_id, settings, days, date_range.timezone)
    index = {d: i for i, d in enumerate(as_of)}
    series = {s: [0] * len(ps) for s in STAGES}
    by_day: dict[int, list[dict[str, Any]]] = {}
    for d, frm, to, n in run(source, tree):
        by_day.setdefault(as_int(d), []).append(
            {"from": str(frm), "to": str(to), "persons": as_int(n)}
        )
        series[str(to)][index[as_int(d)]] += as_int(n)
    timeline = {
        "interval": interval,
        "labels": [p.label for p in ps],
        "as_of": [p.as_of.isoformat() for p in ps],
        "stages": series,
        "totals": [sum(series[s][i] for s in STAGES) for i in range(len(ps))],
    }
    return timeline, _transitions_out(interval, ps, by_day)


def _transitions_out(
    interval: str, ps: list[StagePeriod], by_day: dict[int, list[dict[str, Any]]]
) -> dict[str, Any]:
    order = {s: i for i, s in enumerate((NONE, *STAGES))}
    out = []
    for p in ps:
        moves = sorted(by_day.get(day_number(p.as_of), []),
                       key=lambda m: (order[m["from"]], order[m["to"]]))  # fmt: skip
        out.append(
            {
                "label": p.label,
                "from_as_of": p.previous_as_of.isoformat(),
                "as_of": p.as_of.isoformat(),
                "transitions": moves,
            }
        )
    return {"interval": interval, "periods": out}


def transition_members(
    source: Source,
    project_id: int,
    settings: AudienceSettings,
    period: StagePeriod,
    from_stage: str,
    to_stage: str,
    timezone: str,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """The persons who moved ``from_stage`` → ``to_stage`` in ``period`` (sorted by person id)."""
    if from_stage not in (NONE, *STAGES):
        raise InvalidQuery(f"unknown stage {from_stage!r}; use {NONE} or {', '.join(STAGES)}")
    if to_stage not in STAGES:
        raise InvalidQuery(f"unknown stage {to_stage!r}; use one of {', '.join(STAGES)}")
    days = [day_number(period.previous_as_of), day_number(period.as_of)]
    rows = _transition_rows(source, project_id, settings, days, timezone)
    matching = (
        exp.select(_c("person_id"), copy=False)
        .from_(rows.subquery("t", copy=False), copy=False)
        .where(
            exp.and_(
                _c("from_stage").eq(lit(from_stage)), _c("stage").eq(lit(to_stage)), copy=False
            ),
            copy=False,
        )
    )
    # (copies: matching is counted again below when the page is empty)
    counted = matching.select(exp.alias_(exp.Window(this=exp.Count(this=exp.Star())), "total"))
    page = run(source, counted.order_by(_c("person_id")).limit(limit).offset(offset))
    if page:
        total = as_int(page[0][1])
    else:  # past the end (or none): count separately
        count = exp.select(exp.Count(this=exp.Star()), copy=False).from_(
            matching.subquery("m", copy=False), copy=False
        )
        total = as_int(run(source, count)[0][0])
    return {
        "label": period.label,
        "from_as_of": period.previous_as_of.isoformat(),
        "as_of": period.as_of.isoformat(),
        "from": from_stage,
        "to": to_stage,
        "total": total,
        "limit": limit,
        "offset": offset,
        "persons": [str(r[0]) for r in page],
    }


def period_of(day: date, interval: str) -> StagePeriod:
    """The period holding ``day``, taken as of ``day`` (what :func:`stage_transitions` reports
    as ``as_of``: the period's last day, or the range's last day for the final period)."""
    if interval not in INTERVALS:
        raise InvalidQuery(f"stage interval must be day, week or month, not {interval!r}")
    if interval == "day":
        start = day
    elif interval == "week":
        start = day - timedelta(days=day.weekday())
    else:
        start = day.replace(day=1)
    return StagePeriod(start.isoformat(), day, start - timedelta(days=1))


# -- writing the current stage ----------------------------------------------------------------------


def store_stages(runtime: Runtime, project: Project, as_of: date | None = None) -> int:
    """Write every person's stage as of ``as_of`` (default: today in the project's time zone)
    to ``person_values`` scope ``stage`` (label = stage); returns the number of persons."""
    from yunying.audience.settings import get_settings

    day = as_of or local_today(project.timezone)
    settings = get_settings(runtime.state, project.id)
    stages = person_stages(runtime.store, project.id, settings, day, project.timezone)
    table = pa.table(
        {
            "person_id": pa.array(list(stages), pa.string()),
            "label": pa.array(list(stages.values()), pa.string()),
        }
    )
    runtime.store.replace_person_values(project.id, SCOPE, table)
    return len(stages)
