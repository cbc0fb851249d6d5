"""Trends: one value per interval (local hour/day/week/month) per series, optionally broken down
by a field and compared with the previous period of the same length."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlglot import exp

from yunying.analytics.common import (
    INTERVALS,
    DateRange,
    Field,
    Filter,
    InvalidQuery,
    Source,
    Sql,
    as_float,
    as_int,
    col,
    events_from,
    lit,
    periods,
    run,
    uses_person,
)

Math = Literal[
    "total", "unique_persons", "dau", "wau", "mau", "sum", "avg", "median", "p90", "min", "max"
]
MATHS = ("total", "unique_persons", "dau", "wau", "mau", "sum", "avg", "median", "p90", "min",
         "max")  # fmt: skip
VALUE_MATHS = ("sum", "avg", "median", "p90", "min", "max")
ROLLING = {"wau": 7, "mau": 30}


@dataclass(frozen=True)
class Series:
    """What to count: an event (None = any) with filters, and how (``math``) — value maths
    aggregate ``math_field`` (default: the ``amount`` column)."""

    event: str | None
    math: Math = "total"
    math_field: Field | None = None
    filters: tuple[Filter, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if self.math not in MATHS:
            raise InvalidQuery(f"unknown math {self.math!r}; use {', '.join(MATHS)}")

    @property
    def label(self) -> str:
        """The name shown for this series."""
        return self.name or f"{self.event or 'any event'} ({self.math})"


@dataclass(frozen=True)
class TrendsQuery:
    """Series over a date range; ``filters`` apply to all series."""

    series: tuple[Series, ...]
    date_range: DateRange
    interval: Literal["hour", "day", "week", "month"] = "day"
    filters: tuple[Filter, ...] = ()
    breakdown: Field | None = None
    breakdown_limit: int = 25
    compare: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", tuple(self.series))
        object.__setattr__(self, "filters", tuple(self.filters))
        if not self.series:
            raise InvalidQuery("a trends query needs at least one series")
        if self.interval not in INTERVALS:
            raise InvalidQuery(f"unknown interval {self.interval!r}; use {', '.join(INTERVALS)}")
        for s in self.series:
            if s.math in ROLLING and self.interval != "day":
                raise InvalidQuery(f"{s.math} is a rolling daily count: use interval 'day'")
        if self.breakdown_limit < 1:
            raise InvalidQuery("breakdown_limit must be at least 1")


@dataclass(frozen=True)
class TrendSeries:
    """One line: values per interval (None where an average has no data)."""

    label: str
    series_index: int
    breakdown_value: str | None
    compare: Literal["current", "previous"] | None
    labels: tuple[str, ...]
    values: tuple[float | int | None, ...]

    @property
    def total(self) -> float | int:
        """Sum of the values (meaningful for counts and sums)."""
        return sum(v for v in self.values if v is not None)


@dataclass(frozen=True)
class TrendsResult:
    """All lines of a trends query."""

    series: tuple[TrendSeries, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"series": [{**asdict(s), "total": s.total} for s in self.series]}


def _c(name: str) -> exp.Column:
    return exp.column(name)


def _aggregate(sql: Sql, s: Series) -> exp.Expr:
    if s.math == "total":
        return exp.Count(this=exp.Star())
    if s.math in ("unique_persons", "dau"):
        return exp.Count(this=exp.Distinct(expressions=[_c("person_id")]))
    value = sql.field_number(s.math_field or col("amount"))
    if s.math == "sum":
        return exp.Sum(this=value)
    if s.math == "avg":
        return exp.Avg(this=value)
    if s.math == "min":
        return exp.Min(this=value)
    if s.math == "max":
        return exp.Max(this=value)
    return sql.quantile(value, 0.5 if s.math == "median" else 0.9)


def series_sql(
    source: Source, project_id: int, q: TrendsQuery, s: Series, date_range: DateRange
) -> exp.Select:
    """(period number, breakdown value, value) rows of one series."""
    sql = Sql(source.dialect)
    tz = date_range.timezone
    breakdown = sql.field_text(q.breakdown) if q.breakdown else exp.cast(exp.null(), "TEXT")
    cond = exp.and_(sql.event_is(s.event), sql.filters(s.filters), sql.filters(q.filters))
    if s.math in ROLLING:
        days = ROLLING[s.math]
        start, end = date_range.extended_back(days - 1).utc_bounds()
        active = (
            exp.select(
                exp.alias_(_c("person_id"), "person_id"),
                exp.alias_(sql.day_number(_c("timestamp"), tz), "dn"),
                exp.alias_(breakdown, "b"),
            )
            .distinct()
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(cond, sql.time_between(start, end)))
        )
        offsets: exp.Query = exp.select(lit(0).as_("k"))
        for k in range(1, days):
            offsets = exp.union(offsets, exp.select(lit(k).as_("k")), distinct=False)
        spread = (
            exp.select(
                "person_id", "b", exp.alias_(exp.Add(this=_c("dn"), expression=_c("k")), "pn")
            )
            .from_(active.subquery("a"))
            .join(offsets.subquery("o"), join_type="cross")
        )
        return (
            exp.select(
                "pn",
                "b",
                exp.alias_(exp.Count(this=exp.Distinct(expressions=[_c("person_id")])), "v"),
            )
            .from_(spread.subquery("s"))
            .group_by("pn", "b")
        )
    start, end = date_range.utc_bounds()
    inner = (
        exp.select(
            "*",
            exp.alias_(sql.period(_c("timestamp"), q.interval, tz), "pn"),
            exp.alias_(breakdown, "b"),
        )
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(exp.and_(cond, sql.time_between(start, end)))
    )
    return (
        exp.select("pn", "b", exp.alias_(_aggregate(sql, s), "v"))
        .from_(inner.subquery("e"))
        .group_by("pn", "b")
    )


def _lines(
    source: Source,
    project_id: int,
    q: TrendsQuery,
    date_range: DateRange,
    compare: Literal["current", "previous"] | None,
) -> list[TrendSeries]:
    buckets = periods(date_range, q.interval)
    index = {p.number: i for i, p in enumerate(buckets)}
    labels = tuple(p.label for p in buckets)
    counts_like = ("total", "unique_persons", "dau", "wau", "mau", "sum")
    out: list[TrendSeries] = []
    for si, s in enumerate(q.series):
        by_value: dict[str | None, list[float | int | None]] = {}
        for pn, b, v in run(source, series_sql(source, project_id, q, s, date_range)):
            i = index.get(as_int(pn))
            if i is None:
                continue
            key = None if b is None else str(b)
            line = by_value.setdefault(key, [0 if s.math in counts_like else None] * len(buckets))
            line[i] = as_int(v) if s.math in counts_like[:-1] else as_float(v)
        if not q.breakdown:
            by_value.setdefault(None, [0 if s.math in counts_like else None] * len(buckets))
        ranked = sorted(
            by_value.items(),
            key=lambda kv: (-sum(x for x in kv[1] if x is not None), kv[0] is None, kv[0] or ""),
        )[: q.breakdown_limit]
        for value, values in ranked:
            out.append(TrendSeries(s.label, si, value, compare, labels, tuple(values)))
    return out


def trends(source: Source, project_id: int, query: TrendsQuery) -> TrendsResult:
    """Run a trends analysis on a store (or any :class:`Source`) for one project."""
    current: Literal["current", "previous"] | None = "current" if query.compare else None
    lines = _lines(source, project_id, query, query.date_range, current)
    if query.compare:
        lines += _lines(source, project_id, query, query.date_range.previous(), "previous")
    return TrendsResult(tuple(lines))
