"""Funnels against ClickHouse's own windowFunnel, plain-Python references, and across engines."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.analytics.conftest import DAYS, START, TZ, Dataset, iso
from tests.analytics.reference import assert_close, bounds, strict_funnel, unordered_funnel
from yunying.analytics import (
    DateRange,
    Filter,
    FunnelQuery,
    FunnelStep,
    InvalidQuery,
    col,
    funnel,
    prop,
)

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))


def window_funnel(ds: Dataset, q: FunnelQuery, conds: list[str]) -> list[int]:
    """Persons per step by ClickHouse's windowFunnel(window, 'strict_once') on the ClickHouse store."""
    lo, hi = q.date_range.utc_bounds()
    w = timedelta(microseconds=q.window_us)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    lo_s, hi_s, end_s = lo.strftime(fmt), hi.strftime(fmt), (hi + w).strftime(fmt)
    first = f"({conds[0]}) AND timestamp >= toDateTime64('{lo_s}', 6, 'UTC') AND timestamp < toDateTime64('{hi_s}', 6, 'UTC')"
    events = ds.chdb.scoped("events", ds.ch_project_id).sql("clickhouse")
    sql = (
        f"SELECT level, count() FROM (SELECT person_id, windowFunnel({q.window_us}, 'strict_once')"
        f"(toUInt64(toUnixTimestamp64Micro(timestamp)), {', '.join([first, *conds[1:]])}) AS level "
        f"FROM ({events}) WHERE timestamp >= toDateTime64('{lo_s}', 6, 'UTC') "
        f"AND timestamp < toDateTime64('{end_s}', 6, 'UTC') GROUP BY person_id) GROUP BY level"
    )
    levels = {int(r[0]): int(r[1]) for r in ds.chdb.query(sql).rows}
    return [sum(c for lv, c in levels.items() if lv >= k) for k in range(1, len(conds) + 1)]


def both(ds: Dataset, q: FunnelQuery) -> Any:
    """The funnel on DuckDB, after checking ClickHouse gives the same result."""
    duck = funnel(ds.duck, ds.project_id, q)
    ch = funnel(ds.chdb, ds.ch_project_id, q)
    assert_close(duck.as_dict(), ch.as_dict())
    return duck


ORDERED_CASES = [
    (["app_install", "edit_video", "export_video"], 1, "day", []),
    (["edit_video", "export_video", "edit_video"], 6, "hour", []),  # repeated step
    (["edit_video", "edit_video", "edit_video"], 3, "day", []),  # the same step over and over
    (["sign_up", "purchase_membership"], 2, "week", ["plan"]),
]


@pytest.mark.parametrize(("events", "window", "unit", "with_filter"), ORDERED_CASES)
def test_ordered_funnel_equals_window_funnel(
    journeys: Dataset, events: list[str], window: int, unit: Any, with_filter: list[str]
) -> None:
    filters = (Filter(prop("plan"), "in", ["pro", "vip"]),) if with_filter else ()
    steps = [FunnelStep(e, filters if i == len(events) - 1 else ()) for i, e in enumerate(events)]
    q = FunnelQuery(tuple(steps), RANGE, window=window, window_unit=unit)
    conds = [f"event = '{e}'" for e in events]
    if with_filter:
        conds[-1] += " AND JSONExtractString(properties, 'plan') IN ('pro', 'vip')"
    result = both(journeys, q)
    expected = window_funnel(journeys, q, conds)
    assert result.counts == expected
    assert expected[-1] > 0  # the data exercises the whole funnel


def test_strict_and_unordered_match_references(journeys: Dataset) -> None:
    names = ["edit_video", "export_video", "edit_video"]
    steps = tuple(FunnelStep(n) for n in names)
    matches = [lambda e, n=n: e["event"] == n for n in names]
    lo, hi = bounds(RANGE.date_from, RANGE.date_to, TZ)
    for order in ("strict", "unordered"):
        q = FunnelQuery(steps, RANGE, window=1, window_unit="day", order=order)
        got = both(journeys, q).counts
        if order == "strict":
            want = strict_funnel(journeys.events, matches, lo, hi, timedelta(days=1))
        else:
            want = unordered_funnel(journeys.events, matches, names, lo, hi, timedelta(days=1))
        assert got == want, order
        assert want[-1] > 0


def test_breakdown_partitions_persons_and_times_are_medians(journeys: Dataset) -> None:
    q = FunnelQuery(
        (FunnelStep("app_install"), FunnelStep("edit_video")),
        RANGE,
        window=1,
        breakdown=col("channel"),
    )
    result = both(journeys, q)
    assert sum(b.steps[0].count for b in result.breakdowns) == result.steps[0].count
    assert sum(b.steps[1].count for b in result.breakdowns) == result.steps[1].count
    assert {b.value for b in result.breakdowns} == {"douyin", "kuaishou", "zhihu", None}
    med = result.steps[1].median_seconds_from_previous
    assert med is not None and 0 <= med <= 86_400


# -- edge cases on hand-written journeys ------------------------------------------------------------

T0 = datetime(2024, 3, 5, 2, 0, 0)  # 10:00 in Shanghai on 2024-03-05
DAY = DateRange(date(2024, 3, 5), date(2024, 3, 5))


def ev(name: str, who: str, at: datetime, uid: int, **props: Any) -> dict[str, Any]:
    return {
        "event": name, "distinct_id": who, "timestamp": iso(at), "properties": props,
        "uuid": f"00000000-0000-4000-8000-{uid:012d}",
    }  # fmt: skip


def counts(ds: Dataset, names: list[str], order: Any = "ordered", **kw: Any) -> list[int]:
    kw.setdefault("date_range", DAY)
    q = FunnelQuery(tuple(FunnelStep(n) for n in names), order=order, **kw)
    return both(ds, q).counts


def test_timestamp_ties_count_in_step_order(small: Any) -> None:
    # B is stored before A and sorts first by uuid, but at the same instant: not before A.
    ds = small([ev("B", "p1", T0, 1), ev("A", "p1", T0, 2), ev("A", "p2", T0, 3)])
    assert counts(ds, ["A", "B"]) == [2, 1]
    assert counts(ds, ["A", "B"], "unordered") == [2, 1]
    assert window_funnel(
        ds, FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY), ["event = 'A'", "event = 'B'"]
    ) == [2, 1]


def test_window_boundary_is_inclusive(small: Any) -> None:
    ds = small(
        [
            ev("A", "in", T0, 1), ev("B", "in", T0 + timedelta(hours=1), 2),
            ev("A", "out", T0, 3), ev("B", "out", T0 + timedelta(hours=1, microseconds=1), 4),
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "B"], window=1, window_unit="hour") == [2, 1]
    assert counts(ds, ["A", "B"], "strict", window=1, window_unit="hour") == [2, 1]
    q = FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY, window=1, window_unit="hour")
    assert window_funnel(ds, q, ["event = 'A'", "event = 'B'"]) == [2, 1]


def test_only_step_one_must_be_inside_the_range(small: Any) -> None:
    before = T0 - timedelta(days=1)
    ds = small(
        [
            ev("A", "early", before, 1), ev("B", "early", T0, 2),  # starts before the range
            ev("A", "late", T0 + timedelta(hours=13), 3),  # 23:00 local, still in range
            ev("B", "late", T0 + timedelta(hours=20), 4),  # next day, inside the window
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "B"]) == [1, 1]


def test_repeated_steps_need_distinct_events(small: Any) -> None:
    ds = small(
        [
            ev("A", "once", T0, 1),
            ev("A", "twice", T0, 2), ev("A", "twice", T0 + timedelta(minutes=1), 3),
            ev("A", "tied", T0, 4), ev("B", "tied", T0, 5),
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "A"]) == [3, 1]
    # A -> B -> A: "tied" has B at A's instant but no second A
    assert counts(ds, ["A", "B", "A"]) == [3, 1, 0]
    conds = ["event = 'A'", "event = 'A'"]
    assert window_funnel(ds, FunnelQuery((FunnelStep("A"), FunnelStep("A")), DAY), conds) == [3, 1]


def test_furthest_step_over_all_starts(small: Any) -> None:
    # the first A leads nowhere within the hour; the second A completes the funnel
    ds = small(
        [
            ev("A", "p", T0, 1), ev("B", "p", T0 + timedelta(hours=2), 2),
            ev("A", "p", T0 + timedelta(hours=3), 3), ev("B", "p", T0 + timedelta(hours=3, minutes=5), 4),
            ev("C", "p", T0 + timedelta(hours=3, minutes=10), 5),
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "B", "C"], window=1, window_unit="hour") == [1, 1, 1]
    result = funnel(ds.duck, ds.project_id, FunnelQuery(
        (FunnelStep("A"), FunnelStep("B"), FunnelStep("C")), DAY, window=1, window_unit="hour"))  # fmt: skip
    assert result.steps[1].median_seconds_from_previous == 300
    assert result.steps[2].median_seconds_from_first == 600


def test_first_touch_is_the_value_of_the_chosen_start(
    small: Any, coded_outcomes: list[bool]
) -> None:
    # "later": the first A leads nowhere within the hour, the second (src b) completes
    ds = small(
        [
            ev("A", "later", T0, 1, src="a"), ev("A", "later", T0 + timedelta(hours=2), 2, src="b"),
            ev("B", "later", T0 + timedelta(hours=2, minutes=5), 3),
            ev("A", "first", T0, 4, src="a"), ev("A", "first", T0 + timedelta(minutes=1), 5, src="b"),
            ev("B", "first", T0 + timedelta(minutes=2), 6),
            ev("A", "unset", T0, 7),
        ]
    )  # fmt: skip
    q = FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY, window=1, window_unit="hour",
                    breakdown=prop("src"))  # fmt: skip
    got = both(ds, q)
    assert {b.value: [s.count for s in b.steps] for b in got.breakdowns} == {
        "a": [1, 1], "b": [1, 1], None: [1, 0]
    }  # fmt: skip
    assert coded_outcomes == [True, True]  # the values travelled as numbers, on both engines


@pytest.mark.parametrize("order", ["ordered", "strict"])
def test_breakdown_by_a_property_nobody_has_is_one_none_group(
    small: Any, order: Any, coded_outcomes: list[bool]
) -> None:
    ds = small([ev("A", "p", T0, 1), ev("B", "p", T0 + timedelta(minutes=1), 2),
                ev("A", "q", T0, 3)])  # fmt: skip
    q = FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY, order=order, breakdown=prop("nope"))
    got = both(ds, q)
    assert [(b.value, [s.count for s in b.steps]) for b in got.breakdowns] == [(None, [2, 1])]
    # an empty list of values is fine on both engines (strict numbers the values its own way)
    assert coded_outcomes == ([True, True] if order == "ordered" else [])


def test_person_merged_mid_journey(small: Any) -> None:
    ds = small(
        [
            ev("A", "device-1", T0, 1),
            {**ev("$identify", "user-1", T0 + timedelta(minutes=1), 2),
             "properties": {"$anon_distinct_id": "device-1"}},
            ev("B", "user-1", T0 + timedelta(minutes=2), 3),
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "B"]) == [1, 1]


def test_strict_ties_follow_the_uuid_order(small: Any) -> None:
    # uuids that order one way as text and another as raw or sign-flipped bytes
    low, high = "1fffffff-0000-4000-8000-00000000000", "f0000000-0000-4000-8000-00000000000"

    def at(name: str, who: str, uid: str) -> dict[str, Any]:
        return {"event": name, "distinct_id": who, "timestamp": iso(T0), "uuid": uid,
                "properties": {}}  # fmt: skip

    ds = small(
        [
            at("A", "ab", low + "1"), at("B", "ab", high + "1"),  # B right after A
            at("A", "ba", high + "2"), at("B", "ba", low + "2"),  # B before A: nothing after A
            at("A", "noise", low + "3"), at("X", "noise", low + "4"), at("B", "noise", high + "3"),
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "B"], "strict") == [3, 1]
    assert counts(ds, ["A", "B"]) == [3, 3]  # ordered: the same instant is not before


def test_strict_breaks_on_any_event_between(small: Any) -> None:
    ds = small(
        [
            ev("A", "clean", T0, 1), ev("B", "clean", T0 + timedelta(minutes=1), 2),
            ev("A", "noisy", T0, 3), ev("X", "noisy", T0 + timedelta(seconds=30), 4),
            ev("B", "noisy", T0 + timedelta(minutes=1), 5),
        ]
    )  # fmt: skip
    assert counts(ds, ["A", "B"], "strict") == [2, 1]
    assert counts(ds, ["A", "B"]) == [2, 2]


def test_time_zone_decides_the_day(small: Any) -> None:
    # 2024-03-05 16:30 UTC is 03-06 00:30 in Shanghai: outside 03-05 there, inside it in UTC.
    at = datetime(2024, 3, 5, 16, 30)
    raws = [ev("A", "p", at, 1), ev("B", "p", at + timedelta(minutes=1), 2)]
    shanghai = small(raws)
    assert counts(shanghai, ["A", "B"]) == [0, 0]
    assert counts(
        shanghai, ["A", "B"], date_range=DateRange(date(2024, 3, 6), date(2024, 3, 6))
    ) == [1, 1]
    utc = small(raws, "UTC")
    utc_day = DateRange(date(2024, 3, 5), date(2024, 3, 5), "UTC")
    assert counts(utc, ["A", "B"], date_range=utc_day) == [1, 1]


def test_filters_are_literals_not_sql(small: Any) -> None:
    tricky = "it's \\ a ' OR 1=1 --"
    ds = small([ev("A", "p", T0, 1, note=tricky), ev("A", "q", T0, 2, note="plain")])
    q = FunnelQuery((FunnelStep("A", (Filter(prop("note"), "eq", tricky),)),), DAY)
    assert both(ds, q).counts == [1]


def test_invalid_queries_are_refused() -> None:
    with pytest.raises(InvalidQuery, match="window unit"):
        FunnelQuery((FunnelStep("A"),), DAY, window_unit="fortnight")  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="steps"):
        FunnelQuery((), DAY)
    with pytest.raises(InvalidQuery, match="unknown column"):
        col("password")
    with pytest.raises(InvalidQuery, match="time zone"):
        DateRange(date(2024, 1, 1), date(2024, 1, 2), "Mars/Olympus")
