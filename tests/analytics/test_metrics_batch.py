"""metric_batch: several catalog metrics at once give exactly what metric() gives for each, on
DuckDB and ClickHouse, agree with the plain-Python references of test_metrics.py, and share
their queries (the dashboard's eight metrics in a few engine queries)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlglot import exp

from tests.analytics import reference as ref
from tests.analytics.conftest import METRIC_DAYS, START, TZ, Dataset, make_dataset, metric_journeys
from tests.analytics.test_metrics import ref_cohort_metric, ref_value, reference
from yunying.analytics import (
    DateRange,
    Field,
    InvalidQuery,
    MetricConfig,
    col,
    metric,
    metric_batch,
)
from yunying.analytics.metrics import metric_batches
from yunying.runtime import Runtime
from yunying.store.base import QueryResult

DASHBOARD = (
    "new_users",
    "dau",
    "mau",
    "retention_d1",
    "retention_d7",
    "paying_rate",
    "gmv",
    "arpu",
)
OTHERS = ("churn_rate", "arppu", "repurchase_rate", "conversion_rate", "k_factor", "ltv",
          "activation_rate", "stickiness", "wau", "retention_d3")  # fmt: skip
CFG = MetricConfig(conversion_steps=("app_install", "edit_video", "export_video"))
# from a Wednesday: the first week is partial, and the previous range reads installs before START
RANGE = DateRange(START + timedelta(days=2), START + timedelta(days=METRIC_DAYS - 1))


@pytest.fixture(scope="module")
def mb(tmp_path_factory: pytest.TempPathFactory, ch_runtime: Runtime) -> Iterator[Dataset]:
    """Metric journeys of another seed, with os read back too."""
    ds = make_dataset(tmp_path_factory.mktemp("batch"), ch_runtime, metric_journeys(29, 350))
    res = ds.duck.query(
        exp.select("uuid", "os")
        .from_(ds.duck.scoped("events", ds.project_id).subquery("e"))
        .sql("duckdb")
    )
    os_of = {str(u): o for u, o in res.rows}
    for e in ds.events:
        e["os"] = os_of[str(e["uuid"])]
    yield ds
    ds.runtime.close()


class Counting:
    """A source passing every query to the real store, counting them."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dialect: str = store.dialect
        self.queries = 0

    def scoped(self, relation: str, project_id: int) -> Any:
        return self.store.scoped(relation, project_id)

    def query(self, sql: str) -> QueryResult:
        self.queries += 1
        result: QueryResult = self.store.query(sql)
        return result


def _batch_both(ds: Dataset, names: tuple[str, ...], dr: DateRange, **kw: Any) -> dict[str, Any]:
    """The batch on DuckDB and ClickHouse, each equal to metric() per name on its engine, and
    the two engines equal; returns the DuckDB results."""
    results = []
    for store, pid in ds.both():
        got = metric_batch(store, pid, names, dr, config=CFG, **kw)
        assert list(got) == list(dict.fromkeys(names))
        for name in names:
            single = metric(store, pid, name, dr, CFG, **kw)
            ref.assert_close(got[name].as_dict(), single.as_dict(), f"{store.dialect}:{name}")
        results.append(got)
    duck, ch = results
    ref.assert_close({n: r.as_dict() for n, r in duck.items()},
                     {n: r.as_dict() for n, r in ch.items()})  # fmt: skip
    return duck


@pytest.mark.parametrize(
    ("interval", "breakdown"),
    [(None, None), ("day", None), (None, col("channel")), ("week", col("os"))],
    ids=["overall", "day", "channel", "week-os"],
)
def test_batch_equals_single_metrics(
    mb: Dataset, interval: str | None, breakdown: Field | None
) -> None:
    _batch_both(mb, DASHBOARD + OTHERS, RANGE, interval=interval, breakdown=breakdown)


def test_dashboard_batch_equals_single_on_both_ranges(mb: Dataset) -> None:
    """The dashboard's two calls: per day over the range, and the previous range."""
    _batch_both(mb, DASHBOARD, RANGE, interval="day")
    _batch_both(mb, DASHBOARD, RANGE.previous())


def test_batch_equals_reference_overall_and_by_channel(mb: Dataset) -> None:
    names = DASHBOARD + OTHERS
    got = metric_batch(mb.duck, mb.project_id, names, RANGE, breakdown=col("channel"), config=CFG)
    for name in names:
        want = reference(name, mb.events, RANGE, CFG)
        assert got[name].value == pytest.approx(ref_value(name, want, RANGE), abs=1e-9), name
        by = reference(name, mb.events, RANGE, CFG, "channel")
        segs = {p.key: p for p in got[name].segments}
        assert set(segs) == set(by), name
        for key, (num, den) in by.items():
            assert segs[key].numerator == pytest.approx(num, abs=1e-9), (name, key)
            if got[name].definition.kind == "ratio":
                assert segs[key].denominator == pytest.approx(den), (name, key)


def test_batch_daily_values_equal_reference(mb: Dataset) -> None:
    """The dashboard's daily values, each against the reference over that day (cohort metrics:
    the day's new users observed up to the range's end)."""
    got = metric_batch(mb.duck, mb.project_id, DASHBOARD, RANGE, interval="day", config=CFG)
    for name in DASHBOARD:
        assert len(got[name].periods) == RANGE.days
        for i, p in enumerate(got[name].periods):
            day = RANGE.date_from + timedelta(days=i)
            assert p.key == day.isoformat()
            sub = DateRange(day, day, TZ)
            if name in ("new_users",) or name.startswith("retention_d"):
                cells = ref_cohort_metric(name, mb.events, RANGE, CFG, cohort_range=sub)
            else:
                cells = reference(name, mb.events, sub, CFG)
            want = ref_value(name, cells, sub)
            if want is None:  # D + N after the range's end: no observable new users
                assert p.value is None and name.startswith("retention_d"), (name, p.key)
            else:
                assert p.value == pytest.approx(want, abs=1e-9), (name, p.key)


def test_dashboard_query_count(mb: Dataset) -> None:
    """The 8 dashboard metrics over a range per day and over the previous range: per call one
    cohort query (new users, D1, D7), one facts query (paying rate, ARPU), one activity query
    (DAU, MAU) and one trends query (GMV): 8 in all, where 16 metric() calls run 16 (and the
    implementation before the batch ran 24)."""
    for store, pid in mb.both():
        batch = Counting(store)
        metric_batch(batch, pid, DASHBOARD, RANGE, interval="day", config=CFG)
        assert batch.queries <= 4
        metric_batch(batch, pid, DASHBOARD, RANGE.previous(), config=CFG)
        assert batch.queries <= 8
        single = Counting(store)
        for name in DASHBOARD:
            metric(single, pid, name, RANGE, CFG, interval="day")
            metric(single, pid, name, RANGE.previous(), CFG)
        assert single.queries == 16
        # every metric family, with a breakdown: each shared query still runs once per family
        counted = Counting(store)
        names = DASHBOARD + ("ltv", "activation_rate", "arppu", "k_factor", "stickiness", "wau")
        metric_batch(counted, pid, names, RANGE, interval="week", breakdown=col("os"), config=CFG)
        assert counted.queries == 1 + 1 + 2 * 2  # cohort, facts, (activity, GMV) x (none, os)


def test_batch_requests(mb: Dataset) -> None:
    assert metric_batch(mb.duck, mb.project_id, [], RANGE) == {}
    got = metric_batch(mb.duck, mb.project_id, ["gmv", "retention_d1", "gmv"], RANGE)
    assert list(got) == ["gmv", "retention_d1"]
    assert got["gmv"] == metric(mb.duck, mb.project_id, "gmv", RANGE)
    with pytest.raises(InvalidQuery):
        metric_batch(mb.duck, mb.project_id, ["dau", "dau_per_cat"], RANGE)
    with pytest.raises(InvalidQuery):
        metric_batch(mb.duck, mb.project_id, ["dau"], RANGE, interval="hour")


def test_metric_batches_equal_batch_per_request(mb: Dataset) -> None:
    """The dashboard's one call for both ranges (metric_batches) equals metric_batch of each
    (range, interval) on both engines, sharing every query: 4 queries."""
    requests: list[tuple[DateRange, str | None]] = [(RANGE, "day"), (RANGE.previous(), None)]
    for store, pid in mb.both():
        counted = Counting(store)
        got = metric_batches(counted, pid, DASHBOARD + ("stickiness", "wau"), requests, config=CFG)
        assert counted.queries == 1 + 1 + 1 + 1  # cohort, facts, activity, GMV: each for both
        for (dr, interval), results in zip(requests, got, strict=True):
            want = metric_batch(
                store, pid, DASHBOARD + ("stickiness", "wau"), dr, interval=interval, config=CFG
            )
            ref.assert_close({n: r.as_dict() for n, r in results.items()},
                             {n: r.as_dict() for n, r in want.items()})  # fmt: skip
    # ranges apart (a gap between them) and a single request
    far = DateRange(RANGE.date_from - timedelta(days=40), RANGE.date_from - timedelta(days=35))
    got = metric_batches(mb.duck, mb.project_id, ["dau", "gmv"], [(far, "week"), (RANGE, None)])
    assert got[0] == metric_batch(mb.duck, mb.project_id, ["dau", "gmv"], far, interval="week")
    assert got[1] == metric_batch(mb.duck, mb.project_id, ["dau", "gmv"], RANGE)
    one = metric_batches(mb.duck, mb.project_id, ["mau"], [(RANGE, "day")])
    assert one == [metric_batch(mb.duck, mb.project_id, ["mau"], RANGE, interval="day")]


# -- metric_batches: one cohort query and one facts query for disjoint ranges ----------------------

SHARED = DASHBOARD + ("activation_rate", "ltv", "retention_d3", "retention_d30", "arppu",
                      "repurchase_rate", "k_factor", "stickiness", "wau")  # fmt: skip
EVERY = SHARED + ("churn_rate", "conversion_rate")  # these two run per range
NY, UTC = "America/New_York", "UTC"  # New York's clocks moved on 2024-03-10, inside the data


def _days(first: int, last: int, tz: str = TZ) -> DateRange:
    """Days ``first`` .. ``last`` after START, in ``tz``."""
    return DateRange(START + timedelta(days=first), START + timedelta(days=last), tz)


BATCHES: dict[str, list[tuple[DateRange, str | None]]] = {
    # the dashboard's two requests; the previous range reads installs from before START
    "dashboard": [(RANGE, "day"), (RANGE.previous(), None)],
    # later range first, other intervals, a partial first week and month
    "week-month": [(_days(15, 27), "week"), (_days(1, 14), "month")],
    # three ranges with gaps between them, each interval, one of a single day
    "gaps": [(_days(-10, -3), None), (_days(4, 4), "day"), (_days(9, 20), "week")],
    # time zones other than the data's, over New York's change of clocks
    "new-york": [(_days(3, 12, NY), "day"), (_days(-7, 2, NY), "week")],
    "utc": [(_days(14, 27, UTC), "day"), (_days(0, 13, UTC), None)],
    # ranges with no events at all, and one over the data's last days
    "empty": [(_days(60, 70), "day"), (_days(49, 59), None), (_days(25, 35), "week")],
}


def _results(got: dict[str, Any]) -> dict[str, Any]:
    return {n: r.as_dict() for n, r in got.items()}


@pytest.mark.parametrize("case", list(BATCHES))
def test_metric_batches_equal_batch_per_range(mb: Dataset, case: str) -> None:
    """Every metric of disjoint ranges, the cohort and facts ones from one query per family for
    all the ranges, equals metric_batch of each range on its own, on both engines; both engines
    agree."""
    requests = BATCHES[case]
    results = []
    for store, pid in mb.both():
        got = metric_batches(store, pid, EVERY, requests, config=CFG)
        for (dr, interval), batch in zip(requests, got, strict=True):
            want = metric_batch(store, pid, EVERY, dr, interval=interval, config=CFG)
            ref.assert_close(_results(batch), _results(want), f"{store.dialect}:{dr}")
        results.append([_results(g) for g in got])
        counted = Counting(store)
        metric_batches(counted, pid, SHARED, requests, config=CFG)
        assert counted.queries == 4  # cohort, facts, activity and GMV, each for all the ranges
    ref.assert_close(results[0], results[1])


_LOCAL_DAYS = (
    "dau",
    "wau",
    "mau",
    "stickiness",
    "retention_d1",
    "retention_d3",
    "retention_d7",
    "retention_d30",
)  # fmt: skip  (the references count local days in TZ only)


def _want(name: str, events: list[Any], dr: DateRange, sub: DateRange | None = None) -> Any:
    """The reference value of ``name`` over ``dr``, or of its day ``sub`` (cohort metrics: the
    day's new users observed up to the range's end)."""
    if sub is None:
        return ref_value(name, reference(name, events, dr, CFG), dr)
    if name in ("new_users", "activation_rate", "ltv") or name.startswith("retention_d"):
        return ref_value(name, ref_cohort_metric(name, events, dr, CFG, cohort_range=sub), sub)
    return ref_value(name, reference(name, events, sub, CFG), sub)


@pytest.mark.parametrize("case", list(BATCHES))
def test_metric_batches_equal_reference(mb: Dataset, case: str) -> None:
    """The values of metric_batches, each range's and each of its days', against the
    plain-Python references of test_metrics.py (independent of the SQL)."""
    requests = BATCHES[case]
    got = metric_batches(mb.duck, mb.project_id, SHARED, requests, config=CFG)
    for (dr, interval), results in zip(requests, got, strict=True):
        names = [n for n in SHARED if dr.timezone == TZ or n not in _LOCAL_DAYS]
        for name in names:
            want = _want(name, mb.events, dr)
            if want is None:
                assert results[name].value is None, (case, name)
            else:
                assert results[name].value == pytest.approx(want, abs=1e-9), (case, name)
            if interval != "day":
                continue
            assert [p.key for p in results[name].periods] == [
                (dr.date_from + timedelta(days=i)).isoformat() for i in range(dr.days)
            ]
            for i, p in enumerate(results[name].periods):
                day = dr.date_from + timedelta(days=i)
                want = _want(name, mb.events, dr, DateRange(day, day, dr.timezone))
                if want is None:
                    assert p.value is None, (case, name, p.key)
                else:
                    assert p.value == pytest.approx(want, abs=1e-9), (case, name, p.key)
    if case == "empty":  # nothing happened in the first two ranges
        for results in got[:2]:
            assert results["new_users"].value == 0 and results["dau"].value == 0
            assert results["paying_rate"].value is None and results["retention_d1"].value is None


@pytest.mark.parametrize(
    ("requests", "queries"),
    [
        ([(_days(0, 13), "day"), (_days(7, 20), None)], 2 + 2 * 2),  # overlapping days
        ([(_days(0, 13), "day"), (_days(14, 27, NY), None)], 2 * 4),  # two time zones
    ],
    ids=["overlapping", "two-zones"],
)
def test_metric_batches_fall_back_per_range(
    mb: Dataset, requests: list[tuple[DateRange, str | None]], queries: int
) -> None:
    """Ranges sharing days, or of different zones, run the cohort and facts queries per range
    (and, across zones, the activity and GMV ones too): still metric_batch of each."""
    for store, pid in mb.both():
        counted = Counting(store)
        got = metric_batches(counted, pid, DASHBOARD, requests, config=CFG)
        assert counted.queries == queries
        for (dr, interval), batch in zip(requests, got, strict=True):
            want = metric_batch(store, pid, DASHBOARD, dr, interval=interval, config=CFG)
            ref.assert_close(_results(batch), _results(want), f"{store.dialect}:{dr}")


def test_metric_batches_requests(mb: Dataset) -> None:
    with pytest.raises(InvalidQuery):
        metric_batches(mb.duck, mb.project_id, ["dau"], [(RANGE, "hour"), (RANGE.previous(), None)])
    with pytest.raises(InvalidQuery):
        metric_batches(mb.duck, mb.project_id, ["dau_per_cat"], [(RANGE, None)])
    assert metric_batches(mb.duck, mb.project_id, ["dau"], []) == []
    assert metric_batches(
        mb.duck, mb.project_id, [], [(RANGE, "day"), (RANGE.previous(), None)]
    ) == [
        {},
        {},
    ]
