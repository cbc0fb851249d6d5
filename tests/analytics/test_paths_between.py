"""Paths from a start event to an end event against a plain-Python reference written from
docs/analytics.md ("Paths"), and across engines."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import DAYS, START, TZ, Dataset, both, iso
from yunying.analytics import DateRange, InvalidQuery, PathsQuery, paths

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))
LO, HI = ref.bounds(RANGE.date_from, RANGE.date_to, TZ)


def between(
    events: list[ref.Event], lo: datetime, hi: datetime, start: str, end: str, steps: int,
    keep: ref.Match = lambda e: True,
) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str, str], int]]:  # fmt: skip
    """Per person: the first start event, then the first end event after it; the events from
    the one to the other (both included) when there are at most ``steps`` of them."""
    nodes: dict[tuple[int, str], int] = defaultdict(int)
    edges: dict[tuple[int, str, str], int] = defaultdict(int)
    for evs in ref.by_person(events).values():
        seq = sorted(
            (e for e in evs if keep(e) and lo <= e["timestamp"] < hi),
            key=lambda e: (e["timestamp"], e["uuid"]),
        )
        starts = [i for i, e in enumerate(seq) if e["event"] == start]
        if not starts:
            continue
        i0 = starts[0]
        ends = [i for i in range(i0 + 1, len(seq)) if seq[i]["event"] == end]
        if not ends or ends[0] - i0 > steps - 1:
            continue
        path = [(k - i0, seq[k]["event"]) for k in range(i0, ends[0] + 1)]
        for k, name in path:
            nodes[(k, name)] += 1
        for (k, a), (_, b) in zip(path, path[1:], strict=False):
            edges[(k, a, b)] += 1
    return dict(nodes), dict(edges)


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [("app_install", "export_video", 6), ("edit_video", "edit_video", 4), ("sign_up", "purchase_membership", 20)],
)  # fmt: skip
def test_paths_between_equal_reference(journeys: Dataset, start: str, end: str, steps: int) -> None:
    exclude = ("$identify",)
    q = PathsQuery(RANGE, start, end, steps, exclude_events=exclude, limit=1000)
    got = both(journeys, paths, q)
    nodes, edges = between(
        journeys.events, LO, HI, start, end, steps, lambda e: e["event"] not in exclude
    )
    assert {(n.step, n.event): n.persons for n in got.nodes} == nodes
    assert {(e.step, e.source, e.target): e.persons for e in got.edges} == edges
    assert len(edges) > 3
    # every counted path ends with the end event
    finals = defaultdict(int)
    for (k, name), persons in nodes.items():
        if name == end and k > 0:
            finals[k] += persons
    assert sum(finals.values()) >= nodes[(0, start)]


T0 = datetime(2024, 3, 5, 2)


def e(name: str, who: str, sec: int, uid: int) -> dict[str, Any]:
    return {
        "event": name, "distinct_id": who, "timestamp": iso(T0 + timedelta(seconds=sec)),
        "uuid": f"00000000-0000-4000-8000-{uid:012d}", "properties": {},
    }  # fmt: skip


def test_paths_between_hand_cases(small: Any) -> None:
    ds = small(
        [
            # p: S A E B E -> S A E (the first E after S ends the path)
            e("S", "p", 0, 1), e("A", "p", 1, 2), e("E", "p", 2, 3), e("B", "p", 3, 4),
            e("E", "p", 4, 5),
            # q: E before S does not count; S E at the same instant, E's uuid first: E sorts
            # before S, so the path needs the later E
            e("E", "q", 0, 6), e("E", "q", 10, 7), e("S", "q", 10, 8), e("C", "q", 11, 9),
            e("E", "q", 12, 10),
            # r: S then E too far (4 events later with steps=4 -> 5 events): not counted
            e("S", "r", 0, 11), e("A", "r", 1, 12), e("A", "r", 2, 13), e("A", "r", 3, 14),
            e("E", "r", 4, 15),
            # s: a start without an end
            e("S", "s", 0, 16), e("A", "s", 1, 17),
        ]
    )  # fmt: skip
    day = DateRange(date(2024, 3, 5), date(2024, 3, 5))
    got = both(ds, paths, PathsQuery(day, start_event="S", end_event="E", steps=4))
    assert {(x.step, x.event): x.persons for x in got.nodes} == {
        (0, "S"): 2, (1, "A"): 1, (1, "C"): 1, (2, "E"): 2,
    }  # fmt: skip
    assert {(x.step, x.source, x.target): x.persons for x in got.edges} == {
        (0, "S", "A"): 1, (0, "S", "C"): 1, (1, "A", "E"): 1, (1, "C", "E"): 1,
    }  # fmt: skip
    longer = both(ds, paths, PathsQuery(day, start_event="S", end_event="E", steps=5))
    assert {(x.step, x.event): x.persons for x in longer.nodes}[(0, "S")] == 3
    with pytest.raises(InvalidQuery, match="filtered out"):
        PathsQuery(day, "S", "E", exclude_events=("E",))
