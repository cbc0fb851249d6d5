"""Segment membership in the analytics: a filter and a breakdown (``segment`` fields) in trends
and funnels, on DuckDB and ClickHouse, against counts made in Python from the generated world."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.audience.conftest import TZ, Loaded
from yunying.analytics import (
    DateRange,
    Filter,
    FunnelQuery,
    FunnelStep,
    Series,
    TrendsQuery,
    funnel,
    trends,
)
from yunying.analytics import Field as AField
from yunying.analytics.common import InvalidQuery, segment_field

RANGE = DateRange(date(2024, 3, 1), date(2024, 3, 24), TZ)
MEMBER = Filter(segment_field(901), "eq", True)
OUTSIDE = Filter(segment_field(901), "eq", False)


def _local_day(ts: datetime) -> date:
    return ts.replace(tzinfo=UTC).astimezone(ZoneInfo(TZ)).date()


def _in_range(ts: datetime) -> bool:
    start = datetime.combine(RANGE.date_from, time(0), ZoneInfo(TZ)).astimezone(UTC)
    end = datetime.combine(RANGE.date_to + timedelta(days=1), time(0), ZoneInfo(TZ)).astimezone(UTC)
    return start.replace(tzinfo=None) <= ts < end.replace(tzinfo=None)


def test_trends_filter_and_breakdown_by_segment(loaded: Loaded) -> None:
    world = loaded.world
    members = set(world.values["segment:901"])
    by_person = world.resolved()
    want: Counter[tuple[bool, date]] = Counter()
    for pid, evs in by_person.items():
        for e in evs:
            if e["event"] == "edit_video" and _in_range(e["timestamp"]):
                want[(pid in members, _local_day(e["timestamp"]))] += 1
    q = TrendsQuery((Series("edit_video"),), RANGE, filters=(MEMBER,))
    split = TrendsQuery((Series("edit_video"),), RANGE, breakdown=segment_field(901))
    for rt, pid in loaded.both():
        got = trends(rt.store, pid, q).series[0]
        days = [date.fromisoformat(x) for x in got.labels]
        assert list(got.values) == [want[(True, d)] for d in days]
        lines = {s.breakdown_value: s for s in trends(rt.store, pid, split).series}
        assert set(lines) == {"true", "false"}
        assert list(lines["true"].values) == list(got.values)
        assert list(lines["false"].values) == [want[(False, d)] for d in days]


def test_funnel_filter_and_breakdown_by_segment(loaded: Loaded) -> None:
    world = loaded.world
    members = set(world.values["segment:901"])
    by_person = world.resolved()
    steps = (FunnelStep("edit_video"), FunnelStep("export_video"))
    first = {
        pid
        for pid, evs in by_person.items()
        if any(e["event"] == "edit_video" and _in_range(e["timestamp"]) for e in evs)
    }
    results = []
    for rt, pid in loaded.both():
        all_ = funnel(rt.store, pid, FunnelQuery(steps, RANGE, window=7)).counts
        inside = funnel(rt.store, pid, FunnelQuery(steps, RANGE, window=7, filters=(MEMBER,)))
        outside = funnel(rt.store, pid, FunnelQuery(steps, RANGE, window=7, filters=(OUTSIDE,)))
        split = funnel(rt.store, pid, FunnelQuery(steps, RANGE, window=7,
                                                  breakdown=segment_field(901)))  # fmt: skip
        assert inside.counts[0] == len(first & members) > 0
        assert outside.counts[0] == len(first - members) > 0
        assert [a + b for a, b in zip(inside.counts, outside.counts, strict=True)] == all_
        by_value = {b.value: [s.count for s in b.steps] for b in split.breakdowns}
        assert by_value == {"true": inside.counts, "false": outside.counts}
        results.append((all_, inside.counts))
    assert results[0] == results[1]


def test_value_fields_read_any_scope(loaded: Loaded) -> None:
    """``value`` fields: e.g. persons by lifecycle stage (label of the ``stage`` scope)."""
    world = loaded.world
    stage = world.values["stage"]
    by_person = world.resolved()
    want: Counter[str | None] = Counter()
    for pid, evs in by_person.items():
        for e in evs:
            if e["event"] == "sign_up" and _in_range(e["timestamp"]):
                want[stage.get(pid)] += 1
    q = TrendsQuery((Series("sign_up"),), RANGE, breakdown=AField("stage", "value"),
                    breakdown_limit=100)  # fmt: skip
    for rt, pid in loaded.both():
        got = {s.breakdown_value: s.total for s in trends(rt.store, pid, q).series}
        assert got == dict(want)


def test_segment_field_names_are_ids() -> None:
    with pytest.raises(InvalidQuery, match="segment id"):
        AField("vip", "segment")
    with pytest.raises(InvalidQuery, match="not numeric"):
        from yunying.analytics.common import Sql

        Sql("duckdb").field_number(segment_field(3))
