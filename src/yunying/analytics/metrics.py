"""The metrics catalog: the operating metrics the seeds name that events alone can answer, each
with a written definition (docs/metrics.md) and one function computing it.

``metric(source, project_id, name, date_range, config)`` returns the value over the range, and
optionally one value per period (``interval``) and per value of a field (``breakdown``). Every
value is kept as ``numerator / denominator`` so that :mod:`yunying.analytics.diagnosis` can split
a change between segments. ``metric_batch(source, project_id, names, date_range)`` computes
several metrics at once, running each underlying query once for all the metrics that share it,
and once for the overall value, the periods and the breakdown values together (rows tagged with
their level); ``metric`` is ``metric_batch`` of one name. The families: the new-user cohort
(new users, activation, N-day retention for any set of N, LTV); the active-user facts (paying
rate, ARPU, ARPPU, repurchase, K-factor); the activity counts (DAU/WAU/MAU and stickiness, from
one pass counting persons active in the last 1, 7 and 30 days with the semantics of
:func:`~yunying.analytics.trends.trends`); GMV, a trends line; conversion reuses
:func:`~yunying.analytics.funnels.funnel` and churn its own query. Each person must fall in
exactly one breakdown value (see docs/metrics.md, "Breakdowns").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlglot import exp

from yunying.analytics.common import (
    DateRange,
    Field,
    Filter,
    InvalidQuery,
    Source,
    Sql,
    as_float,
    col,
    events_from,
    lit,
    period_number,
    periods,
    run,
    uses_person,
)
from yunying.analytics.funnels import FunnelQuery, FunnelStep, funnel
from yunying.analytics.local_periods import LocalPeriods
from yunying.analytics.trends import Series, TrendsQuery, trends
from yunying.store.base import QueryResult

Kind = Literal["additive", "ratio"]
METRIC_INTERVALS = ("day", "week", "month")
DAY_US = 86_400 * 1_000_000
_BREAKDOWN_LIMIT = 1_000_000


@dataclass(frozen=True)
class MetricConfig:
    """Which events mean what for a project. The defaults match the demo app
    (:mod:`yunying.demo`): installs make new users, exporting a video activates, buying a
    membership is revenue (``amount`` in CNY), invitations are ``invite_sent`` /
    ``invite_accepted``."""

    new_user_event: str | None = "app_install"
    active_events: tuple[str, ...] = ()
    activation_events: tuple[str, ...] = ("export_video",)
    activation_window_days: int = 7
    revenue_events: tuple[str, ...] = ("purchase_membership",)
    conversion_steps: tuple[str, ...] = (
        "app_install",
        "sign_up",
        "edit_video",
        "export_video",
        "purchase_membership",
    )
    conversion_window_days: int = 14
    ltv_days: int | None = 30
    invite_sent_event: str = "invite_sent"
    invite_accepted_event: str = "invite_accepted"

    def __post_init__(self) -> None:
        for name in ("active_events", "activation_events", "revenue_events", "conversion_steps"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.activation_events:
            raise InvalidQuery("activation_events must name at least one event")
        if not self.revenue_events:
            raise InvalidQuery("revenue_events must name at least one event")
        if len(self.conversion_steps) < 2:
            raise InvalidQuery("conversion_steps needs at least two events")
        for name in ("activation_window_days", "conversion_window_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise InvalidQuery(f"{name} must be a positive number of days, got {value!r}")
        if self.ltv_days is not None and (not isinstance(self.ltv_days, int) or self.ltv_days <= 0):
            raise InvalidQuery(
                f"ltv_days must be a positive number of days or None, not {self.ltv_days!r}"
            )

    @property
    def activity_events(self) -> tuple[str, ...]:
        """Events that make a person active; empty means any event. Revenue and invitation
        events always count when a set is configured (a payer is an active user)."""
        if not self.active_events:
            return ()
        extra = (*self.revenue_events, self.invite_sent_event, self.invite_accepted_event)
        return tuple(dict.fromkeys((*self.active_events, *extra)))


@dataclass(frozen=True)
class MetricDefinition:
    """One catalog entry."""

    name: str
    label_zh: str
    label_en: str
    unit: str
    kind: Kind  # additive: segments add up; ratio: numerator / denominator per segment
    definition: str
    needs: tuple[str, ...]


def _d(
    name: str, zh: str, en: str, unit: str, kind: Kind, definition: str, *needs: str
) -> MetricDefinition:
    return MetricDefinition(name, zh, en, unit, kind, definition, needs)


_ACTIVE = "active events (config.active_events; default any event)"
_NEW = "new-user event (config.new_user_event; default app_install)"
_REVENUE = "revenue events (config.revenue_events) with a numeric amount"

CATALOG: dict[str, MetricDefinition] = {
    d.name: d
    for d in (
        _d("new_users", "新增用户", "New users", "persons", "additive",
           "Persons whose first-ever new-user event falls inside the range.", _NEW),
        _d("activation_rate", "激活率", "Activation rate", "ratio", "ratio",
           "Of the range's new users, the share who did any activation event within "
           "activation_window_days after their first new-user event (boundary included).",
           _NEW, "activation events (config.activation_events)"),
        _d("dau", "日活跃用户", "DAU", "persons", "additive",
           "Mean over the range's local days of the persons with an active event that day.",
           _ACTIVE),
        _d("wau", "周活跃用户", "WAU", "persons", "additive",
           "Mean over the range's days of the persons active in the 7 local days ending that day.",
           _ACTIVE),
        _d("mau", "月活跃用户", "MAU", "persons", "additive",
           "Mean over the range's days of the persons active in the 30 local days ending that "
           "day.", _ACTIVE),
        _d("stickiness", "用户粘性 DAU/MAU", "Stickiness (DAU/MAU)", "ratio", "ratio",
           "Sum over the range's days of DAU divided by the sum of MAU (mean DAU / mean MAU).",
           _ACTIVE),
        _d("retention_d1", "次日留存率", "Day-1 retention", "ratio", "ratio",
           "Of the new users of days D with D + 1 inside the range, the share active on local "
           "day D + 1. retention_dN for any N >= 1 (retention_d7, retention_d30...).",
           _NEW, _ACTIVE),
        _d("churn_rate", "流失率", "Churn rate", "ratio", "ratio",
           "Of the persons active in the equally long range just before, the share with no "
           "active event in the range.", _ACTIVE),
        _d("conversion_rate", "转化率", "Conversion rate", "ratio", "ratio",
           "Ordered funnel over config.conversion_steps within conversion_window_days: persons "
           "reaching the last step / persons entering step 1 in the range.",
           "conversion steps (config.conversion_steps)"),
        _d("paying_rate", "付费率", "Paying rate", "ratio", "ratio",
           "Paying users / active users of the range. A paying user has a revenue event with "
           "amount > 0 in the range.", _ACTIVE, _REVENUE),
        _d("gmv", "交易总额 GMV", "GMV", "currency", "additive",
           "Sum of amount over the range's revenue events (refunds sent as negative amounts "
           "reduce it).", _REVENUE),
        _d("arpu", "每用户平均收入 ARPU", "ARPU", "currency per person", "ratio",
           "Revenue of the active users in the range / active users.", _ACTIVE, _REVENUE),
        _d("arppu", "每付费用户平均收入 ARPPU", "ARPPU", "currency per person", "ratio",
           "Revenue of the paying users in the range / paying users.", _ACTIVE, _REVENUE),
        _d("repurchase_rate", "复购率", "Repurchase rate", "ratio", "ratio",
           "Of the paying users of the range, the share with two or more revenue events with "
           "amount > 0 in the range.", _REVENUE),
        _d("ltv", "用户生命周期价值 LTV(已实现)", "Realised LTV", "currency per person", "ratio",
           "Revenue from the range's new users within ltv_days of their first new-user event "
           "(all of it when ltv_days is None) / new users; per period it is the cohort's LTV.",
           _NEW, _REVENUE),
        _d("k_factor", "裂变系数 K", "K-factor", "invites per person", "ratio",
           "Invites sent per active user x acceptance rate = accepted invitations "
           "(invite_accepted events) in the range / active users in the range.",
           _ACTIVE, "invitation events (config.invite_sent_event, config.invite_accepted_event)"),
    )
}  # fmt: skip

_RETENTION = re.compile(r"retention_d([1-9][0-9]{0,3})")


def metric_definition(name: str) -> MetricDefinition:
    """The catalog entry of ``name`` (``retention_dN`` for any N >= 1)."""
    if name in CATALOG:
        return CATALOG[name]
    m = _RETENTION.fullmatch(name)
    if m:
        n = int(m.group(1))
        base = CATALOG["retention_d1"]
        return MetricDefinition(
            name,
            f"{n}日留存率",
            f"Day-{n} retention",
            base.unit,
            base.kind,
            f"Of the new users of days D with D + {n} inside the range, the share active on "
            f"local day D + {n}.",
            base.needs,
        )
    raise InvalidQuery(f"unknown metric {name!r}; metrics are {', '.join(CATALOG)}, retention_dN")


# -- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricPoint:
    """One value: of a period (``key`` is its label) or a breakdown value (``key`` is the value,
    None = not set). ``value`` = numerator / denominator (None when the denominator is 0)."""

    key: str | None
    value: float | None
    numerator: float
    denominator: float


@dataclass(frozen=True)
class MetricResult:
    """A metric over a date range, per period and per breakdown value when asked."""

    name: str
    definition: MetricDefinition
    date_range: DateRange
    value: float | None
    numerator: float
    denominator: float
    interval: str | None = None
    periods: tuple[MetricPoint, ...] = ()
    breakdown: Field | None = None
    segments: tuple[MetricPoint, ...] = ()
    components: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["date_range"] = {
            "date_from": self.date_range.date_from.isoformat(),
            "date_to": self.date_range.date_to.isoformat(),
            "timezone": self.date_range.timezone,
        }
        return out


def _point(key: str | None, num: float, den: float) -> MetricPoint:
    return MetricPoint(key, num / den if den else None, num, den)


# Cells: (period number or 0, breakdown value) -> (numerator, denominator)
Cells = dict[tuple[int, str | None], tuple[float, float]]


# -- SQL building blocks ------------------------------------------------------------------------------


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def _in(sql: Sql, events: tuple[str, ...] | list[str]) -> exp.Expr:
    """``event IN (...)``; TRUE for an empty tuple (any event)."""
    if not events:
        return exp.true()
    return exp.In(this=_c("event"), expressions=[lit(e) for e in events])


def _flag(cond: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=lit(1))], default=lit(0))


def _null_text() -> exp.Expr:
    """``CAST(NULL AS TEXT)``, built without parsing the type's name."""
    return exp.Cast(this=exp.null(), to=exp.DataType(this=exp.DataType.Type.TEXT))


def _filtered(agg: exp.Expr, cond: exp.Expr) -> exp.Expr:
    """``agg FILTER (WHERE cond)``: the aggregate over the rows where ``cond`` holds."""
    return exp.Filter(this=agg, expression=exp.Where(this=cond))


def _count_if(cond: exp.Expr) -> exp.Expr:
    """The number of rows where ``cond`` holds (0 when none)."""
    return _filtered(exp.Count(this=exp.Star()), cond)


def _coalesce0(e: exp.Expr) -> exp.Expr:
    return exp.Coalesce(this=e, expressions=[lit(0)])


def _amount(sql: Sql) -> exp.Expr:
    return sql.field_number(col("amount"))


def _uuid_order(sql: Sql) -> exp.Expr:
    """The uuid as a tie-breaker in time order: its text order (DuckDB's UUID type sorts like
    its text, so it is compared as is there; ClickHouse's does not)."""
    return sql.text(_c("uuid")) if sql.ch else _c("uuid")


def _ranked(
    source: Source,
    project_id: int,
    sql: Sql,
    cond: exp.Expr,
    breakdown: Field | None,
    extra: list[exp.Expr],
    ranked: bool = True,
    pn: exp.Expr | None = None,
    within: exp.Expr | None = None,
) -> exp.Select:
    """Events matching ``cond``, with pn (period number: ``pn``, else 0), b (breakdown value), us
    (µs since epoch) and, when ``ranked``, rn: the event's rank in time (uuid breaks ties)
    within the person (and the value of ``within``: the event's range, when there are several)."""
    b = sql.field_text(breakdown) if breakdown else _null_text()
    part = [_c("person_id")] + ([within.copy()] if within is not None else [])
    order = exp.Order(
        expressions=[exp.Ordered(this=_c("timestamp")), exp.Ordered(this=_uuid_order(sql))]
    )
    rn = exp.Window(this=exp.RowNumber(), partition_by=part, order=order)
    return (
        exp.select(
            _c("person_id"),
            exp.alias_(_c("timestamp"), "ts", copy=False),
            exp.alias_(sql.epoch_us(_c("timestamp")), "us", copy=False),
            exp.alias_(lit(0) if pn is None else pn, "pn", copy=False),
            exp.alias_(b, "b", copy=False),
            *([exp.alias_(rn, "rn", copy=False)] if ranked else []),
            *extra,
            copy=False,
        )
        .from_(events_from(source, project_id, person=uses_person(breakdown)), copy=False)
        .where(cond, copy=False)
    )


# A batch query computes one or several date ranges ("parts", each with its interval, all in one
# time zone and disjoint): each event or new user is tagged with the part it falls in (rg, the
# part's index), so that adjacent ranges (the dashboard's range and the one before it) are
# computed in one pass over their events instead of one pass each.
Part = tuple[DateRange, str | None]


class _Parts:
    """The UTC bounds, local day numbers and per-part values of disjoint ranges of one zone."""

    def __init__(self, sql: Sql, parts: Sequence[Part]) -> None:
        self.sql = sql
        self.parts = list(parts)
        self.bounds = [dr.utc_bounds() for dr, _ in parts]
        self.start = min(b[0] for b in self.bounds)
        self.end = max(b[1] for b in self.bounds)
        self.days = LocalPeriods(sql, parts[0][0].timezone, self.start, self.end)
        self.order = sorted(range(len(parts)), key=lambda i: self.bounds[i][0])

    def inside(self, ts: exp.Expr) -> exp.Expr:
        """``ts`` falls in one of the ranges (adjacent ones merged into one interval)."""
        spans: list[list[datetime]] = []
        for i in self.order:
            lo, hi = self.bounds[i]
            if spans and spans[-1][1] == lo:
                spans[-1][1] = hi
            else:
                spans.append([lo, hi])
        conds = [
            exp.and_(
                exp.GTE(this=ts.copy(), expression=self.sql.ts_literal(lo)),
                exp.LT(this=ts.copy(), expression=self.sql.ts_literal(hi)),
                copy=False,
            )
            for lo, hi in spans
        ]
        return exp.or_(*conds, copy=False) if len(conds) > 1 else conds[0]

    def pick(self, ts: exp.Expr, values: list[exp.Expr]) -> exp.Expr:
        """``values[i]`` for a ``ts`` inside part i (one value when they are all the same)."""
        if all(v == values[0] for v in values[1:]):
            return values[0]
        last = self.order[-1]
        ifs = [
            exp.If(
                this=exp.LT(this=ts.copy(), expression=self.sql.ts_literal(self.bounds[i][1])),
                true=values[i],
            )
            for i in self.order[:-1]
        ]
        return exp.Case(ifs=ifs, default=values[last])

    def rg(self, ts: exp.Expr) -> exp.Expr:
        """The index of the part ``ts`` falls in."""
        return self.pick(ts, [lit(i) for i in range(len(self.parts))])

    def pn(self, ts: exp.Expr) -> exp.Expr:
        """The period number of ``ts`` in its part's interval (0 for a part without)."""
        return self.pick(
            ts,
            [self.days.period(ts, iv) if iv else lit(0) for _, iv in self.parts],
        )

    def with_interval(self) -> list[int]:
        """The parts asked per period."""
        return [i for i, (_, iv) in enumerate(self.parts) if iv]


def _cohort(
    source: Source,
    project_id: int,
    sql: Sql,
    parts: _Parts,
    cfg: MetricConfig,
    breakdown: Field | None,
) -> exp.Select:
    """New users of the ranges: person, first new-user event (µs, local day number), its part
    (rg), period, the part's last day number (ld) and the breakdown value on that event. Without
    a breakdown the first event is the person's earliest time (no ranking needed); its day and
    period are taken only for the ranges' new users (by arithmetic, :class:`LocalPeriods`)."""
    cond = exp.and_(
        sql.event_is(cfg.new_user_event),
        exp.LT(this=_c("timestamp"), expression=sql.ts_literal(parts.end)),
        copy=False,
    )
    firsts: exp.Select
    if breakdown is None:
        firsts = (
            exp.select(
                _c("person_id"),
                exp.alias_(exp.Min(this=_c("timestamp")), "ts", copy=False),
                exp.alias_(_null_text(), "b", copy=False),
                copy=False,
            )
            .from_(events_from(source, project_id), copy=False)
            .where(cond, copy=False)
            .group_by(_c("person_id"), copy=False)
        )
    else:
        ranked = _ranked(source, project_id, sql, cond, breakdown, [])
        firsts = (
            exp.select(_c("person_id"), _c("ts"), _c("b"), copy=False)
            .from_(ranked.subquery("r", copy=False), copy=False)
            .where(_c("rn").eq(lit(1)), copy=False)
        )
    ts = _c("ts")
    last = [lit(period_number(dr.date_to, "day")) for dr, _ in parts.parts]
    return (
        exp.select(
            _c("person_id"),
            exp.alias_(sql.epoch_us(ts), "us", copy=False),
            exp.alias_(parts.days.day(ts.copy()), "cd", copy=False),
            exp.alias_(parts.rg(ts), "rg", copy=False),
            exp.alias_(parts.pn(ts), "pn", copy=False),
            exp.alias_(parts.pick(ts, last), "ld", copy=False),
            _c("b"),
            copy=False,
        )
        .from_(firsts.subquery("f", copy=False), copy=False)
        .where(parts.inside(ts), copy=False)
    )


# Levels of a batch query: each row of it belongs to the overall cells (0, without interval or
# breakdown), the per-period cells (1, interval without breakdown) or the per-value cells (2,
# breakdown without interval), the three kinds of cells a MetricResult is made of.
OVERALL, PER_PERIOD, PER_VALUE = 0, 1, 2


def _levels(levels: tuple[int, ...]) -> exp.Subquery:
    """A one-column table (``lvl``) of the levels a batch query computes."""
    q: exp.Query = exp.select(exp.alias_(lit(levels[0]), "lvl", copy=False), copy=False)
    for n in levels[1:]:
        q = exp.union(
            q,
            exp.select(exp.alias_(lit(n), "lvl", copy=False), copy=False),
            distinct=False,
            copy=False,
        )
    return q.subquery("l", copy=False)


def _part_levels(parts: _Parts, breakdown: Field | None) -> list[tuple[int, ...]]:
    """The levels each part computes: overall, per period (with an interval), per value."""
    return [
        (OVERALL,) + ((PER_PERIOD,) if iv else ()) + ((PER_VALUE,) if breakdown else ())
        for _, iv in parts.parts
    ]


def _with_levels(q: exp.Select, parts: _Parts, breakdown: Field | None) -> exp.Select:
    """``q`` (rows tagged with their part, rg) once per level its part computes (``lvl``)."""
    per_part = _part_levels(parts, breakdown)
    if all(lv == per_part[0] for lv in per_part):
        return q.join(_levels(per_part[0]), join_type="cross", copy=False)
    rows: exp.Query | None = None
    for rg, levels in enumerate(per_part):
        for n in levels:
            row = exp.select(
                exp.alias_(lit(rg), "l_rg", copy=False),
                exp.alias_(lit(n), "lvl", copy=False),
                copy=False,
            )
            rows = row if rows is None else exp.union(rows, row, distinct=False, copy=False)
    assert rows is not None
    return q.join(
        rows.subquery("l", copy=False),
        on=_c("l_rg", "l").eq(_c("rg")),
        join_type="inner",
        copy=False,
    )


def _level_pn(pn: exp.Expr) -> exp.Expr:
    """The period number of a row at its level: ``pn`` per period, 0 otherwise."""
    return exp.Case(ifs=[exp.If(this=_c("lvl").eq(lit(PER_PERIOD)), true=pn)], default=lit(0))


def _level_b(b: exp.Expr) -> exp.Expr:
    """The breakdown value of a row at its level: ``b`` per value, NULL otherwise."""
    return exp.Case(ifs=[exp.If(this=_c("lvl").eq(lit(PER_VALUE)), true=b)])


def _retention_n(name: str) -> int:
    return int(name.removeprefix("retention_d"))


def _cohort_batch_sql(
    source: Source,
    project_id: int,
    names: list[str],
    parts: _Parts,
    cfg: MetricConfig,
    breakdown: Field | None,
) -> exp.Select:
    """One query for every requested new-user cohort metric (new users, activation, LTV, any
    retention_dN) of every range at every level: rows (rg, lvl, pn, b, new users, activated, LTV
    revenue, then per requested N: retained, observable). The cohort (first new-user event, its
    range, period and breakdown value) is computed once; each person carries one flag per N."""
    sql = parts.sql
    cohort = _cohort(source, project_id, sql, parts, cfg, breakdown)
    ns = sorted({_retention_n(n) for n in names if _RETENTION.fullmatch(n)})
    a_us = sql.epoch_us(_c("timestamp", "a"))
    a_event = _c("event", "a")
    join_on = _c("person_id", "a").eq(_c("person_id", "c"))
    person = exp.alias_(_c("person_id", "c"), "person_id", copy=False)
    per_person: list[exp.Expr] = [
        exp.alias_(_c(n, "c"), n, copy=False) for n in ("person_id", "cd", "rg", "pn", "ld", "b")
    ]
    hits: list[tuple[str, exp.Select]] = []
    if "activation_rate" in names:
        hits.append(
            (
                "h_act",
                exp.select(person, exp.alias_(lit(1), "hit", copy=False), copy=False)
                .distinct(copy=False)
                .from_(exp.to_table("cohort").as_("c", copy=False), copy=False)
                .join(
                    events_from(source, project_id, "a"), on=join_on, join_type="inner", copy=False
                )
                .where(
                    exp.and_(
                        exp.In(this=a_event, expressions=[lit(e) for e in cfg.activation_events]),
                        exp.GTE(this=a_us, expression=_c("us", "c")),
                        exp.LTE(
                            this=a_us.copy(),
                            expression=exp.Add(
                                this=_c("us", "c"),
                                expression=lit(cfg.activation_window_days * DAY_US),
                            ),
                        ),
                        copy=False,
                    ),
                    copy=False,
                ),
            )
        )
        per_person.append(exp.alias_(_coalesce0(_c("hit", "h_act")), "act", copy=False))
    if "ltv" in names:
        conds: list[exp.Expr] = [
            exp.In(this=a_event.copy(), expressions=[lit(e) for e in cfg.revenue_events]),
            exp.Not(this=exp.Is(this=_c("amount", "a"), expression=exp.null())),
            exp.GTE(this=a_us.copy(), expression=_c("us", "c")),
        ]
        if cfg.ltv_days is not None:
            conds.append(
                exp.LT(
                    this=a_us.copy(),
                    expression=exp.Add(this=_c("us", "c"), expression=lit(cfg.ltv_days * DAY_US)),
                )
            )
        hits.append(
            (
                "h_ltv",
                exp.select(
                    person.copy(),
                    exp.alias_(exp.Sum(this=_c("amount", "a")), "rev", copy=False),
                    copy=False,
                )
                .from_(exp.to_table("cohort").as_("c", copy=False), copy=False)
                .join(
                    events_from(source, project_id, "a"), on=join_on, join_type="inner", copy=False
                )
                .where(exp.and_(*conds, copy=False), copy=False)
                .group_by(_c("person_id", "c"), copy=False),
            )
        )
        per_person.append(exp.alias_(_coalesce0(_c("rev", "h_ltv")), "lrev", copy=False))
    if ns:
        # retention: the persons' active local days D + N for each requested N, over the span
        # of the ranges (joined to the cohort before anything is grouped: only its persons'
        # events count); a day D + N after the person's range's end is not observed there
        returns = (
            exp.select(
                _c("person_id"),
                exp.alias_(parts.days.day(_c("timestamp")), "dn", copy=False),
                copy=False,
            )
            .from_(events_from(source, project_id), copy=False)
            .where(
                exp.and_(
                    _in(sql, cfg.activity_events),
                    sql.time_between(parts.start, parts.end),
                    copy=False,
                ),
                copy=False,
            )
        )
        gap = exp.Sub(this=_c("dn", "r"), expression=_c("cd", "c"))
        hits.append(
            (
                "h_ret",
                exp.select(
                    person.copy(),
                    *(
                        exp.alias_(exp.Max(this=_flag(gap.copy().eq(lit(n)))), f"x{n}", copy=False)
                        for n in ns
                    ),
                    copy=False,
                )
                .from_(exp.to_table("cohort").as_("c", copy=False), copy=False)
                .join(
                    returns.subquery("r", copy=False),
                    on=_c("person_id", "r").eq(_c("person_id", "c")),
                    join_type="inner",
                    copy=False,
                )
                .where(exp.In(this=gap.copy(), expressions=[lit(n) for n in ns]), copy=False)
                .group_by(_c("person_id", "c"), copy=False),
            )
        )
        per_person += [
            exp.alias_(_coalesce0(_c(f"x{n}", "h_ret")), f"h{n}", copy=False) for n in ns
        ]
    carried = [str(e.alias) for e in per_person if e.alias not in ("person_id", "pn", "b")]
    persons = exp.select(*per_person, copy=False).from_(
        exp.to_table("cohort").as_("c", copy=False), copy=False
    )
    for alias, hit in hits:
        persons = persons.join(
            hit.subquery(alias, copy=False),
            on=_c("person_id", alias).eq(_c("person_id", "c")),
            join_type="left",
            copy=False,
        )
    keyed = _with_levels(
        exp.select(
            _c("lvl"),
            exp.alias_(_level_pn(_c("pn")), "k_pn", copy=False),
            exp.alias_(_level_b(_c("b")), "k_b", copy=False),
            *(_c(n) for n in carried),
            copy=False,
        ).from_(persons.subquery("p", copy=False), copy=False),
        parts,
        breakdown,
    )
    values: list[exp.Expr] = [
        exp.alias_(exp.Count(this=exp.Star()), "n_new", copy=False),
        exp.alias_(
            exp.Sum(this=_c("act")) if "activation_rate" in names else lit(0), "n_act", copy=False
        ),
        exp.alias_(exp.Sum(this=_c("lrev")) if "ltv" in names else lit(0), "s_rev", copy=False),
    ]
    for n in ns:
        seen = exp.LTE(
            this=exp.Add(this=_c("cd"), expression=lit(n)), expression=_c("ld")
        )  # D + N inside the person's range
        values.append(
            exp.alias_(
                exp.Sum(this=exp.Case(ifs=[exp.If(this=seen, true=_c(f"h{n}"))], default=lit(0))),
                f"r{n}",
                copy=False,
            )
        )
        values.append(exp.alias_(exp.Sum(this=_flag(seen.copy())), f"o{n}", copy=False))
    return (
        exp.select(_c("rg"), _c("lvl"), _c("k_pn"), _c("k_b"), *values, copy=False)
        .from_(keyed.subquery("k", copy=False), copy=False)
        .group_by(_c("rg"), _c("lvl"), _c("k_pn"), _c("k_b"), copy=False)
        .with_("cohort", as_=cohort, copy=False)
    )


_FACT_METRICS = ("paying_rate", "arpu", "arppu", "repurchase_rate", "k_factor")
_FACT_VALUES = ("payer", "paid_n", "rev_p", "acc_n", "sent_n")


def _facts_sql(
    source: Source,
    project_id: int,
    parts: _Parts,
    cfg: MetricConfig,
    breakdown: Field | None,
) -> exp.Select:
    """Per (rg, lvl, pn, b): active users, payers, revenue, payers' revenue, repurchasers,
    accepted and sent invitations, in one pass over the ranges' active events. Per period a
    person counts in each period they were active in; per breakdown value each active person
    falls in the value of their first active event of the range."""
    sql = parts.sql
    ts = _c("timestamp")
    rg = parts.rg(ts)
    base = _ranked(
        source,
        project_id,
        sql,
        exp.and_(_in(sql, cfg.activity_events), parts.inside(ts), copy=False),
        breakdown,
        [
            exp.alias_(rg.copy(), "rg", copy=False),
            exp.alias_(_c("event"), "ev", copy=False),
            exp.alias_(_c("amount"), "amt", copy=False),
        ],
        ranked=breakdown is not None,
        pn=parts.pn(ts),
        within=rg if len(parts.parts) > 1 else None,
    )
    first_b: exp.Expr = (
        exp.Max(this=exp.Case(ifs=[exp.If(this=_c("rn").eq(lit(1)), true=_c("b"))]))
        if breakdown is not None
        else _null_text()
    )

    def revenue() -> exp.Expr:
        return exp.and_(
            exp.In(this=_c("ev"), expressions=[lit(e) for e in cfg.revenue_events]),
            exp.Not(this=exp.Is(this=_c("amt"), expression=exp.null())),
            copy=False,
        )

    def paid() -> exp.Expr:
        return exp.and_(revenue(), exp.GT(this=_c("amt"), expression=lit(0)), copy=False)

    # per person, range and period, each sum over the events it is about only (FILTER: most
    # events are neither revenue nor invitations); aliases differ from the columns they
    # aggregate (ClickHouse resolves names to aliases)
    facts = (
        exp.select(
            _c("person_id"),
            _c("rg"),
            _c("pn"),
            exp.alias_(first_b, "fb", copy=False),
            exp.alias_(_flag(exp.GT(this=_count_if(paid()), expression=lit(0))), "is_payer"),
            exp.alias_(_count_if(paid()), "n_paid", copy=False),
            exp.alias_(
                exp.Coalesce(
                    this=_filtered(exp.Sum(this=_c("amt")), revenue()), expressions=[lit(0.0)]
                ),
                "p_rev",
            ),
            exp.alias_(_count_if(_c("ev").eq(lit(cfg.invite_accepted_event))), "n_acc"),
            exp.alias_(_count_if(_c("ev").eq(lit(cfg.invite_sent_event))), "n_sent"),
            copy=False,
        )
        .from_(base.subquery("e", copy=False), copy=False)
        .group_by(_c("person_id"), _c("rg"), _c("pn"), copy=False)
    )
    # per level: the period level's rows are the per-person-and-period facts as they are; the
    # overall and per-value levels take each person once per range (their periods summed when
    # there is an interval, else the facts already are per person)
    periodic = parts.with_interval()
    facts_of = bool(periodic)
    parts_sql: list[exp.Query] = []
    if periodic:
        per_period = exp.select(
            _c("rg"),
            exp.alias_(lit(PER_PERIOD), "lvl", copy=False),
            exp.alias_(_c("pn"), "k_pn", copy=False),
            exp.alias_(_null_text(), "k_b", copy=False),
            *(
                exp.alias_(_c(c), a, copy=False)
                for c, a in zip(
                    ("is_payer", "n_paid", "p_rev", "n_acc", "n_sent"), _FACT_VALUES, strict=True
                )
            ),
            copy=False,
        ).from_(exp.to_table("facts"), copy=False)
        if len(periodic) < len(parts.parts):
            per_period = per_period.where(
                exp.In(this=_c("rg"), expressions=[lit(i) for i in periodic]), copy=False
            )
        parts_sql.append(per_period)
    others = (OVERALL,) + ((PER_VALUE,) if breakdown is not None else ())
    per_person: exp.Expr
    if facts_of:
        per_person = (
            exp.select(
                _c("person_id"),
                _c("rg"),
                exp.alias_(exp.Max(this=_c("fb")), "k_fb", copy=False),
                exp.alias_(exp.Max(this=_c("is_payer")), "m_payer", copy=False),
                exp.alias_(exp.Sum(this=_c("n_paid")), "s_paid", copy=False),
                exp.alias_(exp.Sum(this=_c("p_rev")), "s_rev", copy=False),
                exp.alias_(exp.Sum(this=_c("n_acc")), "s_acc", copy=False),
                exp.alias_(exp.Sum(this=_c("n_sent")), "s_sent", copy=False),
                copy=False,
            )
            .from_(exp.to_table("facts"), copy=False)
            .group_by(_c("person_id"), _c("rg"), copy=False)
            .subquery("pp", copy=False)
        )
        cols = ("k_fb", "m_payer", "s_paid", "s_rev", "s_acc", "s_sent")
    else:
        per_person = facts.subquery("pp", copy=False)
        cols = ("fb", "is_payer", "n_paid", "p_rev", "n_acc", "n_sent")
    parts_sql.append(
        exp.select(
            _c("rg"),
            _c("lvl"),
            exp.alias_(lit(0), "k_pn", copy=False),
            exp.alias_(_level_b(_c(cols[0])), "k_b", copy=False),
            *(
                exp.alias_(_c(c), a, copy=False)
                for c, a in zip(cols[1:], _FACT_VALUES, strict=True)
            ),
            copy=False,
        )
        .from_(per_person, copy=False)
        .join(_levels(others), join_type="cross", copy=False)
    )
    people: exp.Query = parts_sql[0]
    for part in parts_sql[1:]:
        people = exp.union(people, part, distinct=False, copy=False)
    tree = (
        exp.select(
            _c("rg"),
            _c("lvl"),
            _c("k_pn"),
            _c("k_b"),
            exp.alias_(exp.Count(this=exp.Star()), "users", copy=False),
            exp.alias_(exp.Sum(this=_c("payer")), "payers", copy=False),
            exp.alias_(exp.Sum(this=_c("rev_p")), "revenue", copy=False),
            exp.alias_(
                exp.Sum(
                    this=exp.Case(
                        ifs=[exp.If(this=_c("payer").eq(lit(1)), true=_c("rev_p"))],
                        default=lit(0.0),
                    )
                ),
                "payer_revenue",
                copy=False,
            ),
            exp.alias_(
                exp.Sum(this=_flag(exp.GTE(this=_c("paid_n"), expression=lit(2)))),
                "repurchasers",
                copy=False,
            ),
            exp.alias_(exp.Sum(this=_c("acc_n")), "accepted", copy=False),
            exp.alias_(exp.Sum(this=_c("sent_n")), "sent", copy=False),
            copy=False,
        )
        .from_(people.subquery("p", copy=False), copy=False)
        .group_by(_c("rg"), _c("lvl"), _c("k_pn"), _c("k_b"), copy=False)
    )
    return tree.with_("facts", as_=facts, copy=False) if facts_of else tree


def _churn_sql(
    source: Source, project_id: int, dr: DateRange, cfg: MetricConfig, breakdown: Field | None
) -> exp.Select:
    """(pn=0, b, churned, previously active): persons active in the previous range of equal
    length, in the value of their first active event there, and whether they were not active in
    the range."""
    sql = Sql(source.dialect)
    p_start, p_end = dr.previous().utc_bounds()
    start, end = dr.utc_bounds()
    active = _in(sql, cfg.activity_events)
    prev = _ranked(
        source,
        project_id,
        sql,
        exp.and_(active, sql.time_between(p_start, p_end), copy=False),
        breakdown,
        [],
    )
    firsts = (
        exp.select(_c("person_id"), _c("b"), copy=False)
        .from_(prev.subquery("p", copy=False), copy=False)
        .where(_c("rn").eq(lit(1)), copy=False)
    )
    current = (
        exp.select(_c("person_id"), exp.alias_(lit(1), "hit", copy=False), copy=False)
        .distinct(copy=False)
        .from_(events_from(source, project_id), copy=False)
        .where(exp.and_(active.copy(), sql.time_between(start, end), copy=False), copy=False)
    )
    return (
        exp.select(
            exp.alias_(lit(0), "pn", copy=False),
            _c("b", "c"),
            exp.alias_(
                exp.Sum(this=exp.Sub(this=lit(1), expression=_coalesce0(_c("hit", "h")))),
                "num",
                copy=False,
            ),
            exp.alias_(exp.Count(this=exp.Star()), "den", copy=False),
            copy=False,
        )
        .from_(firsts.subquery("c", copy=False), copy=False)
        .join(
            current.subquery("h", copy=False),
            on=_c("person_id", "h").eq(_c("person_id", "c")),
            join_type="left",
            copy=False,
        )
        .group_by(_c("b", "c"), copy=False)
    )


# -- computing cells ----------------------------------------------------------------------------------


def _key(b: Any) -> str | None:
    return None if b is None else str(b)


def _num(v: Any) -> float:
    f = as_float(v)
    return 0.0 if f is None else f


def _clipped(dr: DateRange, interval: str) -> list[tuple[str, DateRange]]:
    """Each period of ``interval`` overlapping the range, as (label, its days inside the range)."""
    days: dict[int, list[date]] = {}
    for i in range(dr.days):
        day = dr.date_from + timedelta(days=i)
        days.setdefault(period_number(day, interval), []).append(day)
    return [
        (p.label, DateRange(days[p.number][0], days[p.number][-1], dr.timezone))
        for p in periods(dr, interval)
    ]


TREND_METRICS = ("dau", "wau", "mau", "stickiness", "gmv")
# the daily trends series each trends-based metric reads
_TREND_SERIES = {
    "dau": ("dau",),
    "wau": ("wau",),
    "mau": ("mau",),
    "stickiness": ("dau", "mau"),
    "gmv": ("gmv",),
}
_COHORT_METRICS = ("new_users", "activation_rate", "ltv")

# (metric name, level) -> cells; metric name -> raw totals of the overall level (components)
Batch = dict[tuple[str, int], Cells]
Totals = dict[str, dict[str, float]]


_WINDOWS = {"dau": 1, "wau": 7, "mau": 30}


def _activity_sql(
    source: Source,
    project_id: int,
    dr: DateRange,
    cfg: MetricConfig,
    breakdown: Field | None,
    longest: int,
) -> exp.Select:
    """Persons' active local days (per breakdown value, as in trends: a person counts in every
    value they had an active event with) counted per (b, day, gap): gap is the days since the
    person's previous active day, capped at ``longest`` (the longest window W asked). From these
    counts :func:`_activity_daily` gets the persons active in the last W days of each day
    (DAU: W = 1, WAU: 7, MAU: 30) for every W up to ``longest`` without another pass."""
    sql = Sql(source.dialect)
    start, end = dr.extended_back(longest - 1).utc_bounds()
    # without a breakdown there is no b to carry through the DISTINCT and the window
    keys = [_c("person_id")] + ([_c("b")] if breakdown else [])
    active = (
        exp.select(
            _c("person_id"),
            *([exp.alias_(sql.field_text(breakdown), "b", copy=False)] if breakdown else []),
            exp.alias_(
                LocalPeriods(sql, dr.timezone, start, end).day(_c("timestamp")), "dn", copy=False
            ),
            copy=False,
        )
        .distinct(copy=False)
        .from_(events_from(source, project_id, person=uses_person(breakdown)), copy=False)
        .where(
            exp.and_(_in(sql, cfg.activity_events), sql.time_between(start, end), copy=False),
            copy=False,
        )
    )
    order = exp.Order(expressions=[exp.Ordered(this=_c("dn"))])
    previous: exp.Expr
    if sql.ch:  # the previous row's day (ClickHouse has no plain LAG)
        previous = _coalesce0(
            exp.Window(
                this=exp.Max(this=_c("dn")),
                partition_by=keys,
                order=order,
                spec=exp.WindowSpec(
                    kind="ROWS", start="1", start_side="PRECEDING", end="1", end_side="PRECEDING"
                ),
            )
        )
    else:
        previous = exp.Window(
            this=exp.Lag(this=_c("dn"), offset=lit(1), default=lit(0)),
            partition_by=keys,
            order=order,
        )
    gap = exp.Least(
        this=exp.Sub(this=_c("dn"), expression=_c("prev")),
        expressions=[lit(longest)],
        ignore_nulls=True,
    )
    b = _c("b") if breakdown else _null_text()
    days = exp.select(
        *keys[1:], _c("dn"), exp.alias_(previous, "prev", copy=False), copy=False
    ).from_(active.subquery("a", copy=False), copy=False)
    return (
        exp.select(
            exp.alias_(b, "b", copy=False),
            _c("dn"),
            exp.alias_(gap, "gap", copy=False),
            exp.alias_(exp.Count(this=exp.Star()), "n", copy=False),
            copy=False,
        )
        .from_(days.subquery("d", copy=False), copy=False)
        .group_by(*keys[1:], _c("dn"), exp.column("gap"), copy=False)
    )


Daily = dict[str | None, list[float]]  # breakdown value -> value of each day of the range


def _activity_daily(
    source: Source,
    project_id: int,
    keys: list[str],
    dr: DateRange,
    cfg: MetricConfig,
    breakdown: Field | None,
) -> dict[str, Daily]:
    """DAU/WAU/MAU of each day of the range (per breakdown value), from one query."""
    windows = sorted({_WINDOWS[k] for k in keys})
    tree = _activity_sql(source, project_id, dr, cfg, breakdown, windows[-1])
    counts: dict[str | None, list[tuple[int, int, float]]] = {}
    first = period_number(dr.date_from, "day")
    for b, dn, gap, n in run(source, tree, copy=False):
        counts.setdefault(_key(b), []).append((int(dn) - first, int(gap), _num(n)))
    out: dict[str, Daily] = {k: {} for k in keys}
    for w in windows:
        for b in sorted(counts, key=lambda v: (v is None, v or "")):
            values = _window_counts(counts[b], w, dr.days)
            if any(values):  # a value active on no day of the range has no line (as in trends)
                for k in keys:
                    if _WINDOWS[k] == w:
                        out[k][b] = values
    if breakdown is None:
        for k in keys:
            out[k].setdefault(None, [0.0] * dr.days)
    return out


def _window_counts(counts: list[tuple[int, int, float]], w: int, n_days: int) -> list[float]:
    """Persons active in the last ``w`` days of each of ``n_days`` days, from (day index, gap,
    persons) counts: an active day covers days ``day .. day + w - 1``, and adds those not
    already covered by the person's previous active day (``gap`` days before): one segment,
    +1 where it starts, -1 after it ends."""
    steps = [0.0] * (n_days + 1)
    for day, gap, n in counts:
        begin, end = day + max(0, w - gap), day + w
        if end <= 0 or begin >= n_days:
            continue
        steps[max(begin, 0)] += n
        steps[min(end, n_days)] -= n
    running, values = 0.0, []
    for step in steps[:n_days]:
        running += step
        values.append(running)
    return values


def _gmv_daily(
    source: Source, project_id: int, dr: DateRange, cfg: MetricConfig, breakdown: Field | None
) -> Daily:
    """GMV of each day of the range (per breakdown value), from a trends line."""
    revenue = Filter(col("event"), "in", list(cfg.revenue_events))
    q = TrendsQuery(
        (Series(None, "sum", col("amount"), (revenue,)),),
        dr,
        "day",
        breakdown=breakdown,
        breakdown_limit=_BREAKDOWN_LIMIT,
    )
    return {
        line.breakdown_value: [0.0 if v is None else float(v) for v in line.values]
        for line in trends(source, project_id, q).series
    }


def _trend_batch(
    source: Source,
    project_id: int,
    names: list[str],
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
    levels: tuple[int, ...],
    plain_daily: dict[str, Daily] | None = None,
) -> Batch:
    """Cells of DAU/WAU/MAU, stickiness and GMV at every level from daily values: one query
    for all the activity counts and one trends query for GMV, without breakdown (the overall
    and per-period cells are sums of the same days) and again with it. ``plain_daily``: the
    daily values without breakdown, already computed (:func:`metric_batches`)."""
    keys = list(dict.fromkeys(k for n in names for k in _TREND_SERIES[n]))
    activity = [k for k in keys if k in _WINDOWS]
    out: Batch = {}
    groups: list[tuple[Field | None, tuple[int, ...]]] = []
    plain = tuple(lv for lv in levels if lv != PER_VALUE)
    if plain:
        groups.append((None, plain))
    if PER_VALUE in levels:
        groups.append((breakdown, (PER_VALUE,)))
    labels = [dr.date_from + timedelta(days=i) for i in range(dr.days)]
    for by, group in groups:
        daily: dict[str, Daily] = {}
        if by is None and plain_daily is not None:
            daily = {k: plain_daily[k] for k in keys}
        else:
            if activity:
                daily.update(_activity_daily(source, project_id, activity, dr, cfg, by))
            if "gmv" in keys:
                daily["gmv"] = _gmv_daily(source, project_id, dr, cfg, by)
        for level in group:
            iv = interval if level == PER_PERIOD else None
            pns = [period_number(day, iv) if iv else 0 for day in labels]
            sums: dict[str, dict[tuple[int, str | None], float]] = {k: {} for k in keys}
            for k, lines in daily.items():
                acc = sums[k]
                for b, values in lines.items():
                    for pn, v in zip(pns, values, strict=True):
                        acc[(pn, b)] = acc.get((pn, b), 0.0) + v
            days: dict[int, int] = {}
            for pn in pns:
                days[pn] = days.get(pn, 0) + 1
            for name in names:
                cells: Cells = {}
                if name == "stickiness":
                    dau, mau = sums["dau"], sums["mau"]
                    for cell in dict.fromkeys([*dau, *mau]):
                        cells[cell] = (dau.get(cell, 0.0), mau.get(cell, 0.0))
                elif name == "gmv":
                    cells = {cell: (v, 1.0) for cell, v in sums["gmv"].items()}
                else:
                    cells = {cell: (v, float(days[cell[0]])) for cell, v in sums[name].items()}
                out[(name, level)] = cells
    return out


def _cohort_batch(
    source: Source,
    project_id: int,
    names: list[str],
    parts: _Parts,
    cfg: MetricConfig,
    breakdown: Field | None,
) -> list[Batch]:
    """Cells of the new-user cohort metrics of each range at every level, from one query."""
    tree = _cohort_batch_sql(source, project_id, names, parts, cfg, breakdown)
    ns = sorted({_retention_n(n) for n in names if _RETENTION.fullmatch(n)})
    out: list[Batch] = [
        {(name, level): {} for name in names for level in levels}
        for levels in _part_levels(parts, breakdown)
    ]
    for row in run(source, tree, copy=False):
        cells, level, cell = out[int(row[0])], int(row[1]), (int(row[2]), _key(row[3]))
        n_new, n_act, s_rev = _num(row[4]), _num(row[5]), _num(row[6])
        by_n = {n: (_num(row[7 + 2 * i]), _num(row[8 + 2 * i])) for i, n in enumerate(ns)}
        for name in names:
            if name == "new_users":
                cells[(name, level)][cell] = (n_new, 1.0)
            elif name == "activation_rate":
                cells[(name, level)][cell] = (n_act, n_new)
            elif name == "ltv":
                cells[(name, level)][cell] = (s_rev, n_new)
            else:
                retained, observable = by_n[_retention_n(name)]
                if observable:  # cells of persons whose day D + N is inside the range only
                    cells[(name, level)][cell] = (retained, observable)
    return out


def _facts_batch(
    source: Source,
    project_id: int,
    names: list[str],
    parts: _Parts,
    cfg: MetricConfig,
    breakdown: Field | None,
) -> list[tuple[Batch, Totals]]:
    """Cells of the active-user facts metrics (paying rate, ARPU, ARPPU, repurchase, K-factor)
    of each range at every level, from one query; the overall totals of invitations and active
    users."""
    tree = _facts_sql(source, project_id, parts, cfg, breakdown)
    out: list[Batch] = [
        {(name, level): {} for name in names for level in levels}
        for levels in _part_levels(parts, breakdown)
    ]
    totals: list[dict[str, float]] = [{} for _ in parts.parts]
    for rg, level, pn, b, users, payers, rev, payer_rev, rep, acc, sent in run(
        source, tree, copy=False
    ):
        u, p = _num(users), _num(payers)
        values = {
            "paying_rate": (p, u),
            "arpu": (_num(rev), u),
            "arppu": (_num(payer_rev), p),
            "repurchase_rate": (_num(rep), p),
            "k_factor": (_num(acc), u),
        }
        cells = out[int(rg)]
        for name in names:
            cells[(name, int(level))][(int(pn), _key(b))] = values[name]
        if int(level) == OVERALL:
            raw = totals[int(rg)]
            raw["sent"] = raw.get("sent", 0.0) + _num(sent)
            raw["accepted"] = raw.get("accepted", 0.0) + _num(acc)
            raw["users"] = raw.get("users", 0.0) + u
    return [(batch, {name: raw for name in names}) for batch, raw in zip(out, totals, strict=True)]


def _funnel_cells(
    source: Source, project_id: int, dr: DateRange, cfg: MetricConfig, breakdown: Field | None
) -> tuple[Cells, list[int]]:
    """Cells of the conversion rate over one range, and the overall step counts."""
    q = FunnelQuery(
        tuple(FunnelStep(e) for e in cfg.conversion_steps),
        dr,
        window=cfg.conversion_window_days,
        window_unit="day",
        breakdown=breakdown,
    )
    res = funnel(source, project_id, q)
    counts = res.counts
    cells: Cells = {}
    if breakdown is None:
        cells[(0, None)] = (float(counts[-1]), float(counts[0]))
    for bd in res.breakdowns:
        cells[(0, bd.value)] = (float(bd.steps[-1].count), float(bd.steps[0].count))
    return cells, counts


def _range_cells(
    source: Source,
    project_id: int,
    name: str,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> tuple[Cells, dict[str, float]]:
    """Cells of churn or conversion, which compute each period as a range of its own."""
    if interval:
        # a fresh range per period: that period's days inside the range
        cells: Cells = {}
        for _label, sub in _clipped(dr, interval):
            pn = period_number(sub.date_from, interval)
            got, _ = _range_cells(source, project_id, name, sub, cfg, None, breakdown)
            for (_, b), v in got.items():
                cells[(pn, b)] = v
        return cells, {}
    if name == "conversion_rate":
        cells, counts = _funnel_cells(source, project_id, dr, cfg, breakdown)
        return cells, {f"step_{i}": float(c) for i, c in enumerate(counts)}
    cells = {}
    tree = _churn_sql(source, project_id, dr, cfg, breakdown)
    for pn, b, num, den in run(source, tree, copy=False):
        cells[(int(pn), _key(b))] = (_num(num), _num(den))
    return cells, {}


def _families(names: list[str]) -> tuple[list[str], list[str]]:
    """The new-user cohort metrics and the active-user facts metrics among ``names``."""
    cohort = [n for n in names if n in _COHORT_METRICS or _RETENTION.fullmatch(n)]
    return cohort, [n for n in names if n in _FACT_METRICS]


def _batch_cells(
    source: Source,
    project_id: int,
    names: list[str],
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
    plain_daily: dict[str, Daily] | None = None,
    done: tuple[Batch, Totals] | None = None,
) -> tuple[Batch, Totals]:
    """The cells of every metric in ``names`` at every level: one query (or trends pass) per
    family of metrics sharing an underlying query, covering all the levels at once. ``done``:
    the cohort and facts cells, already computed (:func:`metric_batches`)."""
    levels = (
        (OVERALL,)
        + ((PER_PERIOD,) if interval else ())
        + ((PER_VALUE,) if breakdown is not None else ())
    )
    out: Batch = {}
    totals: Totals = {}
    cohort, facts = _families(names)
    if done is not None:
        out.update(done[0])
        totals.update(done[1])
    elif cohort or facts:
        parts = _Parts(Sql(source.dialect), [(dr, interval)])
        if cohort:
            out.update(_cohort_batch(source, project_id, cohort, parts, cfg, breakdown)[0])
        if facts:
            got, raw = _facts_batch(source, project_id, facts, parts, cfg, breakdown)[0]
            out.update(got)
            totals.update(raw)
    trend = [n for n in names if n in TREND_METRICS]
    if trend:
        out.update(
            _trend_batch(
                source, project_id, trend, dr, cfg, interval, breakdown, levels, plain_daily
            )
        )
    for name in names:
        if name not in ("churn_rate", "conversion_rate"):
            continue
        for level in levels:
            cells, more = _range_cells(
                source,
                project_id,
                name,
                dr,
                cfg,
                interval if level == PER_PERIOD else None,
                breakdown if level == PER_VALUE else None,
            )
            out[(name, level)] = cells
            if level == OVERALL:
                totals[name] = more
    return out, totals


def _check_interval(interval: str | None) -> None:
    if interval is not None and interval not in METRIC_INTERVALS:
        raise InvalidQuery(f"unknown interval {interval!r}; use {', '.join(METRIC_INTERVALS)}")


def metric_batch(
    source: Source,
    project_id: int,
    names: Iterable[str],
    date_range: DateRange,
    *,
    interval: str | None = None,
    breakdown: Field | None = None,
    config: MetricConfig | None = None,
    _plain_daily: dict[str, Daily] | None = None,
    _done: tuple[Batch, Totals] | None = None,
) -> dict[str, MetricResult]:
    """Compute several catalog metrics over ``date_range`` at once: name -> exactly what
    :func:`metric` returns for it. Metrics that share an underlying query share one run of it:
    one query for all the new-user cohort metrics (new users, activation, LTV, every
    retention_dN), one for all the active-user facts (paying rate, ARPU, ARPPU, repurchase,
    K-factor), one trends pass for DAU/WAU/MAU/stickiness/GMV (one query per distinct series,
    and another with the breakdown); each covers the overall value, the periods and the
    breakdown values together. Churn and conversion run as :func:`metric` runs them."""
    cfg = config or MetricConfig()
    definitions = {name: metric_definition(name) for name in names}
    _check_interval(interval)
    if not definitions:
        return {}
    cells, totals = _batch_cells(
        source,
        project_id,
        list(definitions),
        date_range,
        cfg,
        interval,
        breakdown,
        _plain_daily,
        _done,
    )
    return {
        name: _result(name, d, date_range, interval, breakdown, cells, totals.get(name, {}))
        for name, d in definitions.items()
    }


class _Scoped:
    """A source that builds each relation's SELECT once (the store builds it from text) and
    hands out copies: one computation asks for the events relation about ten times."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.dialect = source.dialect
        self._built: dict[tuple[str, int], exp.Query] = {}

    def scoped(self, relation: str, project_id: int) -> exp.Query:
        key = (relation, project_id)
        if key not in self._built:
            self._built[key] = self.source.scoped(relation, project_id)
        return self._built[key].copy()

    def query(self, sql: str) -> QueryResult:
        return self.source.query(sql)

    def __getattr__(self, name: str) -> Any:  # query_arrow, where the source has it
        return getattr(self.source, name)


def _disjoint(ranges: list[DateRange]) -> bool:
    """Whether no two of the ranges share a day."""
    ordered = sorted(ranges, key=lambda dr: dr.date_from)
    return all(a.date_to < b.date_from for a, b in zip(ordered, ordered[1:], strict=False))


def _shared_cells(
    source: Source,
    project_id: int,
    names: list[str],
    requests: Sequence[Part],
    cfg: MetricConfig,
) -> list[tuple[Batch, Totals]] | None:
    """The cohort and facts cells of every request from one query per family tagging rows by
    request, when the requests' ranges are disjoint days of one zone (else None)."""
    if len(requests) < 2 or len({dr.timezone for dr, _ in requests}) > 1:
        return None
    if not _disjoint([dr for dr, _ in requests]):
        return None
    cohort, facts = _families(names)
    out: list[tuple[Batch, Totals]] = [({}, {}) for _ in requests]
    parts = _Parts(Sql(source.dialect), requests)
    if cohort:
        for (cells, _), got in zip(
            out, _cohort_batch(source, project_id, cohort, parts, cfg, None), strict=True
        ):
            cells.update(got)
    if facts:
        for (cells, totals), (got, raw) in zip(
            out, _facts_batch(source, project_id, facts, parts, cfg, None), strict=True
        ):
            cells.update(got)
            totals.update(raw)
    return out


def metric_batches(
    source: Source,
    project_id: int,
    names: Iterable[str],
    requests: Sequence[tuple[DateRange, str | None]],
    *,
    config: MetricConfig | None = None,
) -> list[dict[str, MetricResult]]:
    """:func:`metric_batch` of the same metrics for several (date range, interval) requests of
    one time zone (the dashboard: a range by day and the range before it), without breakdown:
    exactly what ``metric_batch`` returns for each. A day's DAU/WAU/MAU and GMV do not depend
    on the range it is asked in, so the activity counts and GMV of every request come from one
    activity query and one trends query over the days covering them all; when the ranges share
    no day, the new-user cohort metrics of all of them come from one query and the active-user
    facts from another, their rows tagged with their range. Other families run per request."""
    cfg = config or MetricConfig()
    names = list(dict.fromkeys(names))
    for name in names:
        metric_definition(name)
    for _, interval in requests:
        _check_interval(interval)
    source = _Scoped(source)
    keys = list(dict.fromkeys(k for n in names if n in TREND_METRICS for k in _TREND_SERIES[n]))
    zones = {dr.timezone for dr, _ in requests}
    shared: dict[str, Daily] | None = None
    span: DateRange | None = None
    if keys and len(requests) > 1 and len(zones) == 1:
        span = DateRange(
            min(dr.date_from for dr, _ in requests),
            max(dr.date_to for dr, _ in requests),
            zones.pop(),
        )
        shared = {}
        activity = [k for k in keys if k in _WINDOWS]
        if activity:
            shared.update(_activity_daily(source, project_id, activity, span, cfg, None))
        if "gmv" in keys:
            shared["gmv"] = _gmv_daily(source, project_id, span, cfg, None)
    done = _shared_cells(source, project_id, names, requests, cfg)
    out = []
    for i, (dr, interval) in enumerate(requests):
        plain: dict[str, Daily] | None = None
        if shared is not None and span is not None:
            first = (dr.date_from - span.date_from).days
            plain = {
                k: {b: values[first : first + dr.days] for b, values in lines.items()}
                for k, lines in shared.items()
            }
        out.append(
            metric_batch(
                source,
                project_id,
                names,
                dr,
                interval=interval,
                config=cfg,
                _plain_daily=plain,
                _done=None if done is None else done[i],
            )
        )
    return out


def metric(
    source: Source,
    project_id: int,
    name: str,
    date_range: DateRange,
    config: MetricConfig | None = None,
    interval: str | None = None,
    breakdown: Field | None = None,
) -> MetricResult:
    """Compute one catalog metric over ``date_range``; per period of ``interval`` (day, week,
    month) and per value of ``breakdown`` when given. Definitions: docs/metrics.md. Several
    metrics of one range: :func:`metric_batch`, which shares their queries."""
    return metric_batch(
        source,
        project_id,
        [name],
        date_range,
        interval=interval,
        breakdown=breakdown,
        config=config,
    )[name]


def _result(
    name: str,
    definition: MetricDefinition,
    date_range: DateRange,
    interval: str | None,
    breakdown: Field | None,
    cells: Batch,
    totals: dict[str, float],
) -> MetricResult:
    """A metric's result from its cells at each level."""
    additive = definition.kind == "additive"
    num, den = cells[(name, OVERALL)].get((0, None), (0.0, 0.0))
    if additive:
        den = _additive_den(name, date_range)
    components = _components(name, totals, num, den)

    period_points: list[MetricPoint] = []
    if interval:
        by_period = cells[(name, PER_PERIOD)]
        for label, sub in _clipped(date_range, interval):
            pn = period_number(sub.date_from, interval)
            pnum, pden = by_period.get((pn, None), (0.0, 0.0))
            if additive:
                pden = _additive_den(name, sub)
            period_points.append(_point(label, pnum, pden))

    segments: list[MetricPoint] = []
    if breakdown is not None:
        for (_, b), (snum, sden) in cells[(name, PER_VALUE)].items():
            if additive:
                sden = den
            segments.append(_point(b, snum, sden))
        segments.sort(key=lambda p: (-p.denominator if not additive else 0, -p.numerator,
                                     p.key is None, p.key or ""))  # fmt: skip

    return MetricResult(
        name=name,
        definition=definition,
        date_range=date_range,
        value=num / den if den else None,
        numerator=num,
        denominator=den,
        interval=interval,
        periods=tuple(period_points),
        breakdown=breakdown,
        segments=tuple(segments),
        components=components,
    )


def _additive_den(name: str, dr: DateRange) -> float:
    """Additive metrics: DAU/WAU/MAU are means over days; counts and sums are themselves."""
    return float(dr.days) if name in ("dau", "wau", "mau") else 1.0


def _components(
    name: str, totals: dict[str, float], num: float, den: float
) -> dict[str, float | None]:
    if name == "k_factor":
        sent, users = totals.get("sent", 0.0), totals.get("users", 0.0)
        return {
            "invites_sent": sent,
            "invites_accepted": num,
            "active_users": users,
            "invites_per_user": sent / users if users else None,
            "acceptance_rate": num / sent if sent else None,
        }
    if name == "conversion_rate":
        return dict(totals)
    return {}
