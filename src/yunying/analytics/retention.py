"""Retention: of the persons who did the target event in a period (the cohort), how many did the
return event N periods later ("on" period N) or in period N or any later one ("on or after").

``first_time`` cohorts hold each person once, in the period of their first-ever target event
(which must fall inside the date range); ``recurring`` cohorts hold a person in every period in
which they did the target event. Periods are local calendar days/weeks (Monday)/months.
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
from yunying.analytics.local_periods import LocalPeriods, bit, shift_left
from yunying.errors import M_

PERIODS = ("day", "week", "month")


@dataclass(frozen=True)
class RetentionQuery:
    """Target event (cohort entry) and return event; None means any event."""

    target_event: str | None
    return_event: str | None
    date_range: DateRange
    period: Literal["day", "week", "month"] = "day"
    cohort: Literal["first_time", "recurring"] = "first_time"
    mode: Literal["on", "on_or_after"] = "on"
    target_filters: tuple[Filter, ...] = ()
    return_filters: tuple[Filter, ...] = ()
    filters: tuple[Filter, ...] = ()
    breakdown: Field | None = None

    def __post_init__(self) -> None:
        for name in ("target_filters", "return_filters", "filters"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.period not in PERIODS:
            raise InvalidQuery(
                M_(
                    "unknown retention period {period!r}; use {periods}",
                    period=self.period,
                    periods=", ".join(PERIODS),
                )
            )
        if self.cohort not in ("first_time", "recurring"):
            raise InvalidQuery(
                M_("cohort must be 'first_time' or 'recurring', not {cohort!r}", cohort=self.cohort)
            )
        if self.mode not in ("on", "on_or_after"):
            raise InvalidQuery(
                M_("mode must be 'on' or 'on_or_after', not {mode!r}", mode=self.mode)
            )


@dataclass(frozen=True)
class RetentionCohort:
    """One cohort: its period label, size, and retained persons for periods 0.. (0 = size)."""

    label: str
    size: int
    retained: tuple[int, ...]

    @property
    def rates(self) -> tuple[float | None, ...]:
        """``retained / size`` per period."""
        return tuple(r / self.size if self.size else None for r in self.retained)


@dataclass(frozen=True)
class RetentionBreakdown:
    """The retention table of the persons whose cohort-defining event had ``value``."""

    value: str | None
    cohorts: tuple[RetentionCohort, ...]
    weighted_mean: tuple[float | None, ...]


@dataclass(frozen=True)
class RetentionResult:
    """The cohort matrix (row i has one value per period still inside the range) and, per
    period N, the mean rate weighted by cohort size over cohorts that have period N; with a
    breakdown, the same per value."""

    period: str
    cohorts: tuple[RetentionCohort, ...]
    weighted_mean: tuple[float | None, ...]
    breakdowns: tuple[RetentionBreakdown, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (with rates)."""
        out = asdict(self)
        for c, d in zip(self.cohorts, out["cohorts"], strict=True):
            d["rates"] = list(c.rates)
        for b, bd in zip(self.breakdowns, out["breakdowns"], strict=True):
            for c, d in zip(b.cohorts, bd["cohorts"], strict=True):
                d["rates"] = list(c.rates)
        return out


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


#: Most periods a first-time "on" table counts with one bit per period of a BIGINT.
MASK_PERIODS = 62


def single_pass(q: RetentionQuery, by_breakdown: bool = False) -> bool:
    """Whether a table is counted in one pass over the events, one row per person (first-time
    cohorts, no breakdown; "on" needs one bit per period)."""
    if by_breakdown or q.cohort != "first_time":
        return False
    return q.mode == "on_or_after" or len(periods(q.date_range, q.period)) <= MASK_PERIODS


def first_time_sql(source: Source, project_id: int, q: RetentionQuery) -> exp.Select:
    """First-time cohorts in one pass over the target and return events, grouped by person:
    the first target instant and the periods of the returns (a bit per period for "on", the
    last one for "on or after"); then persons per cohort period. Rows: for "on", (cohort
    period, size, persons returning in period p0 + k for each k); for "on or after", (cohort
    period, last return period after it or NULL, persons)."""
    sql = Sql(source.dialect)
    start, end = q.date_range.utc_bounds()
    local = LocalPeriods(sql, q.date_range.timezone, start, end)
    p0 = periods(q.date_range, q.period)[0].number
    ts = _c("timestamp")
    target = exp.and_(
        sql.event_is(q.target_event), sql.filters(q.target_filters), sql.filters(q.filters)
    )
    back = exp.and_(
        sql.event_is(q.return_event),
        sql.filters(q.return_filters),
        sql.filters(q.filters),
        exp.GTE(this=ts.copy(), expression=sql.ts_literal(start)),
    )
    pn = local.period(ts.copy(), q.period)
    if q.mode == "on":
        k = exp.Sub(this=pn, expression=lit(p0))
        returns: exp.Expr = exp.BitwiseOrAgg(
            this=exp.Case(ifs=[exp.If(this=back, true=shift_left(sql, k))])
        )
    else:
        returns = exp.Max(this=exp.Case(ifs=[exp.If(this=back, true=pn)]))
    where: list[exp.Expr] = [
        exp.LT(this=ts.copy(), expression=sql.ts_literal(end)),
        exp.or_(target.copy(), back.copy()),
    ]
    if q.target_event is not None and q.return_event is not None:
        names = sorted({q.target_event, q.return_event})
        where.insert(0, exp.In(this=_c("event"), expressions=[lit(e) for e in names]))
    first_ts = exp.Min(this=exp.Case(ifs=[exp.If(this=target, true=ts.copy())]))
    per_person = (
        exp.select(_c("person_id"), first_ts.as_("first_ts"), returns.as_("r"))
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(exp.and_(*where))
        .group_by(_c("person_id"))
    )
    cohorts = (
        exp.select(exp.alias_(local.period(_c("first_ts"), q.period), "cp"), _c("r"))
        .from_(per_person.subquery("p"))
        .where(exp.GTE(this=_c("first_ts"), expression=sql.ts_literal(start)))
    )
    if q.mode == "on":
        n = len(periods(q.date_range, q.period))
        mask = exp.func("coalesce", _c("r"), lit(0))
        bits = [exp.Sum(this=bit(sql, mask.copy(), i)).as_(f"r{i}") for i in range(n)]
        return (
            exp.select(_c("cp"), exp.Count(this=exp.Star()).as_("n"), *bits)
            .from_(cohorts.subquery("c"))
            .group_by(_c("cp"))
        )
    last = exp.Case(ifs=[exp.If(this=exp.GT(this=_c("r"), expression=_c("cp")), true=_c("r"))])
    return (
        exp.select(_c("cp"), last.as_("rp"), exp.Count(this=exp.Star()).as_("n"))
        .from_(cohorts.subquery("c"))
        .group_by(_c("cp"), _c("rp"))
    )


def retention_sql(
    source: Source, project_id: int, q: RetentionQuery, by_breakdown: bool = False
) -> dict[str, exp.Select]:
    """The queries behind a retention table: cohort sizes and returns per (cohort, period)
    (and per breakdown value of the cohort-defining event); for first-time cohorts without a
    breakdown, the one query of :func:`first_time_sql` (``table``)."""
    if single_pass(q, by_breakdown):
        return {"table": first_time_sql(source, project_id, q)}
    sql = Sql(source.dialect)
    tz = q.date_range.timezone
    start, end = q.date_range.utc_bounds()
    local = LocalPeriods(sql, tz, start, end)
    ts = _c("timestamp")
    target = exp.and_(
        sql.event_is(q.target_event), sql.filters(q.target_filters), sql.filters(q.filters)
    )
    if by_breakdown:
        assert q.breakdown is not None
        first_time = q.cohort == "first_time"
        rn = exp.Window(
            this=exp.RowNumber(),
            partition_by=[_c("person_id")] + ([] if first_time else [_c("pn")]),
            order=exp.Order(
                expressions=[exp.Ordered(this=_c("timestamp")), exp.Ordered(this=_c("uid"))]
            ),
        )
        when = exp.LT(this=ts.copy(), expression=sql.ts_literal(end))
        tagged = (
            exp.select(
                _c("person_id"), _c("timestamp"),
                exp.alias_(local.period(ts.copy(), q.period, bounded=False), "pn"),
                exp.alias_(sql.field_text(q.breakdown), "b"),
                exp.alias_(sql.text(_c("uuid")), "uid"),
            )
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(target, when if first_time else sql.time_between(start, end)))
        )  # fmt: skip
        ranked = exp.select("*", exp.alias_(rn, "rn")).from_(tagged.subquery("t"))
        cohorts = (
            exp.select(_c("person_id"), _c("pn"), _c("b"))
            .from_(ranked.subquery("r"))
            .where(
                exp.and_(
                    _c("rn").eq(1),
                    exp.GTE(this=_c("timestamp"), expression=sql.ts_literal(start)),
                )
            )
        )
    elif q.cohort == "first_time":
        firsts = (
            exp.select(_c("person_id"), exp.alias_(exp.Min(this=ts), "first_ts"))
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(target, exp.LT(this=ts.copy(), expression=sql.ts_literal(end))))
            .group_by(_c("person_id"))
        )
        cohorts = (
            exp.select(_c("person_id"), exp.alias_(local.period(_c("first_ts"), q.period), "pn"))
            .from_(firsts.subquery("f"))
            .where(exp.GTE(this=_c("first_ts"), expression=sql.ts_literal(start)))
        )
    else:
        cohorts = (
            exp.select(_c("person_id"), exp.alias_(local.period(ts, q.period), "pn"))
            .distinct()
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(target, sql.time_between(start, end)))
        )
    returns = (
        exp.select(_c("person_id"), exp.alias_(local.period(ts.copy(), q.period), "pn"))
        .distinct()
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(
            exp.and_(
                sql.event_is(q.return_event),
                sql.filters(q.return_filters),
                sql.filters(q.filters),
                sql.time_between(start, end),
            )
        )
    )
    key = [_c("b")] if by_breakdown else [exp.cast(exp.null(), "TEXT").as_("b")]
    sizes = (
        exp.select(_c("pn"), *key, exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_("cohorts")
        .group_by(_c("pn"), *([_c("b")] if by_breakdown else []))
        .with_("cohorts", as_=cohorts)
    )
    ckey = [_c("b", "c")] if by_breakdown else [exp.cast(exp.null(), "TEXT").as_("b")]
    joined = (
        exp.select(_c("person_id", "c"), _c("pn", "c").as_("cp"), _c("pn", "r").as_("rp"), *ckey)
        .from_(exp.to_table("cohorts").as_("c"))
        .join(
            exp.to_table("returns").as_("r"),
            on=_c("person_id", "r").eq(_c("person_id", "c")),
            join_type="inner",
        )
        .where(exp.GT(this=_c("pn", "r"), expression=_c("pn", "c")))
    )
    if q.mode == "on_or_after":
        joined = (
            exp.select(_c("person_id"), _c("cp"), _c("b"), exp.alias_(exp.Max(this=_c("rp")), "rp"))
            .from_(joined.subquery("j"))
            .group_by(_c("person_id"), _c("cp"), _c("b"))
        )
    counts = (
        exp.select(_c("cp"), _c("rp"), _c("b"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(joined.subquery("x"))
        .group_by(_c("cp"), _c("rp"), _c("b"))
        .with_("cohorts", as_=cohorts)
        .with_("returns", as_=returns)
    )
    return {"sizes": sizes, "counts": counts}


def _table(
    query: RetentionQuery,
    n: int,
    sizes: list[int],
    exact: list[list[int]],
    labels: list[str],
) -> tuple[tuple[RetentionCohort, ...], tuple[float | None, ...]]:
    cohorts = []
    for i in range(n):
        values = [sizes[i]]
        for d in range(1, n - i):
            if query.mode == "on":
                values.append(exact[i][d])
            else:
                values.append(sum(exact[i][d:]))
        cohorts.append(RetentionCohort(labels[i], sizes[i], tuple(values)))
    mean: list[float | None] = []
    for d in range(n):
        num = sum(c.retained[d] for c in cohorts if len(c.retained) > d)
        den = sum(c.size for c in cohorts if len(c.retained) > d)
        mean.append(num / den if den else None)
    return tuple(cohorts), tuple(mean)


def _run_tables(
    source: Source, project_id: int, query: RetentionQuery, by_breakdown: bool
) -> dict[str | None, tuple[tuple[RetentionCohort, ...], tuple[float | None, ...]]]:
    trees = retention_sql(source, project_id, query, by_breakdown)
    buckets = periods(query.date_range, query.period)
    index = {p.number: i for i, p in enumerate(buckets)}
    n = len(buckets)
    sizes: dict[str | None, list[int]] = {}
    # exact[i][d]: persons of cohort i whose (last, for on_or_after) return is d periods later
    exact: dict[str | None, list[list[int]]] = {}

    def ensure(key: str | None) -> None:
        if key not in sizes:
            sizes[key] = [0] * n
            exact[key] = [[0] * n for _ in range(n)]

    if not by_breakdown:
        ensure(None)
    if "table" in trees:
        for row in run(source, trees["table"]):
            i = index.get(as_int(row[0]))
            if i is None:
                continue
            if query.mode == "on":
                sizes[None][i] += as_int(row[1])
                for j, count in enumerate(row[2:]):
                    if j > i:
                        exact[None][i][j - i] += as_int(count)
            else:
                sizes[None][i] += as_int(row[2])
                if row[1] is not None:
                    exact[None][i][as_int(row[1]) - as_int(row[0])] += as_int(row[2])
        labels = [p.label for p in buckets]
        return {None: _table(query, n, sizes[None], exact[None], labels)}
    for pn, b, count in run(source, trees["sizes"]):
        key = None if b is None else str(b)
        ensure(key)
        if as_int(pn) in index:
            sizes[key][index[as_int(pn)]] = as_int(count)
    for cp, rp, b, count in run(source, trees["counts"]):
        key = None if b is None else str(b)
        i = index.get(as_int(cp))
        if i is not None and key in exact:
            exact[key][i][as_int(rp) - as_int(cp)] += as_int(count)
    labels = [p.label for p in buckets]
    return {k: _table(query, n, sizes[k], exact[k], labels) for k in sizes}


def retention(source: Source, project_id: int, query: RetentionQuery) -> RetentionResult:
    """Run a retention analysis on a store (or any :class:`Source`) for one project."""
    cohorts, mean = _run_tables(source, project_id, query, False)[None]
    breakdowns: list[RetentionBreakdown] = []
    if query.breakdown is not None:
        for value, (bc, bm) in _run_tables(source, project_id, query, True).items():
            breakdowns.append(RetentionBreakdown(value, bc, bm))
        breakdowns.sort(
            key=lambda b: (-sum(c.size for c in b.cohorts), b.value is None, b.value or "")
        )
    return RetentionResult(query.period, cohorts, mean, tuple(breakdowns))
