"""Funnels: how many persons go through steps 1..n in order within a conversion window.

Definitions (docs/analytics.md): a person reaches step k if some chain of distinct events
e1..ek, e1 a step-1 event inside the date range, ei matching step i, has non-decreasing
timestamps (ties allowed) and ek no later than ``window`` after e1 (boundary included). The
person counts at the furthest step over all chains. This is ClickHouse's
``windowFunnel(window, 'strict_once')``; ``strict`` also forbids any other event between steps,
``unordered`` lets the steps happen in any order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
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
    as_int,
    events_from,
    lit,
    run,
)

WINDOW_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 604_800}
ORDERS = ("ordered", "strict", "unordered")
MAX_STEPS = 20


@dataclass(frozen=True)
class FunnelStep:
    """One step: an event name (None = any event) and conditions on that event."""

    event: str | None
    filters: tuple[Filter, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))

    @property
    def label(self) -> str:
        """The name shown for this step."""
        return self.name or self.event or "any event"


@dataclass(frozen=True)
class FunnelQuery:
    """A funnel over the project's events; ``filters`` apply to every event considered."""

    steps: tuple[FunnelStep, ...]
    date_range: DateRange
    window: int = 14
    window_unit: Literal["second", "minute", "hour", "day", "week"] = "day"
    order: Literal["ordered", "strict", "unordered"] = "ordered"
    filters: tuple[Filter, ...] = ()
    breakdown: Field | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "filters", tuple(self.filters))
        if not 1 <= len(self.steps) <= MAX_STEPS:
            raise InvalidQuery(f"a funnel needs 1 to {MAX_STEPS} steps, got {len(self.steps)}")
        if self.window_unit not in WINDOW_UNITS:
            raise InvalidQuery(
                f"unknown window unit {self.window_unit!r}; use {', '.join(WINDOW_UNITS)}"
            )
        if not isinstance(self.window, int) or self.window <= 0:
            raise InvalidQuery(
                f"the conversion window must be a positive integer, got {self.window!r}"
            )
        if self.order not in ORDERS:
            raise InvalidQuery(f"unknown funnel order {self.order!r}; use {', '.join(ORDERS)}")

    @property
    def window_us(self) -> int:
        """The conversion window in microseconds."""
        return self.window * WINDOW_UNITS[self.window_unit] * 1_000_000


@dataclass(frozen=True)
class FunnelStepResult:
    """Persons at one step, conversion rates and times (seconds) to reach it."""

    index: int
    name: str
    count: int
    conversion_from_first: float | None
    conversion_from_previous: float | None
    median_seconds_from_previous: float | None = None
    average_seconds_from_previous: float | None = None
    median_seconds_from_first: float | None = None


@dataclass(frozen=True)
class FunnelBreakdown:
    """The funnel of the persons whose step-1 event had ``value``."""

    value: str | None
    steps: tuple[FunnelStepResult, ...]


@dataclass(frozen=True)
class FunnelResult:
    """Counts per step for everyone, and per breakdown value when asked."""

    steps: tuple[FunnelStepResult, ...]
    breakdowns: tuple[FunnelBreakdown, ...] = field(default_factory=tuple)

    @property
    def counts(self) -> list[int]:
        """Persons reaching each step."""
        return [s.count for s in self.steps]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# -- SQL --------------------------------------------------------------------------------------------


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def _flag(cond: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=lit(1))], default=lit(0))


def _ev(
    source: Source, project_id: int, q: FunnelQuery, sql: Sql, conds: list[exp.Expr]
) -> exp.Select:
    """One row per relevant event: person, uuid, time in µs, breakdown value and step flags."""
    start, end = q.date_range.utc_bounds()
    end_w = end + timedelta(microseconds=q.window_us)
    breakdown = sql.field_text(q.breakdown) if q.breakdown else exp.cast(exp.null(), "TEXT")
    cols: list[exp.Expr] = [
        exp.alias_(sql.text(_c("person_id")), "person_id"),
        exp.alias_(sql.text(_c("uuid")), "uid"),
        exp.alias_(sql.epoch_us(_c("timestamp")), "ts"),
        exp.alias_(breakdown, "b"),
    ]
    cols += [exp.alias_(_flag(c), f"s{i}") for i, c in enumerate(conds)]
    where = exp.and_(sql.time_between(start, end_w), sql.filters(q.filters))
    if q.order != "strict":
        where = exp.and_(where, exp.Paren(this=exp.or_(*conds)))
    inner = exp.select(*cols).from_(events_from(source, project_id)).where(where)
    if q.order != "strict":
        return inner
    rn = exp.Window(
        this=exp.RowNumber(),
        partition_by=[_c("person_id")],
        order=exp.Order(expressions=[exp.Ordered(this=_c("ts")), exp.Ordered(this=_c("uid"))]),
    )
    return exp.select("*", exp.alias_(rn, "rn")).from_(inner.subquery("x"))


def _row_number(partition: list[exp.Expr], order: list[exp.Ordered]) -> exp.Window:
    return exp.Window(
        this=exp.RowNumber(), partition_by=partition, order=exp.Order(expressions=order)
    )


def _chain_ctes(q: FunnelQuery, end_us: int) -> list[tuple[str, exp.Query]]:
    """Ordered/strict: f0..f{n-1}, the greedy chain from every step-1 event."""
    n = len(q.steps)
    strict = q.order == "strict"
    extra = [_c("rn", "ev").as_("r0")] if strict else []
    ctes: list[tuple[str, exp.Query]] = [
        (
            "f0",
            exp.select(
                _c("person_id", "ev"), _c("b", "ev"), _c("uid", "ev").as_("u0"),
                _c("ts", "ev").as_("t0"), *extra,
            )
            .from_("ev")
            .where(exp.and_(_c("s0", "ev").eq(1), exp.LT(this=_c("ts", "ev"), expression=lit(end_us)))),
        )
    ]  # fmt: skip
    for k in range(1, n):
        prev = [f"u{i}" for i in range(k)] + [f"t{i}" for i in range(k)]
        if strict:
            prev += [f"r{k - 1}"]
        carried = [_c("person_id", "f"), _c("b", "f")] + [_c(x, "f") for x in prev]
        new = [_c("uid", "e").as_(f"u{k}"), _c("ts", "e").as_(f"t{k}")]
        conds: list[exp.Expr] = [
            _c(f"s{k}", "e").eq(1),
            exp.LTE(
                this=_c("ts", "e"),
                expression=exp.Add(this=_c("t0", "f"), expression=lit(q.window_us)),
            ),
        ]
        if strict:
            new.append(_c("rn", "e").as_(f"r{k}"))
            conds.append(_c("rn", "e").eq(exp.Add(this=_c(f"r{k - 1}", "f"), expression=lit(1))))
        else:
            conds.append(exp.GTE(this=_c("ts", "e"), expression=_c(f"t{k - 1}", "f")))
            conds += [exp.NEQ(this=_c("uid", "e"), expression=_c(f"u{i}", "f")) for i in range(k)]
        rn = _row_number(
            [_c("person_id", "f"), _c("u0", "f")],
            [exp.Ordered(this=_c("ts", "e")), exp.Ordered(this=_c("uid", "e"))],
        )
        cand = (
            exp.select(*carried, *new, exp.alias_(rn, "pick"))
            .from_(exp.to_table(f"f{k - 1}").as_("f"))
            .join(
                exp.to_table("ev").as_("e"),
                on=_c("person_id", "e").eq(_c("person_id", "f")),
                join_type="inner",
            )
            .where(exp.and_(*conds))
        )
        names = ["person_id", "b"] + prev + [f"u{k}", f"t{k}"] + ([f"r{k}"] if strict else [])
        ctes.append((f"f{k}", exp.select(*names).from_(cand.subquery("c")).where(_c("pick").eq(1))))
    paths: exp.Query | None = None
    for k in range(n):
        times: list[exp.Expr] = [
            _c(f"t{i}") if i <= k else exp.cast(exp.null(), "BIGINT").as_(f"t{i}") for i in range(n)
        ]
        sel = exp.select("person_id", "b", "u0", exp.alias_(lit(k + 1), "level"), *times).from_(
            f"f{k}"
        )
        paths = sel if paths is None else exp.union(paths, sel, distinct=False)
    assert paths is not None
    ctes.append(("paths", paths))
    return ctes


def _unordered_ctes(q: FunnelQuery, end_us: int, classes: list[int]) -> list[tuple[str, exp.Query]]:
    """Unordered: from every anchor event, how many steps have a matching event in the window."""
    n = len(q.steps)
    mult = [classes.count(c) for c in range(max(classes) + 1)]
    anchors = (
        exp.select("person_id", "b", _c("uid").as_("u0"), _c("ts").as_("t0"))
        .from_("ev")
        .where(exp.LT(this=_c("ts"), expression=lit(end_us)))
    )
    sums = [
        exp.alias_(exp.Sum(this=_c(f"s{classes.index(c)}", "e")), f"n{c}") for c in range(len(mult))
    ]
    keys = [_c("person_id", "a"), _c("b", "a"), _c("u0", "a"), _c("t0", "a")]
    matched = (
        exp.select(*keys, *sums)
        .from_(exp.to_table("anchors").as_("a"))
        .join(
            exp.to_table("ev").as_("e"),
            on=_c("person_id", "e").eq(_c("person_id", "a")),
            join_type="inner",
        )
        .where(
            exp.and_(
                exp.GTE(this=_c("ts", "e"), expression=_c("t0", "a")),
                exp.LTE(
                    this=_c("ts", "e"),
                    expression=exp.Add(this=_c("t0", "a"), expression=lit(q.window_us)),
                ),
            )
        )
        .group_by(*[k.copy() for k in keys])
    )
    level: exp.Expr | None = None
    for c, m in enumerate(mult):
        part = exp.Least(this=_c(f"n{c}"), expressions=[lit(m)])
        level = part if level is None else exp.Add(this=level, expression=part)
    times = [exp.cast(exp.null(), "BIGINT").as_(f"t{i}") for i in range(n)]
    assert level is not None
    paths = exp.select("person_id", "b", "u0", exp.alias_(level, "level"), *times).from_("matched")
    return [("anchors", anchors), ("matched", matched), ("paths", paths)]


def _aggregate(q: FunnelQuery, sql: Sql, by_breakdown: bool) -> exp.Select:
    """Per-step counts and times over each person's best chain (furthest, then earliest)."""
    n = len(q.steps)
    best = _row_number(
        [_c("person_id")],
        [
            exp.Ordered(this=_c("level"), desc=True),
            exp.Ordered(this=_c("t0")),
            exp.Ordered(this=_c("u0")),
        ],
    )
    ranked = exp.select("*", exp.alias_(best, "pick")).from_("paths")
    cols: list[exp.Expr] = []
    for k in range(n):
        cols.append(
            exp.alias_(
                exp.Sum(this=_flag(exp.GTE(this=_c("level"), expression=lit(k + 1)))), f"c{k}"
            )
        )
    for k in range(1, n):
        step = exp.Sub(this=_c(f"t{k}"), expression=_c(f"t{k - 1}"))
        first = exp.Sub(this=_c(f"t{k}"), expression=_c("t0"))
        cols.append(exp.alias_(sql.quantile(step, 0.5), f"m{k}"))
        cols.append(exp.alias_(exp.Avg(this=step.copy()), f"a{k}"))
        cols.append(exp.alias_(sql.quantile(first, 0.5), f"mf{k}"))
    key = [_c("b")] if by_breakdown else []
    out = exp.select(*key, *cols).from_(ranked.subquery("r")).where(_c("pick").eq(1))
    if by_breakdown:
        out = out.group_by(_c("b")).order_by(_c("b"))
    return out


def _step_results(q: FunnelQuery, row: list[Any], offset: int) -> tuple[FunnelStepResult, ...]:
    n = len(q.steps)
    counts = [as_int(row[offset + k]) for k in range(n)]
    timing = row[offset + n :]
    out = []
    for k, step in enumerate(q.steps):
        first = counts[0]
        prev = counts[k - 1] if k else counts[0]
        med = avg = medf = None
        if k and q.order != "unordered":
            med, avg, medf = (as_float(v) for v in timing[3 * (k - 1) : 3 * k])
            med, avg, medf = (None if v is None else v / 1e6 for v in (med, avg, medf))
        out.append(
            FunnelStepResult(
                index=k,
                name=step.label,
                count=counts[k],
                conversion_from_first=counts[k] / first if first else None,
                conversion_from_previous=counts[k] / prev if prev else None,
                median_seconds_from_previous=med,
                average_seconds_from_previous=avg,
                median_seconds_from_first=medf,
            )
        )
    return tuple(out)


def funnel_sql(
    source: Source, project_id: int, q: FunnelQuery, by_breakdown: bool = False
) -> exp.Select:
    """The funnel as one SQLGlot query for the source's engine."""
    sql = Sql(source.dialect)
    conds: list[exp.Expr] = [
        exp.Paren(this=exp.and_(sql.event_is(s.event), sql.filters(s.filters))) for s in q.steps
    ]
    _, end = q.date_range.utc_bounds()
    end_us = _epoch_us(end)
    ctes: list[tuple[str, exp.Query]] = [("ev", _ev(source, project_id, q, sql, conds))]
    if q.order == "unordered":
        rendered = [sql.render(c) for c in conds]
        classes = [rendered.index(r) for r in rendered]
        # number classes densely so class c is the c-th distinct condition
        dense = {c: i for i, c in enumerate(dict.fromkeys(classes))}
        ctes += _unordered_ctes(q, end_us, [dense[c] for c in classes])
    else:
        ctes += _chain_ctes(q, end_us)
    out = _aggregate(q, sql, by_breakdown)
    for name, body in ctes:
        out = out.with_(name, as_=body)
    return out


def _epoch_us(value: Any) -> int:
    from datetime import datetime

    delta = value - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def funnel(source: Source, project_id: int, query: FunnelQuery) -> FunnelResult:
    """Run a funnel on a store (or any :class:`Source`) for one project."""
    overall = run(source, funnel_sql(source, project_id, query))
    steps = _step_results(query, overall[0], 0) if overall else ()
    breakdowns: tuple[FunnelBreakdown, ...] = ()
    if query.breakdown is not None:
        rows = run(source, funnel_sql(source, project_id, query, by_breakdown=True))
        breakdowns = tuple(
            FunnelBreakdown(
                value=None if r[0] is None else str(r[0]), steps=_step_results(query, r, 1)
            )
            for r in rows
        )
        breakdowns = tuple(sorted(breakdowns, key=lambda b: (-b.steps[0].count, b.value or "")))
    return FunnelResult(steps=steps, breakdowns=breakdowns)
