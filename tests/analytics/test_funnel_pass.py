"""The numpy per-person pass of ordered funnels (yunying.analytics.funnel_pass) against a
plain-Python chain walk, and through funnel() against the reference chains on both engines."""

from __future__ import annotations

import json
import random
import statistics
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import DAYS, START, TZ, Dataset, both
from yunying.analytics import (
    DateRange,
    Filter,
    FunnelExclusion,
    FunnelQuery,
    FunnelStep,
    col,
    funnel,
    funnels,
    prop,
)
from yunying.analytics import funnel_pass as fp
from yunying.analytics.funnels import _uses_pass
from yunying.analytics.metrics import _Scoped

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))


def named(name: str) -> ref.Match:
    return lambda e: bool(e["event"] == name)


def walk(events: list[tuple[int, int]], steps: int, window: int) -> tuple[int, list[int]]:
    """One person's (time, step) events, steps from 1: from every start, take at each step the
    earliest event of that step not before the previous one; keep the furthest chain inside the
    window, then the earliest start. Returns (level, times with -1 beyond the level)."""
    best: tuple[int, list[int]] = (0, [-1] * steps)
    for t0, s in sorted(events):
        if s != 1:
            continue
        chain = [t0]
        for k in range(2, steps + 1):
            later = [t for t, sk in events if sk == k and t >= chain[-1]]
            if not later or min(later) > t0 + window:
                break
            chain.append(min(later))
        if len(chain) > best[0]:
            best = (len(chain), chain + [-1] * (steps - len(chain)))
    return best


def random_people(rng: random.Random, persons: int, steps: int) -> list[list[tuple[int, int]]]:
    people = []
    for _ in range(persons):
        n = rng.choice([1, 1, 2, 3, 5, 8])
        # coarse times so that ties (same instant, different steps) happen often
        events = [(rng.randrange(-40, 60) * 1000, rng.randint(1, steps)) for _ in range(n)]
        if rng.random() < 0.3:  # several starts
            events += [(rng.randrange(-40, 60) * 1000, 1) for _ in range(rng.randint(1, 3))]
        rng.shuffle(events)  # the engine's list order is arbitrary
        people.append(events)
    return people


def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of about 500 values, worked on by threads: persons cut across ranges too."""
    monkeypatch.setattr(fp, "PARALLEL_FROM", 1)
    monkeypatch.setattr(fp, "CHUNK", 500)


def packed(people: list[list[tuple[int, int]]], steps: int) -> tuple[Any, Any]:
    m = fp.multiplier(steps)
    values = [t * m + s for events in people for t, s in events]
    offsets = np.cumsum([0] + [len(e) for e in people]).astype(np.int64)
    return offsets, np.array(values, dtype=np.int64)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_chains_equal_the_plain_walk(steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(steps)
    people = random_people(rng, 3000, steps)
    window = 25_000
    offsets, values = packed(people, steps)
    want = [walk(e, steps, window) for e in people]
    small_ranges(monkeypatch)
    for threads in (1, 3):
        level, times = fp.chains(offsets, values, steps, window, threads=threads)
        assert level.tolist() == [w[0] for w in want], threads
        for k in range(steps):
            assert times[k].tolist() == [w[1][k] for w in want], (threads, k)


def strict_walk(events: list[tuple[int, int]], steps: int, window: int) -> tuple[int, list[int]]:
    """One person's events (time, step; 0 for other events) in the person's order: from every
    start, the run of events right after it matching steps 2, 3, ... inside the window; the
    furthest, then earliest. Returns (level, times with -1 beyond the level)."""
    best: tuple[int, list[int]] = (0, [-1] * steps)
    for i, (t0, s) in enumerate(events):
        if s != 1:
            continue
        chain = [t0]
        for t, sk in events[i + 1 : i + steps]:
            if sk != len(chain) + 1 or t > t0 + window:
                break
            chain.append(t)
        if len(chain) > best[0]:
            best = (len(chain), chain + [-1] * (steps - len(chain)))
    return best


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_strict_chains_equal_the_plain_walk(steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    small_ranges(monkeypatch)
    rng = random.Random(100 + steps)
    people = random_people(rng, 3000, steps)
    for events in people:  # other events (step 0) too, distinct times: no ties
        events += [(rng.randrange(-40, 60) * 1000, 0) for _ in range(rng.randint(0, 4))]
        events[:] = [(t * 16 + i, s) for i, (t, s) in enumerate(events)]
        events.sort()
    people += [[(k * 16_000, k + 1) for k in range(steps)] for _ in range(5)]  # straight runs
    window = 25_000 * 16
    want = [strict_walk(e, steps, window) for e in people]
    for events in people[::2]:  # lists in any order: the pass sorts those that need it
        rng.shuffle(events)
    offsets, values = packed(people, steps)
    for threads in (1, 3):
        got = fp.strict_chains(offsets, values, steps, window, threads=threads)
        assert got is not None and got[2] == []
        assert got[0].tolist() == [w[0] for w in want], threads
        for k in range(steps):
            assert got[1][k].tolist() == [w[1][k] for w in want], (threads, k)
    assert max(w[0] for w in want) == steps  # the data reach the last step
    # every event with a code (its value's number): the chain's events give theirs
    code_of = [{t: rng.randrange(8) for t, _ in events} for events in people]
    coded = [
        [(t << 3 | c[t], s) for t, s in events] for events, c in zip(people, code_of, strict=True)
    ]
    got = fp.strict_chains(*packed(coded, steps), steps, window, code_bits=3, threads=3)
    assert got is not None and got[0].tolist() == [w[0] for w in want]
    for k in range(steps):
        assert got[2][k].tolist() == [
            c[w[1][k]] if w[1][k] != -1 else -1 for w, c in zip(want, code_of, strict=True)
        ], k


def test_sort_within_sorts_each_persons_values_only() -> None:
    rng = random.Random(5)
    lists = [[rng.randrange(-50, 50) for _ in range(rng.randint(1, 6))] for _ in range(2000)]
    lists += [[], [3, 1]]  # an empty list before the last one
    offsets = np.cumsum([0] + [len(v) for v in lists]).astype(np.int64)
    values = np.array([x for v in lists for x in v], np.int64)
    got, near = fp.sort_within(offsets, values, bits=2)
    want = [x for v in lists for x in sorted(v)]
    assert got.tolist() == want
    # positions whose next value is the same person's and less than 2**2 above
    ends = set((offsets[1:] - 1).tolist())
    assert near.tolist() == [
        i for i in range(len(want) - 1) if i not in ends and want[i + 1] - want[i] < 4
    ]
    assert len(near) > 100
    ordered = np.sort(values)  # already sorted lists come back as they are
    assert fp.sort_within(offsets, ordered)[0] is ordered


def test_strict_chains_refuse_ties_next_to_a_step_unless_exact() -> None:
    # person 2 has a step and another event at one instant: sorted by value, the step may not
    # be where the person's order (by uuid) puts it
    people = [[(10, 1), (20, 2)], [(10, 0), (10, 0), (20, 1)], [(5, 0), (30, 1), (30, 2)]]
    offsets, values = packed(people, 2)
    assert fp.strict_chains(offsets, values, 2, 100) is None
    assert fp.strict_chains(offsets[:3], values[: offsets[2]], 2, 100) is not None  # 0-0 tie
    assert fp.strict_chains(*packed([[(30, 2), (5, 0), (30, 1)]], 2), 2, 100) is None  # unsorted
    # with codes between the time and the step, an instant is still an instant
    tie = [[(30 << 3 | 5, 1), (30 << 3 | 2, 2)]]
    assert fp.strict_chains(*packed(tie, 2), 2, 100, code_bits=3) is None
    # in the exact order the caller vouches for, B right after A counts
    got = fp.strict_chains(offsets, values, 2, 100, exact=True)
    assert got is not None and got[0].tolist() == [2, 1, 2]
    reordered = np.r_[values[:-2], values[-1], values[-2]]  # B before A at the same instant
    got = fp.strict_chains(offsets, reordered, 2, 100, exact=True)
    assert got is not None and got[0].tolist() == [2, 1, 1]


def test_coded_chains_carry_the_chosen_starts_code(monkeypatch: pytest.MonkeyPatch) -> None:
    small_ranges(monkeypatch)
    rng = random.Random(11)
    people = random_people(rng, 3000, 3)
    coded: list[list[tuple[int, int]]] = []
    want_codes = []
    for events in people:  # distinct instants for starts; every start gets a code 1..5
        events[:] = [(t * 16 + i, s) for i, (t, s) in enumerate(events)]
        codes = {t: rng.randint(1, 5) for t, s in events if s == 1}
        coded.append([((t << 3 | codes.get(t, 0)), s) for t, s in events])
        level, times = walk(events, 3, 25_000 * 16)
        want_codes.append(codes[times[0]] if level else -1)
    offsets, values = packed(coded, 3)
    for threads in (1, 3):
        got = fp.coded_chains(offsets, values, 3, 25_000 * 16, code_bits=3, threads=threads)
        assert got is not None
        assert got[2].tolist() == want_codes
        assert got[0].tolist() == fp.chains(*packed(people, 3), 3, 25_000 * 16)[0].tolist()
    assert len(set(want_codes)) == 6
    # two starts of one person at one instant with different codes: the uuid would decide
    tie = [[((10 << 3 | 1), 1), ((10 << 3 | 2), 1), ((20 << 3), 2)]]
    assert fp.coded_chains(*packed(tie, 2), 2, 100, code_bits=3) is None
    same = [[((10 << 3 | 2), 1), ((10 << 3 | 2), 1), ((20 << 3), 2)]]
    got = fp.coded_chains(*packed(same, 2), 2, 100, code_bits=3)
    assert got is not None and got[2].tolist() == [2]


def unordered_walk(events: list[tuple[int, int]], mult: list[int], window: int, end: int) -> int:
    """One person's unordered level: the best over anchors (any event before ``end``) of the
    classes' events in [t0, t0 + window], each class counted up to its multiplicity."""
    best = 0
    for t0, _ in events:
        if t0 >= end:
            continue
        inside = [c for t, c in events if t0 <= t <= t0 + window]
        best = max(best, sum(min(inside.count(c + 1), m) for c, m in enumerate(mult)))
    return best


@pytest.mark.parametrize("mult", [[1], [1, 1, 1], [2, 1], [3, 1, 2, 1]])
def test_unordered_levels_equal_the_plain_walk(
    mult: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    small_ranges(monkeypatch)
    rng = random.Random(len(mult) * 10 + mult[0])
    people = random_people(rng, 3000, len(mult))
    window, end = 25_000, 40_000
    offsets, values = packed(people, len(mult))
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):  # sorted per person, as engines do
        values[a:b].sort()
    want = [unordered_walk(e, mult, window, end) for e in people]
    for threads in (1, 3):
        assert fp.unordered_levels(offsets, values, mult, window, end, threads).tolist() == want
    # a window so long that person * span does not fit: the binary search per position
    huge = 1 << 58
    assert fp.unordered_levels(offsets, values, mult, huge, end).tolist() == [
        unordered_walk(e, mult, huge, end) for e in people
    ]


def test_summary_is_counts_then_medians_and_means() -> None:
    level = np.array([0, 1, 2, 3, 3], dtype=np.int64)
    times = [
        np.array([-1, 10, 10, 0, 5], dtype=np.int64),
        np.array([-1, -1, 14, 1, 9], dtype=np.int64),
        np.array([-1, -1, -1, 2, 20], dtype=np.int64),
    ]
    row = fp.summary(level, times, 3)
    assert row[:3] == [4, 3, 2]
    # step 2 from step 1: 4, 1, 4; from the start the same
    assert row[3:6] == [4.0, 3.0, 4.0]
    # step 3 from step 2: 1, 11; from the start 2, 15
    assert row[6:9] == [6.0, 6.0, 8.5]
    assert fp.summary(np.zeros(2, np.int64), [np.full(2, -1, np.int64)] * 2, 2) == [
        0, 0, None, None, None,
    ]  # fmt: skip


@pytest.mark.parametrize("groups", [7, 300])  # a partition per group; one sort for all
def test_grouped_summary_is_the_summary_of_each_group(groups: int) -> None:
    rng = np.random.default_rng(groups)
    persons, steps = 20_000, 4
    level = rng.integers(0, steps + 1, persons)
    t0 = rng.integers(0, 10**9, persons)
    times = [np.where(level > 0, t0, -1)]
    for k in range(1, steps):
        prev = times[-1]
        times.append(np.where(level > k, prev + rng.integers(0, 10**6, persons), -1))
    group = rng.integers(-1, groups, persons)  # -1: in no group
    rows = fp.grouped_summary(level, times, steps, group, groups + 1)
    for g in range(groups + 1):
        mine = group == g
        want = fp.summary(level[mine], [t[mine] for t in times], steps)
        assert rows[g] == pytest.approx(want, nan_ok=True), g
    assert rows[groups][:steps] == [0] * steps  # an empty group


def test_pass_is_used_for_distinct_named_steps_without_exclusions(journeys: Dataset) -> None:
    abc = (FunnelStep("A"), FunnelStep("B"), FunnelStep("C"))
    store = journeys.duck
    assert _uses_pass(FunnelQuery(abc, RANGE), store)
    assert _uses_pass(FunnelQuery(abc, RANGE), journeys.chdb)
    assert _uses_pass(FunnelQuery(abc, RANGE, order="strict"), store)
    strict_by = FunnelQuery(abc, RANGE, order="strict", breakdown=col("channel"))
    assert _uses_pass(strict_by, store)  # the values' numbers in the lists
    assert not _uses_pass(FunnelQuery(abc[:2] + abc[:1], RANGE, order="strict"), store)
    assert _uses_pass(FunnelQuery(abc, RANGE, order="unordered"), store)
    aba = (FunnelStep("A"), FunnelStep("B"), FunnelStep("A"))  # A twice: one class, twice
    assert _uses_pass(FunnelQuery(aba, RANGE, order="unordered"), store)
    split = (FunnelStep("A"), FunnelStep("A", (Filter(prop("plan"), "eq", "vip"),)))
    assert not _uses_pass(FunnelQuery(split, RANGE, order="unordered"), store)
    by = FunnelQuery(abc, RANGE, order="unordered", breakdown=col("channel"))
    assert not _uses_pass(by, store)
    repeated = (FunnelStep("A"), FunnelStep("B"), FunnelStep("A"))
    assert not _uses_pass(FunnelQuery(repeated, RANGE), store)
    assert not _uses_pass(FunnelQuery((FunnelStep("A"), FunnelStep(None)), RANGE), store)
    excluded = FunnelQuery(abc, RANGE, exclusions=(FunnelExclusion("X", from_step=0, to_step=1),))
    assert not _uses_pass(excluded, store)
    assert _uses_pass(FunnelQuery(abc, RANGE, breakdown=col("channel")), store)
    last = FunnelQuery(abc, RANGE, breakdown=col("channel"), breakdown_attribution="last_touch")
    assert not _uses_pass(last, store)

    class Rows:  # a source without Arrow keeps the SQL
        dialect = store.dialect
        scoped = store.scoped
        query = store.query

    assert not _uses_pass(FunnelQuery(abc, RANGE), Rows())
    assert _uses_pass(FunnelQuery(abc, RANGE), _Scoped(store))  # the metrics' wrapper passes on


@pytest.mark.parametrize(
    "names", [["edit_video", "export_video", "purchase_membership"], ["app_install", "edit_video"]]
)
def test_funnel_by_the_pass_equals_the_reference_chains(
    journeys: Dataset, names: list[str]
) -> None:
    # edit_video repeats: many persons have several starts
    q = FunnelQuery(tuple(FunnelStep(n) for n in names), RANGE, window=2, window_unit="day")
    result = both(journeys, funnel, q)
    lo, hi = ref.bounds(RANGE.date_from, RANGE.date_to, TZ)
    matches = [named(n) for n in names]
    chains = list(ref.funnel_chains(journeys.events, matches, lo, hi, timedelta(days=2)).values())
    assert result.counts == ref.step_counts(dict(enumerate(chains)), len(names))
    assert result.counts[-1] > 0
    for k in range(1, len(names)):
        reached = [c for c in chains if len(c) > k]
        gaps = [(c[k]["timestamp"] - c[k - 1]["timestamp"]).total_seconds() for c in reached]
        firsts = [(c[k]["timestamp"] - c[0]["timestamp"]).total_seconds() for c in reached]
        step = result.steps[k]
        assert step.median_seconds_from_previous == pytest.approx(statistics.median(gaps))
        assert step.average_seconds_from_previous == pytest.approx(statistics.fmean(gaps))
        assert step.median_seconds_from_first == pytest.approx(statistics.median(firsts))


@pytest.mark.parametrize("coded", [True, False])
@pytest.mark.parametrize("by", ["channel", "step"])
def test_first_touch_breakdown_by_the_pass_equals_the_reference(
    journeys: Dataset,
    by: str,
    coded: bool,
    monkeypatch: pytest.MonkeyPatch,
    coded_outcomes: list[bool],
) -> None:
    if not coded:  # the lists of (time, uuid, value) per start
        monkeypatch.setattr(funnels, "CODED_VALUES", -1)
    names = ["edit_video", "export_video", "purchase_membership"]  # several starts per person
    breakdown = col("channel") if by == "channel" else prop("step")
    q = FunnelQuery(tuple(FunnelStep(n) for n in names), RANGE, window=2, breakdown=breakdown)
    got = both(journeys, funnel, q)
    lo, hi = ref.bounds(RANGE.date_from, RANGE.date_to, TZ)
    chains = ref.funnel_chains(journeys.events, [named(n) for n in names], lo, hi, timedelta(2))

    def value(start: ref.Event) -> str | None:
        if by == "channel":
            return start["channel"]
        v = json.loads(start["properties"]).get("step")
        return None if v is None else str(v)

    want: dict[str | None, list[int]] = {}
    for chain in chains.values():
        row = want.setdefault(value(chain[0]), [0] * len(names))
        for k in range(len(chain)):
            row[k] += 1
    assert {b.value: [s.count for s in b.steps] for b in got.breakdowns} == want
    assert len(want) > 3
    if not coded:
        assert coded_outcomes == []
    elif by == "channel":  # one value per person: never a tie between values
        assert coded_outcomes == [True, True]  # DuckDB and ClickHouse


# -- rows in person order: person_runs ---------------------------------------------------------------


def grouped(offsets: Any, values: Any, keys: list[bytes]) -> dict[bytes, list[int]]:
    """Each list's values, sorted, under the key of its rows (every list one key)."""
    out: dict[bytes, list[int]] = {}
    for i in range(len(offsets) - 1):
        out[keys[i]] = sorted(int(v) for v in values[offsets[i] : offsets[i + 1]])
    return out


def id_keys(rng: random.Random, persons: int) -> list[bytes]:
    """Sorted 16-byte ids; some pairs share their first 8 bytes, to need the second half."""
    keys = {rng.getrandbits(128).to_bytes(16, "big") for _ in range(persons)}
    twins = {k[:8] + rng.getrandbits(64).to_bytes(8, "big") for k in list(keys)[: persons // 5]}
    return sorted(keys | twins)


LAYOUTS = ("person order", "two months", "appended rows", "shuffled chunks", "shuffled")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(3))
def test_person_runs_give_each_person_one_list_of_its_values(layout: str, seed: int) -> None:
    rng = random.Random(seed)
    keys = id_keys(rng, 200)
    rows = [(k, rng.randrange(1 << 40)) for k in keys for _ in range(rng.randrange(1, 6))]
    if layout == "two months":  # each month in person order
        half = [r for r in rows if r[1] % 2], [r for r in rows if not r[1] % 2]
        rows = half[0] + half[1]
    elif layout == "appended rows":
        tail = [(rng.choice(keys), rng.randrange(1 << 40)) for _ in range(40)]
        rows = rows + tail
    elif layout == "shuffled chunks":
        chunks = [rows[i : i + 7] for i in range(0, len(rows), 7)]
        rng.shuffle(chunks)
        rows = [r for c in chunks for r in c]
    elif layout == "shuffled":
        rng.shuffle(rows)
    want: dict[bytes, list[int]] = {}
    for k, v in rows:
        want.setdefault(k, []).append(v)
    ids = pa.array([k for k, _ in rows], pa.binary(16))
    for column in (ids, pa.ExtensionArray.from_storage(pa.uuid(), ids), pa.chunked_array([ids])):
        offsets, values, heads = fp.person_runs(column, np.array([v for _, v in rows], np.int64))
        assert [rows[h][0] for h in heads] == _keys_of(offsets, values, rows)  # each list's id
        assert offsets[0] == 0 and offsets[-1] == len(rows) == len(values)
        assert np.all(np.diff(offsets) > 0)
        firsts = [rows_key for rows_key in _keys_of(offsets, values, rows)]
        assert len(set(firsts)) == len(firsts) == len(want)  # one list per person
        assert grouped(offsets, values, firsts) == {k: sorted(v) for k, v in want.items()}
    if layout == "person order":  # runs in ascending order: the rows stay where they are
        assert values.tolist() == [v for _, v in rows]


def _keys_of(offsets: Any, values: Any, rows: list[tuple[bytes, int]]) -> list[bytes]:
    """The key of each list, by its first value (values are unique per key here)."""
    owner = {v: k for k, v in rows}
    return [owner[int(values[offsets[i]])] for i in range(len(offsets) - 1)]


def test_person_runs_of_no_rows_and_bad_keys() -> None:
    offsets, values, heads = fp.person_runs(pa.array([], pa.binary(16)), np.zeros(0, np.int64))
    assert offsets.tolist() == [0] and not len(values) and not len(heads)
    with pytest.raises(TypeError, match="16-byte"):
        fp.person_runs(pa.array(["a", "b"]), np.zeros(2, np.int64))
    sliced = pa.array([b"\x01" * 16, b"\x02" * 16, b"\x02" * 16, b"\x01" * 16], pa.binary(16))[1:]
    offsets, values, heads = fp.person_runs(sliced, np.array([5, 6, 7]))
    assert offsets.tolist() == [0, 1, 3] and values.tolist() == [7, 5, 6]
    assert heads.tolist() == [2, 0]
