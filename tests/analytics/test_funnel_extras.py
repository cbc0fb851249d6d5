"""Funnel exclusions, breakdown attribution, time-to-convert histograms and funnel trends against
the plain-Python chain reference (tests/analytics/reference.py), and across engines."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import DAYS, START, TZ, Dataset, both, iso
from yunying.analytics import (
    DateRange,
    FunnelExclusion,
    FunnelQuery,
    FunnelStep,
    FunnelTimeToConvertQuery,
    FunnelTrendsQuery,
    InvalidQuery,
    funnel,
    funnel_time_to_convert,
    funnel_trends,
    prop,
)
from yunying.analytics.funnels import _uses_pass

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))
LO, HI = ref.bounds(RANGE.date_from, RANGE.date_to, TZ)


def named(name: str) -> ref.Match:
    return lambda e: e["event"] == name


def step_prop(e: ref.Event) -> str | None:
    v = json.loads(e["properties"]).get("step")
    return None if v is None else str(v)


NAMES = ["app_install", "edit_video", "export_video"]
STEPS = tuple(FunnelStep(n) for n in NAMES)
MATCHES = [named(n) for n in NAMES]


@pytest.mark.parametrize("order", ["ordered", "strict"])
def test_exclusions_equal_reference(journeys: Dataset, order: Any) -> None:
    exclusions = (
        FunnelExclusion("sign_up", from_step=0, to_step=2),
        FunnelExclusion("purchase_membership", from_step=1, to_step=2),
    )
    q = FunnelQuery(STEPS, RANGE, window=2, order=order, exclusions=exclusions)
    got = both(journeys, funnel, q)
    xs = [(named("sign_up"), 0, 2), (named("purchase_membership"), 1, 2)]
    chains = ref.funnel_chains(
        journeys.events, MATCHES, LO, HI, timedelta(days=2), xs, strict=order == "strict"
    )
    assert got.counts == ref.step_counts(chains, 3)
    plain = ref.funnel_chains(
        journeys.events, MATCHES, LO, HI, timedelta(days=2), strict=order == "strict"
    )
    without = both(journeys, funnel, FunnelQuery(STEPS, RANGE, window=2, order=order))
    assert without.counts == ref.step_counts(plain, 3)
    assert got.counts[0] < without.counts[0]  # the data exercises exclusion
    if order == "ordered":
        assert got.counts[2] > 0


@pytest.mark.parametrize(
    ("attribution", "step", "order", "excluded"),
    [
        ("first_touch", 0, "ordered", True), ("last_touch", 0, "ordered", True),
        ("step", 1, "ordered", True), ("step", 2, "ordered", True),
        ("first_touch", 0, "strict", True), ("last_touch", 0, "strict", True),
        ("step", 1, "strict", True),
        # strict without exclusions: the numpy pass, the values' numbers in the lists
        ("first_touch", 0, "strict", False), ("last_touch", 0, "strict", False),
        ("step", 1, "strict", False), ("step", 2, "strict", False),
    ],
)  # fmt: skip
def test_breakdown_attribution_equals_reference(
    journeys: Dataset, attribution: Any, step: int, order: Any, excluded: bool
) -> None:
    excl = (FunnelExclusion("sign_up", from_step=0, to_step=1),) if excluded else ()
    q = FunnelQuery(
        STEPS, RANGE, window=1, breakdown=prop("step"), breakdown_attribution=attribution,
        attribution_step=step, exclusions=excl, order=order,
    )  # fmt: skip
    assert _uses_pass(q, journeys.duck) != excluded
    got = both(journeys, funnel, q)
    chains = ref.funnel_chains(
        journeys.events, MATCHES, LO, HI, timedelta(days=1),
        [(named("sign_up"), 0, 1)] if excluded else [], strict=order == "strict",
    )  # fmt: skip

    def value(chain: list[ref.Event]) -> str | None:
        if attribution == "first_touch":
            return step_prop(chain[0])
        if attribution == "last_touch":
            return step_prop(chain[-1])
        return step_prop(chain[step]) if len(chain) > step else None

    want: dict[str | None, list[int]] = {}
    for chain in chains.values():
        row = want.setdefault(value(chain), [0, 0, 0])
        for k in range(len(chain)):
            row[k] += 1
    assert {b.value: [s.count for s in b.steps] for b in got.breakdowns} == want
    assert [sum(r[k] for r in want.values()) for k in range(3)] == got.counts
    assert len(want) > 3 if order == "ordered" else len(want) > 1


@pytest.mark.parametrize(
    "names", [["edit_video", "export_video"], ["app_install", "edit_video", "export_video"]]
)
def test_strict_step_times_equal_reference(journeys: Dataset, names: list[str]) -> None:
    q = FunnelQuery(tuple(FunnelStep(n) for n in names), RANGE, window=1, order="strict")
    got = both(journeys, funnel, q)
    chains = ref.funnel_chains(
        journeys.events, [named(n) for n in names], LO, HI, timedelta(days=1), strict=True
    )
    assert got.counts == ref.step_counts(chains, len(names)) and got.counts[-1] > 0
    for k in range(1, len(names)):
        reached = [c for c in chains.values() if len(c) > k]
        gaps = [(c[k]["timestamp"] - c[k - 1]["timestamp"]).total_seconds() for c in reached]
        firsts = [(c[k]["timestamp"] - c[0]["timestamp"]).total_seconds() for c in reached]
        step = got.steps[k]
        ref.assert_close(
            [step.median_seconds_from_previous, step.average_seconds_from_previous,
             step.median_seconds_from_first],
            [ref.percentile(gaps, 0.5), sum(gaps) / len(gaps), ref.percentile(firsts, 0.5)],
        )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("order", "excluded", "by_pass"),
    [("ordered", True, False), ("ordered", False, True), ("strict", False, True)],
)
def test_time_to_convert_histogram_equals_reference(
    journeys: Dataset, order: Any, excluded: bool, by_pass: bool
) -> None:
    # with a breakdown, which does not change the chains; the numpy pass serves the funnels
    # without exclusions
    exclusions = (FunnelExclusion("purchase_membership", (), 0, 1),) if excluded else ()
    fq = FunnelQuery(
        STEPS, RANGE, window=3, order=order, exclusions=exclusions, breakdown=prop("plan")
    )
    assert _uses_pass(replace(fq, breakdown=None), journeys.duck) == by_pass
    chains = ref.funnel_chains(
        journeys.events, MATCHES, LO, HI, timedelta(days=3),
        [(named("purchase_membership"), 0, 1)] if excluded else [], strict=order == "strict",
    )  # fmt: skip
    for from_step, to_step, bins in [(0, None, 10), (1, 2, 1)]:
        q = FunnelTimeToConvertQuery(fq, from_step, to_step, bins)
        got = both(journeys, funnel_time_to_convert, q)
        target = 2 if to_step is None else to_step
        d = [
            ref.us(c[target]["timestamp"]) - ref.us(c[from_step]["timestamp"])
            for c in chains.values() if len(c) > target
        ]  # fmt: skip
        lo, hi = min(d), max(d)
        width = max(1, -(-(hi - lo) // bins))
        counts = Counter(min(bins - 1, (x - lo) // width) for x in d)
        assert [b.count for b in got.bins] == [counts.get(i, 0) for i in range(bins)]
        assert [b.lower_seconds for b in got.bins] == [(lo + i * width) / 1e6 for i in range(bins)]
        assert got.converted == len(d) == sum(b.count for b in got.bins)
        med = ref.percentile([x / 1e6 for x in d], 0.5)
        ref.assert_close([got.average_seconds, got.median_seconds], [sum(d) / len(d) / 1e6, med])
    # the median agrees with the funnel's own step timing
    whole = both(journeys, funnel, fq)
    assert (
        whole.steps[2].median_seconds_from_first
        == both(journeys, funnel_time_to_convert, FunnelTimeToConvertQuery(fq)).median_seconds
    )


@pytest.mark.parametrize("interval", ["day", "week"])
@pytest.mark.parametrize("order", ["ordered", "strict"])
@pytest.mark.parametrize("excluded", [True, False])  # without exclusions: the numpy pass
def test_funnel_trends_equal_reference(
    journeys: Dataset, interval: Any, excluded: bool, order: Any
) -> None:
    steps = 2 if excluded else 3
    exclusions = (FunnelExclusion("sign_up", (), 0, 1),) if excluded else ()
    fq = FunnelQuery(STEPS[:steps], RANGE, window=6, window_unit="hour", exclusions=exclusions,
                     order=order)  # fmt: skip
    assert _uses_pass(fq, journeys.duck) != excluded
    got = both(journeys, funnel_trends, FunnelTrendsQuery(fq, interval))
    chains = ref.funnel_chains(
        journeys.events, MATCHES[:steps], LO, HI, timedelta(hours=6),
        [(named("sign_up"), 0, 1)] if excluded else [], strict=order == "strict",
        group=lambda e: ref.bucket(e["timestamp"], TZ, interval),
    )  # fmt: skip
    labels = ref.buckets(RANGE.date_from, RANGE.date_to, interval)
    entered = [sum(1 for (_, g) in chains if g == b) for b in labels]
    done = [sum(1 for (_, g), c in chains.items() if g == b and len(c) == steps) for b in labels]
    assert got.labels == tuple(b.isoformat() for b in labels)
    assert list(got.entered) == entered and list(got.converted) == done
    assert sum(done) > 0
    assert got.conversion_rate == tuple(
        c / e if e else None for e, c in zip(entered, done, strict=True)
    )


# -- hand-written edge cases ------------------------------------------------------------------------

T0 = datetime(2024, 3, 5, 2, 0, 0)
DAY = DateRange(date(2024, 3, 5), date(2024, 3, 5))


def ev(name: str, who: str, at: datetime, uid: int, **props: Any) -> dict[str, Any]:
    return {
        "event": name, "distinct_id": who, "timestamp": iso(at), "properties": props,
        "uuid": f"00000000-0000-4000-8000-{uid:012d}",
    }  # fmt: skip


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def test_exclusion_boundaries(small: Any) -> None:
    ds = small(
        [
            ev("A", "between", minutes(0), 1), ev("X", "between", minutes(1), 2),
            ev("B", "between", minutes(2), 3),
            ev("A", "tie_start", minutes(0), 4), ev("X", "tie_start", minutes(0), 5),
            ev("B", "tie_start", minutes(2), 6),
            ev("A", "tie_end", minutes(0), 7), ev("X", "tie_end", minutes(2), 8),
            ev("B", "tie_end", minutes(2), 9),
            ev("A", "after", minutes(0), 10), ev("B", "after", minutes(2), 11),
            ev("X", "after", minutes(3), 12),
            ev("A", "open", minutes(0), 13), ev("X", "open", minutes(50), 14),  # no B: window end
            ev("A", "late", minutes(0), 15), ev("X", "late", minutes(61), 16),  # after the window
        ]
    )  # fmt: skip
    base = FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY, window=1, window_unit="hour")
    assert both(ds, funnel, base).counts == [6, 4]
    q = FunnelQuery(
        base.steps, DAY, window=1, window_unit="hour", exclusions=(FunnelExclusion("X"),)
    )
    # 'between' and 'open' are dropped; ties with a step and events outside are not "between"
    assert both(ds, funnel, q).counts == [4, 3]


def test_exclusion_drops_the_person_when_the_chosen_chain_is_excluded(small: Any) -> None:
    ds = small(
        [
            # the first start is excluded and reaches B; the later clean start also reaches B:
            # the chosen chain (furthest, earliest) is the excluded one, so the person is dropped
            ev("A", "p", minutes(0), 1), ev("X", "p", minutes(1), 2), ev("B", "p", minutes(2), 3),
            ev("A", "p", minutes(10), 4), ev("B", "p", minutes(11), 5),
            # an excluded short chain loses to a later clean chain that goes further
            ev("A", "q", minutes(0), 6), ev("X", "q", minutes(1), 7),
            ev("A", "q", minutes(120), 8), ev("B", "q", minutes(121), 9),
        ]
    )  # fmt: skip
    q = FunnelQuery(
        (FunnelStep("A"), FunnelStep("B")), DAY, window=1, window_unit="hour",
        exclusions=(FunnelExclusion("X"),),
    )  # fmt: skip
    assert both(ds, funnel, q).counts == [1, 1]


def test_exclusion_event_that_is_a_chain_step_does_not_exclude(small: Any) -> None:
    # A -> A -> B with exclusion "A" between steps 0 and 2: the middle A is the chain's step 1
    ds = small(
        [ev("A", "p", minutes(0), 1), ev("A", "p", minutes(1), 2), ev("B", "p", minutes(2), 3)]
    )
    steps = (FunnelStep("A"), FunnelStep("A"), FunnelStep("B"))
    q = FunnelQuery(steps, DAY, exclusions=(FunnelExclusion("A", (), 0, 2),))
    assert both(ds, funnel, q).counts == [1, 1, 1]


def test_attribution_on_a_tiny_journey(small: Any) -> None:
    ds = small(
        [
            ev("A", "p", minutes(0), 1, src="ad"), ev("B", "p", minutes(1), 2, src="feed"),
            ev("A", "q", minutes(0), 3, src="seo"),
        ]
    )  # fmt: skip
    steps = (FunnelStep("A"), FunnelStep("B"), FunnelStep("C"))

    def groups(attribution: Any, step: int = 0) -> dict[str | None, list[int]]:
        q = FunnelQuery(
            steps, DAY, breakdown=prop("src"), breakdown_attribution=attribution,
            attribution_step=step,
        )  # fmt: skip
        return {b.value: [s.count for s in b.steps] for b in both(ds, funnel, q).breakdowns}

    assert groups("first_touch") == {"ad": [1, 1, 0], "seo": [1, 0, 0]}
    assert groups("last_touch") == {"feed": [1, 1, 0], "seo": [1, 0, 0]}
    assert groups("step", 1) == {"feed": [1, 1, 0], None: [1, 0, 0]}


def test_time_to_convert_and_trends_edge_cases(small: Any) -> None:
    ds = small(
        [ev("A", "p", minutes(0), 1), ev("B", "p", minutes(5), 2), ev("A", "q", minutes(0), 3)]
    )
    fq = FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY)
    ttc = both(ds, funnel_time_to_convert, FunnelTimeToConvertQuery(fq, bins=3))
    # a single duration: everything in the first bin, bins of 1 µs
    assert [b.count for b in ttc.bins] == [1, 0, 0]
    assert ttc.bins[0].lower_seconds == 300 and ttc.median_seconds == 300
    none = FunnelQuery((FunnelStep("A"), FunnelStep("C")), DAY)
    empty = both(ds, funnel_time_to_convert, FunnelTimeToConvertQuery(none))
    assert (empty.bins, empty.converted, empty.median_seconds) == ((), 0, None)
    tr = both(ds, funnel_trends, FunnelTrendsQuery(fq, "hour"))
    assert len(tr.labels) == 24 and tr.entered[10] == 2 and tr.converted[10] == 1
    assert tr.conversion_rate[10] == 0.5 and tr.conversion_rate[0] is None


def test_invalid_funnel_extras_are_refused() -> None:
    steps = (FunnelStep("A"), FunnelStep("B"))
    with pytest.raises(InvalidQuery, match="from_step < to_step"):
        FunnelQuery(steps, DAY, exclusions=(FunnelExclusion("X", (), 1, 1),))
    with pytest.raises(InvalidQuery, match="from_step < to_step"):
        FunnelQuery(steps, DAY, exclusions=(FunnelExclusion("X", (), 0, 2),))
    with pytest.raises(InvalidQuery, match="unordered"):
        FunnelQuery(steps, DAY, order="unordered", exclusions=(FunnelExclusion("X"),))
    with pytest.raises(InvalidQuery, match="attribution_step"):
        FunnelQuery(steps, DAY, breakdown_attribution="step", attribution_step=2)
    with pytest.raises(InvalidQuery, match="attribution"):
        FunnelQuery(steps, DAY, breakdown_attribution="linear")  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="bins"):
        FunnelTimeToConvertQuery(FunnelQuery(steps, DAY), bins=0)
    with pytest.raises(InvalidQuery, match="conversion times"):
        FunnelTimeToConvertQuery(FunnelQuery(steps, DAY, order="unordered"))
    with pytest.raises(InvalidQuery, match="interval"):
        FunnelTrendsQuery(FunnelQuery(steps, DAY), "year")  # type: ignore[arg-type]


# -- the per-person array pass (ordered funnels whose steps are distinct events) ----------------------


def test_array_pass_is_used_only_where_its_chains_are_exact() -> None:
    from yunying.analytics.common import Sql
    from yunying.analytics.funnels import _uses_arrays

    duck, ch = Sql("duckdb"), Sql("clickhouse")
    abc = (FunnelStep("A"), FunnelStep("B"), FunnelStep("C"))
    assert _uses_arrays(FunnelQuery(abc, DAY), duck)
    assert not _uses_arrays(FunnelQuery(abc, DAY), ch)  # ClickHouse keeps the chain joins
    assert not _uses_arrays(FunnelQuery(abc, DAY, order="strict"), duck)
    assert not _uses_arrays(FunnelQuery(abc, DAY, order="unordered"), duck)
    repeated = (FunnelStep("A"), FunnelStep("B"), FunnelStep("A"))
    assert not _uses_arrays(FunnelQuery(repeated, DAY), duck)
    overlapping = (FunnelStep("A"), FunnelStep(None))
    assert not _uses_arrays(FunnelQuery(overlapping, DAY), duck)


def test_array_pass_ties_pick_the_smaller_uuid(small: Any) -> None:
    # two starts at the same instant (values by uuid), step B tied twice at one instant, and a
    # C tied with B: ties are "not before", the chain takes the smaller uuid at each step
    ds = small(
        [
            ev("A", "p", minutes(0), 20, src="a-late-uuid"), ev("A", "p", minutes(0), 10, src="a-first"),
            ev("B", "p", minutes(1), 31, src="b-second"), ev("B", "p", minutes(1), 30, src="b-first"),
            ev("C", "p", minutes(1), 5, src="c"),
            # q: B before A in uuid order at the same instant still counts
            ev("B", "q", minutes(0), 40, src="qb"), ev("A", "q", minutes(0), 41, src="qa"),
        ]
    )  # fmt: skip
    steps = (FunnelStep("A"), FunnelStep("B"), FunnelStep("C"))

    def groups(attribution: Any, step: int = 0) -> dict[str | None, list[int]]:
        q = FunnelQuery(
            steps, DAY, breakdown=prop("src"), breakdown_attribution=attribution,
            attribution_step=step,
        )  # fmt: skip
        return {b.value: [s.count for s in b.steps] for b in both(ds, funnel, q).breakdowns}

    assert groups("first_touch") == {"a-first": [1, 1, 1], "qa": [1, 1, 0]}
    assert groups("step", 1) == {"b-first": [1, 1, 1], "qb": [1, 1, 0]}
    assert groups("last_touch") == {"c": [1, 1, 1], "qb": [1, 1, 0]}
    result = both(ds, funnel, FunnelQuery(steps, DAY))
    assert result.counts == [2, 2, 1]
    assert result.steps[2].median_seconds_from_first == 60
    assert result.steps[1].median_seconds_from_previous == 30  # p: 60 s, q: 0 s


def test_array_pass_starts_and_window_edges(small: Any) -> None:
    ds = small(
        [
            # from the first A, C falls out of the hour; the later A reaches C: its chain (not
            # the earlier, shorter one) gives the times
            ev("A", "p", minutes(0), 1), ev("B", "p", minutes(50), 2),
            ev("A", "p", minutes(55), 3), ev("B", "p", minutes(56), 4),
            ev("C", "p", minutes(70), 5),
            # C exactly at the window's end counts, a µs later does not
            ev("A", "edge", minutes(0), 6), ev("B", "edge", minutes(10), 7),
            ev("C", "edge", minutes(60), 8),
            ev("A", "over", minutes(0), 9), ev("B", "over", minutes(10), 10),
            ev("C", "over", minutes(60) + timedelta(microseconds=1), 11),
            # a step-1 event after the range's end starts nothing
            ev("B", "late", minutes(-5), 12), ev("C", "late", minutes(-4), 13),
            ev("A", "late", T0 + timedelta(hours=14), 14),  # 00:00 local the next day
        ]
    )  # fmt: skip
    q = FunnelQuery(
        (FunnelStep("A"), FunnelStep("B"), FunnelStep("C")), DAY, window=1, window_unit="hour"
    )
    result = both(ds, funnel, q)
    assert result.counts == [3, 3, 2]
    assert result.steps[2].median_seconds_from_first == (900 + 3600) / 2
    lo, hi = ref.bounds(DAY.date_from, DAY.date_to, TZ)
    chains = ref.funnel_chains(
        ds.events, [named("A"), named("B"), named("C")], lo, hi, timedelta(hours=1)
    )
    assert result.counts == ref.step_counts(chains, 3)


def test_tied_starts_pick_the_uuid_smaller_as_text(small: Any) -> None:
    # the two uuids order one way as text (and as their big-endian bytes) and the other way
    # reversed or with the top bit flipped: the breakdown must follow the text
    low, high = "1fffffff-0000-4000-8000-0000000000ff", "f0000000-0000-4000-8000-000000000001"
    raw = [
        {"event": "A", "distinct_id": "p", "timestamp": iso(minutes(0)), "uuid": high,
         "properties": {"src": "high"}},
        {"event": "A", "distinct_id": "p", "timestamp": iso(minutes(0)), "uuid": low,
         "properties": {"src": "low"}},
        {"event": "B", "distinct_id": "p", "timestamp": iso(minutes(1)),
         "uuid": "00000000-0000-4000-8000-000000000009", "properties": {}},
    ]  # fmt: skip
    ds = small(raw)
    q = FunnelQuery((FunnelStep("A"), FunnelStep("B")), DAY, breakdown=prop("src"))
    got = both(ds, funnel, q)
    assert [(b.value, [s.count for s in b.steps]) for b in got.breakdowns] == [("low", [1, 1])]
    # strict: in uuid order "low" comes first, so only the chain from "high" has B next
    strict = both(ds, funnel, FunnelQuery(q.steps, DAY, order="strict", breakdown=prop("src")))
    assert [(b.value, [s.count for s in b.steps]) for b in strict.breakdowns] == [("high", [1, 1])]
