"""Funnels: how many persons go through steps 1..n in order within a conversion window.

Definitions (docs/analytics.md): a person reaches step k if some chain of distinct events
e1..ek, e1 a step-1 event inside the date range, ei matching step i, has non-decreasing
timestamps (ties allowed) and ek no later than ``window`` after e1 (boundary included). The
person counts at the furthest step over all chains. This is ClickHouse's
``windowFunnel(window, 'strict_once')``; ``strict`` also forbids any other event between steps,
``unordered`` lets the steps happen in any order.

Exclusions drop a person whose chosen chain has an excluded event between two of its steps;
breakdowns attribute a person to the value on the first, last or a given step of that chain.
:func:`funnel_time_to_convert` bins the conversion times and :func:`funnel_trends` gives the
conversion rate per period of the start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from yunying.analytics import funnel_pass
from yunying.analytics.common import (
    INTERVALS,
    DateRange,
    Field,
    Filter,
    InvalidQuery,
    Period,
    Source,
    Sql,
    as_float,
    as_int,
    events_from,
    fn,
    lit,
    periods,
    run,
    uses_person,
)
from yunying.analytics.funnel_pass import ArrowSource
from yunying.analytics.local_periods import LocalPeriods
from yunying.errors import M_

WINDOW_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 604_800}
ORDERS = ("ordered", "strict", "unordered")
ATTRIBUTIONS = ("first_touch", "last_touch", "step")
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
class FunnelExclusion:
    """An event that must not happen between step ``from_step`` and step ``to_step`` (0-based
    step indexes, as PostHog's ``funnel_from_step`` / ``funnel_to_step``)."""

    event: str | None
    filters: tuple[Filter, ...] = ()
    from_step: int = 0
    to_step: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))


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
    breakdown_attribution: Literal["first_touch", "last_touch", "step"] = "first_touch"
    attribution_step: int = 0
    exclusions: tuple[FunnelExclusion, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "exclusions", tuple(self.exclusions))
        n = len(self.steps)
        if not 1 <= n <= MAX_STEPS:
            raise InvalidQuery(M_("a funnel needs 1 to {max} steps, got {n}", max=MAX_STEPS, n=n))
        if self.window_unit not in WINDOW_UNITS:
            raise InvalidQuery(
                f"unknown window unit {self.window_unit!r}; use {', '.join(WINDOW_UNITS)}"
            )
        if not isinstance(self.window, int) or self.window <= 0:
            raise InvalidQuery(
                M_(
                    "the conversion window must be a positive integer, got {window!r}",
                    window=self.window,
                )
            )
        if self.order not in ORDERS:
            raise InvalidQuery(f"unknown funnel order {self.order!r}; use {', '.join(ORDERS)}")
        if self.breakdown_attribution not in ATTRIBUTIONS:
            raise InvalidQuery(
                f"unknown breakdown attribution {self.breakdown_attribution!r}; "
                f"use {', '.join(ATTRIBUTIONS)}"
            )
        if self.breakdown_attribution == "step" and not 0 <= self.attribution_step < n:
            raise InvalidQuery(f"attribution_step must be a step index 0..{n - 1}")
        if self.order == "unordered" and self.breakdown_attribution != "first_touch":
            raise InvalidQuery("unordered funnels attribute breakdowns to the first touch only")
        if self.order == "unordered" and self.exclusions:
            raise InvalidQuery("unordered funnels do not support exclusion steps")
        for x in self.exclusions:
            if not 0 <= x.from_step < x.to_step < n:
                raise InvalidQuery(
                    f"an exclusion needs 0 <= from_step < to_step <= {n - 1}, "
                    f"got {x.from_step}..{x.to_step}"
                )

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
    """The funnel of the persons attributed to ``value``."""

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


@dataclass(frozen=True)
class FunnelTimeToConvertQuery:
    """Distribution of the time from step ``from_step`` to ``to_step`` (default: the last step)
    over the persons who reached ``to_step``, in ``bins`` equal-width bins."""

    funnel: FunnelQuery
    from_step: int = 0
    to_step: int | None = None
    bins: int = 10

    def __post_init__(self) -> None:
        n = len(self.funnel.steps)
        to = n - 1 if self.to_step is None else self.to_step
        if self.funnel.order == "unordered":
            raise InvalidQuery("unordered funnels have no conversion times")
        if not 0 <= self.from_step < to < n:
            raise InvalidQuery(f"time to convert needs 0 <= from_step < to_step <= {n - 1}")
        if not isinstance(self.bins, int) or not 1 <= self.bins <= 1000:
            raise InvalidQuery("bins must be an integer from 1 to 1000")

    @property
    def target(self) -> int:
        """The 0-based index of the step converted to."""
        return len(self.funnel.steps) - 1 if self.to_step is None else self.to_step


@dataclass(frozen=True)
class TimeBin:
    """Persons whose time to convert lies in ``[lower_seconds, upper_seconds)``."""

    lower_seconds: float
    upper_seconds: float
    count: int


@dataclass(frozen=True)
class FunnelTimeToConvertResult:
    """The histogram, and the average / median time (seconds) over the converted persons."""

    bins: tuple[TimeBin, ...]
    converted: int
    average_seconds: float | None
    median_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class FunnelTrendsQuery:
    """Conversion from step 1 to the last step per period in which the funnel was started."""

    funnel: FunnelQuery
    interval: Literal["hour", "day", "week", "month"] = "day"

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise InvalidQuery(f"unknown interval {self.interval!r}; use {', '.join(INTERVALS)}")


@dataclass(frozen=True)
class FunnelTrendsResult:
    """Per period: persons who started the funnel, persons who completed it, and the rate."""

    labels: tuple[str, ...]
    entered: tuple[int, ...]
    converted: tuple[int, ...]
    conversion_rate: tuple[float | None, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# -- SQL --------------------------------------------------------------------------------------------


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def _flag(cond: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=lit(1))], default=lit(0))


def _null(kind: str = "BIGINT") -> exp.Expr:
    return exp.cast(exp.null(), kind)


def _cond(sql: Sql, event: str | None, filters: tuple[Filter, ...]) -> exp.Expr:
    return exp.Paren(this=exp.and_(sql.event_is(event), sql.filters(filters)))


def _ev(
    source: Source,
    project_id: int,
    q: FunnelQuery,
    sql: Sql,
    conds: list[exp.Expr],
    interval: str | None,
    arrays: bool = False,
) -> exp.Select:
    """One row per relevant event: person, uuid, time in µs, start period, breakdown value and
    step flags. The array pass keeps the person id as the engine stores it (grouping on text
    costs a cast per event) and only step-1 events inside the range."""
    breakdown = sql.field_text(q.breakdown) if q.breakdown else _null("TEXT")
    pn = sql.period(_c("timestamp"), interval, q.date_range.timezone) if interval else lit(0)
    raw = arrays or q.order == "strict"
    person = _c("person_id") if raw else sql.text(_c("person_id"))
    cols: list[exp.Expr] = [
        exp.alias_(person, "person_id"),
        exp.alias_(sql.text(_c("uuid")), "uid"),
        exp.alias_(sql.epoch_us(_c("timestamp")), "ts"),
        exp.alias_(pn, "pn"),
        exp.alias_(breakdown, "b"),
    ]
    cols += [exp.alias_(_flag(c), f"s{i}") for i, c in enumerate(conds)]
    relation = events_from(source, project_id, person=uses_person(q))
    if q.order == "strict":  # DuckDB orders uuids as their text: no cast needed to sort
        cols.append(exp.alias_(sql.text(_c("uuid")) if sql.ch else _c("uuid"), "uo"))
    return exp.select(*cols).from_(relation).where(_ev_where(q, sql, conds, arrays))


def _ev_where(q: FunnelQuery, sql: Sql, conds: list[exp.Expr], arrays: bool) -> exp.Expr:
    """The events a funnel reads: inside the range and the window after it, passing the
    query's filters, matching a step (not for strict funnels, where any event breaks a chain);
    with ``arrays``, step-1 events only inside the range."""
    start, end = q.date_range.utc_bounds()
    end_w = end + timedelta(microseconds=q.window_us)
    where = exp.and_(sql.time_between(start, end_w), sql.filters(q.filters))
    if arrays:
        first = exp.and_(
            conds[0].copy(), exp.LT(this=_c("timestamp"), expression=sql.ts_literal(end))
        )
        return exp.and_(where, exp.Paren(this=exp.or_(first, *[c.copy() for c in conds[1:]])))
    if q.order != "strict":
        return exp.and_(where, exp.Paren(this=exp.or_(*[c.copy() for c in conds])))
    return where


def _xev(
    source: Source, project_id: int, q: FunnelQuery, sql: Sql, arrays: bool = False
) -> exp.Select:
    """Exclusion events: person (as in :func:`_ev`), uuid, time in µs and one flag per
    exclusion."""
    start, end = q.date_range.utc_bounds()
    end_w = end + timedelta(microseconds=q.window_us)
    conds = [_cond(sql, x.event, x.filters) for x in q.exclusions]
    raw = arrays or q.order == "strict"
    person = _c("person_id") if raw else sql.text(_c("person_id"))
    cols: list[exp.Expr] = [
        exp.alias_(person, "person_id"),
        exp.alias_(sql.text(_c("uuid")), "uid"),
        exp.alias_(sql.epoch_us(_c("timestamp")), "ts"),
    ]
    cols += [exp.alias_(_flag(c), f"x{j}") for j, c in enumerate(conds)]
    where = exp.and_(
        sql.time_between(start, end_w), sql.filters(q.filters), exp.Paren(this=exp.or_(*conds))
    )
    relation = events_from(source, project_id, person=uses_person(q))
    return exp.select(*cols).from_(relation).where(where)


def _row_number(partition: list[exp.Expr], order: list[exp.Ordered]) -> exp.Window:
    return exp.Window(
        this=exp.RowNumber(), partition_by=partition, order=exp.Order(expressions=order)
    )


def _attributed(q: FunnelQuery, k: int) -> exp.Expr:
    """The breakdown value of a chain that reached step k (0-based)."""
    if q.breakdown_attribution == "last_touch":
        return _c(f"b{k}")
    if q.breakdown_attribution == "step":
        s = q.attribution_step
        return _c(f"b{s}") if s <= k else _null("TEXT")
    return _c("b0")


def _strict_ctes(q: FunnelQuery, end_us: int, sql: Sql) -> list[tuple[str, exp.Query]]:
    """Strict: each event paired with the n-1 events after it in the person's order (time, then
    uuid) by ``LEAD`` in one window pass; a start's level is how many of them in a row match the
    next steps inside the window. ``paths``: one row per start."""
    n = len(q.steps)
    order = exp.Order(expressions=[exp.Ordered(this=_c("ts")), exp.Ordered(this=_c("uo"))])

    def lead(column: str, k: int) -> exp.Window:
        return exp.Window(
            this=exp.Anonymous(this="LEAD", expressions=[_c(column), lit(k)]),
            partition_by=[_c("person_id")],
            order=order.copy(),
        )

    # later steps' uuids only for exclusions, their values only for attribution past step 1
    uuids = bool(q.exclusions)
    values = q.breakdown is not None and (
        q.breakdown_attribution == "last_touch"
        or (q.breakdown_attribution == "step" and q.attribution_step > 0)
    )
    cols: list[exp.Expr] = [_c(c) for c in ("person_id", "pn", "b", "ts", "uo", "s0")]
    for k in range(1, n):
        cols += [exp.alias_(lead(f"s{k}", k), f"n{k}"), exp.alias_(lead("ts", k), f"x{k}")]
        cols += [exp.alias_(lead("uo", k), f"o{k}")] if uuids else []
        cols += [exp.alias_(lead("b", k), f"c{k}")] if values else []
    seq = exp.select(*cols).from_("ev")
    deadline = exp.Add(this=_c("ts"), expression=lit(q.window_us))
    level: exp.Expr = lit(1)
    for k in range(n - 1, 0, -1):  # 1 + (step 2 matches: 1 + (step 3 matches: ...))
        ok = exp.and_(_c(f"n{k}").eq(1), exp.LTE(this=_c(f"x{k}"), expression=deadline.copy()))
        level = exp.Case(
            ifs=[exp.If(this=ok, true=exp.Add(this=lit(1), expression=level))], default=lit(1)
        )
    starts = (
        exp.select("*", exp.alias_(level, "level"))
        .from_("seq")
        .where(exp.and_(_c("s0").eq(1), exp.LT(this=_c("ts"), expression=lit(end_us))))
    )

    def reached(k: int, value: exp.Expr) -> exp.Expr:
        return exp.Case(ifs=[exp.If(this=exp.GT(this=_c("level"), expression=lit(k)), true=value)])

    at = [_c("b")] + [_c(f"c{k}") for k in range(1, n)]
    b: exp.Expr = _c("b")
    if values and q.breakdown_attribution == "last_touch":
        b = exp.Case(ifs=[exp.If(this=_c("level").eq(k + 1), true=at[k].copy()) for k in range(n)])
    elif values:
        b = reached(q.attribution_step, at[q.attribution_step])
    times = [exp.alias_(_c("ts"), "t0")]
    times += [exp.alias_(reached(k, _c(f"x{k}")), f"t{k}") for k in range(1, n)]
    uids = [exp.alias_(sql.text(_c("uo")), "u0")]
    uids += [
        exp.alias_(reached(k, sql.text(_c(f"o{k}"))) if uuids else _null("TEXT"), f"u{k}")
        for k in range(1, n)
    ]
    paths = exp.select("person_id", "pn", exp.alias_(b, "b"), "level", *times, *uids).from_(
        "starts"
    )
    return [("seq", seq), ("starts", starts), ("paths", paths)]


def _chain_ctes(q: FunnelQuery, end_us: int) -> list[tuple[str, exp.Query]]:
    """Ordered: f0..f{n-1}, the greedy chain from every step-1 event; then ``paths``, one row
    per (start, level reached so far)."""
    n = len(q.steps)
    ctes: list[tuple[str, exp.Query]] = [
        (
            "f0",
            exp.select(
                _c("person_id", "ev"), _c("pn", "ev"), _c("uid", "ev").as_("u0"),
                _c("ts", "ev").as_("t0"), _c("b", "ev").as_("b0"),
            )
            .from_("ev")
            .where(exp.and_(_c("s0", "ev").eq(1), exp.LT(this=_c("ts", "ev"), expression=lit(end_us)))),
        )
    ]  # fmt: skip
    for k in range(1, n):
        prev = [f"{x}{i}" for i in range(k) for x in ("u", "t", "b")]
        carried = [_c("person_id", "f"), _c("pn", "f")] + [_c(x, "f") for x in prev]
        new = [_c("uid", "e").as_(f"u{k}"), _c("ts", "e").as_(f"t{k}"), _c("b", "e").as_(f"b{k}")]
        conds: list[exp.Expr] = [
            _c(f"s{k}", "e").eq(1),
            exp.LTE(
                this=_c("ts", "e"),
                expression=exp.Add(this=_c("t0", "f"), expression=lit(q.window_us)),
            ),
        ]
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
        names = ["person_id", "pn"] + prev + [f"u{k}", f"t{k}", f"b{k}"]
        ctes.append((f"f{k}", exp.select(*names).from_(cand.subquery("c")).where(_c("pick").eq(1))))
    paths: exp.Query | None = None
    for k in range(n):
        times: list[exp.Expr] = [_c(f"t{i}") if i <= k else _null().as_(f"t{i}") for i in range(n)]
        uids: list[exp.Expr] = [
            _c(f"u{i}") if i <= k else _null("TEXT").as_(f"u{i}") for i in range(n)
        ]
        sel = exp.select(
            "person_id", "pn", exp.alias_(_attributed(q, k), "b"),
            exp.alias_(lit(k + 1), "level"), *times, *uids,
        ).from_(f"f{k}")  # fmt: skip
        paths = sel if paths is None else exp.union(paths, sel, distinct=False)
    assert paths is not None
    ctes.append(("paths", paths))
    return ctes


def _uses_arrays(q: FunnelQuery, sql: Sql) -> bool:
    """Whether the per-person array pass computes this funnel: ordered, on DuckDB, every step a
    named event different from the others (so no event can fill two steps and the chain from a
    start depends only on times; repeated or overlapping steps take the chain joins)."""
    events = [s.event for s in q.steps]
    return (
        q.order == "ordered"
        and not sql.ch
        and None not in events
        and len(set(events)) == len(events)
    )


def _sx(struct: exp.Expr, name: str) -> exp.Expr:
    return exp.StructExtract(this=struct, expression=lit(name))


def _array_fields(q: FunnelQuery, interval: str | None) -> list[list[str]]:
    """Per step, what the array pass keeps of each event: ``t`` (time), ``u`` (uuid text: ties
    between starts, exclusions), ``b`` (breakdown value), ``p`` (period, step 1 of trends)."""
    n = len(q.steps)
    out: list[list[str]] = []
    for k in range(n):
        names = ["t"]
        valued = q.breakdown is not None and (
            q.breakdown_attribution == "last_touch"
            or k == (q.attribution_step if q.breakdown_attribution == "step" else 0)
        )
        if q.exclusions or valued:
            names.append("u")
        if valued:
            names.append("b")
        if k == 0 and interval:
            names.append("p")
        out.append(names)
    return out


def _array_ctes(q: FunnelQuery, end_us: int, interval: str | None) -> list[tuple[str, exp.Query]]:
    """Ordered funnels with disjoint steps, one pass per person instead of a join per step.

    ``per``: one row per person with, for each step k, the list ``l{k}`` of its step-k events
    (step 1 only inside the range): their times in µs, or ``{t, u, b, p}`` structs when uuids,
    breakdown values or periods are needed (:func:`_array_fields`). ``a0``: one row per start.
    ``a{k}``: the chain's step-k event is the earliest (then smallest uuid) step-k event not
    before step k-1 — with disjoint steps no event is already used, so this is exactly the chain
    of docs/analytics.md — taken as the minimum of the list filtered by a lambda (no join).
    ``cands``: one row per start with its level (steps no later than the window after the
    start) and the chain's times, uuids and attributed value; ``paths``: the chosen one per
    person (and start period), by ``arg_min`` where a person has several starts."""
    n = len(q.steps)
    fields = _array_fields(q, interval)
    source = {"t": "ts", "u": "uid", "b": "b", "p": "pn"}

    def element(k: int) -> exp.Expr:
        if fields[k] == ["t"]:
            return _c("ts")
        return exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier(f), expression=_c(source[f]))
                for f in fields[k]
            ]
        )

    def get(k: int, e: exp.Expr, name: str) -> exp.Expr:
        return e if fields[k] == ["t"] else _sx(e, name)

    lists: list[exp.Expr] = []
    for k in range(n):
        cond: exp.Expr = _c(f"s{k}").eq(1)
        if k == 0:  # step-1 events at or after the range's end are not starts
            cond = exp.and_(cond, exp.LT(this=_c("ts"), expression=lit(end_us)))
        agg = exp.Filter(this=exp.ArrayAgg(this=element(k)), expression=exp.Where(this=cond))
        lists.append(exp.alias_(agg, f"l{k}"))
    ctes: list[tuple[str, exp.Query]] = [
        ("per", exp.select(_c("person_id"), *lists).from_("ev").group_by(_c("person_id")))
    ]
    rest = [_c(f"l{k}") for k in range(1, n)]
    # most persons have one start: their row needs neither unnesting nor choosing
    starts = fn("len", _c("l0"))
    single = (
        exp.select(_c("person_id"), *rest, exp.alias_(fn("list_extract", _c("l0"), lit(1)), "e0"))
        .select(exp.alias_(exp.false(), "multi"))
        .from_("per")
        .where(starts.eq(1))
    )
    multi = (
        exp.select(
            _c("person_id"),
            *[r.copy() for r in rest],
            exp.alias_(exp.Explode(this=_c("l0")), "e0"),
            exp.alias_(exp.true(), "multi"),
        )
        .from_("per")
        .where(exp.GT(this=starts.copy(), expression=lit(1)))
    )
    ctes.append(("a0", exp.union(single, multi, distinct=False)))
    for k in range(1, n):
        x = exp.to_identifier("x")
        later = exp.GTE(this=get(k, x, "t"), expression=get(k - 1, _c(f"e{k - 1}"), "t"))
        pick = exp.ArrayMin(
            this=exp.ArrayFilter(
                this=_c(f"l{k}"), expression=exp.Lambda(this=later, expressions=[x.copy()])
            )
        )
        ctes.append((f"a{k}", exp.select("*", exp.alias_(pick, f"e{k}")).from_(f"a{k - 1}")))
    deadline = exp.Add(this=get(0, _c("e0"), "t"), expression=lit(q.window_us))
    level: exp.Expr = lit(1)
    for k in range(1, n):
        inside = _flag(exp.LTE(this=get(k, _c(f"e{k}"), "t"), expression=deadline.copy()))
        level = exp.Add(this=level, expression=inside)
    ctes.append(("al", exp.select("*", exp.alias_(level, "level")).from_(f"a{n - 1}")))

    def at(k: int, name: str) -> exp.Expr:
        if name not in fields[k]:
            return _null("TEXT")
        value = get(k, _c(f"e{k}"), name)
        if k == 0:
            return value
        return exp.Case(ifs=[exp.If(this=exp.GT(this=_c("level"), expression=lit(k)), true=value)])

    b: exp.Expr = _null("TEXT")
    if q.breakdown is not None and q.breakdown_attribution == "last_touch":
        b = exp.Case(
            ifs=[
                exp.If(this=_c("level").eq(lit(k + 1)), true=get(k, _c(f"e{k}"), "b"))
                for k in range(n)
            ]
        )
    elif q.breakdown is not None:
        b = at(q.attribution_step if q.breakdown_attribution == "step" else 0, "b")
    times = [exp.alias_(at(k, "t"), f"t{k}") for k in range(n)]
    uids = [exp.alias_(at(k, "u"), f"u{k}") for k in range(n)]
    pn = get(0, _c("e0"), "p") if interval else lit(0)
    cands = exp.select(
        "person_id", exp.alias_(pn, "pn"), exp.alias_(b, "b"), "level", *times, *uids, "multi"
    ).from_("al")
    ctes.append(("cands", cands))
    # the chosen chain per person (and start period): furthest, earliest start, smaller uuid
    names = ["b", "level"] + [f"t{k}" for k in range(n)] + [f"u{k}" for k in range(n)]
    row = exp.Struct(
        expressions=[exp.PropertyEQ(this=exp.to_identifier(c), expression=_c(c)) for c in names]
    )
    key = exp.Struct(
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier("l"), expression=exp.Neg(this=_c("level"))),
            exp.PropertyEQ(this=exp.to_identifier("t"), expression=_c("t0")),
            exp.PropertyEQ(this=exp.to_identifier("u"), expression=_c("u0")),
        ]
    )
    best = (
        exp.select("person_id", "pn", exp.alias_(exp.ArgMin(this=row, expression=key), "c"))
        .from_("cands")
        .where(_c("multi"))
        .group_by(_c("person_id"), _c("pn"))
    )
    ctes.append(("best", best))
    unpacked = [exp.alias_(_sx(_c("c"), c), c) for c in names]
    chosen = exp.select("person_id", "pn", *unpacked).from_("best")
    alone = exp.select("person_id", "pn", *names).from_("cands").where(exp.not_(_c("multi")))
    ctes.append(("paths", exp.union(chosen, alone, distinct=False)))
    return ctes


def _unordered_ctes(q: FunnelQuery, end_us: int, classes: list[int]) -> list[tuple[str, exp.Query]]:
    """Unordered: from every anchor event, how many steps have a matching event in the window."""
    n = len(q.steps)
    mult = [classes.count(c) for c in range(max(classes) + 1)]
    anchors = (
        exp.select("person_id", "pn", "b", _c("uid").as_("u0"), _c("ts").as_("t0"))
        .from_("ev")
        .where(exp.LT(this=_c("ts"), expression=lit(end_us)))
    )
    sums = [
        exp.alias_(exp.Sum(this=_c(f"s{classes.index(c)}", "e")), f"n{c}") for c in range(len(mult))
    ]
    keys = [_c("person_id", "a"), _c("pn", "a"), _c("b", "a"), _c("u0", "a"), _c("t0", "a")]
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
    assert level is not None
    times = [_c("t0")] + [_null().as_(f"t{i}") for i in range(1, n)]
    uids = [_c("u0")] + [_null("TEXT").as_(f"u{i}") for i in range(1, n)]
    paths = exp.select("person_id", "pn", "b", exp.alias_(level, "level"), *times, *uids).from_(
        "matched"
    )
    return [("anchors", anchors), ("matched", matched), ("paths", paths)]


def _exclusion_ctes(q: FunnelQuery) -> list[tuple[str, exp.Query]]:
    """``excl``: the (start, level) rows of ``paths`` that have an excluded event inside them."""
    n = len(q.steps)
    p, x = "p", "x"
    hits: list[exp.Expr] = []
    for j, xc in enumerate(q.exclusions):
        a, b = xc.from_step, xc.to_step
        ts = _c("ts", x)
        reached_b = exp.and_(
            exp.GT(this=_c("level", p), expression=lit(b)),
            exp.LT(this=ts, expression=_c(f"t{b}", p)),
        )
        open_end = exp.and_(
            exp.LTE(this=_c("level", p), expression=lit(b)),
            exp.LTE(
                this=ts.copy(),
                expression=exp.Add(this=_c("t0", p), expression=lit(q.window_us)),
            ),
        )
        not_in_chain = [
            exp.Paren(
                this=exp.or_(
                    exp.Is(this=_c(f"u{i}", p), expression=exp.null()),
                    exp.NEQ(this=_c("uid", x), expression=_c(f"u{i}", p)),
                )
            )
            for i in range(n)
        ]
        hits.append(
            exp.Paren(
                this=exp.and_(
                    _c(f"x{j}", x).eq(1),
                    exp.GT(this=_c("level", p), expression=lit(a)),
                    exp.GT(this=ts.copy(), expression=_c(f"t{a}", p)),
                    exp.Paren(this=exp.or_(reached_b, open_end)),
                    *not_in_chain,
                )
            )
        )
    keys = [_c("person_id", p), _c("u0", p), _c("level", p)]
    excl = (
        exp.select(*keys, exp.alias_(exp.Max(this=_flag(exp.or_(*hits))), "excluded"))
        .from_(exp.to_table("paths").as_(p))
        .join(
            exp.to_table("xev").as_(x),
            on=_c("person_id", x).eq(_c("person_id", p)),
            join_type="inner",
        )
        .group_by(*[k.copy() for k in keys])
    )
    return [("excl", excl)]


def _prepared(
    source: Source, project_id: int, q: FunnelQuery, interval: str | None = None
) -> list[tuple[str, exp.Query]]:
    """CTEs ending in ``chosen``: each person's chosen chain (furthest, earliest start) — per
    start period with ``interval`` — unless that chain is excluded."""
    sql = Sql(source.dialect)
    conds: list[exp.Expr] = [_cond(sql, s.event, s.filters) for s in q.steps]
    _, end = q.date_range.utc_bounds()
    end_us = _epoch_us(end)
    arrays = _uses_arrays(q, sql)
    ctes: list[tuple[str, exp.Query]] = [
        ("ev", _ev(source, project_id, q, sql, conds, interval, arrays))
    ]
    if q.order == "unordered":
        rendered = [sql.render(c) for c in conds]
        classes = [rendered.index(r) for r in rendered]
        # number classes densely so class c is the c-th distinct condition
        dense = {c: i for i, c in enumerate(dict.fromkeys(classes))}
        ctes += _unordered_ctes(q, end_us, [dense[c] for c in classes])
    elif arrays:
        ctes += _array_ctes(q, end_us, interval)
    elif q.order == "strict":
        ctes += _strict_ctes(q, end_us, sql)
    else:
        ctes += _chain_ctes(q, end_us)
    scored: exp.Select = exp.select("*", lit(0).as_("excluded")).from_("paths")
    if q.exclusions:
        ctes.append(("xev", _xev(source, project_id, q, sql, arrays or q.order == "strict")))
        ctes += _exclusion_ctes(q)
        n = len(q.steps)
        cols = [_c(c, "p") for c in ("person_id", "pn", "b", "level")]
        cols += [_c(f"{x}{i}", "p") for x in ("t", "u") for i in range(n)]
        flag = exp.Coalesce(this=_c("excluded", "x"), expressions=[lit(0)])
        scored = (
            exp.select(*cols, exp.alias_(flag, "excluded"))
            .from_(exp.to_table("paths").as_("p"))
            .join(
                exp.to_table("excl").as_("x"),
                on=exp.and_(
                    _c("person_id", "x").eq(_c("person_id", "p")),
                    _c("u0", "x").eq(_c("u0", "p")),
                    _c("level", "x").eq(_c("level", "p")),
                ),
                join_type="left",
            )
        )
    if arrays:  # paths already holds one chain per person (and period): the chosen one
        ctes.append(("scored", scored))
        ctes.append(("chosen", exp.select("*").from_("scored").where(_c("excluded").eq(0))))
        return ctes
    partition: list[exp.Expr] = [_c("person_id")]
    if interval:
        partition.append(_c("pn"))
    best = _row_number(
        partition,
        [
            exp.Ordered(this=_c("level"), desc=True),
            exp.Ordered(this=_c("t0")),
            exp.Ordered(this=_c("u0")),
        ],
    )
    ranked = exp.select("*", exp.alias_(best, "pick")).from_(scored.subquery("s"))
    chosen = (
        exp.select("*")
        .from_(ranked.subquery("r"))
        .where(exp.and_(_c("pick").eq(1), _c("excluded").eq(0)))
    )
    ctes.append(("chosen", chosen))
    return ctes


def _with(out: exp.Select, ctes: list[tuple[str, exp.Query]]) -> exp.Select:
    for name, body in ctes:
        out = out.with_(name, as_=body)
    return out


def _aggregate(q: FunnelQuery, sql: Sql, by_breakdown: bool) -> exp.Select:
    """Per-step counts and times over the chosen chains."""
    n = len(q.steps)
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
    out = exp.select(*key, *cols).from_("chosen")
    if by_breakdown:
        out = out.group_by(_c("b")).order_by(_c("b"))
    return out


def funnel_sql(
    source: Source, project_id: int, q: FunnelQuery, by_breakdown: bool = False
) -> exp.Select:
    """The funnel as one SQLGlot query for the source's engine."""
    sql = Sql(source.dialect)
    return _with(_aggregate(q, sql, by_breakdown), _prepared(source, project_id, q))


def _epoch_us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


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


def _uses_pass(q: FunnelQuery, source: Source) -> bool:
    """Whether the numpy pass (:mod:`yunying.analytics.funnel_pass`) computes this funnel: a
    source that returns Arrow, every step a named event, no exclusions; ordered with steps of
    different events and a breakdown (if any) on the first touch, strict with steps of different
    events, or unordered without a breakdown where the steps of one event share their
    conditions (so every event is in one class)."""
    events = [s.event for s in q.steps]
    if None in events or q.exclusions or not callable(getattr(source, "query_arrow", None)):
        return False
    if q.order == "unordered":  # steps of one event must be one class (the same conditions)
        sql = Sql(source.dialect)
        conds = {sql.render(_cond(sql, s.event, s.filters)) for s in q.steps}
        return q.breakdown is None and len(conds) == len(set(events))
    if len(set(events)) != len(events):
        return False
    if q.order == "strict":  # breakdowns by the values' numbers (_strict_by_values)
        return True
    return q.breakdown is None or q.breakdown_attribution == "first_touch"


#: At most this many breakdown values travel as numbers inside the packed values.
CODED_VALUES = 255


def _by_pass(
    source: ArrowSource, project_id: int, q: FunnelQuery
) -> tuple[list[Any], list[list[Any]]] | None:
    """The overall row (counts, then median/mean/median-from-first per step) by the pass, and
    with a breakdown one such row per value, led by the value; ``None`` where the pass does not
    serve the funnel (the SQL does)."""
    if not _uses_pass(q, source):
        return None
    sql = Sql(source.dialect)
    conds: list[exp.Expr] = [_cond(sql, s.event, s.filters) for s in q.steps]
    n = len(q.steps)
    if q.order == "unordered":
        return _unordered_by_pass(source, project_id, q, sql, conds), []
    if q.order == "strict" and q.breakdown is not None:
        return _strict_by_values(source, project_id, q, sql, conds)
    if q.order == "strict":
        chains = _strict_chains(source, project_id, q, sql, conds)
        assert chains is not None  # without codes the values always fit
        return funnel_pass.summary(chains[0], chains[1], n), []
    if q.breakdown is None:
        return funnel_pass.summary(*_ordered_lists(source, project_id, q, sql, conds)[1:], n), []
    done = _coded_by_pass(source, project_id, q, sql, conds)
    if done is not None:
        return done
    # each start's time, uuid and value
    # DuckDB hands uuids to Arrow as their 16 bytes, which order as their text
    uuid = sql.text(_c("uuid")) if sql.ch else _c("uuid")
    parts = [sql.epoch_us(_c("timestamp")), uuid, sql.field_text(q.breakdown)]
    if sql.ch:
        tup = exp.Anonymous(this="tuple", expressions=parts)
        starts: exp.Expr = exp.Anonymous(this="groupArrayIf", expressions=[tup, conds[0].copy()])
    else:
        struct = exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier(name), expression=part)
                for name, part in zip("tub", parts, strict=True)
            ]
        )
        starts = exp.Filter(
            this=exp.ArrayAgg(this=struct), expression=exp.Where(this=conds[0].copy())
        )
    table, level, times = _ordered_lists(source, project_id, q, sql, conds, exp.alias_(starts, "s"))
    overall = funnel_pass.summary(level, times, n)
    assert table is not None  # extra columns come in a table
    if not table.num_rows:
        return overall, []
    chosen, has = funnel_pass.chosen_starts(table.column(1).combine_chunks(), times[0], level)
    codes = pc.dictionary_encode(chosen)
    labels: list[Any] = codes.dictionary.to_pylist()
    index = codes.indices.fill_null(len(labels)).to_numpy().astype(np.int64)
    if codes.null_count:
        labels.append(None)
    group = np.full(len(level), -1, np.int64)
    group[has] = index
    rows = funnel_pass.grouped_summary(level, times, n, group, len(labels))
    return overall, [[label, *row] for label, row in zip(labels, rows, strict=True)]


def _packed(sql: Sql, step: exp.Expr, steps: int) -> exp.Expr:
    """An event as one integer, ``time_us * M + step`` (``M``: :func:`funnel_pass.multiplier`)."""
    mult = lit(funnel_pass.multiplier(steps))
    return exp.Add(
        this=exp.Mul(this=sql.epoch_us(_c("timestamp")), expression=mult), expression=step
    )


def _ordered_lists(
    source: ArrowSource,
    project_id: int,
    q: FunnelQuery,
    sql: Sql,
    conds: list[exp.Expr],
    *extra: exp.Expr,
) -> tuple[pa.Table | None, funnel_pass.Ints, list[funnel_pass.Ints]]:
    """Every person's chosen chain of an ordered funnel by the pass: one list of packed step
    events per person (and the ``extra`` columns, in a table of one row per person), then the
    chains (level, step times)."""
    # the step of each event: conditions are disjoint (distinct event names)
    step: exp.Expr = exp.Case(
        ifs=[exp.If(this=c.copy(), true=lit(k + 1)) for k, c in enumerate(conds)]
    )
    if not any(s.filters for s in q.steps):  # the name alone: one lookup, not n comparisons
        step = sql.position([str(s.event) for s in q.steps], _c("event"))
    packed = _packed(sql, step, len(conds))
    where = _ev_where(q, sql, conds, arrays=True)
    if not extra:
        offsets, values = _person_lists(source, project_id, q, sql, packed, where)
        return None, *funnel_pass.chains(offsets, values, len(conds), q.window_us)
    tree = (
        exp.select(exp.alias_(exp.ArrayAgg(this=packed), "l"), *extra)
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(where)
        .group_by(_c("person_id"))
    )
    table = source.query_arrow(sql.render(tree))
    offsets, values = funnel_pass.fetch(table.column(0))
    return table, *funnel_pass.chains(offsets, values, len(conds), q.window_us)


def _person_lists(
    source: ArrowSource,
    project_id: int,
    q: FunnelQuery,
    sql: Sql,
    packed: exp.Expr,
    where: exp.Expr,
    exact: bool = False,
) -> tuple[funnel_pass.Ints, funnel_pass.Ints]:
    """Each person's list of ``packed`` over the events ``where`` selects, as list offsets and
    values (in no promised order, unless ``exact``: then ordered by time, then uuid). Where the
    store keeps events in person order (``person_ordered``: DuckDB after ``compact_events``),
    the rows come as runs of one person (:func:`funnel_pass.person_runs`), sparing the engine
    its ``GROUP BY``; else one ``ARRAY_AGG`` per person."""
    relation = events_from(source, project_id, person=uses_person(q))
    ordered = getattr(source, "person_ordered", None)
    if not exact and callable(ordered) and ordered(project_id):
        rows = exp.select(_c("person_id"), exp.alias_(packed, "v")).from_(relation).where(where)
        table = source.query_arrow(sql.render(rows))
        values = table.column(1).to_numpy().astype(np.int64, copy=False)
        runs = funnel_pass.person_runs(table.column(0), values)
        return runs.offsets, runs.values
    if exact and sql.ch:  # sort (time, uuid as text, value) tuples, keep the values
        x = exp.to_identifier("x")
        ts = sql.epoch_us(_c("timestamp"))
        tup = exp.Anonymous(this="tuple", expressions=[ts, sql.text(_c("uuid")), packed.copy()])
        lists: exp.Expr = exp.Anonymous(
            this="arrayMap",
            expressions=[
                exp.Lambda(
                    this=exp.Anonymous(this="tupleElement", expressions=[x, lit(3)]),
                    expressions=[x.copy()],
                ),
                exp.Anonymous(this="arraySort", expressions=[exp.ArrayAgg(this=tup)]),
            ],
        )
    elif exact:  # DuckDB orders uuids as their text
        order = [exp.Ordered(this=_c("timestamp")), exp.Ordered(this=_c("uuid"))]
        lists = exp.ArrayAgg(this=exp.Order(this=packed.copy(), expressions=order))
    else:
        lists = exp.ArrayAgg(this=packed)
    tree = exp.select(exp.alias_(lists, "l")).from_(relation).where(where).group_by(_c("person_id"))
    return funnel_pass.fetch(source.query_arrow(sql.render(tree)).column(0))


def _coded_by_pass(
    source: ArrowSource, project_id: int, q: FunnelQuery, sql: Sql, conds: list[exp.Expr]
) -> tuple[list[Any], list[list[Any]]] | None:
    """A first-touch breakdown with few values by the pass, each start carrying its value's
    number (:func:`_coded_lists`): one list per person instead of a second list of (time, uuid,
    value) per start. ``None`` (use the lists of starts) with more than :data:`CODED_VALUES`
    values, a value that appeared meanwhile, or two starts of one person at one instant with
    different values (the uuid decides then)."""
    n = len(q.steps)
    _, end = q.date_range.utc_bounds()
    starts = exp.and_(conds[0].copy(), exp.LT(this=_c("timestamp"), expression=sql.ts_literal(end)))
    values = _value_codes(source, project_id, q, sql, starts, end)
    if values is None:
        return None
    names, code, code_bits = values
    lists = _coded_lists(source, project_id, q, sql, conds, code, code_bits)
    done = None if lists is None else funnel_pass.coded_chains(*lists, n, q.window_us, code_bits)
    if done is None:
        return None
    level, times, codes = done
    return _value_rows(level, times, n, names, np.where(level > 0, codes, -1))


def _value_codes(
    source: Source, project_id: int, q: FunnelQuery, sql: Sql, which: exp.Expr, until: datetime
) -> tuple[list[str], exp.Expr, int] | None:
    """The breakdown values of the events ``which`` selects from the range's start to
    ``until`` (one ``DISTINCT`` scan), and the expression numbering an event's value: 0 for
    none, 1.. for the values read, one more for a value that arrived meanwhile; with the bits
    the numbers need. ``None`` with more than :data:`CODED_VALUES` values."""
    assert q.breakdown is not None
    start, _ = q.date_range.utc_bounds()
    value = sql.field_text(q.breakdown)
    where = exp.and_(sql.time_between(start, until), sql.filters(q.filters), which)
    relation = events_from(source, project_id, person=uses_person(q))
    distinct = exp.select(value.copy()).distinct().from_(relation).where(where)
    found = [r[0] for r in run(source, distinct.limit(CODED_VALUES + 2))]
    names = [str(v) for v in found if v is not None]
    if len(names) > CODED_VALUES:
        return None
    unknown = len(names) + 1
    position = sql.position(names, value)
    code = exp.Case(
        ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.null()), true=lit(0))],
        default=exp.Coalesce(
            this=exp.Nullif(this=position, expression=lit(0)), expressions=[lit(unknown)]
        ),
    )
    return names, code, unknown.bit_length()


def _value_rows(
    level: funnel_pass.Ints,
    times: list[funnel_pass.Ints],
    n: int,
    names: list[str],
    group: funnel_pass.Ints,
) -> tuple[list[Any], list[list[Any]]] | None:
    """The overall row and one row per breakdown value, from each person's value number
    (``group``: 0 for none, -1 for persons without a start); ``None`` when a value arrived
    between the queries (its number is one past the values read)."""
    if (group > len(names)).any():
        return None
    overall = funnel_pass.summary(level, times, n)
    labels: list[Any] = [None, *names]
    rows = funnel_pass.grouped_summary(level, times, n, group, len(labels))
    return overall, [[label, *row] for label, row in zip(labels, rows, strict=True) if row[0]]


def _coded_packed(
    sql: Sql,
    q: FunnelQuery,
    cases: list[tuple[exp.Expr, int, bool]],
    code: exp.Expr,
    code_bits: int,
    others: bool,
) -> exp.Expr | None:
    """An event as ``((time − range start) << code_bits | code) * M + step``: ``cases`` are
    (condition, step, whether the event carries its ``code``), other events are 0 with
    ``others`` (strict funnels). Times relative to the range's start make room for the code;
    ``None`` when the values would not fit in 62 bits."""
    start, end = q.date_range.utc_bounds()
    span_us = _epoch_us(end) - _epoch_us(start) + q.window_us + 1
    mult = funnel_pass.multiplier(len(q.steps))
    if span_us.bit_length() + code_bits + mult.bit_length() > 62:
        return None

    def value(step: int, coded: bool) -> exp.Expr:
        if not coded:
            return lit(step)
        at = exp.Mul(this=exp.Paren(this=code.copy()), expression=lit(mult))
        return exp.Add(this=at, expression=lit(step))

    ifs = [exp.If(this=c.copy(), true=value(k, coded)) for c, k, coded in cases]
    since = exp.Sub(this=sql.epoch_us(_c("timestamp")), expression=lit(_epoch_us(start)))
    return exp.Add(
        this=exp.Mul(this=exp.Paren(this=since), expression=lit(mult << code_bits)),
        expression=exp.Case(ifs=ifs, default=lit(0) if others else None),
    )


def _coded_lists(
    source: ArrowSource,
    project_id: int,
    q: FunnelQuery,
    sql: Sql,
    conds: list[exp.Expr],
    code: exp.Expr,
    code_bits: int,
) -> tuple[funnel_pass.Ints, funnel_pass.Ints] | None:
    """Per person one list of the step events (:func:`_coded_packed`), starts carrying
    ``code`` (< ``2**code_bits``), later steps 0: the lists for :func:`funnel_pass.coded_chains`
    and :func:`funnel_pass.code_levels`; ``None`` when the values would not fit."""
    cases = [(conds[0], 1, True)] + [(c, k + 1, False) for k, c in enumerate(conds) if k]
    packed = _coded_packed(sql, q, cases, code, code_bits, others=False)
    if packed is None:
        return None
    return _person_lists(source, project_id, q, sql, packed, _ev_where(q, sql, conds, arrays=True))


def _unordered_by_pass(
    source: ArrowSource, project_id: int, q: FunnelQuery, sql: Sql, conds: list[exp.Expr]
) -> list[Any]:
    """The overall row of an unordered funnel by the pass: counts, no times."""
    rendered = [sql.render(c) for c in conds]
    classes = list(dict.fromkeys(rendered))  # one per event, in step order
    mult = [rendered.count(c) for c in classes]
    cls = exp.Case(
        ifs=[
            exp.If(this=conds[rendered.index(c)].copy(), true=lit(i + 1))
            for i, c in enumerate(classes)
        ]
    )
    packed = _packed(sql, cls, len(classes))
    where = _ev_where(q, sql, conds, arrays=False)
    offsets, values = _person_lists(source, project_id, q, sql, packed, where)
    _, end = q.date_range.utc_bounds()
    level = funnel_pass.unordered_levels(offsets, values, mult, q.window_us, _epoch_us(end))
    n = len(q.steps)
    return [int(np.count_nonzero(level >= k + 1)) for k in range(n)] + [None] * (3 * (n - 1))


def _strict_chains(
    source: ArrowSource,
    project_id: int,
    q: FunnelQuery,
    sql: Sql,
    conds: list[exp.Expr],
    code: exp.Expr | None = None,
    code_bits: int = 0,
) -> tuple[funnel_pass.Ints, list[funnel_pass.Ints], list[funnel_pass.Ints]] | None:
    """Every person's chosen chain of a strict funnel by the pass (:func:`_strict_pass`). With
    ``code``, every step event carries its number and the codes of the chains' events come back
    too; ``None`` when they would not fit."""
    n = len(q.steps)
    return _strict_pass(
        source, project_id, q, sql, conds, code, code_bits,
        lambda o, v, exact: funnel_pass.strict_chains(
            o, v, n, q.window_us, exact=exact, code_bits=code_bits
        ),
    )  # fmt: skip


S = TypeVar("S")


def _strict_pass(
    source: ArrowSource,
    project_id: int,
    q: FunnelQuery,
    sql: Sql,
    conds: list[exp.Expr],
    code: exp.Expr | None,
    code_bits: int,
    kernel: Callable[[funnel_pass.Ints, funnel_pass.Ints, bool], S | None],
    every_step: bool = True,
) -> S | None:
    """A strict funnel's lists through ``kernel(offsets, values, exact)``: every event of the
    person in the range and the window after it, as one list (``time_us * M + step``, step 0
    for other events and for step-1 events past the range, which cannot start a chain; with
    ``code``, :func:`_coded_packed` with the code on every step event, or on the starts only
    without ``every_step``), sorted by numpy where
    it is not already. When two events of a person share an instant next to a step (the kernel
    answers ``None``), the lists are fetched again in the person's exact order (time, then
    uuid), sorted by the engine. ``None`` when coded values would not fit."""
    n = len(q.steps)
    _, end = q.date_range.utc_bounds()
    first = exp.and_(conds[0].copy(), exp.LT(this=_c("timestamp"), expression=sql.ts_literal(end)))
    cases = [(first, 1, True)] + [(c, k + 1, every_step) for k, c in enumerate(conds) if k]
    if code is None:
        ifs = [exp.If(this=c.copy(), true=lit(k)) for c, k, _ in cases]
        packed: exp.Expr | None = _packed(sql, exp.Case(ifs=ifs, default=lit(0)), n)
    else:
        packed = _coded_packed(sql, q, cases, code, code_bits, others=True)
    if packed is None:
        return None
    where = _ev_where(q, sql, conds, arrays=False)
    for exact in (False, True):  # funnel_pass sorts the lists that need it; exact on a tie
        done = kernel(*_person_lists(source, project_id, q, sql, packed, where, exact), exact)
        if done is not None:
            return done
    raise AssertionError("the exact lists are always taken")


def _strict_by_values(
    source: ArrowSource, project_id: int, q: FunnelQuery, sql: Sql, conds: list[exp.Expr]
) -> tuple[list[Any], list[list[Any]]] | None:
    """A strict funnel's breakdown by the pass: every step event carries its value's number
    (:func:`_value_codes`, read from the step events of the range and the window), and the
    chain's first, last or given step gives each person's value. ``None`` (the SQL) with more
    than :data:`CODED_VALUES` values or one that arrived meanwhile."""
    n = len(q.steps)
    _, end = q.date_range.utc_bounds()
    steps = exp.Paren(this=exp.or_(*[c.copy() for c in conds]))
    values = _value_codes(
        source, project_id, q, sql, steps, end + timedelta(microseconds=q.window_us)
    )
    if values is None:
        return None
    names, code, code_bits = values
    chains = _strict_chains(source, project_id, q, sql, conds, code, code_bits)
    if chains is None:
        return None
    level, times, codes = chains
    if q.breakdown_attribution == "last_touch":
        value = np.full(len(level), -1, np.int64)
        for k in range(n):
            value = np.where(level == k + 1, codes[k], value)
    else:  # a chain short of the attribution step is in the None group (0)
        s = q.attribution_step if q.breakdown_attribution == "step" else 0
        value = np.maximum(codes[s], 0)
    return _value_rows(level, times, n, names, np.where(level > 0, value, -1))


def funnel(source: Source, project_id: int, query: FunnelQuery) -> FunnelResult:
    """Run a funnel on a store (or any :class:`Source`) for one project."""
    done = _by_pass(cast(ArrowSource, source), project_id, query)
    if done is not None:
        overall, rows = [done[0]], done[1]
    else:
        overall = run(source, funnel_sql(source, project_id, query))
        if query.breakdown is not None:
            rows = run(source, funnel_sql(source, project_id, query, by_breakdown=True))
    steps = _step_results(query, overall[0], 0) if overall else ()
    breakdowns: tuple[FunnelBreakdown, ...] = ()
    if query.breakdown is not None:
        breakdowns = tuple(
            FunnelBreakdown(
                value=None if r[0] is None else str(r[0]), steps=_step_results(query, r, 1)
            )
            for r in rows
        )
        breakdowns = tuple(sorted(breakdowns, key=lambda b: (-b.steps[0].count, b.value or "")))
    return FunnelResult(steps=steps, breakdowns=breakdowns)


def funnel_time_to_convert(
    source: Source, project_id: int, query: FunnelTimeToConvertQuery
) -> FunnelTimeToConvertResult:
    """Histogram of the times from ``from_step`` to ``to_step`` on the persons' chosen chains."""
    q = query.funnel
    chains = _pass_chains(source, project_id, q)
    if chains is not None:
        level, times = chains
        reached = level > query.target
        gaps = times[query.target][reached] - times[query.from_step][reached]
        if not len(gaps):
            return FunnelTimeToConvertResult((), 0, None, None)
        lo_us, hi_us = int(gaps.min()), int(gaps.max())
        width = max(1, math.ceil((hi_us - lo_us) / query.bins))
        index = np.minimum((gaps - lo_us) // width, query.bins - 1)
        per = dict(enumerate(np.bincount(index, minlength=query.bins).tolist()))
        return _histogram(
            query,
            len(gaps),
            lo_us,
            width,
            per,
            float(gaps.sum()) / len(gaps),
            float(np.median(gaps)),
        )
    sql = Sql(source.dialect)
    ctes = _prepared(source, project_id, q)
    d = exp.Sub(this=_c(f"t{query.target}"), expression=_c(f"t{query.from_step}"))
    reached_sql = exp.GT(this=_c("level"), expression=lit(query.target))
    stats = (
        exp.select(
            exp.alias_(exp.Count(this=exp.Star()), "n"),
            exp.alias_(exp.Min(this=d), "lo"),
            exp.alias_(exp.Max(this=d.copy()), "hi"),
            exp.alias_(exp.Avg(this=d.copy()), "mean"),
            exp.alias_(sql.quantile(d.copy(), 0.5), "med"),
        )
        .from_("chosen")
        .where(reached_sql)
    )
    n, lo, hi, mean, med = run(source, _with(stats, ctes))[0]
    count = as_int(n)
    if not count:
        return FunnelTimeToConvertResult((), 0, None, None)
    lo_us, hi_us = as_int(lo), as_int(hi)
    width = max(1, math.ceil((hi_us - lo_us) / query.bins))
    index = exp.Least(
        this=sql.int_div(exp.Paren(this=exp.Sub(this=d.copy(), expression=lit(lo_us))), width),
        expressions=[lit(query.bins - 1)],
    )
    hist = (
        exp.select(exp.alias_(index, "i"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_("chosen")
        .where(reached_sql.copy())
        .group_by(_c("i"))
    )
    per = {
        as_int(i): as_int(c) for i, c in run(source, _with(hist, _prepared(source, project_id, q)))
    }
    return _histogram(query, count, lo_us, width, per, as_float(mean), as_float(med))


def _pass_chains(
    source: Source, project_id: int, q: FunnelQuery
) -> tuple[funnel_pass.Ints, list[funnel_pass.Ints]] | None:
    """The persons' chosen chains by the numpy pass, where it serves the funnel (its breakdown
    aside: it does not change the chains), else ``None``."""
    plain = replace(q, breakdown=None, breakdown_attribution="first_touch")
    if q.order == "unordered" or not _uses_pass(plain, source):
        return None
    arrow = cast(ArrowSource, source)
    sql = Sql(source.dialect)
    conds: list[exp.Expr] = [_cond(sql, s.event, s.filters) for s in q.steps]
    if q.order == "strict":
        chains = _strict_chains(arrow, project_id, plain, sql, conds)
        assert chains is not None  # without codes the values always fit
        return chains[0], chains[1]
    _, level, times = _ordered_lists(arrow, project_id, plain, sql, conds)
    return level, times


def _histogram(
    query: FunnelTimeToConvertQuery,
    count: int,
    lo_us: int,
    width: int,
    per: dict[int, int],
    mean_us: float | None,
    median_us: float | None,
) -> FunnelTimeToConvertResult:
    """The result from the bins' counts (``per``, by bin index) and the statistics in µs."""
    bins = tuple(
        TimeBin((lo_us + i * width) / 1e6, (lo_us + (i + 1) * width) / 1e6, per.get(i, 0))
        for i in range(query.bins)
    )
    return FunnelTimeToConvertResult(
        bins,
        count,
        None if mean_us is None else mean_us / 1e6,
        None if median_us is None else median_us / 1e6,
    )


def funnel_trends(source: Source, project_id: int, query: FunnelTrendsQuery) -> FunnelTrendsResult:
    """Per period of the step-1 event: persons who started the funnel then, and how many of
    those starts (the person's chosen chain among the starts of that period) completed it."""
    q = query.funnel
    n = len(q.steps)
    buckets = periods(q.date_range, query.interval)
    entered = [0] * len(buckets)
    converted = [0] * len(buckets)
    pairs = _period_levels(source, project_id, q, query.interval, buckets)
    if pairs is not None:
        code, level = pairs  # code: 1 + the start's bucket
        entered = np.bincount(code - 1, minlength=len(buckets)).tolist()
        converted = np.bincount(code[level >= n] - 1, minlength=len(buckets)).tolist()
        return _trends_result(buckets, entered, converted)
    ctes = _prepared(source, project_id, q, interval=query.interval)
    agg = (
        exp.select(
            _c("pn"),
            exp.alias_(exp.Count(this=exp.Star()), "entered"),
            exp.alias_(exp.Sum(this=_flag(exp.GTE(this=_c("level"), expression=lit(n)))), "done"),
        )
        .from_("chosen")
        .group_by(_c("pn"))
    )
    index = {p.number: i for i, p in enumerate(buckets)}
    for pn, e, c in run(source, _with(agg, ctes)):
        i = index.get(as_int(pn))
        if i is not None:
            entered[i], converted[i] = as_int(e), as_int(c)
    return _trends_result(buckets, entered, converted)


def _trends_result(
    buckets: list[Period], entered: list[int], converted: list[int]
) -> FunnelTrendsResult:
    return FunnelTrendsResult(
        labels=tuple(p.label for p in buckets),
        entered=tuple(entered),
        converted=tuple(converted),
        conversion_rate=tuple(
            c / e if e else None for e, c in zip(entered, converted, strict=True)
        ),
    )


def _period_levels(
    source: Source, project_id: int, q: FunnelQuery, interval: str, buckets: list[Period]
) -> tuple[funnel_pass.Ints, funnel_pass.Ints] | None:
    """Funnel trends by the pass, for the ordered and strict funnels it serves: each start
    carries ``1 +`` its bucket as its code; per (person, bucket) the furthest level of that
    bucket's starts. ``None`` where the pass does not serve the funnel or the codes do not
    fit."""
    plain = replace(q, breakdown=None, breakdown_attribution="first_touch")
    if q.order == "unordered" or not buckets or not _uses_pass(plain, source):
        return None
    first = buckets[0].number
    if buckets[-1].number - first + 1 != len(buckets):  # numbers are consecutive
        return None
    arrow = cast(ArrowSource, source)
    sql = Sql(source.dialect)
    conds: list[exp.Expr] = [_cond(sql, s.event, s.filters) for s in q.steps]
    start, end = q.date_range.utc_bounds()  # starts lie inside: integer arithmetic on DuckDB
    period = LocalPeriods(sql, q.date_range.timezone, start, end).period(_c("timestamp"), interval)
    code = exp.Sub(this=period, expression=lit(first - 1))
    code_bits = (len(buckets) + 1).bit_length()
    n = len(q.steps)
    pairs: tuple[funnel_pass.Ints, funnel_pass.Ints] | None
    if q.order == "strict":  # the period's code on the starts (later steps may be past it)
        pairs = _strict_pass(
            arrow, project_id, plain, sql, conds, code, code_bits,
            lambda o, v, exact: funnel_pass.strict_code_levels(
                o, v, n, q.window_us, code_bits, exact=exact
            ),
            every_step=False,
        )  # fmt: skip
    else:
        lists = _coded_lists(arrow, project_id, plain, sql, conds, code, code_bits)
        pairs = (
            None if lists is None else funnel_pass.code_levels(*lists, n, q.window_us, code_bits)
        )
    if pairs is None:
        return None
    codes, level = pairs
    if len(codes) and (codes.min() < 1 or codes.max() > len(buckets)):
        return None  # a start outside the buckets: not expected, but never miscounted
    return codes, level
