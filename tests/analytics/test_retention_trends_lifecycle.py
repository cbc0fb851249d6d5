"""Retention, trends and lifecycle against plain-Python references, and across engines."""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import DAYS, START, TZ, Dataset, both, iso
from yunying.analytics import (
    DateRange,
    Filter,
    InvalidQuery,
    LifecycleQuery,
    RetentionQuery,
    Series,
    TrendsQuery,
    col,
    lifecycle,
    prop,
    retention,
    trends,
)
from yunying.analytics.common import Sql

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))
END = RANGE.date_to


def named(name: str | None) -> Any:
    return lambda e: name is None or e["event"] == name


@pytest.mark.parametrize(
    ("target", "period", "cohort", "mode"),
    [
        ("app_install", "day", "first_time", "on"),
        ("app_install", "day", "first_time", "on_or_after"),
        ("edit_video", "day", "recurring", "on"),
        (None, "week", "recurring", "on_or_after"),
        ("sign_up", "week", "first_time", "on"),
        ("edit_video", "month", "recurring", "on"),
        (None, "day", "first_time", "on"),
        ("sign_up", "month", "first_time", "on_or_after"),
    ],
)
def test_retention_equals_per_person_reference(
    journeys: Dataset, target: str | None, period: Any, cohort: Any, mode: Any
) -> None:
    q = RetentionQuery(target, "edit_video", RANGE, period=period, cohort=cohort, mode=mode)
    got = both(journeys, retention, q)
    want = ref.retention(
        journeys.events, named(target), named("edit_video"), START, END, TZ, period, cohort, mode
    )
    assert [(c.size, list(c.retained)) for c in got.cohorts] == want
    assert sum(size for size, _ in want) > 0
    for d, mean in enumerate(got.weighted_mean):
        rows = [r for _, r in want if len(r) > d]
        den = sum(r[0] for r in rows)
        assert mean == (sum(r[d] for r in rows) / den if den else None)


@pytest.mark.parametrize("mode", ["on", "on_or_after"])
@pytest.mark.parametrize(("target", "period"), [("app_install", "day"), (None, "week")])
def test_first_time_retention_in_one_pass_equals_the_joined_queries(
    journeys: Dataset, monkeypatch: pytest.MonkeyPatch, target: str | None, period: Any, mode: Any
) -> None:
    """The one-pass table (a bit per period, or the last return) counts what joining cohorts
    to returns does, also over a range starting long before the data and with a filter."""
    module = sys.modules["yunying.analytics.retention"]

    long = DateRange(START - timedelta(days=40), END, "America/New_York")
    for dr in (RANGE, long):
        q = RetentionQuery(
            target, "edit_video", dr, period=period, mode=mode,
            filters=(Filter(col("os"), "neq", "ios"),),
        )  # fmt: skip
        assert module.single_pass(q)
        fast = both(journeys, retention, q)
        monkeypatch.setattr(module, "single_pass", lambda q, by_breakdown=False: False)
        joined = both(journeys, retention, q)
        monkeypatch.undo()
        assert fast == joined
        assert any(c.retained[1:] and max(c.retained[1:]) for c in fast.cohorts)


def test_lifecycle_equals_reference(journeys: Dataset) -> None:
    for interval in ("day", "week"):
        got = both(journeys, lifecycle, LifecycleQuery("edit_video", RANGE, interval))
        want = ref.lifecycle(journeys.events, named("edit_video"), START, END, TZ, interval)
        assert {s: list(getattr(got, s)) for s in want} == want
        assert all(any(v) for v in want.values())


@pytest.mark.parametrize("interval", ["day", "week", "month"])
def test_lifecycle_in_one_pass_equals_the_per_period_query(
    journeys: Dataset, monkeypatch: pytest.MonkeyPatch, interval: Any
) -> None:
    """The one-pass lifecycle (a bit per period) counts what the per-period query does, also
    with activity before the range, a range past the data and a zone with DST changes."""
    module = sys.modules["yunying.analytics.lifecycle"]
    ranges = (
        RANGE,
        DateRange(START + timedelta(days=9), END, "America/New_York"),
        DateRange(START + timedelta(days=3), END + timedelta(days=20), "Europe/London"),
    )
    for dr in ranges:
        q = LifecycleQuery("edit_video", dr, interval, filters=(Filter(col("os"), "neq", "ios"),))
        assert module.single_pass(q)
        fast = both(journeys, lifecycle, q)
        monkeypatch.setattr(module, "single_pass", lambda q: False)
        slow = both(journeys, lifecycle, q)
        monkeypatch.undo()
        assert fast == slow
        assert all(any(getattr(fast, s)) for s in ("new", "returning", "dormant"))


def test_trends_equal_daily_reference(journeys: Dataset) -> None:
    q = TrendsQuery(
        (
            Series("edit_video"),
            Series(None, "dau"),
            Series("purchase_membership", "sum"),
            Series("export_video", "avg", prop("duration_s")),
            Series("purchase_membership", "p90"),
            Series(None, "wau"),
            Series("edit_video", "mau"),
        ),
        RANGE,
    )
    got = both(journeys, trends, q)
    evs = journeys.events

    def amounts(es: list[Any]) -> list[float]:
        return [e["amount"] for e in es if e["amount"] is not None]

    def durations(es: list[Any]) -> list[float]:
        import json

        out = [json.loads(e["properties"]).get("duration_s") for e in es]
        return [v for v in out if isinstance(v, int | float)]

    want = [
        ref.daily(evs, named("edit_video"), START, END, TZ, len),
        ref.daily(evs, named(None), START, END, TZ, lambda es: len({e["person_id"] for e in es})),
        ref.daily(evs, named("purchase_membership"), START, END, TZ, lambda es: float(sum(amounts(es)))),
        ref.daily(evs, named("export_video"), START, END, TZ,
                  lambda es: sum(durations(es)) / len(durations(es)) if durations(es) else None),
        ref.daily(evs, named("purchase_membership"), START, END, TZ,
                  lambda es: ref.percentile(amounts(es), 0.9)),
        ref.rolling_active(evs, named(None), START, END, TZ, 7),
        ref.rolling_active(evs, named("edit_video"), START, END, TZ, 30),
    ]  # fmt: skip
    assert len(got.series) == len(want)
    for line, values in zip(got.series, want, strict=True):
        ref.assert_close(list(line.values), values, line.label)
    assert got.series[0].labels[0] == START.isoformat()


def test_trends_breakdown_filters_and_compare(journeys: Dataset) -> None:
    q = TrendsQuery(
        (Series("edit_video"),),
        RANGE,
        interval="week",
        breakdown=col("channel"),
        filters=(Filter(prop("plan"), "neq", "vip"),),
        compare=True,
    )
    got = both(journeys, trends, q)
    current = [s for s in got.series if s.compare == "current"]
    previous = [s for s in got.series if s.compare == "previous"]
    assert {s.breakdown_value for s in current} == {"douyin", "kuaishou", "zhihu", None}
    lo, hi = ref.bounds(START, END, TZ)
    expected = sum(
        1 for e in journeys.events
        if e["event"] == "edit_video" and lo <= e["timestamp"] < hi and '"plan":"vip"' not in e["properties"].replace(" ", "")
    )  # fmt: skip
    assert sum(s.total for s in current) == expected
    plo, phi = ref.bounds(START - timedelta(days=DAYS), START - timedelta(days=1), TZ)
    assert sum(s.total for s in previous) == sum(
        1 for e in journeys.events
        if e["event"] == "edit_video" and plo <= e["timestamp"] < phi and '"plan":"vip"' not in e["properties"].replace(" ", "")
    )  # fmt: skip
    assert previous[0].labels[0] == (START - timedelta(days=DAYS)).isoformat()


def test_hour_and_month_intervals_agree_across_engines(journeys: Dataset) -> None:
    day = DateRange(START + timedelta(days=2), START + timedelta(days=2))
    hourly = both(journeys, trends, TrendsQuery((Series(None),), day, interval="hour"))
    assert len(hourly.series[0].values) == 24
    lo, hi = ref.bounds(day.date_from, day.date_to, TZ)
    assert hourly.series[0].total == sum(1 for e in journeys.events if lo <= e["timestamp"] < hi)
    monthly = both(
        journeys, trends, TrendsQuery((Series(None, "median", prop("step")),), RANGE, "month")
    )
    assert monthly.series[0].labels == ("2024-03-01",)


def test_local_day_boundaries(small: Any) -> None:
    # 15:59:59 UTC is 23:59:59 on 03-05 in Shanghai, 16:00:00 UTC is already 03-06.
    raws = [
        {"event": "A", "distinct_id": "p", "timestamp": iso(datetime(2024, 3, 5, 15, 59, 59))},
        {"event": "A", "distinct_id": "q", "timestamp": iso(datetime(2024, 3, 5, 16, 0, 0))},
    ]
    two_days = DateRange(date(2024, 3, 5), date(2024, 3, 6))
    ds = small(raws)
    got = both(ds, trends, TrendsQuery((Series("A"),), two_days))
    assert got.series[0].values == (1, 1)
    ds_utc = small(raws, "UTC")
    utc = DateRange(date(2024, 3, 5), date(2024, 3, 6), "UTC")
    assert both(ds_utc, trends, TrendsQuery((Series("A"),), utc)).series[0].values == (2, 0)
    ret = both(ds, retention, RetentionQuery("A", "A", two_days))
    assert [c.size for c in ret.cohorts] == [1, 1]


def test_merged_person_is_one_person_everywhere(small: Any) -> None:
    day = datetime(2024, 3, 5, 2)
    ds = small(
        [
            {"event": "A", "distinct_id": "device", "timestamp": iso(day)},
            {"event": "$identify", "distinct_id": "user", "timestamp": iso(day + timedelta(days=1)),
             "properties": {"$anon_distinct_id": "device"}},
            {"event": "A", "distinct_id": "user", "timestamp": iso(day + timedelta(days=1))},
        ]
    )  # fmt: skip
    dr = DateRange(date(2024, 3, 5), date(2024, 3, 6))
    ret = both(ds, retention, RetentionQuery("A", "A", dr))
    assert [list(c.retained) for c in ret.cohorts] == [[1, 1], [0]]
    life = both(ds, lifecycle, LifecycleQuery("A", dr))
    assert (life.new, life.returning) == ((1, 0), (0, 1))
    dau = both(ds, trends, TrendsQuery((Series("A", "dau"),), dr))
    assert dau.series[0].values == (1, 1)


def test_sql_renders_for_both_engines_and_bad_input_is_refused(journeys: Dataset) -> None:
    from yunying.analytics.common import UnsupportedEngine
    from yunying.analytics.trends import series_sql

    q = TrendsQuery((Series("edit_video", "p90", prop("x")),), RANGE)
    for store, pid in journeys.both():
        text = Sql(store.dialect).render(series_sql(store, pid, q, q.series[0], RANGE))
        assert ("quantileExactInclusive" in text) == (store.dialect == "clickhouse")
    with pytest.raises(UnsupportedEngine):
        Sql("mysql")
    with pytest.raises(InvalidQuery, match="rolling"):
        TrendsQuery((Series(None, "wau"),), RANGE, interval="week")
    with pytest.raises(InvalidQuery, match="needs a number"):
        Filter(prop("x"), "gt", "ten")
    with pytest.raises(InvalidQuery, match="period"):
        RetentionQuery("a", "b", RANGE, period="hour")  # type: ignore[arg-type]
