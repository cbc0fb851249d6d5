"""Ordered funnels as one pass over per-person sorted step times, in numpy.

The engine does what it is good at: one scan of the step events and one ``GROUP BY`` person that
packs each event as a single integer ``time_us * M + step`` (``M`` a power of two above the step
count) into a list. The chain of docs/analytics.md is then followed for every person at once:
with disjoint steps the chain from a start at ``t0`` takes, for each step k, the earliest step-k
event not before step k-1's, so step k is a minimum over the person's step-k times at or after a
threshold — a segmented minimum (``np.minimum.reduceat``) per step for persons with one start.
Persons with several starts are sorted and walked by binary search from each start, keeping the
furthest chain (then the earliest start, which fixes its times). The same SQL runs on DuckDB and
ClickHouse, so both engines give the same answer by construction.

Used by :func:`yunying.analytics.funnels.funnel` for ordered funnels whose steps are distinct
named events, without exclusions or breakdown, when the source can return Arrow tables.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from sqlglot import exp

from yunying.analytics.common import Source, Sql

Ints = NDArray[np.int64]


class ArrowSource(Source, Protocol):
    """A source that can also hand back a query's result as an Arrow table."""

    def query_arrow(self, sql: str) -> pa.Table:
        """Run read-only SQL in :attr:`dialect` and return the result as Arrow."""
        ...


def multiplier(steps: int) -> int:
    """The power of two that leaves room for step numbers 1..steps under the time."""
    return 1 << steps.bit_length()


def fetch(source: ArrowSource, tree: exp.Select) -> tuple[Ints, Ints]:
    """Run the packed-lists query: list offsets (one segment per person) and packed values."""
    table = source.query_arrow(Sql(source.dialect).render(tree))
    column = table.column(0).combine_chunks() if table.num_rows else None
    if column is None:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    if isinstance(column, pa.LargeListArray):
        column = column.cast(pa.list_(pa.int64()))
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    # a sliced list array's values start at its first offset
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def chains(
    offsets: Ints, packed: Ints, steps: int, window_us: int, threads: int | None = None
) -> tuple[Ints, list[Ints]]:
    """Every person's chosen chain: its level (0 for a person without a start, else 1..steps)
    and the time of each step (µs), -1 where the chain did not reach it within the window.
    Persons are independent: large inputs are split into ``threads`` ranges of persons worked
    on at once (numpy releases the GIL), by default one per CPU, at most four."""
    threads = threads or min(4, os.cpu_count() or 1)
    persons = len(offsets) - 1
    if threads < 2 or len(packed) < PARALLEL_FROM:
        return _chains(offsets, packed, steps, window_us)
    # cut where the values, not the persons, are split evenly
    cuts = np.searchsorted(offsets, np.linspace(0, len(packed), threads + 1)[1:-1])
    bounds = [0, *sorted(set(int(c) for c in cuts) - {0, persons}), persons]
    parts = list(zip(bounds[:-1], bounds[1:], strict=True))

    def part(lo: int, hi: int) -> tuple[Ints, list[Ints]]:
        o = offsets[lo : hi + 1]
        return _chains(o - o[0], packed[o[0] : o[-1]], steps, window_us)

    with ThreadPoolExecutor(len(parts)) as pool:
        done = list(pool.map(lambda b: part(*b), parts))
    level = np.concatenate([d[0] for d in done])
    times = [np.concatenate([d[1][k] for d in done]) for k in range(steps)]
    return level, times


#: Below this many values one thread is faster than starting several.
PARALLEL_FROM = 200_000


def _chains(offsets: Ints, packed: Ints, steps: int, window_us: int) -> tuple[Ints, list[Ints]]:
    """:func:`chains` for one range of persons."""
    bits = multiplier(steps).bit_length() - 1
    step = (packed & ((1 << bits) - 1)).astype(np.int8)
    ts = packed >> bits  # arithmetic shift: floor division, right for times before 1970 too
    lengths = np.diff(offsets)
    persons = len(lengths)
    level = np.zeros(persons, np.int64)
    times = [np.full(persons, -1, np.int64) for _ in range(steps)]
    if not len(packed):
        return level, times
    seg = np.repeat(np.arange(persons, dtype=np.int64), lengths)
    # each step's values in flat (so person) order
    where = [np.flatnonzero(step == k) for k in range(1, steps + 1)]
    starts = np.bincount(seg[where[0]], minlength=persons)
    level += starts > 0
    one = starts == 1
    if one.any():
        _single(ts, seg, where, one, window_us, level, times)
    many = np.flatnonzero(starts > 1)
    if len(many):
        _multiple(offsets, step, ts, many, steps, window_us, level, times)
    return level, times


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
) -> None:
    """Persons with several starts: sort their values, follow the chain from every start by
    binary search in each step's sorted positions, keep the furthest chain, then the earliest
    start (same start time, same chain)."""
    lengths = offsets[persons + 1] - offsets[persons]
    pos = np.repeat(offsets[persons] - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(
        lengths.sum()
    )
    owner = np.repeat(np.arange(len(persons)), lengths)
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
