"""Trends: one value per interval (local hour/day/week/month) per series, optionally broken down
by a field and compared with the previous period of the same length; a formula combines series
(``B / A * 100``, see :mod:`yunying.analytics.formula`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlglot import exp

from yunying.analytics import formula as fx
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
from yunying.analytics.local_periods import LocalPeriods
from yunying.errors import M_

Math = Literal[
    "total", "unique_persons", "dau", "wau", "mau", "sum", "avg", "median", "p90", "min", "max",
    "avg_per_person", "median_per_person", "min_per_person", "max_per_person",
]  # fmt: skip
MATHS = ("total", "unique_persons", "dau", "wau", "mau", "sum", "avg", "median", "p90", "min",
         "max", "avg_per_person", "median_per_person", "min_per_person", "max_per_person")  # fmt: skip
PER_PERSON = ("avg_per_person", "median_per_person", "min_per_person", "max_per_person")
COUNTS_LIKE = ("total", "unique_persons", "dau", "wau", "mau", "sum")
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
            raise InvalidQuery(
                M_("unknown math {math!r}; use {maths}", math=self.math, maths=", ".join(MATHS))
            )

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
    formula: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", tuple(self.series))
        object.__setattr__(self, "filters", tuple(self.filters))
        if not self.series:
            raise InvalidQuery(M_("a trends query needs at least one series"))
        if self.interval not in INTERVALS:
            raise InvalidQuery(M_("unknown interval {interval!r}; use {choices}",
                                  interval=self.interval, choices=", ".join(INTERVALS)))  # fmt: skip
        for s in self.series:
            if s.math in ROLLING and self.interval != "day":
                raise InvalidQuery(
                    M_("{math} is a rolling daily count: use interval 'day'", math=s.math)
                )
        if self.breakdown_limit < 1:
            raise InvalidQuery(M_("breakdown_limit must be at least 1"))
        if self.formula is not None:
            used = fx.refs(fx.parse(self.formula))
            if used and max(used) >= len(self.series):
                letter = chr(ord("A") + max(used))
                raise InvalidQuery(
                    f"formula uses series {letter} but the query has {len(self.series)} series"
                )


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
    """All lines of a trends query; with a formula, its lines too (``series_index`` -1)."""

    series: tuple[TrendSeries, ...]
    formula: tuple[TrendSeries, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "series": [{**asdict(s), "total": s.total} for s in self.series],
            "formula": [{**asdict(s), "total": s.total} for s in self.formula],
        }


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
        local = LocalPeriods(sql, tz, start, end)
        active = (
            exp.select(
                exp.alias_(_c("person_id"), "person_id"),
                exp.alias_(local.day(_c("timestamp")), "dn"),
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
    local = LocalPeriods(sql, tz, start, end)
    if s.math in PER_PERSON:
        per_person = (
            exp.select(
                exp.alias_(local.period(_c("timestamp"), q.interval), "pn"),
                exp.alias_(breakdown, "b"),
                _c("person_id"),
                exp.alias_(exp.Count(this=exp.Star()), "n"),
            )
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(cond, sql.time_between(start, end)))
            .group_by("pn", "b", "person_id")
        )
        n = exp.cast(_c("n"), "DOUBLE")
        agg: exp.Expr = {
            "avg_per_person": exp.Avg(this=n),
            "min_per_person": exp.Min(this=n),
            "max_per_person": exp.Max(this=n),
        }.get(s.math) or sql.quantile(n, 0.5)
        return (
            exp.select("pn", "b", exp.alias_(agg, "v"))
            .from_(per_person.subquery("p"))
            .group_by("pn", "b")
        )
    inner = (
        exp.select(
            "*",
            exp.alias_(local.period(_c("timestamp"), q.interval), "pn"),
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


def _raw(
    source: Source, project_id: int, q: TrendsQuery, date_range: DateRange
) -> list[dict[str | None, list[float | int | None]]]:
    """Per series, every breakdown value's values per interval (no limit applied)."""
    buckets = periods(date_range, q.interval)
    index = {p.number: i for i, p in enumerate(buckets)}
    out = []
    for s in q.series:
        by_value: dict[str | None, list[float | int | None]] = {}
        for pn, b, v in run(source, series_sql(source, project_id, q, s, date_range)):
            i = index.get(as_int(pn))
            if i is None:
                continue
            key = None if b is None else str(b)
            line = by_value.setdefault(key, _empty(s, len(buckets)))
            line[i] = as_int(v) if s.math in COUNTS_LIKE[:-1] else as_float(v)
        if not q.breakdown:
            by_value.setdefault(None, _empty(s, len(buckets)))
        out.append(by_value)
    return out


def _empty(s: Series, n: int) -> list[float | int | None]:
    return [0 if s.math in COUNTS_LIKE else None] * n


def _top(
    by_value: dict[str | None, list[float | int | None]], limit: int
) -> list[tuple[str | None, list[float | int | None]]]:
    return sorted(
        by_value.items(),
        key=lambda kv: (-sum(x for x in kv[1] if x is not None), kv[0] is None, kv[0] or ""),
    )[:limit]


def _lines(
    source: Source,
    project_id: int,
    q: TrendsQuery,
    date_range: DateRange,
    compare: Literal["current", "previous"] | None,
) -> tuple[list[TrendSeries], list[TrendSeries]]:
    """The series' lines and the formula's lines."""
    buckets = periods(date_range, q.interval)
    labels = tuple(p.label for p in buckets)
    raw = _raw(source, project_id, q, date_range)
    out: list[TrendSeries] = []
    for si, s in enumerate(q.series):
        for value, values in _top(raw[si], q.breakdown_limit):
            out.append(TrendSeries(s.label, si, value, compare, labels, tuple(values)))
    formula: list[TrendSeries] = []
    if q.formula is not None:
        tree = fx.parse(q.formula)
        keys = sorted({k for r in raw for k in r}, key=lambda k: (k is None, k or ""))
        by_value: dict[str | None, list[float | int | None]] = {}
        for key in keys:
            lines = [
                r.get(key) or _empty(s, len(buckets)) for r, s in zip(raw, q.series, strict=True)
            ]
            by_value[key] = [
                fx.evaluate(tree, [line[i] for line in lines]) for i in range(len(buckets))
            ]
        for value, values in _top(by_value, q.breakdown_limit):
            formula.append(TrendSeries(q.formula, -1, value, compare, labels, tuple(values)))
    return out, formula


def trends(source: Source, project_id: int, query: TrendsQuery) -> TrendsResult:
    """Run a trends analysis on a store (or any :class:`Source`) for one project."""
    current: Literal["current", "previous"] | None = "current" if query.compare else None
    lines, formula = _lines(source, project_id, query, query.date_range, current)
    if query.compare:
        more, more_formula = _lines(
            source, project_id, query, query.date_range.previous(), "previous"
        )
        lines += more
        formula += more_formula
    return TrendsResult(tuple(lines), tuple(formula))
