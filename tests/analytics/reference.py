"""Plain-Python reference implementations, written from the definitions in docs/analytics.md,
over the resolved events (uuid, event, person_id, naive-UTC timestamp) read from the store."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Event = dict[str, Any]
Match = Callable[[Event], bool]


def local_day(ts: datetime, tz: str) -> date:
    return ts.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).date()


def bucket(ts: datetime, tz: str, period: str) -> date:
    """Local start date of the day/week (Monday)/month containing ``ts``."""
    d = local_day(ts, tz)
    if period == "week":
        return d - timedelta(days=d.weekday())
    if period == "month":
        return d.replace(day=1)
    return d


def buckets(d0: date, d1: date, period: str) -> list[date]:
    out: list[date] = []
    d = d0
    while d <= d1:
        b = d - timedelta(days=d.weekday()) if period == "week" else d
        b = b.replace(day=1) if period == "month" else b
        if b not in out:
            out.append(b)
        d += timedelta(days=1)
    return out


def bounds(d0: date, d1: date, tz: str) -> tuple[datetime, datetime]:
    z = ZoneInfo(tz)
    lo = datetime(d0.year, d0.month, d0.day, tzinfo=z).astimezone(UTC).replace(tzinfo=None)
    e = d1 + timedelta(days=1)
    hi = datetime(e.year, e.month, e.day, tzinfo=z).astimezone(UTC).replace(tzinfo=None)
    return lo, hi


def by_person(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        out[e["person_id"]].append(e)
    return out


def strict_funnel(
    events: list[Event], steps: list[Match], lo: datetime, hi: datetime, window: timedelta
) -> list[int]:
    """Persons per step when steps must be consecutive events (ties ordered by uuid)."""
    counts = [0] * len(steps)
    for evs in by_person(events).values():
        evs = sorted(
            (e for e in evs if lo <= e["timestamp"] < hi + window),
            key=lambda e: (e["timestamp"], e["uuid"]),
        )
        best = 0
        for i, e in enumerate(evs):
            if not (steps[0](e) and e["timestamp"] < hi):
                continue
            level = 1
            while (
                level < len(steps)
                and i + level < len(evs)
                and steps[level](evs[i + level])
                and evs[i + level]["timestamp"] <= e["timestamp"] + window
            ):
                level += 1
            best = max(best, level)
        for k in range(best):
            counts[k] += 1
    return counts


def unordered_funnel(
    events: list[Event], steps: list[Match], keys: list[str], lo: datetime, hi: datetime,
    window: timedelta,
) -> list[int]:  # fmt: skip
    """Persons per number of steps done in any order within the window from an anchor event.
    ``keys`` names each step's condition: equal keys are the same condition."""
    mult = {k: keys.count(k) for k in keys}
    first_of = {k: keys.index(k) for k in keys}
    counts = [0] * len(steps)
    for evs in by_person(events).values():
        best = 0
        for a in evs:
            if not (lo <= a["timestamp"] < hi and any(s(a) for s in steps)):
                continue
            inside = [e for e in evs if a["timestamp"] <= e["timestamp"] <= a["timestamp"] + window]
            level = sum(
                min(m, sum(1 for e in inside if steps[first_of[k]](e))) for k, m in mult.items()
            )
            best = max(best, level)
        for k in range(best):
            counts[k] += 1
    return counts


def retention(
    events: list[Event], target: Match, ret: Match, d0: date, d1: date, tz: str, period: str,
    cohort: str, mode: str,
) -> list[tuple[int, list[int]]]:  # fmt: skip
    """(cohort size, retained per period 0..) per cohort period, person by person."""
    lo, hi = bounds(d0, d1, tz)
    periods = buckets(d0, d1, period)
    index = {b: i for i, b in enumerate(periods)}
    n = len(periods)
    members: list[set[str]] = [set() for _ in range(n)]
    returned: dict[str, set[int]] = defaultdict(set)
    for person, evs in by_person(events).items():
        targets = [e for e in evs if target(e) and e["timestamp"] < hi]
        if cohort == "first_time":
            if targets:
                first = min(e["timestamp"] for e in targets)
                if first >= lo:
                    members[index[bucket(first, tz, period)]].add(person)
        else:
            for e in targets:
                if e["timestamp"] >= lo:
                    members[index[bucket(e["timestamp"], tz, period)]].add(person)
        for e in evs:
            if ret(e) and lo <= e["timestamp"] < hi:
                returned[person].add(index[bucket(e["timestamp"], tz, period)])
    out = []
    for i in range(n):
        row = [len(members[i])]
        for d in range(1, n - i):
            if mode == "on":
                row.append(sum(1 for p in members[i] if i + d in returned[p]))
            else:
                row.append(sum(1 for p in members[i] if any(r >= i + d for r in returned[p])))
        out.append((len(members[i]), row))
    return out


def lifecycle(
    events: list[Event], match: Match, d0: date, d1: date, tz: str, period: str
) -> dict[str, list[int]]:
    """New / returning / resurrecting / dormant persons per period."""
    _, hi = bounds(d0, d1, tz)
    periods = buckets(d0, d1, period)

    def step(b: date, k: int) -> date:
        if period == "day":
            return b + timedelta(days=k)
        if period == "week":
            return b + timedelta(days=7 * k)
        m = b.year * 12 + b.month - 1 + k
        return date(m // 12, m % 12 + 1, 1)

    out = {s: [0] * len(periods) for s in ("new", "returning", "resurrecting", "dormant")}
    for evs in by_person(events).values():
        active = {
            bucket(e["timestamp"], tz, period) for e in evs if match(e) and e["timestamp"] < hi
        }
        if not active:
            continue
        first = min(active)
        for i, b in enumerate(periods):
            prev = step(b, -1) in active
            if b in active:
                status = "new" if b == first else "returning" if prev else "resurrecting"
                out[status][i] += 1
            elif prev:
                out["dormant"][i] -= 1
    return out


def daily(
    events: list[Event], match: Match, d0: date, d1: date, tz: str,
    value: Callable[[list[Event]], float | int | None],
) -> list[float | int | None]:  # fmt: skip
    """One value per local day computed from that day's matching events."""
    days = buckets(d0, d1, "day")
    per: dict[date, list[Event]] = defaultdict(list)
    for e in events:
        if match(e):
            per[local_day(e["timestamp"], tz)].append(e)
    return [value(per[d]) for d in days]


def rolling_active(
    events: list[Event], match: Match, d0: date, d1: date, tz: str, days: int
) -> list[int]:
    """Distinct persons active in the ``days`` local days ending on each day."""
    seen: dict[date, set[str]] = defaultdict(set)
    for e in events:
        if match(e):
            seen[local_day(e["timestamp"], tz)].add(e["person_id"])
    out = []
    for d in buckets(d0, d1, "day"):
        persons: set[str] = set()
        for k in range(days):
            persons |= seen.get(d - timedelta(days=k), set())
        out.append(len(persons))
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), written out."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def assert_close(a: Any, b: Any, path: str = "") -> None:
    """Structures equal, floats to 1e-9 relative (engines interpolate in different orders)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{path}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, f"{path}: {a} != {b}"
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# -- funnel chains, exclusions, attribution (docs/analytics.md, "Funnels") -------------------------


def us(ts: datetime) -> int:
    """Microseconds since the epoch of a naive-UTC instant."""
    d = ts - datetime(1970, 1, 1)
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _chain(
    evs: list[Event], i: int, steps: list[Match], window: timedelta, strict: bool
) -> list[Event]:
    """The chain from start ``evs[i]``: each step takes the earliest (then smallest uuid) matching
    event not before the previous step, within the window, not already used; strict: the next
    event of the person must match."""
    first = evs[i]
    chain = [first]
    for k in range(1, len(steps)):
        if strict:
            j = i + k
            if (
                j < len(evs)
                and steps[k](evs[j])
                and evs[j]["timestamp"] <= first["timestamp"] + window
            ):
                chain.append(evs[j])
                continue
            break
        used = {e["uuid"] for e in chain}
        cands = [
            e for e in evs
            if steps[k](e) and e["uuid"] not in used
            and chain[-1]["timestamp"] <= e["timestamp"] <= first["timestamp"] + window
        ]  # fmt: skip
        if not cands:
            break
        chain.append(min(cands, key=lambda e: (e["timestamp"], e["uuid"])))
    return chain


def funnel_chains(
    events: list[Event], steps: list[Match], lo: datetime, hi: datetime, window: timedelta,
    exclusions: list[tuple[Match, int, int]] = (), strict: bool = False,  # type: ignore[assignment]
    group: Callable[[Event], Any] = lambda e: None, keep: Match = lambda e: True,
) -> dict[tuple[str, Any], list[Event]]:  # fmt: skip
    """The chosen chain per (person, group of its start): furthest, then earliest start (then
    smallest uuid); dropped when excluded. ``keep``: the funnel-wide filters."""
    out: dict[tuple[str, Any], list[Event]] = {}
    for person, evs in by_person(events).items():
        evs = sorted(
            (e for e in evs if keep(e) and lo <= e["timestamp"] < hi + window),
            key=lambda e: (e["timestamp"], e["uuid"]),
        )
        best: dict[Any, list[Event]] = {}
        for i, e in enumerate(evs):
            if not (steps[0](e) and e["timestamp"] < hi):
                continue
            chain = _chain(evs, i, steps, window, strict)
            g = group(e)
            cur = best.get(g)
            if cur is None or len(chain) > len(cur):
                best[g] = chain
        for g, chain in best.items():
            if not _excluded(chain, evs, exclusions, window):
                out[(person, g)] = chain
    return out


def _excluded(chain: list[Event], evs: list[Event], exclusions: Any, window: timedelta) -> bool:
    used = {e["uuid"] for e in chain}
    for match, a, b in exclusions:
        if len(chain) <= a:
            continue
        t_a = chain[a]["timestamp"]
        for x in evs:
            if x["uuid"] in used or not match(x) or x["timestamp"] <= t_a:
                continue
            if len(chain) > b:
                if x["timestamp"] < chain[b]["timestamp"]:
                    return True
            elif x["timestamp"] <= chain[0]["timestamp"] + window:
                return True
    return False


def step_counts(chains: dict[Any, list[Event]], n: int) -> list[int]:
    """Persons (chosen chains) per step."""
    return [sum(1 for c in chains.values() if len(c) > k) for k in range(n)]


# -- stickiness, per-person counts, paths ------------------------------------------------------------


def stickiness(
    events: list[Event], match: Match, d0: date, d1: date, tz: str, period: str
) -> list[list[int]]:
    """Per week/month: persons active on exactly 1..N local days of it inside the range."""
    lo, hi = bounds(d0, d1, tz)
    days_in: dict[date, int] = defaultdict(int)
    d = d0
    while d <= d1:
        days_in[bucket(datetime(d.year, d.month, d.day, 12), "UTC", period)] += 1
        d += timedelta(days=1)
    active: dict[tuple[str, date], set[date]] = defaultdict(set)
    for e in events:
        if match(e) and lo <= e["timestamp"] < hi:
            active[(e["person_id"], bucket(e["timestamp"], tz, period))].add(
                local_day(e["timestamp"], tz)
            )
    out = []
    for b in buckets(d0, d1, period):
        row = [0] * days_in[b]
        for (_, pb), days in active.items():
            if pb == b:
                row[len(days) - 1] += 1
        out.append(row)
    return out


def paths(
    events: list[Event], lo: datetime, hi: datetime, keep: Match, anchor: Match | None,
    backwards: bool, steps: int,
) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str, str], int]]:  # fmt: skip
    """Persons per (step, event) and per (step, event, next event) after / before the anchor."""
    nodes: dict[tuple[int, str], int] = defaultdict(int)
    edges: dict[tuple[int, str, str], int] = defaultdict(int)
    for evs in by_person(events).values():
        seq = sorted(
            (e for e in evs if keep(e) and lo <= e["timestamp"] < hi),
            key=lambda e: (e["timestamp"], e["uuid"]),
        )
        hits = [i for i, e in enumerate(seq) if anchor is None or anchor(e)]
        if not hits:
            continue
        i0 = hits[0]
        if backwards:
            window = [(k - i0, seq[k]["event"]) for k in range(max(0, i0 - steps + 1), i0 + 1)]
        else:
            window = [(k - i0, seq[k]["event"]) for k in range(i0, min(len(seq), i0 + steps))]
        for k, name in window:
            nodes[(k, name)] += 1
        for (k, a), (_, b) in zip(window, window[1:], strict=False):
            edges[(k, a, b)] += 1
    return dict(nodes), dict(edges)


def retention_by(
    events: list[Event], target: Match, ret: Match, d0: date, d1: date, tz: str, period: str,
    cohort: str, mode: str, value: Callable[[Event], str | None],
) -> dict[str | None, list[list[int]]]:  # fmt: skip
    """Retention rows per value of the cohort-defining event: the person's first target event
    (first_time) or their first target event of the cohort period (recurring); ties by uuid."""
    lo, hi = bounds(d0, d1, tz)
    periods = buckets(d0, d1, period)
    index = {b: i for i, b in enumerate(periods)}
    n = len(periods)
    members: dict[str | None, list[set[str]]] = defaultdict(lambda: [set() for _ in range(n)])
    returned: dict[str, set[int]] = defaultdict(set)
    for person, evs in by_person(events).items():
        evs = sorted(evs, key=lambda e: (e["timestamp"], e["uuid"]))
        targets = [e for e in evs if target(e) and e["timestamp"] < hi]
        if cohort == "first_time":
            chosen = targets[:1] if targets and targets[0]["timestamp"] >= lo else []
        else:
            seen: set[date] = set()
            chosen = []
            for e in targets:
                b = bucket(e["timestamp"], tz, period)
                if e["timestamp"] >= lo and b not in seen:
                    seen.add(b)
                    chosen.append(e)
        for e in chosen:
            members[value(e)][index[bucket(e["timestamp"], tz, period)]].add(person)
        for e in evs:
            if ret(e) and lo <= e["timestamp"] < hi:
                returned[person].add(index[bucket(e["timestamp"], tz, period)])
    out: dict[str | None, list[list[int]]] = {}
    for v, per in members.items():
        rows = []
        for i in range(n):
            row = [len(per[i])]
            for d in range(1, n - i):
                if mode == "on":
                    row.append(sum(1 for p in per[i] if i + d in returned[p]))
                else:
                    row.append(sum(1 for p in per[i] if any(r >= i + d for r in returned[p])))
            rows.append(row)
        out[v] = rows
    return out


def lifecycle_by(
    events: list[Event], match: Match, d0: date, d1: date, tz: str, period: str,
    value: Callable[[Event], str | None],
) -> dict[str | None, dict[str, list[int]]]:  # fmt: skip
    """Lifecycle per value of the person's first event (ties by uuid) of the period; dormant
    persons take the value of their first event of the previous period."""
    _, hi = bounds(d0, d1, tz)
    periods = buckets(d0, d1, period)

    def back(b: date) -> date:
        if period == "day":
            return b - timedelta(days=1)
        if period == "week":
            return b - timedelta(days=7)
        m = b.year * 12 + b.month - 2
        return date(m // 12, m % 12 + 1, 1)

    out: dict[str | None, dict[str, list[int]]] = {}
    for evs in by_person(events).values():
        first_of: dict[date, Event] = {}
        for e in sorted(evs, key=lambda e: (e["timestamp"], e["uuid"])):
            if match(e) and e["timestamp"] < hi:
                first_of.setdefault(bucket(e["timestamp"], tz, period), e)
        if not first_of:
            continue
        first = min(first_of)
        for i, b in enumerate(periods):
            prev = back(b) in first_of
            if b in first_of:
                status = "new" if b == first else "returning" if prev else "resurrecting"
                v, delta = value(first_of[b]), 1
            elif prev:
                status, v, delta = "dormant", value(first_of[back(b)]), -1
            else:
                continue
            row = out.setdefault(v, {s: [0] * len(periods) for s in
                                     ("new", "returning", "resurrecting", "dormant")})  # fmt: skip
            row[status][i] += delta
    return out
