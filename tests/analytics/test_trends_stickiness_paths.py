"""Trends formulas and per-person maths, stickiness, per-person event counts and paths against
plain-Python references, and across engines."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import DAYS, START, TZ, Dataset, both, iso
from yunying.analytics import (
    DateRange,
    EventCountDistributionQuery,
    Filter,
    InvalidQuery,
    PathsQuery,
    Series,
    StickinessQuery,
    TrendsQuery,
    col,
    event_count_distribution,
    paths,
    prop,
    stickiness,
    trends,
)
from yunying.analytics.formula import evaluate, parse

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))
END = RANGE.date_to
LO, HI = ref.bounds(START, END, TZ)


def named(name: str | None) -> ref.Match:
    return lambda e: name is None or e["event"] == name


# -- formulas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values", "want"),
    [
        ("B / A * 100", [4, 1], 25.0),
        ("a + b * 2", [1, 2], 5.0),
        ("(A + B) * 2", [1, 2], 6.0),
        ("A - B - 1", [10, 2], 7.0),  # left-associative
        ("A / B / 2", [8, 2], 2.0),
        ("-A + +B", [3, 5], 2.0),
        ("--A", [3], 3.0),
        ("A / B", [1, 0], None),  # division by zero
        ("A + B", [None, 1], None),  # a missing average
        (".5 * A", [4], 2.0),
    ],
)
def test_formula_grammar(text: str, values: list[Any], want: float | None) -> None:
    assert evaluate(parse(text), values) == want


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "A ** B",
        "A B",
        "(A",
        "A +",
        "__import__('os')",
        "A; B",
        "1e3",
        "A % 2",
        "AB",
        "A.",
        "abs(A)",
        "A = 1",
    ],  # fmt: skip
)
def test_formula_refuses_anything_outside_the_grammar(bad: str) -> None:
    with pytest.raises(InvalidQuery, match="formula"):
        parse(bad)


def test_formula_series_must_exist() -> None:
    with pytest.raises(InvalidQuery, match="series C"):
        TrendsQuery((Series("a"), Series("b")), RANGE, formula="C / A")


def test_trends_formula_equals_reference(journeys: Dataset) -> None:
    q = TrendsQuery(
        (Series("edit_video"), Series("export_video"), Series(None, "dau")),
        RANGE,
        formula="B / A * 100 - C",
    )
    got = both(journeys, trends, q)
    evs = journeys.events
    a = ref.daily(evs, named("edit_video"), START, END, TZ, len)
    b = ref.daily(evs, named("export_video"), START, END, TZ, len)
    c = ref.daily(evs, named(None), START, END, TZ, lambda es: len({e["person_id"] for e in es}))
    want = [
        None if x == 0 else y / x * 100 - z  # type: ignore[operator]
        for x, y, z in zip(a, b, c, strict=True)
    ]
    assert len(got.formula) == 1 and got.formula[0].series_index == -1
    ref.assert_close(list(got.formula[0].values), want)
    assert len(got.series) == 3  # the series themselves are still there


def test_trends_formula_with_breakdown_uses_all_values(journeys: Dataset) -> None:
    q = TrendsQuery(
        (Series("export_video"), Series("edit_video")), RANGE, interval="week",
        breakdown=col("channel"), breakdown_limit=2, formula="A / B",
    )  # fmt: skip
    got = both(journeys, trends, q)
    assert len(got.formula) == 2  # the limit applies to the formula lines too
    per: dict[tuple[str | None, date], Counter[str]] = defaultdict(Counter)
    for e in journeys.events:
        if LO <= e["timestamp"] < HI:
            per[(e["channel"], ref.bucket(e["timestamp"], TZ, "week"))][e["event"]] += 1
    weeks = ref.buckets(START, END, "week")
    for line in got.formula:
        want = []
        for w in weeks:
            cnt = per[(line.breakdown_value, w)]
            want.append(cnt["export_video"] / cnt["edit_video"] if cnt["edit_video"] else None)
        ref.assert_close(list(line.values), want, str(line.breakdown_value))


@pytest.mark.parametrize("math", ["avg_per_person", "median_per_person", "max_per_person"])
def test_per_person_maths_equal_reference(journeys: Dataset, math: Any) -> None:
    q = TrendsQuery(
        (Series("edit_video", math),), RANGE, filters=(Filter(prop("plan"), "neq", "vip"),)
    )
    got = both(journeys, trends, q)

    def value(es: list[ref.Event]) -> float | None:
        es = [e for e in es if json.loads(e["properties"]).get("plan") != "vip"]
        per = list(Counter(e["person_id"] for e in es).values())
        if not per:
            return None
        if math == "avg_per_person":
            return sum(per) / len(per)
        if math == "max_per_person":
            return float(max(per))
        return ref.percentile([float(x) for x in per], 0.5)

    want = ref.daily(journeys.events, named("edit_video"), START, END, TZ, value)
    ref.assert_close(list(got.series[0].values), want)
    assert any(v is not None and v > 1 for v in want)


# -- stickiness and per-person event counts -----------------------------------------------------------


@pytest.mark.parametrize(("event", "interval"), [("edit_video", "week"), (None, "month")])
def test_stickiness_equals_reference(journeys: Dataset, event: str | None, interval: Any) -> None:
    got = both(journeys, stickiness, StickinessQuery(event, RANGE, interval))
    want = ref.stickiness(journeys.events, named(event), START, END, TZ, interval)
    assert [list(p.persons) for p in got.periods] == want
    assert [p.label for p in got.periods] == [
        b.isoformat() for b in ref.buckets(START, END, interval)
    ]
    assert sum(r[1] for r in want if len(r) > 1) > 0


def test_stickiness_counts_only_days_inside_the_range(small: Any) -> None:
    # Sunday 2024-03-10 and Monday 03-11 (Shanghai); the range starts on the Sunday
    def at(d: int, h: int = 2) -> str:
        return iso(datetime(2024, 3, d, h))

    ds = small(
        [
            {"event": "A", "distinct_id": "p", "timestamp": at(9)},  # Saturday: outside
            {"event": "A", "distinct_id": "p", "timestamp": at(10)},
            {"event": "A", "distinct_id": "p", "timestamp": at(10, 3)},  # same day again
            {"event": "A", "distinct_id": "p", "timestamp": at(11)},
            {"event": "A", "distinct_id": "q", "timestamp": at(12)},
        ]
    )
    got = both(
        ds, stickiness, StickinessQuery("A", DateRange(date(2024, 3, 10), date(2024, 3, 12)))
    )
    assert [(p.label, p.days, p.persons) for p in got.periods] == [
        ("2024-03-04", 1, (1,)),
        ("2024-03-11", 2, (2, 0)),
    ]


def test_event_count_distribution_equals_reference(journeys: Dataset) -> None:
    edges = (1, 2, 3, 5, 8)
    q = EventCountDistributionQuery("edit_video", RANGE, edges=edges)
    got = both(journeys, event_count_distribution, q)
    per = Counter(
        e["person_id"] for e in journeys.events
        if e["event"] == "edit_video" and LO <= e["timestamp"] < HI
    )  # fmt: skip
    counts = list(per.values())
    want = [
        sum(1 for c in counts if lo <= c and (i + 1 == len(edges) or c < edges[i + 1]))
        for i, lo in enumerate(edges)
    ]
    assert [b.persons for b in got.buckets] == want
    assert [(b.lower, b.upper) for b in got.buckets] == [(1, 1), (2, 2), (3, 4), (5, 7), (8, None)]
    assert got.persons == len(counts) and want[-1] > 0
    ref.assert_close(
        [got.mean, got.median],
        [sum(counts) / len(counts), ref.percentile([float(c) for c in counts], 0.5)],
    )
    empty = both(journeys, event_count_distribution, EventCountDistributionQuery("nothing", RANGE))
    assert (empty.persons, empty.mean, empty.median) == (0, None, None)
    with pytest.raises(InvalidQuery, match="increasing"):
        EventCountDistributionQuery(None, RANGE, edges=(1, 3, 3))
    with pytest.raises(InvalidQuery, match="starting with 1"):
        EventCountDistributionQuery(None, RANGE, edges=(2, 3))


# -- paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "steps", "exclude"),
    [
        ("sign_up", None, 4, ("$identify",)),
        (None, "purchase_membership", 3, ()),
        (None, None, 5, ()),
    ],
)
def test_paths_equal_reference(
    journeys: Dataset, start: str | None, end: str | None, steps: int, exclude: tuple[str, ...]
) -> None:
    q = PathsQuery(RANGE, start, end, steps, exclude_events=exclude, limit=1000)
    got = both(journeys, paths, q)
    anchor = start or end
    nodes, edges = ref.paths(
        journeys.events, LO, HI, lambda e: e["event"] not in exclude,
        None if anchor is None else named(anchor), end is not None, steps,
    )  # fmt: skip
    assert {(n.step, n.event): n.persons for n in got.nodes} == nodes
    assert {(e.step, e.source, e.target): e.persons for e in got.edges} == edges
    assert len(edges) > 10
    steps_seen = {n.step for n in got.nodes}
    assert steps_seen == (set(range(-steps + 1, 1)) if end else set(range(steps)))


def test_paths_ties_limit_and_filters(small: Any) -> None:
    t = datetime(2024, 3, 5, 2)

    def e(name: str, who: str, sec: int, uid: int, **props: Any) -> dict[str, Any]:
        return {
            "event": name, "distinct_id": who, "timestamp": iso(t + timedelta(seconds=sec)),
            "uuid": f"00000000-0000-4000-8000-{uid:012d}", "properties": props,
        }  # fmt: skip

    ds = small(
        [
            e("S", "p", 0, 5), e("B", "p", 1, 9), e("A", "p", 1, 8),  # tie: uuid ...8 first
            e("S", "q", 0, 1), e("A", "q", 1, 2), e("B", "q", 2, 3, skip=True),
            e("S", "q", 5, 4),  # a second start: only the first one anchors
            e("X", "r", 0, 6),  # no start
        ]
    )  # fmt: skip
    day = DateRange(date(2024, 3, 5), date(2024, 3, 5))
    got = both(ds, paths, PathsQuery(day, start_event="S", steps=3))
    # q's second S is a fourth event: out of the 3 steps
    assert {(x.step, x.source, x.target): x.persons for x in got.edges} == {
        (0, "S", "A"): 2, (1, "A", "B"): 2,
    }  # fmt: skip
    unset = (Filter(prop("skip"), "is_not_set"),)
    filtered = both(ds, paths, PathsQuery(day, start_event="S", filters=unset))
    assert {(x.step, x.event): x.persons for x in filtered.nodes} == {
        (0, "S"): 2, (1, "A"): 2, (2, "B"): 1, (2, "S"): 1,
    }  # fmt: skip
    top = both(ds, paths, PathsQuery(day, start_event="S", filters=unset, limit=1))
    assert [(x.step, x.source, x.target) for x in top.edges] == [(0, "S", "A"), (1, "A", "B")]
    back = both(ds, paths, PathsQuery(day, end_event="B", steps=2))
    assert {(x.step, x.source, x.target): x.persons for x in back.edges} == {
        (-1, "A", "B"): 2,  # p's A ties with B and has the smaller uuid: it comes first
    }  # fmt: skip
    with pytest.raises(InvalidQuery, match="filtered out"):
        PathsQuery(day, "S", exclude_events=("S",))
    with pytest.raises(InvalidQuery, match="steps"):
        PathsQuery(day, "S", steps=1)


def test_paths_order_events_at_one_instant_by_uuid_text(small: Any) -> None:
    """Events at the same instant follow their uuids as text, also across the top bit and in
    every hex digit (DuckDB sorts the uuid values themselves)."""
    t = iso(datetime(2024, 3, 5, 2))
    uids = ["7fffffff-ffff-4fff-bfff-ffffffffffff", "80000000-0000-4000-8000-000000000000",
            "00000000-0000-4000-8000-00000000000a", "ffffffff-0000-4000-8000-000000000000",
            "00000000-0000-4000-8000-000000000009", "0000000a-0000-4000-8000-000000000000"]  # fmt: skip
    raws = [
        {"event": f"E{i}", "distinct_id": "p", "timestamp": t, "uuid": u, "properties": {}}
        for i, u in enumerate(uids)
    ]
    ds = small(raws)
    day = DateRange(date(2024, 3, 5), date(2024, 3, 5))
    got = both(ds, paths, PathsQuery(day, steps=6))
    order = [f"E{uids.index(u)}" for u in sorted(uids)]
    assert [(x.step, x.event) for x in got.nodes] == list(enumerate(order))


@pytest.mark.parametrize("slack", [0, 3, 30])
def test_quick_paths_equal_the_window_query(
    journeys: Dataset, monkeypatch: pytest.MonkeyPatch, slack: int
) -> None:
    """DuckDB's paths read off each person's smallest keys (and the window query for the persons
    those do not decide) count what the window query over every event does, whatever the
    slack: with none most persons are left to the window query, with much almost none."""
    module = sys.modules["yunying.analytics.paths"]
    dr = DateRange(START + timedelta(days=2), END)
    queries = [
        PathsQuery(dr, start_event="sign_up", steps=4),
        PathsQuery(dr, end_event="purchase_membership", steps=3),
        PathsQuery(dr, "app_install", "export_video", steps=5),
        PathsQuery(dr, steps=6, exclude_events=("edit_video",)),
        PathsQuery(dr, start_event="edit_video", steps=2, filters=(Filter(col("os"), "neq", "ios"),)),
        PathsQuery(dr, "sign_up", "no_such_event", steps=3),
    ]  # fmt: skip
    undecided, decided = [], []
    store, pid = journeys.duck, journeys.project_id
    for q in queries:
        monkeypatch.setattr(module, "SLACK", slack)
        names = sorted(str(r[0]) for r in module.run(store, module.events_sql(store, pid, q)))
        names += ["no_such_event"]
        counting, _ = module.quick_sql(store, pid, q, names)
        rows = module.run(store, counting)
        undecided.append(sum(int(r[3]) for r in rows if r[0] is None))
        if q.end_event == "no_such_event":
            assert module._quick(store, pid, q) == [] and paths(store, pid, q).nodes == ()
            continue
        decided.append(sum(int(r[3]) for r in rows if r[0] is not None and r[2] is None))
        quick = paths(store, pid, q)
        monkeypatch.setattr(module, "_quick", lambda *a: None)
        window = paths(store, pid, q)
        monkeypatch.undo()
        assert quick == window
        assert quick.nodes
    assert min(decided) > 0  # persons counted from their keys
    assert slack > 0 or min(undecided) > 0  # and persons left to the window query
