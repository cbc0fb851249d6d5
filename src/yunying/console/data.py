"""What each console page shows, computed with :mod:`yunying.analytics` (no SQL of its own
beyond the data stamp and the list of event names).

Every function takes the events store, a project and plain parameters and returns a
:class:`Table`-bearing result, so the page, its CSV download and tests use the same numbers.
Labels are English message ids marked with :func:`N_`; templates translate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlglot import exp

from yunying.analytics import (
    DateRange,
    FunnelQuery,
    FunnelResult,
    FunnelStep,
    FunnelTimeToConvertQuery,
    FunnelTimeToConvertResult,
    FunnelTrendsQuery,
    FunnelTrendsResult,
    LifecycleQuery,
    LifecycleResult,
    RetentionQuery,
    RetentionResult,
    Series,
    TrendsQuery,
    TrendsResult,
    col,
    funnel,
    funnel_time_to_convert,
    funnel_trends,
    lifecycle,
    retention,
    trends,
)
from yunying.analytics.common import Source
from yunying.analytics.metrics import metric_batches
from yunying.state import Project


def N_(message: str) -> str:  # noqa: N802 - the conventional name for "translate later"
    """Mark ``message`` for extraction; templates translate it when shown."""
    return message


@dataclass(frozen=True)
class Table:
    """Rows of a page's data: what the CSV download holds and the HTML table shows."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class DataSpan:
    """How much data a project has: the stamp pages cache on, and the local days it covers."""

    events: int
    first_day: date | None
    last_day: date | None

    @property
    def stamp(self) -> tuple[int, str | None]:
        return (self.events, self.last_day.isoformat() if self.last_day else None)


def data_span(store: Source, project: Project) -> DataSpan:
    """Event count and the first/last local day with events (one scan of the project)."""
    q = exp.select("count(*)", "min(timestamp)", "max(timestamp)").from_(
        store.scoped("events", project.id).subquery("e")
    )
    count, first, last = store.query(q.sql(dialect=store.dialect)).rows[0]
    return DataSpan(
        int(count or 0), _local_day(first, project.timezone), _local_day(last, project.timezone)
    )


def _local_day(value: Any, tz: str) -> date | None:
    if value is None:
        return None
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return ts.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).date()


#: How many event names the pickers list (a project with fewer has them all).
EVENT_NAMES_LIMIT = 300


def event_names(store: Source, project: Project, limit: int = EVENT_NAMES_LIMIT) -> list[str]:
    """The project's event names, most frequent first (for the pickers)."""
    q = (
        exp.select("event", "count(*) AS n")
        .from_(store.scoped("events", project.id).subquery("e"))
        .group_by("event")
        .order_by("n DESC", "event")
        .limit(limit)
    )
    return [str(r[0]) for r in store.query(q.sql(dialect=store.dialect)).rows]


def default_range(project: Project, span: DataSpan, days: int = 30) -> DateRange:
    """The last ``days`` local days ending at the newest data (never after today)."""
    today = datetime.now(ZoneInfo(project.timezone)).date()
    end = min(span.last_day, today) if span.last_day else today
    return DateRange(end - timedelta(days=days - 1), end, project.timezone)


# -- dashboard -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KPISpec:
    """One card: a catalog metric and how its value is shown."""

    metric: str
    label: str
    kind: str  # count | money | percent


KPIS: tuple[KPISpec, ...] = (
    KPISpec("new_users", N_("New users"), "count"),
    KPISpec("dau", N_("DAU"), "count"),
    KPISpec("mau", N_("MAU"), "count"),
    KPISpec("retention_d1", N_("D1 retention"), "percent"),
    KPISpec("retention_d7", N_("D7 retention"), "percent"),
    KPISpec("paying_rate", N_("Paying rate"), "percent"),
    KPISpec("gmv", N_("Revenue"), "money"),
    KPISpec("arpu", N_("ARPU"), "money"),
)


@dataclass(frozen=True)
class KPI:
    """A card's numbers: value now, value in the previous period, and one value per day."""

    spec: KPISpec
    value: float | None
    previous: float | None
    labels: tuple[str, ...]
    daily: tuple[float | None, ...]
    definition: str

    @property
    def change(self) -> float | None:
        """Relative change against the previous period of the same length."""
        if self.value is None or not self.previous:
            return None
        return (self.value - self.previous) / abs(self.previous)


@dataclass(frozen=True)
class Dashboard:
    """The overview: KPI cards over one range."""

    date_range: DateRange
    kpis: tuple[KPI, ...]

    def table(self) -> Table:
        rows = [(k.spec.metric, k.value, k.previous, k.change) for k in self.kpis]
        daily = [
            (f"{k.spec.metric}@{label}", v, None, None)
            for k in self.kpis
            for label, v in zip(k.labels, k.daily, strict=True)
        ]
        return Table(("metric", "value", "previous_period", "change"), tuple(rows + daily))


def dashboard(store: Source, project: Project, dr: DateRange) -> Dashboard:
    """The eight KPI cards: each metric over ``dr`` per day, and over the range before it.

    One :func:`~yunying.analytics.metrics.metric_batches` call for both ranges: metrics that
    share an underlying query (the new-user cohort and its retention, paying facts) run it once
    for both ranges (rows tagged by range), and the active-user counts and revenue of both
    ranges come from one query each, four queries in all."""
    names = [spec.metric for spec in KPIS]
    now, before = metric_batches(store, project.id, names, [(dr, "day"), (dr.previous(), None)])
    kpis = tuple(
        KPI(
            spec,
            now[spec.metric].value,
            before[spec.metric].value,
            tuple(p.key or "" for p in now[spec.metric].periods),
            tuple(p.value for p in now[spec.metric].periods),
            now[spec.metric].definition.definition,
        )
        for spec in KPIS
    )
    return Dashboard(dr, kpis)


# -- trends ----------------------------------------------------------------------------------------

TREND_MATHS = ("total", "unique_persons", "dau", "sum", "avg_per_person")
INTERVALS = ("day", "week", "month")
BREAKDOWNS = ("", "channel", "os", "utm_source", "app_version")


@dataclass(frozen=True)
class TrendsPage:
    """The explorer's lines."""

    result: TrendsResult

    def table(self) -> Table:
        rows: list[tuple[Any, ...]] = []
        for s in self.result.series:
            for label, v in zip(s.labels, s.values, strict=True):
                rows.append((s.label, s.breakdown_value, s.compare, label, v))
        return Table(("series", "breakdown", "compare", "period", "value"), tuple(rows))


def trends_page(
    store: Source,
    project: Project,
    dr: DateRange,
    events: Sequence[tuple[str | None, str]],
    interval: str = "day",
    breakdown: str = "",
    compare: bool = False,
) -> TrendsPage:
    """Lines for ``(event or None for any, math)`` pairs."""
    series = tuple(Series(e, m) for e, m in events)  # type: ignore[arg-type]
    q = TrendsQuery(
        series,
        dr,
        interval=interval,  # type: ignore[arg-type]
        breakdown=col(breakdown) if breakdown else None,
        breakdown_limit=10,
        compare=compare,
    )
    return TrendsPage(trends(store, project.id, q))


# -- funnels ---------------------------------------------------------------------------------------


#: How the steps of a funnel may follow each other (FunnelQuery.order).
FUNNEL_ORDERS = ("ordered", "strict", "unordered")
#: What the funnel page shows: persons per step, the time to convert, conversion per period.
FUNNEL_VIEWS = ("steps", "time", "trends")


@dataclass(frozen=True)
class FunnelPage:
    """Persons per step, overall and per breakdown value; with the ``time`` view the time from
    the first to the last step, with ``trends`` the conversion per period of the start."""

    result: FunnelResult
    view: str = "steps"
    times: FunnelTimeToConvertResult | None = None
    trend: FunnelTrendsResult | None = None
    interval: str = "day"

    def table(self) -> Table:
        if self.times is not None:
            return Table(
                ("from_seconds", "to_seconds", "persons"),
                tuple((b.lower_seconds, b.upper_seconds, b.count) for b in self.times.bins),
            )
        if self.trend is not None:
            t = self.trend
            return Table(
                (self.interval, "entered", "converted", "conversion_rate"),
                tuple(zip(t.labels, t.entered, t.converted, t.conversion_rate, strict=True)),
            )
        rows: list[tuple[Any, ...]] = []
        for s in self.result.steps:
            rows.append(
                ("", s.index + 1, s.name, s.count, s.conversion_from_first,
                 s.conversion_from_previous, s.median_seconds_from_previous)
            )  # fmt: skip
        for b in self.result.breakdowns:
            for s in b.steps:
                rows.append(
                    (b.value or "(none)", s.index + 1, s.name, s.count, s.conversion_from_first,
                     s.conversion_from_previous, s.median_seconds_from_previous)
                )  # fmt: skip
        return Table(
            ("breakdown", "step", "event", "persons", "conversion_from_first",
             "conversion_from_previous", "median_seconds_from_previous"),
            tuple(rows),
        )  # fmt: skip


def funnel_page(
    store: Source,
    project: Project,
    dr: DateRange,
    steps: Sequence[str],
    window_days: int = 14,
    breakdown: str = "",
    order: str = "ordered",
    view: str = "steps",
) -> FunnelPage:
    """A funnel over ``steps`` within ``window_days`` (steps in ``order``), and what ``view``
    adds: the time from the first step to the last (ordered or strict steps only), or the
    conversion per day of the start (per week beyond 62 days)."""
    q = FunnelQuery(
        tuple(FunnelStep(s) for s in steps),
        dr,
        window=window_days,
        window_unit="day",
        order=order,  # type: ignore[arg-type]
        breakdown=col(breakdown) if breakdown else None,
    )
    result = funnel(store, project.id, q)
    plain = replace(q, breakdown=None)  # one histogram or line for everybody
    if view == "time":
        times = funnel_time_to_convert(store, project.id, FunnelTimeToConvertQuery(plain))
        return FunnelPage(result, view, times=times)
    if view == "trends":
        interval = "day" if (dr.date_to - dr.date_from).days < 62 else "week"
        trend = funnel_trends(store, project.id, FunnelTrendsQuery(plain, interval))  # type: ignore[arg-type]
        return FunnelPage(result, view, trend=trend, interval=interval)
    return FunnelPage(result)


# -- retention -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPage:
    """The cohort matrix."""

    result: RetentionResult

    def table(self) -> Table:
        n = max((len(c.retained) for c in self.result.cohorts), default=0)
        rows: list[tuple[Any, ...]] = []
        for c in self.result.cohorts:
            rates = list(c.rates) + [None] * (n - len(c.rates))
            rows.append((c.label, c.size, *rates))
        rows.append(("weighted_mean", None, *self.result.weighted_mean))
        return Table(("cohort", "size", *(f"period_{i}" for i in range(n))), tuple(rows))


def retention_page(
    store: Source,
    project: Project,
    dr: DateRange,
    target_event: str | None,
    return_event: str | None,
    period: str = "day",
) -> RetentionPage:
    """First-time cohorts of ``target_event`` coming back with ``return_event``."""
    q = RetentionQuery(target_event, return_event, dr, period=period)  # type: ignore[arg-type]
    return RetentionPage(retention(store, project.id, q))


# -- lifecycle -------------------------------------------------------------------------------------

LIFECYCLE_STATES = (
    ("new", N_("New")),
    ("returning", N_("Returning")),
    ("resurrecting", N_("Resurrecting")),
    ("dormant", N_("Dormant")),
)


@dataclass(frozen=True)
class LifecyclePage:
    """Persons per lifecycle state per period."""

    result: LifecycleResult

    def table(self) -> Table:
        r = self.result
        rows = tuple(
            (label, r.new[i], r.returning[i], r.resurrecting[i], r.dormant[i])
            for i, label in enumerate(r.labels)
        )
        return Table(("period", "new", "returning", "resurrecting", "dormant"), rows)


def lifecycle_page(
    store: Source, project: Project, dr: DateRange, event: str | None, interval: str = "day"
) -> LifecyclePage:
    """New / returning / resurrecting / dormant persons per period."""
    q = LifecycleQuery(event, dr, interval=interval)  # type: ignore[arg-type]
    return LifecyclePage(lifecycle(store, project.id, q))


@dataclass
class Chart:
    """A Plotly figure as plain JSON (``data`` traces and ``layout``), drawn in the browser."""

    data: list[dict[str, Any]] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)


# -- CLV ----------------------------------------------------------------------------------------------


def top_predicted(store: Source, project: Project, limit: int = 20) -> list[dict[str, Any]]:
    """The persons with the highest predicted value of the project's latest CLV fit (the
    ``clv:value_band`` scope :func:`yunying.audience.clv.fit_clv` writes: band label and value),
    with their P(alive), expected purchases and distinct ids — a read of stored predictions."""
    from yunying.analytics.common import Sql, lit

    sql = Sql(store.dialect)

    def scoped(scope: str) -> exp.Select:
        return (
            exp.select(
                sql.text(exp.column("person_id")).as_("person_id"),
                exp.column("label"),
                exp.column("value"),
            )
            .from_(store.scoped("person_values", project.id).subquery("pv"))
            .where(exp.column("scope").eq(lit(scope)))
        )

    top = scoped("clv:value_band").order_by("value DESC", "person_id").limit(limit)
    rows = store.query(sql.render(top)).rows
    people = [
        {"person_id": str(r[0]), "band": r[1], "predicted_value": r[2], "distinct_ids": [],
         "p_alive": None, "expected_purchases": None}
        for r in rows
    ]  # fmt: skip
    if not people:
        return people
    by_id = {p["person_id"]: p for p in people}
    ids = [lit(i) for i in by_id]
    for scope, key in (
        ("clv:p_alive", "p_alive"),
        ("clv:expected_purchases", "expected_purchases"),
    ):
        q = scoped(scope).where(exp.In(this=sql.text(exp.column("person_id")), expressions=ids))
        for pid, _label, value in store.query(sql.render(q)).rows:
            by_id[str(pid)][key] = value
    q = (
        exp.select(sql.text(exp.column("person_id")), exp.column("distinct_id"))
        .from_(store.scoped("person_distinct_ids", project.id).subquery("d"))
        .where(exp.In(this=sql.text(exp.column("person_id")), expressions=ids))
        .order_by(exp.column("distinct_id"))
    )
    for pid, did in store.query(sql.render(q)).rows:
        by_id[str(pid)]["distinct_ids"].append(str(did))
    return people
