"""Lifecycle: per period, the persons doing an event split into new / returning / resurrecting,
and those who stopped (dormant, reported as a negative count), after PostHog's definitions.

A person is *active* in a period if they did the event in it. Active persons are *new* in the
period of their first-ever such event, *returning* if also active in the previous period, else
*resurrecting*. A person active in the previous period but not in this one is *dormant* here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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


def lifecycle_sql(source: Source, project_id: int, q: LifecycleQuery) -> exp.Select:
    """(period, status, persons) rows, periods as numbers."""
    sql = Sql(source.dialect)
    _, end = q.date_range.utc_bounds()
    ts = _c("timestamp")
    breakdown = sql.field_text(q.breakdown) if q.breakdown else exp.cast(exp.null(), "TEXT")
    tagged = (
        exp.select(
            _c("person_id"),
            exp.alias_(sql.period(ts, q.interval, q.date_range.timezone), "pn"),
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
        .where(
            exp.and_(
                sql.event_is(q.event),
                sql.filters(q.filters),
                exp.LT(this=ts.copy(), expression=sql.ts_literal(end)),
            )
        )
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


def _case(cond: exp.Expr, value: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond, true=value)])


def lifecycle(source: Source, project_id: int, query: LifecycleQuery) -> LifecycleResult:
    """Run a lifecycle analysis on a store (or any :class:`Source`) for one project."""
    buckets = periods(query.date_range, query.interval)
    index = {p.number: i for i, p in enumerate(buckets)}
    total = {s: [0] * len(buckets) for s in STATUSES}
    by_value: dict[str | None, dict[str, list[int]]] = {}
    for pn, status, b, n in run(source, lifecycle_sql(source, project_id, query)):
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
