"""Stickiness: per week or month, how many persons did the event on exactly 1, 2, … N distinct
local days of it; and the distribution of per-person event counts over a date range."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlglot import exp

from yunying.analytics.common import (
    DateRange,
    Filter,
    InvalidQuery,
    Source,
    Sql,
    as_float,
    as_int,
    events_from,
    fn,
    lit,
    period_number,
    periods,
    run,
    uses_person,
)
from yunying.analytics.local_periods import LocalPeriods


@dataclass(frozen=True)
class StickinessQuery:
    """The event that makes a day active (None = any event), per ``week`` or ``month``."""

    event: str | None
    date_range: DateRange
    interval: Literal["week", "month"] = "week"
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if self.interval not in ("week", "month"):
            raise InvalidQuery(f"stickiness interval must be week or month, not {self.interval!r}")


@dataclass(frozen=True)
class StickinessPeriod:
    """One week/month: its label, its number of days inside the date range (N), and persons
    active on exactly 1 … N of those days (``persons[k - 1]`` for k days)."""

    label: str
    days: int
    persons: tuple[int, ...]

    @property
    def active(self) -> int:
        """Persons active on at least one day of the period."""
        return sum(self.persons)


@dataclass(frozen=True)
class StickinessResult:
    """One entry per week/month overlapping the date range."""

    interval: str
    periods: tuple[StickinessPeriod, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (with ``active`` per period)."""
        out = asdict(self)
        for p, d in zip(self.periods, out["periods"], strict=True):
            d["active"] = p.active
        return out


def _c(name: str) -> exp.Column:
    return exp.column(name)


def stickiness_sql(source: Source, project_id: int, q: StickinessQuery) -> exp.Select:
    """(period number, active days, persons) rows.

    Per person and period one bit per active day, ``1 << (day % 62)`` (the days of a week or
    month are at most 31 consecutive numbers, so their bits differ): one aggregation and a bit
    count instead of a DISTINCT of (person, period, day) and a count of it (DuckDB; ClickHouse
    counts distinct days, which it does faster than the bits)."""
    sql = Sql(source.dialect)
    tz = q.date_range.timezone
    start, end = q.date_range.utc_bounds()
    local = LocalPeriods(sql, tz, start, end)
    ts = _c("timestamp")
    day = local.day(ts.copy())
    per_period: exp.Expr = exp.BitwiseOrAgg(this=_day_bit(day))
    days: exp.Expr = fn("bit_count", _c("m"))
    if sql.ch:
        per_period, days = exp.Count(this=exp.Distinct(expressions=[day])), _c("m")
    per_person = (
        exp.select(
            _c("person_id"),
            exp.alias_(local.period(ts, q.interval), "pn"),
            exp.alias_(per_period, "m"),
        )
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(
            exp.and_(sql.event_is(q.event), sql.filters(q.filters), sql.time_between(start, end))
        )
        .group_by(_c("person_id"), _c("pn"))
    )
    return (
        exp.select("pn", exp.alias_(days, "d"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(per_person.subquery("p"))
        .group_by("pn", "d")
    )


def _day_bit(day: exp.Expr) -> exp.Expr:
    """``1 << (day % 62)`` as a 64-bit integer (DuckDB)."""
    k = exp.Mod(this=day, expression=lit(62))
    return exp.BitwiseLeftShift(this=exp.cast(lit(1), "BIGINT"), expression=exp.Paren(this=k))


def stickiness(source: Source, project_id: int, query: StickinessQuery) -> StickinessResult:
    """Run a stickiness analysis on a store (or any :class:`Source`) for one project."""
    buckets = periods(query.date_range, query.interval)
    days: dict[int, int] = {}
    day = query.date_range.date_from
    while day <= query.date_range.date_to:
        n = period_number(day, query.interval)
        days[n] = days.get(n, 0) + 1
        day = day.fromordinal(day.toordinal() + 1)
    counts = {p.number: [0] * days[p.number] for p in buckets}
    for pn, d, n in run(source, stickiness_sql(source, project_id, query)):
        counts[as_int(pn)][as_int(d) - 1] += as_int(n)
    return StickinessResult(
        query.interval,
        tuple(StickinessPeriod(p.label, days[p.number], tuple(counts[p.number])) for p in buckets),
    )


# -- distribution of per-person event counts --------------------------------------------------------

DEFAULT_EDGES = (1, 2, 3, 4, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class EventCountDistributionQuery:
    """Per person, the number of matching events in the date range; persons with none are not
    counted. ``edges`` are the lower bounds of the buckets (increasing, the first one 1)."""

    event: str | None
    date_range: DateRange
    filters: tuple[Filter, ...] = ()
    edges: tuple[int, ...] = DEFAULT_EDGES

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "edges", tuple(self.edges))
        e = self.edges
        if not e or e[0] != 1 or any(not isinstance(x, int) for x in e):
            raise InvalidQuery("edges must be integers starting with 1")
        if any(b <= a for a, b in zip(e, e[1:], strict=False)):
            raise InvalidQuery("edges must be strictly increasing")


@dataclass(frozen=True)
class CountBucket:
    """Persons with ``lower <= events <= upper`` (``upper`` None: no upper bound)."""

    lower: int
    upper: int | None
    persons: int


@dataclass(frozen=True)
class EventCountDistributionResult:
    """The buckets, persons with at least one event, and the mean / median events per person."""

    buckets: tuple[CountBucket, ...]
    persons: int
    mean: float | None
    median: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def event_count_distribution(
    source: Source, project_id: int, query: EventCountDistributionQuery
) -> EventCountDistributionResult:
    """Histogram of events per person over the date range."""
    sql = Sql(source.dialect)
    start, end = query.date_range.utc_bounds()
    per_person = (
        exp.select(_c("person_id"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(events_from(source, project_id, person=uses_person(query)))
        .where(
            exp.and_(
                sql.event_is(query.event), sql.filters(query.filters), sql.time_between(start, end)
            )
        )
        .group_by(_c("person_id"))
    )
    edges = query.edges
    index = exp.Case(
        ifs=[
            exp.If(this=exp.LT(this=_c("n"), expression=lit(edges[i + 1])), true=lit(i))
            for i in range(len(edges) - 1)
        ],
        default=lit(len(edges) - 1),
    )
    n = exp.cast(_c("n"), "DOUBLE")
    tree = (
        exp.select(
            exp.alias_(index, "i"),
            exp.alias_(exp.Count(this=exp.Star()), "persons"),
            exp.alias_(exp.Sum(this=_c("n")), "events"),
        )
        .from_(per_person.subquery("p"))
        .group_by(_c("i"))
    )
    stats = exp.select(exp.alias_(sql.quantile(n, 0.5), "med")).from_(per_person.subquery("p"))
    per = {as_int(i): (as_int(p), as_int(e)) for i, p, e in run(source, tree)}
    persons = sum(p for p, _ in per.values())
    events = sum(e for _, e in per.values())
    median = as_float(run(source, stats)[0][0]) if persons else None
    buckets = tuple(
        CountBucket(lo, edges[i + 1] - 1 if i + 1 < len(edges) else None, per.get(i, (0, 0))[0])
        for i, lo in enumerate(edges)
    )
    return EventCountDistributionResult(
        buckets, persons, events / persons if persons else None, median
    )
