"""Lifecycle: per period, the persons doing an event split into new / returning / resurrecting,
and those who stopped (dormant, reported as a negative count), after PostHog's definitions.

A person is *active* in a period if they did the event in it. Active persons are *new* in the
period of their first-ever such event, *returning* if also active in the previous period, else
*resurrecting*. A person active in the previous period but not in this one is *dormant* here.
"""

from __future__ import annotations

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
    as_int,
    events_from,
    lit,
    periods,
    run,
    uses_person,
)
from yunying.analytics.local_periods import LocalPeriods, bit, shift_left
from yunying.errors import M_

STATUSES = ("new", "returning", "resurrecting", "dormant")


@dataclass(frozen=True)
class LifecycleQuery:
    """The event that makes a person active (None = any event) and optional filters."""

    event: str | None
    date_range: DateRange
    interval: Literal["day", "week", "month"] = "day"
    filters: tuple[Filter, ...] = ()
    breakdown: Field | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if self.interval not in ("day", "week", "month"):
            raise InvalidQuery(
                M_(
                    "lifecycle interval must be day, week or month, not {interval!r}",
                    interval=self.interval,
                )
            )


@dataclass(frozen=True)
class LifecycleBreakdown:
    """Lifecycle counts of one breakdown value (see :class:`LifecycleResult`)."""

    value: str | None
    new: tuple[int, ...]
    returning: tuple[int, ...]
    resurrecting: tuple[int, ...]
    dormant: tuple[int, ...]


@dataclass(frozen=True)
class LifecycleResult:
    """Labels of the periods and, per status, one count per period (dormant counts negative)."""

    labels: tuple[str, ...]
    new: tuple[int, ...]
    returning: tuple[int, ...]
    resurrecting: tuple[int, ...]
    dormant: tuple[int, ...]
    breakdowns: tuple[LifecycleBreakdown, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def _counted_until(sql: Sql, q: LifecycleQuery, end: datetime) -> exp.Expr:
    """The query's events (its event and filters) before ``end``: the only ones that count."""
    return exp.and_(
        sql.event_is(q.event),
        sql.filters(q.filters),
        exp.LT(this=_c("timestamp"), expression=sql.ts_literal(end)),
    )


def lifecycle_sql(source: Source, project_id: int, q: LifecycleQuery) -> exp.Select:
    """(period, status, persons) rows, periods as numbers."""
    sql = Sql(source.dialect)
    _, end = q.date_range.utc_bounds()
    ts = _c("timestamp")
    breakdown = sql.field_text(q.breakdown) if q.breakdown else exp.cast(exp.null(), "TEXT")
    start, _ = q.date_range.utc_bounds()
    local = LocalPeriods(sql, q.date_range.timezone, start, end)
    tagged = (
        exp.select(
            _c("person_id"),
            exp.alias_(local.period(ts, q.interval, bounded=False), "pn"),
            exp.alias_(breakdown, "b"),
            exp.alias_(
                exp.Window(
                    this=exp.RowNumber(),
                    partition_by=[_c("person_id"), _c("pn")],
                    order=exp.Order(
                        expressions=[
                            exp.Ordered(this=_c("timestamp")),
                            exp.Ordered(this=sql.text(_c("uuid"))),
                        ]
                    ),
                ),
                "rn",
            ),
        )
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(_counted_until(sql, q, end))
    )
    # one row per (person, active period), with the value on the period's first event
    active = exp.select("person_id", "pn", "b").from_(tagged.subquery("t")).where(_c("rn").eq(1))
    if q.breakdown is None:  # no value to pick: a DISTINCT, not a sort of every event
        tagged.set("expressions", tagged.expressions[:3])
        active = exp.select("person_id", "pn", "b").from_(tagged.subquery("t")).distinct()
    marks = exp.union(
        exp.select("person_id", "pn", "b", lit(1).as_("mc"), lit(0).as_("mp")).from_("active"),
        exp.select(
            "person_id",
            exp.alias_(exp.Add(this=_c("pn"), expression=lit(1)), "pn"),
            "b",
            lit(0).as_("mc"),
            lit(1).as_("mp"),
        ).from_("active"),
        distinct=False,
    )
    first = exp.Window(this=exp.Min(this=_c("pn")), partition_by=[_c("person_id")])
    per_person = (
        exp.select(
            "person_id",
            "pn",
            exp.alias_(exp.Max(this=_c("mc")), "cur"),
            exp.alias_(exp.Max(this=_c("mp")), "prev"),
            exp.alias_(exp.Max(this=_case(_c("mc").eq(1), _c("b"))), "bc"),
            exp.alias_(exp.Max(this=_case(_c("mp").eq(1), _c("b"))), "bp"),
        )
        .from_(marks.subquery("m"))
        .group_by("person_id", "pn")
    )
    with_first = exp.select("*", exp.alias_(first, "first_pn")).from_(per_person.subquery("p"))
    cur, prev = _c("cur"), _c("prev")
    status = exp.Case(
        ifs=[
            exp.If(this=exp.and_(cur.eq(1), _c("pn").eq(_c("first_pn"))), true=lit("new")),
            exp.If(this=exp.and_(cur.eq(1), prev.eq(1)), true=lit("returning")),
            exp.If(this=cur.eq(1), true=lit("resurrecting")),
        ],
        default=lit("dormant"),
    )
    value = exp.Case(ifs=[exp.If(this=cur.copy().eq(1), true=_c("bc"))], default=_c("bp"))
    return (
        exp.select(
            "pn",
            exp.alias_(status, "status"),
            exp.alias_(value, "b"),
            exp.alias_(exp.Count(this=exp.Star()), "n"),
        )
        .from_(with_first.subquery("s"))
        .group_by("pn", "status", "b")
        .with_("active", as_=active)
    )


#: Most periods the one-pass lifecycle counts (one bit each, and one for the period before).
MASK_PERIODS = 61


def single_pass(q: LifecycleQuery) -> bool:
    """Whether :func:`masks_sql` counts the lifecycle (no breakdown, at most MASK_PERIODS)."""
    return q.breakdown is None and len(periods(q.date_range, q.interval)) <= MASK_PERIODS


def _start_before(q: LifecycleQuery) -> date:
    """The local first day of the period before the range's first period."""
    day = q.date_range.date_from
    if q.interval == "day":
        return day - timedelta(days=1)
    if q.interval == "week":
        return day - timedelta(days=day.weekday() + 7)
    first = day.replace(day=1) - timedelta(days=1)
    return first.replace(day=1)


def masks_sql(source: Source, project_id: int, q: LifecycleQuery) -> exp.Select:
    """The lifecycle without a breakdown in one pass over the events, grouped by person: a bit
    per active period from the one before the range (bit 0) to the last, the first of those
    periods, and whether the person was active before them (then no period is their first).
    Grouped by that first period: persons with bit j, and persons with bits i and i + 1.

    Rows: (first period or NULL, c_0 .. c_n, b_0 .. b_n-1) with n the range's periods; for the
    range's period i, active = c_i+1, returning = b_i, new = c_i+1 of the row whose first
    period it is, resurrecting = the rest of the active, dormant = c_i - b_i."""
    sql = Sql(source.dialect)
    _, end = q.date_range.utc_bounds()
    lo = q.date_range.local_to_utc(_start_before(q))
    local = LocalPeriods(sql, q.date_range.timezone, lo, end)
    before = periods(q.date_range, q.interval)[0].number - 1
    n = len(periods(q.date_range, q.interval))
    ts = _c("timestamp")
    inside = exp.GTE(this=ts.copy(), expression=sql.ts_literal(lo))
    pn = local.period(ts.copy(), q.interval)
    k = exp.Sub(this=pn, expression=lit(before))
    counted = exp.and_(inside.copy(), exp.GTE(this=k.copy(), expression=lit(0)))
    per_person = (
        exp.select(
            _c("person_id"),
            exp.Min(this=ts.copy()).as_("t0"),
            exp.Min(this=exp.Case(ifs=[exp.If(this=inside, true=pn.copy())])).as_("p"),
            exp.BitwiseOrAgg(this=exp.Case(ifs=[exp.If(this=counted, true=shift_left(sql, k))]))
            .as_("m"),
        )
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(_counted_until(sql, q, end))
        .group_by(_c("person_id"))
    )  # fmt: skip
    first = exp.Case(
        ifs=[exp.If(this=exp.GTE(this=_c("t0"), expression=sql.ts_literal(lo)), true=_c("p"))]
    )
    flat = exp.select(
        exp.alias_(first, "f"), exp.alias_(exp.func("coalesce", _c("m"), lit(0)), "m")
    ).from_(per_person.subquery("p"))
    mask = _c("m")
    ones = [exp.Sum(this=bit(sql, mask.copy(), j)).as_(f"c{j}") for j in range(n + 1)]
    pairs = [
        exp.Sum(this=exp.Mul(this=bit(sql, mask.copy(), i), expression=bit(sql, mask.copy(), i + 1)))
        .as_(f"b{i}")
        for i in range(n)
    ]  # fmt: skip
    return exp.select(_c("f"), *ones, *pairs).from_(flat.subquery("x")).group_by(_c("f"))


def _from_masks(rows: list[list[Any]], index: dict[int, int]) -> dict[str, list[int]]:
    n = len(index)
    total = {s: [0] * n for s in STATUSES}
    c = [0] * (n + 1)
    for row in rows:
        counts = [as_int(v) for v in row[1:]]
        for j in range(n + 1):
            c[j] += counts[j]
        for i in range(n):
            total["returning"][i] += counts[n + 1 + i]
        first = index.get(as_int(row[0])) if row[0] is not None else None
        if first is not None:
            total["new"][first] += counts[first + 1]
    for i in range(n):
        ret = total["returning"][i]
        total["resurrecting"][i] = c[i + 1] - ret - total["new"][i]
        total["dormant"][i] = c[i] - ret
    return total


def _case(cond: exp.Expr, value: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=value)])


def lifecycle(source: Source, project_id: int, query: LifecycleQuery) -> LifecycleResult:
    """Run a lifecycle analysis on a store (or any :class:`Source`) for one project."""
    buckets = periods(query.date_range, query.interval)
    index = {p.number: i for i, p in enumerate(buckets)}
    total = {s: [0] * len(buckets) for s in STATUSES}
    by_value: dict[str | None, dict[str, list[int]]] = {}
    if single_pass(query):
        total = _from_masks(run(source, masks_sql(source, project_id, query)), index)
    for pn, status, b, n in (
        [] if single_pass(query) else run(source, lifecycle_sql(source, project_id, query))
    ):
        i = index.get(as_int(pn))
        if i is not None:
            key = None if b is None else str(b)
            per = by_value.setdefault(key, {s: [0] * len(buckets) for s in STATUSES})
            per[str(status)][i] += as_int(n)
            total[str(status)][i] += as_int(n)
    breakdowns: list[LifecycleBreakdown] = []
    if query.breakdown is not None:
        for key, c in by_value.items():
            breakdowns.append(
                LifecycleBreakdown(
                    key, tuple(c["new"]), tuple(c["returning"]), tuple(c["resurrecting"]),
                    tuple(-x for x in c["dormant"]),
                )
            )  # fmt: skip
        breakdowns.sort(
            key=lambda b: (-sum(b.new) - sum(b.returning) - sum(b.resurrecting), b.value is None,
                           b.value or "")
        )  # fmt: skip
    return LifecycleResult(
        labels=tuple(p.label for p in buckets),
        new=tuple(total["new"]),
        returning=tuple(total["returning"]),
        resurrecting=tuple(total["resurrecting"]),
        dormant=tuple(-c for c in total["dormant"]),
        breakdowns=tuple(breakdowns),
    )
