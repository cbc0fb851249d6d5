"""The metrics catalog: the operating metrics the seeds name that events alone can answer, each
with a written definition (docs/metrics.md) and one function computing it.

``metric(source, project_id, name, date_range, config)`` returns the value over the range, and
optionally one value per period (``interval``) and per value of a field (``breakdown``). Every
value is kept as ``numerator / denominator`` so that :mod:`yunying.analytics.diagnosis` can split
a change between segments. Activity averages (DAU/WAU/MAU, stickiness) and GMV reuse
:func:`~yunying.analytics.trends.trends`; conversion reuses
:func:`~yunying.analytics.funnels.funnel`; the person-level metrics (new users, activation,
N-day retention, churn, paying rate, ARPU, ARPPU, repurchase, LTV, K-factor) are built here, as
each person must fall in exactly one breakdown value (see docs/metrics.md, "Breakdowns").
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
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
from yunying.analytics.trends import Series, TrendsQuery, trends

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


def _coalesce0(e: exp.Expr) -> exp.Expr:
    return exp.Coalesce(this=e, expressions=[lit(0)])


def _amount(sql: Sql) -> exp.Expr:
    return sql.field_number(col("amount"))


def _ranked(
    source: Source,
    project_id: int,
    sql: Sql,
    cond: exp.Expr,
    tz: str,
    interval: str | None,
    breakdown: Field | None,
    per_period: bool,
    extra: list[exp.Expr],
) -> exp.Select:
    """Events matching ``cond``, with pn (period number, 0 without interval), b (breakdown
    value), us (µs since epoch) and rn: the event's rank in time (uuid breaks ties) within the
    person (and period when ``per_period``)."""
    pn = sql.period(_c("timestamp"), interval, tz) if interval else lit(0)
    b = sql.field_text(breakdown) if breakdown else exp.cast(exp.null(), "TEXT")
    part = [_c("person_id")] + ([pn.copy()] if per_period else [])
    order = exp.Order(
        expressions=[exp.Ordered(this=_c("timestamp")), exp.Ordered(this=sql.text(_c("uuid")))]
    )
    rn = exp.Window(this=exp.RowNumber(), partition_by=part, order=order)
    return (
        exp.select(
            _c("person_id"),
            exp.alias_(_c("timestamp"), "ts"),
            exp.alias_(sql.epoch_us(_c("timestamp")), "us"),
            exp.alias_(pn, "pn"),
            exp.alias_(b, "b"),
            exp.alias_(rn, "rn"),
            *extra,
        )
        .from_(events_from(source, project_id, person=uses_person(breakdown)))
        .where(cond)
    )


def _cohort(
    source: Source,
    project_id: int,
    sql: Sql,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> exp.Select:
    """New users of the range: person, first new-user event (µs, local day number), period and
    the breakdown value on that event."""
    start, end = dr.utc_bounds()
    cond = exp.and_(
        sql.event_is(cfg.new_user_event),
        exp.LT(this=_c("timestamp"), expression=sql.ts_literal(end)),
    )
    firsts = _ranked(
        source,
        project_id,
        sql,
        cond,
        dr.timezone,
        interval,
        breakdown,
        False,
        [exp.alias_(sql.day_number(_c("timestamp"), dr.timezone), "cd")],
    )
    return (
        exp.select(_c("person_id"), _c("us"), _c("cd"), _c("pn"), _c("b"))
        .from_(firsts.subquery("f"))
        .where(
            exp.and_(_c("rn").eq(lit(1)), exp.GTE(this=_c("ts"), expression=sql.ts_literal(start)))
        )
    )


def _hits_join(cohort_hits: exp.Select, value: exp.Expr) -> exp.Select:
    """Per (pn, b): sum of the hits' ``value`` column (0 when absent) and cohort size."""
    return (
        exp.select(
            _c("pn", "c"),
            _c("b", "c"),
            exp.alias_(exp.Sum(this=_coalesce0(value)), "num"),
            exp.alias_(exp.Count(this=exp.Star()), "den"),
        )
        .from_(exp.to_table("cohort").as_("c"))
        .join(
            cohort_hits.subquery("h"),
            on=_c("person_id", "h").eq(_c("person_id", "c")),
            join_type="left",
        )
        .group_by(_c("pn", "c"), _c("b", "c"))
    )


def _events_as(source: Source, project_id: int, alias: str) -> exp.Expr:
    return events_from(source, project_id, alias)


def _cohort_sql(
    source: Source,
    project_id: int,
    name: str,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> exp.Select:
    """(pn, b, num, den) rows of the new-user cohort metrics."""
    sql = Sql(source.dialect)
    cohort = _cohort(source, project_id, sql, dr, cfg, interval, breakdown)
    if name == "new_users":
        return (
            exp.select(
                _c("pn"),
                _c("b"),
                exp.alias_(exp.Count(this=exp.Star()), "num"),
                exp.alias_(lit(1), "den"),
            )
            .from_(cohort.subquery("c"))
            .group_by(_c("pn"), _c("b"))
        )
    a_us = sql.epoch_us(_c("timestamp", "a"))
    a_event = _c("event", "a")
    join_on = _c("person_id", "a").eq(_c("person_id", "c"))
    if name == "activation_rate":
        hits = (
            exp.select(exp.alias_(_c("person_id", "c"), "person_id"), exp.alias_(lit(1), "hit"))
            .distinct()
            .from_(exp.to_table("cohort").as_("c"))
            .join(_events_as(source, project_id, "a"), on=join_on, join_type="inner")
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
                )
            )
        )
        return _hits_join(hits, _c("hit", "h")).with_("cohort", as_=cohort)
    if name == "ltv":
        conds: list[exp.Expr] = [
            exp.In(this=a_event, expressions=[lit(e) for e in cfg.revenue_events]),
            exp.Not(this=exp.Is(this=_c("amount", "a"), expression=exp.null())),
            exp.GTE(this=a_us, expression=_c("us", "c")),
        ]
        if cfg.ltv_days is not None:
            conds.append(
                exp.LT(
                    this=a_us.copy(),
                    expression=exp.Add(this=_c("us", "c"), expression=lit(cfg.ltv_days * DAY_US)),
                )
            )
        rev = (
            exp.select(
                exp.alias_(_c("person_id", "c"), "person_id"),
                exp.alias_(exp.Sum(this=_c("amount", "a")), "rev"),
            )
            .from_(exp.to_table("cohort").as_("c"))
            .join(_events_as(source, project_id, "a"), on=join_on, join_type="inner")
            .where(exp.and_(*conds))
            .group_by(_c("person_id", "c"))
        )
        return _hits_join(rev, _c("rev", "h")).with_("cohort", as_=cohort)
    # retention_dN: cohort days whose day D + N is inside the range, active on day D + N
    n = int(name.removeprefix("retention_d"))
    last = period_number(dr.date_to, "day") - n
    start, end = dr.utc_bounds()
    observable = (
        exp.select("*")
        .from_(cohort.subquery("c0"))
        .where(exp.LTE(this=_c("cd"), expression=lit(last)))
    )
    returns = (
        exp.select(_c("person_id"), exp.alias_(sql.day_number(_c("timestamp"), dr.timezone), "dn"))
        .distinct()
        .from_(events_from(source, project_id))
        .where(exp.and_(_in(sql, cfg.activity_events), sql.time_between(start, end)))
    )
    hits = (
        exp.select(exp.alias_(_c("person_id", "c"), "person_id"), exp.alias_(lit(1), "hit"))
        .distinct()
        .from_(exp.to_table("cohort").as_("c"))
        .join(
            returns.subquery("r"),
            on=_c("person_id", "r").eq(_c("person_id", "c")),
            join_type="inner",
        )
        .where(_c("dn", "r").eq(exp.Add(this=_c("cd", "c"), expression=lit(n))))
    )
    return _hits_join(hits, _c("hit", "h")).with_("cohort", as_=observable)


_FACT_METRICS = ("paying_rate", "arpu", "arppu", "repurchase_rate", "k_factor")


def _facts_sql(
    source: Source,
    project_id: int,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> exp.Select:
    """Per (pn, b): active users, payers, revenue, payers' revenue, repurchasers, accepted and
    sent invitations. Each active person (per period) falls in the value of their first active
    event."""
    sql = Sql(source.dialect)
    start, end = dr.utc_bounds()
    revenue = exp.and_(
        exp.In(this=_c("event"), expressions=[lit(e) for e in cfg.revenue_events]),
        exp.Not(this=exp.Is(this=_c("amount"), expression=exp.null())),
    )
    paid = exp.and_(revenue.copy(), exp.GT(this=_c("amount"), expression=lit(0)))
    base = _ranked(
        source,
        project_id,
        sql,
        exp.and_(_in(sql, cfg.activity_events), sql.time_between(start, end)),
        dr.timezone,
        interval,
        breakdown,
        True,
        [
            exp.alias_(_flag(paid), "paid"),
            exp.alias_(
                exp.Case(ifs=[exp.If(this=revenue, true=_c("amount"))], default=lit(0.0)), "rev"
            ),
            exp.alias_(_flag(_c("event").eq(lit(cfg.invite_accepted_event))), "acc"),
            exp.alias_(_flag(_c("event").eq(lit(cfg.invite_sent_event))), "sent"),
        ],
    )
    first_b = exp.Case(ifs=[exp.If(this=_c("rn").eq(lit(1)), true=_c("b"))])
    # aliases differ from the columns they aggregate (ClickHouse resolves names to aliases)
    facts = (
        exp.select(
            _c("person_id"),
            _c("pn"),
            exp.alias_(exp.Max(this=first_b), "fb"),
            exp.alias_(exp.Max(this=_c("paid")), "is_payer"),
            exp.alias_(exp.Sum(this=_c("paid")), "n_paid"),
            exp.alias_(exp.Sum(this=_c("rev")), "p_rev"),
            exp.alias_(exp.Sum(this=_c("acc")), "n_acc"),
            exp.alias_(exp.Sum(this=_c("sent")), "n_sent"),
        )
        .from_(base.subquery("e"))
        .group_by(_c("person_id"), _c("pn"))
    )
    return (
        exp.select(
            _c("pn"),
            _c("fb"),
            exp.alias_(exp.Count(this=exp.Star()), "users"),
            exp.alias_(exp.Sum(this=_c("is_payer")), "payers"),
            exp.alias_(exp.Sum(this=_c("p_rev")), "revenue"),
            exp.alias_(
                exp.Sum(
                    this=exp.Case(
                        ifs=[exp.If(this=_c("is_payer").eq(lit(1)), true=_c("p_rev"))],
                        default=lit(0.0),
                    )
                ),
                "payer_revenue",
            ),
            exp.alias_(
                exp.Sum(this=_flag(exp.GTE(this=_c("n_paid"), expression=lit(2)))),
                "repurchasers",
            ),
            exp.alias_(exp.Sum(this=_c("n_acc")), "accepted"),
            exp.alias_(exp.Sum(this=_c("n_sent")), "sent"),
        )
        .from_(facts.subquery("f"))
        .group_by(_c("pn"), _c("fb"))
    )


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
        exp.and_(active, sql.time_between(p_start, p_end)),
        dr.timezone,
        None,
        breakdown,
        False,
        [],
    )
    firsts = (
        exp.select(_c("person_id"), _c("b")).from_(prev.subquery("p")).where(_c("rn").eq(lit(1)))
    )
    current = (
        exp.select(_c("person_id"), exp.alias_(lit(1), "hit"))
        .distinct()
        .from_(events_from(source, project_id))
        .where(exp.and_(active.copy(), sql.time_between(start, end)))
    )
    return (
        exp.select(
            exp.alias_(lit(0), "pn"),
            _c("b", "c"),
            exp.alias_(
                exp.Sum(this=exp.Sub(this=lit(1), expression=_coalesce0(_c("hit", "h")))), "num"
            ),
            exp.alias_(exp.Count(this=exp.Star()), "den"),
        )
        .from_(firsts.subquery("c"))
        .join(
            current.subquery("h"),
            on=_c("person_id", "h").eq(_c("person_id", "c")),
            join_type="left",
        )
        .group_by(_c("b", "c"))
    )


# -- computing cells ----------------------------------------------------------------------------------


def _key(b: Any) -> str | None:
    return None if b is None else str(b)


def _num(v: Any) -> float:
    f = as_float(v)
    return 0.0 if f is None else f


def _sql_cells(
    source: Source,
    project_id: int,
    name: str,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> tuple[Cells, dict[str, float]]:
    """Cells of a metric computed by this module's SQL, and raw totals (for components)."""
    cells: Cells = {}
    totals: dict[str, float] = {}
    if name in _FACT_METRICS:
        tree = _facts_sql(source, project_id, dr, cfg, interval, breakdown)
        for pn, b, users, payers, rev, payer_rev, rep, acc, sent in run(source, tree):
            u, p = _num(users), _num(payers)
            num, den = {
                "paying_rate": (p, u),
                "arpu": (_num(rev), u),
                "arppu": (_num(payer_rev), p),
                "repurchase_rate": (_num(rep), p),
                "k_factor": (_num(acc), u),
            }[name]
            cells[(int(pn), _key(b))] = (num, den)
            totals["sent"] = totals.get("sent", 0.0) + _num(sent)
            totals["accepted"] = totals.get("accepted", 0.0) + _num(acc)
            totals["users"] = totals.get("users", 0.0) + u
        return cells, totals
    if name == "churn_rate":
        tree = _churn_sql(source, project_id, dr, cfg, breakdown)
    else:
        tree = _cohort_sql(source, project_id, name, dr, cfg, interval, breakdown)
    for pn, b, num, den in run(source, tree):
        cells[(int(pn), _key(b))] = (_num(num), _num(den))
    return cells, totals


def _clipped(dr: DateRange, interval: str) -> list[tuple[str, DateRange]]:
    """Each period of ``interval`` overlapping the range, as (label, its days inside the range)."""
    out: list[tuple[str, DateRange]] = []
    for p in periods(dr, interval):
        days = [
            dr.date_from + timedelta(days=i)
            for i in range(dr.days)
            if period_number(dr.date_from + timedelta(days=i), interval) == p.number
        ]
        out.append((p.label, DateRange(days[0], days[-1], dr.timezone)))
    return out


def _activity_filters(cfg: MetricConfig) -> tuple[Filter, ...]:
    if not cfg.activity_events:
        return ()
    return (Filter(col("event"), "in", list(cfg.activity_events)),)


def _trend_cells(
    source: Source,
    project_id: int,
    name: str,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> Cells:
    """Cells of DAU/WAU/MAU, stickiness and GMV from daily trends lines."""
    if name == "gmv":
        revenue = Filter(col("event"), "in", list(cfg.revenue_events))
        series: tuple[Series, ...] = (Series(None, "sum", col("amount"), (revenue,)),)
    elif name == "stickiness":
        series = (
            Series(None, "dau", filters=_activity_filters(cfg)),
            Series(None, "mau", filters=_activity_filters(cfg)),
        )
    else:
        series = (Series(None, name, filters=_activity_filters(cfg)),)  # type: ignore[arg-type]
    q = TrendsQuery(series, dr, "day", breakdown=breakdown, breakdown_limit=_BREAKDOWN_LIMIT)
    sums: dict[tuple[int, str | None], list[float]] = {}
    days: dict[int, int] = {}
    for line in trends(source, project_id, q).series:
        for label, v in zip(line.labels, line.values, strict=True):
            pn = period_number(date.fromisoformat(label), interval) if interval else 0
            acc = sums.setdefault((pn, line.breakdown_value), [0.0, 0.0])
            acc[line.series_index] += 0.0 if v is None else float(v)
    for i in range(dr.days):
        day = dr.date_from + timedelta(days=i)
        pn = period_number(day, interval) if interval else 0
        days[pn] = days.get(pn, 0) + 1
    cells: Cells = {}
    for (pn, b), (s0, s1) in sums.items():
        if name == "stickiness":
            cells[(pn, b)] = (s0, s1)
        elif name == "gmv":
            cells[(pn, b)] = (s0, 1.0)
        else:
            cells[(pn, b)] = (s0, float(days[pn]))
    return cells


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


TREND_METRICS = ("dau", "wau", "mau", "stickiness", "gmv")


def _cells(
    source: Source,
    project_id: int,
    name: str,
    dr: DateRange,
    cfg: MetricConfig,
    interval: str | None,
    breakdown: Field | None,
) -> tuple[Cells, dict[str, float]]:
    """(pn, b) -> (numerator, denominator) of one metric."""
    if name in TREND_METRICS:
        return _trend_cells(source, project_id, name, dr, cfg, interval, breakdown), {}
    loop = name in ("conversion_rate", "churn_rate")
    if loop and interval:
        # a fresh range per period: that period's days inside the range
        cells: Cells = {}
        for _label, sub in _clipped(dr, interval):
            pn = period_number(sub.date_from, interval)
            got, _ = _cells(source, project_id, name, sub, cfg, None, breakdown)
            for (_, b), v in got.items():
                cells[(pn, b)] = v
        return cells, {}
    if name == "conversion_rate":
        cells, counts = _funnel_cells(source, project_id, dr, cfg, breakdown)
        return cells, {f"step_{i}": float(c) for i, c in enumerate(counts)}
    return _sql_cells(source, project_id, name, dr, cfg, interval, breakdown)


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
    month) and per value of ``breakdown`` when given. Definitions: docs/metrics.md."""
    cfg = config or MetricConfig()
    definition = metric_definition(name)
    if interval is not None and interval not in METRIC_INTERVALS:
        raise InvalidQuery(f"unknown interval {interval!r}; use {', '.join(METRIC_INTERVALS)}")
    additive = definition.kind == "additive"
    name_ = name if name in CATALOG else definition.name

    overall, totals = _cells(source, project_id, name_, date_range, cfg, None, None)
    num, den = overall.get((0, None), (0.0, 0.0))
    if additive:
        den = _additive_den(name_, date_range)
    components = _components(name_, totals, num, den)

    period_points: list[MetricPoint] = []
    if interval:
        by_period, _ = _cells(source, project_id, name_, date_range, cfg, interval, None)
        for label, sub in _clipped(date_range, interval):
            pn = period_number(sub.date_from, interval)
            pnum, pden = by_period.get((pn, None), (0.0, 0.0))
            if additive:
                pden = _additive_den(name_, sub)
            period_points.append(_point(label, pnum, pden))

    segments: list[MetricPoint] = []
    if breakdown is not None:
        by_value, _ = _cells(source, project_id, name_, date_range, cfg, None, breakdown)
        for (_, b), (snum, sden) in by_value.items():
            if additive:
                sden = den
            segments.append(_point(b, snum, sden))
        segments.sort(key=lambda p: (-p.denominator if not additive else 0, -p.numerator,
                                     p.key is None, p.key or ""))  # fmt: skip

    return MetricResult(
        name=name_,
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
