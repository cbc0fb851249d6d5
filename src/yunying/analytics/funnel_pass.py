"""Funnels as one pass over per-person step times, in numpy.

The engine does what it is good at: one scan of the step events and one ``GROUP BY`` person that
packs each event as a single integer ``time_us * M + step`` (``M`` a power of two above the step
count) into a list. The chain of docs/analytics.md is then followed for every person at once:
with disjoint steps the chain from a start at ``t0`` takes, for each step k, the earliest step-k
event not before step k-1's, so step k is a minimum over the person's step-k times at or after a
threshold — a segmented minimum (``np.minimum.reduceat``) per step for persons with one start.
Persons with several starts are sorted and walked by binary search from each start, keeping the
furthest chain (then the earliest start, which fixes its times). A first-touch breakdown takes
the value of the chosen start. Unordered funnels sort each person's values and count each
step's events in every anchor's window. Strict funnels read every event of the person (step 0
for events matching no step), sorted, and from each start follow the run of the next events.
Sorting is by numpy, only for the persons whose list the engine did not hand over in order.
Persons are worked on in ranges small enough for every temporary array to stay in the cache.
The same SQL runs on DuckDB and ClickHouse, so both engines give the same answer by
construction.

Used by :func:`yunying.analytics.funnels.funnel` where ``_uses_pass`` says so (named, disjoint
steps, no exclusions; docs/analytics.md "How it runs"), when the source returns Arrow tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol, TypeVar, cast

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from yunying.analytics.common import Source

Ints = NDArray[np.int64]


class ArrowSource(Source, Protocol):
    """A source that can also hand back a query's result as an Arrow table."""

    def query_arrow(self, sql: str) -> pa.Table:
        """Run read-only SQL in :attr:`dialect` and return the result as Arrow."""
        ...


def multiplier(steps: int) -> int:
    """The power of two that leaves room for step numbers 1..steps under the time."""
    return 1 << steps.bit_length()


def fetch(column: pa.ChunkedArray) -> tuple[Ints, Ints]:
    """The packed-lists column as list offsets (one segment per person) and packed values."""
    if not len(column):
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    lists = column.combine_chunks()
    if isinstance(lists, pa.LargeListArray):
        lists = lists.cast(pa.list_(pa.int64()))
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    # a sliced list array's values start at its first offset
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


class Runs(NamedTuple):
    """Per-person lists from rows (:func:`person_runs`)."""

    offsets: Ints  # list i is values[offsets[i]:offsets[i + 1]]
    values: Ints
    heads: Ints  # the row (in the input) of each list's first value: where its key is


def person_runs(keys: pa.Array | pa.ChunkedArray, values: Ints) -> Runs:
    """Rows (person key, value) grouped into per-person lists, as :func:`fetch` gives them (the
    list offsets and the values, each person's values together), with the row of each list's
    key. ``keys`` are 16-byte person ids (``arrow.uuid``). A store kept in person order hands
    the rows over as runs of one person in ascending key order, which is the whole answer when
    no key comes back; otherwise (month blocks, rows appended since, an unordered join) the runs
    are put in key order (numpy's stable sort merges ascending stretches cheaply) and the runs
    of one person joined, their values in run order, so lists need :func:`sort_within` like an
    engine's lists."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(keys, pa.ExtensionArray):
        keys = keys.storage
    if keys.type != pa.binary(16) or keys.null_count:
        raise TypeError(f"person keys must be 16-byte ids without nulls, not {keys.type}")
    n = len(keys)
    if not n:
        return Runs(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    raw = np.frombuffer(keys.buffers()[1], np.uint64)[2 * keys.offset : 2 * (keys.offset + n)]
    a, b = raw[0::2], raw[1::2]
    change = np.empty(n, np.bool_)
    change[0] = True
    np.not_equal(a[1:], a[:-1], out=change[1:])
    change[1:] |= b[1:] != b[:-1]
    starts = np.flatnonzero(change)
    # the ids' byte order is their sort order: compare as big-endian numbers
    hi, lo = a[starts].byteswap(), b[starts].byteswap()
    up = hi[1:] > hi[:-1]
    if up.all() or (up | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1]))).all():
        return Runs(np.append(starts, n), values, starts)  # one run per person: nothing moves
    order = np.argsort(hi, kind="stable")
    ho, lo_ = hi[order], lo[order]
    same = ho[1:] == ho[:-1]
    if (same & (lo_[1:] != lo_[:-1])).any():  # two ids share their first 8 bytes
        order = np.lexsort((lo, hi))
        ho, lo_ = hi[order], lo[order]
        same = ho[1:] == ho[:-1]
    begin = starts[order]
    lengths = np.diff(np.append(starts, n))[order]
    at = np.cumsum(lengths) - lengths  # where each run lands
    # the rows to take, in order: +1 inside a run, a jump to the next run's first row
    rows = np.ones(n, np.int64)
    rows[0] = begin[0]
    rows[at[1:]] = begin[1:] - (begin[:-1] + lengths[:-1]) + 1
    np.cumsum(rows, out=rows)
    first = np.ones(len(order), np.bool_)
    first[1:] = ~(same & (lo_[1:] == lo_[:-1]))
    return Runs(np.append(at[first], n), values[rows], begin[first])


def chains(
    offsets: Ints, packed: Ints, steps: int, window_us: int, threads: int | None = None
) -> tuple[Ints, list[Ints]]:
    """Every person's chosen chain: its level (0 for a person without a start, else 1..steps)
    and the time of each step (µs), -1 where the chain did not reach it within the window."""
    done = _by_ranges(offsets, packed, threads, lambda o, p: _chains(o, p, steps, window_us))
    level, times, _ = _joined(done, steps)
    return level, times


def _joined(done: list[_Done], steps: int) -> tuple[Ints, list[Ints], Ints]:
    """The ranges' levels, step times and codes, end to end (persons in order)."""
    level = np.concatenate([d.level for d in done])
    times = [np.concatenate([d.times[k] for d in done]) for k in range(steps)]
    return level, times, np.concatenate([d.codes for d in done])


def coded_chains(
    offsets: Ints,
    packed: Ints,
    steps: int,
    window_us: int,
    code_bits: int,
    threads: int | None = None,
) -> tuple[Ints, list[Ints], Ints] | None:
    """:func:`chains` from values ``(time << code_bits | code) * M + step`` where each start
    carries a small code (its breakdown value's number), plus each person's chosen start's
    code (-1 without a start). ``None`` when a person has starts with different codes at one
    instant: which one is chosen then depends on uuids, which the values do not hold."""
    done = _by_ranges(
        offsets, packed, threads, lambda o, p: _chains(o, p, steps, window_us, code_bits)
    )
    return None if any(d.tied for d in done) else _joined(done, steps)


def code_levels(
    offsets: Ints,
    packed: Ints,
    steps: int,
    window_us: int,
    code_bits: int,
    threads: int | None = None,
) -> tuple[Ints, Ints]:
    """For each (person, start code) pair, as :func:`coded_chains`' values, the code and the
    furthest level of the chains from the person's starts with that code: funnel trends, where
    the code is the start's period and each period keeps its own chosen chain. The codes must
    not decrease with time (periods), so each pair's starts are neighbours."""

    def work(o: Ints, p: Ints) -> tuple[Ints, Ints]:
        d = _chains(o, p, steps, window_us, code_bits)
        who, code, level = d.starts  # persons with several starts: every start, in time order
        pair_code, pair_level = _pair_levels(who, code, level)
        one = d.level > 0  # persons with one start: one pair each
        one[who] = False
        return np.r_[d.codes[one], pair_code], np.r_[d.level[one], pair_level]

    done = _by_ranges(offsets, packed, threads, work)
    return np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])


#: Below this many values one thread is faster than starting several.
PARALLEL_FROM = 200_000
#: Values per range of persons worked on at once (see :func:`_by_ranges`).
CHUNK = 1 << 17

T = TypeVar("T")


def _by_ranges(
    offsets: Ints, packed: Ints, threads: int | None, work: Callable[[Ints, Ints], T]
) -> list[T]:
    """``work(offsets, packed)`` on ranges of persons of about ``CHUNK`` values each, on
    ``threads`` threads (default one per CPU, at most four): persons are independent and numpy
    releases the GIL. Small ranges keep every temporary array in the CPU cache and out of the
    allocator's fresh pages, which costs more than the arithmetic. Results in person order."""
    threads = threads or min(4, os.cpu_count() or 1)
    persons = len(offsets) - 1
    if len(packed) <= CHUNK:
        return [work(offsets, packed)]
    parts = -(-len(packed) // CHUNK)
    cuts = np.searchsorted(offsets, np.linspace(0, len(packed), parts + 1)[1:-1])
    bounds = [0, *sorted(set(int(c) for c in cuts) - {0, persons}), persons]

    def part(lo: int, hi: int) -> T:
        o = offsets[lo : hi + 1]
        return work(o - o[0], packed[o[0] : o[-1]])

    ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
    if threads < 2 or len(packed) < PARALLEL_FROM:
        return [part(*b) for b in ranges]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda b: part(*b), ranges))


class _Done(NamedTuple):
    """:func:`_chains`' answer for one range of persons."""

    level: Ints
    times: list[Ints]
    codes: Ints  # the chosen start's code per person (-1 without codes or a start)
    tied: bool  # a person has starts with different codes at one instant
    # every start of the persons with several starts: (person, code, level of its chain)
    starts: tuple[Ints, Ints, Ints]


def _chains(offsets: Ints, packed: Ints, steps: int, window_us: int, code_bits: int = 0) -> _Done:
    """:func:`chains`, :func:`coded_chains` and :func:`code_levels` for one range of
    persons."""
    bits = multiplier(steps).bit_length() - 1
    step = (packed & ((1 << bits) - 1)).astype(np.int8)
    # arithmetic shift: floor division, right for times before 1970 too
    ts = packed >> (bits + code_bits)
    lengths = np.diff(offsets)
    persons = len(lengths)
    level = np.zeros(persons, np.int64)
    times = [np.full(persons, -1, np.int64) for _ in range(steps)]
    codes = np.full(persons, -1, np.int64)
    none = np.zeros(0, np.int64)
    if not len(packed):
        return _Done(level, times, codes, False, (none, none, none))
    seg = np.repeat(np.arange(persons, dtype=np.int64), lengths)
    # each step's values in flat (so person) order
    where = [np.flatnonzero(step == k) for k in range(1, steps + 1)]
    starts = np.bincount(seg[where[0]], minlength=persons)
    level += starts > 0
    code = (packed >> bits) & ((1 << code_bits) - 1) if code_bits else None
    if code is not None:
        codes[seg[where[0]]] = code[where[0]]  # right for one start; _multiple sets the others
    one = starts == 1
    if one.any():
        _single(ts, seg, where, one, window_us, level, times)
    many = np.flatnonzero(starts > 1)
    if not len(many):
        return _Done(level, times, codes, False, (none, none, none))
    tied, each = _multiple(offsets, step, ts, many, steps, window_us, level, times, code, codes)
    return _Done(level, times, codes, tied, each)


def _single(
    ts: Ints,
    seg: Ints,
    where: list[Ints],
    one: NDArray[np.bool_],
    window_us: int,
    level: Ints,
    times: list[Ints],
) -> None:
    """Persons with one start: step k is the minimum of their step-k times not before step k-1,
    a segmented minimum over that step's values (already in person order: no sorting)."""
    big = np.iinfo(np.int64).max
    t0 = np.full(len(one), big, np.int64)
    t0[seg[where[0]]] = ts[where[0]]  # persons with several starts are left to _multiple
    prev = np.where(one, t0, big)  # big: no chain to follow
    deadline = np.where(one, t0 + window_us, big)
    times[0][:] = np.where(one, t0, -1)
    for k in range(1, len(where)):
        at = where[k]
        owner, values = seg[at], ts[at]
        keep = values >= prev[owner]
        owner, values = owner[keep], values[keep]
        if not len(owner):
            break
        heads = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        cur = np.full(len(one), big, np.int64)
        cur[owner[heads]] = np.minimum.reduceat(values, heads)
        inside = cur <= deadline
        inside &= cur < big
        level += inside
        times[k][:] = np.where(inside, cur, -1)
        prev = np.where(inside, cur, big)  # past the window: later steps cannot count either


def _multiple(
    offsets: Ints,
    step: NDArray[np.int8],
    ts: Ints,
    persons: Ints,
    steps: int,
    window_us: int,
    level: Ints,
    times: list[Ints],
    code: Ints | None = None,
    codes: Ints | None = None,
) -> tuple[bool, tuple[Ints, Ints, Ints]]:
    """Persons with several starts: sort their values, follow the chain from every start by
    binary search in each step's sorted positions, keep the furthest chain, then the earliest
    start (same start time, same chain). With start codes, set the chosen one's in ``codes``,
    say whether a person has starts with different codes at one instant, and give every
    start's (person, code, level)."""
    lengths = offsets[persons + 1] - offsets[persons]
    pos, owner = _positions(offsets, persons)
    order = np.lexsort((step[pos], ts[pos], owner))
    s_step, s_ts, s_owner = step[pos][order], ts[pos][order], owner[order]
    ends = np.cumsum(lengths)
    where = [np.flatnonzero(s_step == k) for k in range(1, steps + 1)]
    cand = where[0]
    who = s_owner[cand]
    t0 = s_ts[cand]
    cur = cand
    alive = np.ones(len(cand), bool)
    lv = np.ones(len(cand), np.int64)
    chain = [t0] + [np.full(len(cand), -1, np.int64) for _ in range(1, steps)]
    for k in range(1, steps):
        at = where[k]
        j = np.searchsorted(at, cur, side="right")
        nxt = at[np.minimum(j, len(at) - 1)] if len(at) else np.zeros_like(j)
        found = alive & (j < len(at)) & (nxt < ends[who])
        e = s_ts[nxt] if len(at) else np.zeros_like(j)
        inside = found & (e <= t0 + window_us)
        lv += inside
        chain[k] = np.where(inside, e, -1)
        alive = inside
        cur = np.where(inside, nxt, cur)
    # furthest, then earliest start: sort candidates by (owner, -level, t0), take the first
    pick = np.lexsort((t0, -lv, who))
    first = pick[np.r_[True, who[pick][1:] != who[pick][:-1]]]
    target = persons[who[first]]
    level[target] = lv[first]
    for k in range(steps):
        times[k][target] = chain[k][first]
    if code is None or codes is None:
        none = np.zeros(0, np.int64)
        return False, (none, none, none)
    c = code[pos][order][cand]  # starts in (person, time) order
    codes[target] = c[first]
    same = (who[1:] == who[:-1]) & (t0[1:] == t0[:-1])
    return bool((same & (c[1:] != c[:-1])).any()), (persons[who], c, lv)


def strict_chains(
    offsets: Ints,
    packed: Ints,
    steps: int,
    window_us: int,
    exact: bool = False,
    threads: int | None = None,
    code_bits: int = 0,
) -> tuple[Ints, list[Ints], list[Ints]] | None:
    """Strict funnels: as :func:`chains`, from lists of *every* event of each person (``time_us
    * M + step``, 0 for an event matching no step) in the person's order. A start's chain is the
    run of events right after it matching steps 2, 3, ... inside the window; the person keeps
    the furthest, then earliest. ``None`` when two events of one person share an instant and
    one of them is a step: then the order of the lists (by step number within an instant) may
    not be the person's order (by uuid), and the caller must send lists in that order, saying
    so by ``exact``. With ``code_bits``, values are ``(time << code_bits | code) * M + step``
    and the third list holds, per step, the code of each person's chain event (-1 beyond its
    level); without, it is empty."""
    done = _by_ranges(
        offsets,
        packed,
        threads,
        lambda o, p: _strict(o, p, steps, window_us, exact, code_bits),
    )
    if any(d is None for d in done):
        return None
    parts = cast(list[_StrictDone], done)
    level = np.concatenate([d.level for d in parts])
    times = [np.concatenate([d.times[k] for d in parts]) for k in range(steps)]
    codes = [np.concatenate([d.codes[k] for d in parts]) for k in range(len(parts[0].codes))]
    return level, times, codes


def strict_code_levels(
    offsets: Ints,
    packed: Ints,
    steps: int,
    window_us: int,
    code_bits: int,
    exact: bool = False,
    threads: int | None = None,
) -> tuple[Ints, Ints] | None:
    """:func:`code_levels` for strict funnels (values as :func:`strict_chains`' with codes):
    per (person, start code) pair the code and the furthest level of those starts' chains. The
    codes must not decrease with time (periods), so each pair's starts are neighbours."""
    done = _by_ranges(
        offsets,
        packed,
        threads,
        lambda o, p: _strict(o, p, steps, window_us, exact, code_bits, pairs=True),
    )
    if any(d is None for d in done):
        return None
    parts = cast(list[_StrictDone], done)
    return (
        np.concatenate([d.pairs[0] for d in parts]),
        np.concatenate([d.pairs[1] for d in parts]),
    )


class _StrictDone(NamedTuple):
    """:func:`_strict`'s answer for one range of persons."""

    level: Ints
    times: list[Ints]
    codes: list[Ints]  # per step, the code of each person's chain event (with code bits)
    pairs: tuple[Ints, Ints]  # per (person, start code): the code, the furthest level


def sort_within(offsets: Ints, packed: Ints, bits: int = 0) -> tuple[Ints, Ints]:
    """Each person's values in ascending order, and the positions ``i`` where value ``i + 1``
    belongs to the same person and is less than ``2**bits`` above (candidates for events at one
    instant, the step below the time). Engines mostly hand the lists over sorted already (events
    are written about in time order and grouping keeps it), so only the persons whose list is
    not are sorted, here: far cheaper than the engine sorting every list."""
    if len(packed) < 2:
        return packed, np.zeros(0, np.int64)
    gap = np.diff(packed)
    joins = offsets[1:-1] - 1  # the last value of one person, the first of the next
    gap[joins[joins >= 0]] = 1 << bits
    near = np.flatnonzero(gap < 1 << bits)
    down = gap[near] < 0
    if not down.any():
        return packed, near
    whose = np.searchsorted(offsets, near, side="right") - 1
    persons = np.unique(whose[down])
    pos, owner = _positions(offsets, persons)
    values = packed[pos]
    values = values[np.lexsort((values, owner))]
    out = packed.copy()
    out[pos] = values
    inside = np.flatnonzero(owner[1:] == owner[:-1])
    again = pos[inside[values[inside + 1] - values[inside] < 1 << bits]]
    return out, np.union1d(near[~np.isin(whose, persons)], again)


def _positions(offsets: Ints, persons: Ints) -> tuple[Ints, Ints]:
    """The positions of the given persons' values, and for each the index of its person in
    ``persons``."""
    lengths = offsets[persons + 1] - offsets[persons]
    starts = np.repeat(offsets[persons] - np.cumsum(np.r_[0, lengths[:-1]]), lengths)
    return starts + np.arange(lengths.sum()), np.repeat(np.arange(len(persons)), lengths)


def _strict(
    offsets: Ints,
    packed: Ints,
    steps: int,
    window_us: int,
    exact: bool,
    code_bits: int = 0,
    pairs: bool = False,
) -> _StrictDone | None:
    """:func:`strict_chains` (and with ``pairs`` :func:`strict_code_levels`) for one range of
    persons."""
    persons = len(offsets) - 1
    level = np.zeros(persons, np.int64)
    times = [np.full(persons, -1, np.int64) for _ in range(steps)]
    codes = [np.full(persons, -1, np.int64) for _ in range(steps if code_bits else 0)]
    none = np.zeros(0, np.int64)
    if not len(packed):
        return _StrictDone(level, times, codes, (none, none))
    bits = multiplier(steps).bit_length() - 1
    mask = (1 << bits) - 1
    shift = bits + code_bits  # the time lies above the code and the step
    if not exact:
        packed, near = sort_within(offsets, packed, shift)
        a, b = packed[near], packed[near + 1]
        if ((a >> shift == b >> shift) & ((a | b) & mask > 0)).any():
            return None  # a step event at the instant of another event of the person
    step = packed & mask
    starts = np.flatnonzero(step == 1)  # in person order, then time order
    if not len(starts):
        return _StrictDone(level, times, codes, (none, none))
    owner = np.searchsorted(offsets, starts, side="right") - 1
    end = offsets[owner + 1]  # one past the owner's last event
    t0 = packed[starts] >> shift
    deadline = t0 + window_us
    lv = np.ones(len(starts), np.int64)
    alive = np.ones(len(starts), bool)
    chain, at = [t0], [starts]
    top = len(packed) - 1
    for k in range(1, steps):
        pos = np.minimum(starts + k, top)
        t = packed[pos] >> shift
        alive &= (starts + k < end) & (step[pos] == k + 1) & (t <= deadline)
        lv += alive
        chain.append(np.where(alive, t, -1))
        at.append(np.where(alive, pos, -1))
    # per person the furthest chain, then the earliest start: the largest level * S - index
    n = len(starts)
    heads = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    best = n - 1 - np.maximum.reduceat(lv * n + (n - 1 - np.arange(n)), heads) % n
    who = owner[heads]
    level[who] = lv[best]
    for k in range(steps):
        times[k][who] = chain[k][best]
    for k, c in enumerate(codes):
        pos = at[k][best]
        c[who] = np.where(pos >= 0, (packed[pos] >> bits) & ((1 << code_bits) - 1), -1)
    if not pairs:
        return _StrictDone(level, times, codes, (none, none))
    code = (packed[starts] >> bits) & ((1 << code_bits) - 1)
    return _StrictDone(level, times, codes, _pair_levels(owner, code, lv))


def _pair_levels(who: Ints, code: Ints, level: Ints) -> tuple[Ints, Ints]:
    """Starts in (person, time) order, with codes that do not decrease with time: each (person,
    code) pair's starts are a run, so its code and the run's furthest level."""
    if not len(who):
        return code, level
    runs = np.flatnonzero(np.r_[True, (who[1:] != who[:-1]) | (code[1:] != code[:-1])])
    return code[runs], np.maximum.reduceat(level, runs)


def summary(level: Ints, times: list[Ints], steps: int) -> list[Any]:
    """The row :func:`yunying.analytics.funnels.funnel` reads from its SQL: persons reaching
    each step, then per step k>0 the median and mean µs from step k-1 and the median from step
    1 (exact medians interpolated like ``quantile_cont``; None where nobody converted)."""
    row: list[Any] = [int(np.count_nonzero(level >= k + 1)) for k in range(steps)]
    for k in range(1, steps):
        reached = np.flatnonzero(level > k)
        if not len(reached):
            row += [None, None, None]
            continue
        at = times[k][reached]
        step = at - times[k - 1][reached]
        first = at - times[0][reached]
        row += [float(np.median(step)), float(step.sum()) / len(step), float(np.median(first))]
    return row


def chosen_starts(starts: pa.Array, t0: Ints, level: Ints) -> tuple[pa.Array, NDArray[np.bool_]]:
    """The value of each person's chosen start, from ``starts`` (per person, the list of its
    starts as ``(time µs, uuid as text or 16 bytes, value)``): the start at the chosen chain's time, the
    smallest uuid among starts at that instant (their chains are the same). Also which persons
    have a start at all."""
    offsets = starts.offsets.to_numpy().astype(np.int64)
    flat = starts.values
    t = flat.field(0).to_numpy(zero_copy_only=False).astype(np.int64)
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[: len(t)]
    has = level > 0
    at = np.flatnonzero(has[owner] & (t == t0[owner]))
    who = owner[at]
    ties = np.bincount(who, minlength=len(level)) > 1
    chosen = np.full(len(level), -1, np.int64)
    single = ~ties[who]
    chosen[who[single]] = at[single]
    tied = at[~single]
    if len(tied):  # order the tied starts by person then uuid, keep each person's first
        uuids = flat.field(1).take(pa.array(tied))
        if isinstance(uuids, pa.ExtensionArray):  # 16 bytes (big-endian): they sort as text
            uuids = uuids.storage
        by = pa.table({"o": owner[tied], "u": uuids, "i": tied})
        by = by.sort_by([("o", "ascending"), ("u", "ascending")])
        o, i = by.column("o").to_numpy(), by.column("i").to_numpy()
        first = np.r_[True, o[1:] != o[:-1]]
        chosen[o[first]] = i[first]
    values = flat.field(2).take(pa.array(chosen[has]))
    return values, has


def grouped_summary(
    level: Ints, times: list[Ints], steps: int, group: Ints, groups: int
) -> list[list[Any]]:
    """:func:`summary` for each group (``group`` numbers persons' groups 0..groups-1, -1 for
    none): counts from one histogram of (group, level); per step the medians from one ordering
    of its times by group."""
    member = group >= 0
    cell = group[member] * (steps + 1) + level[member]
    hist = np.bincount(cell, minlength=groups * (steps + 1)).reshape(groups, steps + 1)
    at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # persons at level l or further
    rows: list[list[Any]] = [at_least[g, 1:].tolist() for g in range(groups)]
    for k in range(1, steps):
        reached = np.flatnonzero(member & (level > k))
        grp = group[reached]
        at = times[k][reached]
        step = at - times[k - 1][reached]
        first = at - times[0][reached]
        n = np.bincount(grp, minlength=groups)
        sums = np.bincount(grp, weights=step.astype(np.float64), minlength=groups)
        med_step, med_first = _grouped_medians([step, first], grp, n)
        for g in range(groups):
            if n[g]:
                rows[g] += [med_step[g], float(sums[g]) / n[g], med_first[g]]
            else:
                rows[g] += [None, None, None]
    return rows


def _grouped_medians(columns: list[Ints], grp: Ints, n: Ints) -> list[list[float]]:
    """Per column, per group the median of its values (mean of the two middle values for even
    counts). Few groups: one stable sort by group for all columns, then a partition per group;
    many: one sort by value within group per column."""
    if not len(grp):
        return [[float("nan")] * len(n) for _ in columns]
    ends = np.cumsum(n)
    if len(n) <= 64:
        order = np.argsort(grp.astype(np.int16), kind="stable")  # radix sort
        return [
            [
                float(np.median(ordered[e - c : e])) if c else float("nan")
                for c, e in zip(n.tolist(), ends.tolist(), strict=True)
            ]
            for ordered in (values[order] for values in columns)
        ]
    start, top = ends - n, len(grp) - 1
    lo, hi = np.minimum(start + (n - 1) // 2, top), np.minimum(start + n // 2, top)
    out = []
    for values in columns:
        ordered = values[np.lexsort((values, grp))]
        out.append(((ordered[lo].astype(np.float64) + ordered[hi]) / 2).tolist())
    return out


def unordered_levels(
    offsets: Ints,
    packed: Ints,
    mult: list[int],
    window_us: int,
    end_us: int,
    threads: int | None = None,
) -> Ints:
    """Unordered funnels: per person the best level over its anchors (any step event before the
    range's end) of ``sum over classes c of min(events of c in [t0, t0 + window], mult[c])``.
    ``packed`` holds ``time * M + class`` (classes from 1) per person, in any order: each
    range of persons is put in order by :func:`sort_within`."""
    done = _by_ranges(
        offsets, packed, threads, lambda o, p: _unordered(o, p, mult, window_us, end_us)
    )
    return np.concatenate(done)


def _unordered(offsets: Ints, packed: Ints, mult: list[int], window_us: int, end_us: int) -> Ints:
    """:func:`unordered_levels` for one range of persons."""
    classes = len(mult)
    lengths = np.diff(offsets)
    persons = len(lengths)
    if not len(packed):
        return np.zeros(persons, np.int64)
    packed = sort_within(offsets, packed)[0]
    seg = np.repeat(np.arange(persons, dtype=np.int64), lengths)
    bits = multiplier(classes).bit_length() - 1
    cls = packed & ((1 << bits) - 1)
    ts = packed >> bits
    idx = np.arange(len(ts), dtype=np.int64)
    # counting from the anchor's own position leaves out events of the same instant sorted
    # before it, but the first of them is an anchor too, with all of them: the maximum is right.
    # The window ends at the person's last event no later than t0 + window.
    last = _window_ends(seg, ts, offsets[seg + 1] - 1, window_us)
    level = np.zeros(len(ts), np.int64)
    for c, m in enumerate(mult, start=1):
        cum = np.r_[0, np.cumsum(cls == c)]
        level += np.minimum(cum[last + 1] - cum[idx], m)
    level[ts >= end_us] = 0  # not an anchor
    return np.maximum.reduceat(level, offsets[:-1])


def _window_ends(seg: Ints, ts: Ints, seg_last: Ints, window_us: int) -> Ints:
    """For each position (values sorted by person, then time) the last position of the same
    person no later than its time plus the window. One search on ``person * span + time`` when
    that fits in 62 bits, else a binary search per position within its person."""
    lo = int(ts.min())
    span = int(ts.max()) - lo + window_us + 1
    if (int(seg[-1]) + 1) * span < 1 << 62:
        key = seg * span + (ts - lo)
        return np.searchsorted(key, key + window_us, side="right") - 1
    found, hi = np.arange(len(ts), dtype=np.int64), seg_last.copy()
    limit = ts + window_us
    active = np.flatnonzero(found < hi)
    while len(active):
        a_lo, a_hi = found[active], hi[active]
        mid = (a_lo + a_hi + 1) >> 1
        fits = ts[mid] <= limit[active]
        found[active] = np.where(fits, mid, a_lo)
        hi[active] = np.where(fits, a_hi, mid - 1)
        active = active[found[active] < hi[active]]
    return found
