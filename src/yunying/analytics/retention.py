"""Retention: of the persons who did the target event in a period (the cohort), how many did the
return event N periods later ("on" period N) or in period N or any later one ("on or after").

``first_time`` cohorts hold each person once, in the period of their first-ever target event
(which must fall inside the date range); ``recurring`` cohorts hold a person in every period in
which they did the target event. Periods are local calendar days/weeks (Monday)/months.
"""

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
    as_int,
    events_from,
    periods,
    run,
    uses_person,
)

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

    def __post_init__(self) -> None:
        for name in ("target_filters", "return_filters", "filters"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.period not in PERIODS:
            raise InvalidQuery(
                f"unknown retention period {self.period!r}; use {', '.join(PERIODS)}"
            )
        if self.cohort not in ("first_time", "recurring"):
            raise InvalidQuery(f"cohort must be 'first_time' or 'recurring', not {self.cohort!r}")
        if self.mode not in ("on", "on_or_after"):
            raise InvalidQuery(f"mode must be 'on' or 'on_or_after', not {self.mode!r}")


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
class RetentionResult:
    """The cohort matrix (row i has one value per period still inside the range) and, per
    period N, the mean rate weighted by cohort size over cohorts that have period N."""

    period: str
    cohorts: tuple[RetentionCohort, ...]
    weighted_mean: tuple[float | None, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (with rates)."""
        out = asdict(self)
        for c, d in zip(self.cohorts, out["cohorts"], strict=True):
            d["rates"] = list(c.rates)
        return out


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def retention_sql(source: Source, project_id: int, q: RetentionQuery) -> dict[str, exp.Select]:
    """The queries behind a retention table: cohort sizes and returns per (cohort, period)."""
    sql = Sql(source.dialect)
    tz = q.date_range.timezone
    start, end = q.date_range.utc_bounds()
    ts = _c("timestamp")
    target = exp.and_(
        sql.event_is(q.target_event), sql.filters(q.target_filters), sql.filters(q.filters)
    )
    if q.cohort == "first_time":
        firsts = (
            exp.select(_c("person_id"), exp.alias_(exp.Min(this=ts), "first_ts"))
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(target, exp.LT(this=ts.copy(), expression=sql.ts_literal(end))))
            .group_by(_c("person_id"))
        )
        cohorts = (
            exp.select(_c("person_id"), exp.alias_(sql.period(_c("first_ts"), q.period, tz), "pn"))
            .from_(firsts.subquery("f"))
            .where(exp.GTE(this=_c("first_ts"), expression=sql.ts_literal(start)))
        )
    else:
        cohorts = (
            exp.select(_c("person_id"), exp.alias_(sql.period(ts, q.period, tz), "pn"))
            .distinct()
            .from_(events_from(source, project_id, person=uses_person(q)))
            .where(exp.and_(target, sql.time_between(start, end)))
        )
    returns = (
        exp.select(_c("person_id"), exp.alias_(sql.period(ts.copy(), q.period, tz), "pn"))
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
    sizes = (
        exp.select(_c("pn"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_("cohorts")
        .group_by(_c("pn"))
        .with_("cohorts", as_=cohorts)
    )
    joined = (
        exp.select(_c("person_id", "c"), _c("pn", "c").as_("cp"), _c("pn", "r").as_("rp"))
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
            exp.select(_c("person_id"), _c("cp"), exp.alias_(exp.Max(this=_c("rp")), "rp"))
            .from_(joined.subquery("j"))
            .group_by(_c("person_id"), _c("cp"))
        )
    counts = (
        exp.select(_c("cp"), _c("rp"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(joined.subquery("x"))
        .group_by(_c("cp"), _c("rp"))
        .with_("cohorts", as_=cohorts)
        .with_("returns", as_=returns)
    )
    return {"sizes": sizes, "counts": counts}


def retention(source: Source, project_id: int, query: RetentionQuery) -> RetentionResult:
    """Run a retention analysis on a store (or any :class:`Source`) for one project."""
    trees = retention_sql(source, project_id, query)
    buckets = periods(query.date_range, query.period)
    index = {p.number: i for i, p in enumerate(buckets)}
    n = len(buckets)
    sizes = [0] * n
    for pn, count in run(source, trees["sizes"]):
        if as_int(pn) in index:
            sizes[index[as_int(pn)]] = as_int(count)
    # exact[i][d]: persons of cohort i whose (last, for on_or_after) return is d periods later
    exact = [[0] * n for _ in range(n)]
    for cp, rp, count in run(source, trees["counts"]):
        i = index.get(as_int(cp))
        if i is not None:
            exact[i][as_int(rp) - as_int(cp)] += as_int(count)
    cohorts = []
    for i, p in enumerate(buckets):
        values = [sizes[i]]
        for d in range(1, n - i):
            if query.mode == "on":
                values.append(exact[i][d])
            else:
                values.append(sum(exact[i][d:]))
        cohorts.append(RetentionCohort(p.label, sizes[i], tuple(values)))
    mean: list[float | None] = []
    for d in range(n):
        num = sum(c.retained[d] for c in cohorts if len(c.retained) > d)
        den = sum(c.size for c in cohorts if len(c.retained) > d)
        mean.append(num / den if den else None)
    return RetentionResult(query.period, tuple(cohorts), tuple(mean))
