"""``yunying demo``: fill a project with the seeds' short-video editing app, reproducibly.

The project is created if needed (its secret key is reported once) or emptied, then users are
simulated chunk by chunk (:mod:`yunying.demo.simulate`) and written straight into the raw tables
with :meth:`EventStore.bulk_insert_arrow` -- the per-event writer would be far too slow for
millions of events, and the persons it would build are reproduced exactly by
:mod:`yunying.demo.tables`.
"""

from __future__ import annotations

import time as clock
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from yunying.demo import catalog as cat
from yunying.demo.simulate import SEC, Calendar, make_calendar, simulate_chunk
from yunying.demo.tables import (
    PersonFacts,
    events_table,
    person_facts,
    persons_tables,
    received_micros,
    user_text,
)
from yunying.errors import NotFound, YunyingError
from yunying.state import Project, create_project, get_project
from yunying.store import EventStore, compact_events

if TYPE_CHECKING:
    from yunying.runtime import Runtime

#: Users simulated together; bounded by days so the (users × days) activity grid stays small.
CHUNK_USERS = 10_000
CHUNK_CELLS = 20_000_000
#: Longest period (ten years): keeps per-chunk time arithmetic far from int64 overflow.
MAX_DAYS = 3660


class InvalidDemo(YunyingError):
    """The demo's size or period cannot be generated."""


def chunk_users(days: int) -> int:
    """Users per chunk for a period of ``days`` (fixed for a given period: part of the seed)."""
    return max(100, min(CHUNK_USERS, CHUNK_CELLS // days))


def local_today() -> date:
    """Today's date where the demo app operates (UTC+8)."""
    return (datetime.now(UTC) + timedelta(hours=cat.LOCAL_UTC_OFFSET_HOURS)).date()


class _Tally:
    """Running totals of what has been generated, overall and per channel."""

    def __init__(self) -> None:
        self.events = self.persons = self.distinct_ids = 0
        size = len(cat.CHANNELS)
        self.users = np.zeros(size, dtype=np.int64)
        self.signed_up = np.zeros(size, dtype=np.int64)
        self.paying = np.zeros(size, dtype=np.int64)
        self.revenue = np.zeros(size)

    def add(self, chunk: _Chunk) -> None:
        """Count a chunk's rows, users, sign-ups, payers and revenue."""
        size, facts = len(cat.CHANNELS), chunk.facts
        self.events += chunk.events.num_rows
        self.persons += chunk.persons.num_rows
        self.distinct_ids += chunk.distinct_ids.num_rows
        self.users += np.bincount(chunk.channel[facts.present], minlength=size)
        self.signed_up += np.bincount(chunk.channel[facts.identified], minlength=size)
        self.paying += np.bincount(chunk.channel[facts.paying], minlength=size)
        self.revenue += np.bincount(chunk.channel, weights=facts.revenue, minlength=size)

    def per_channel(self) -> dict[str, dict[str, Any]]:
        """Users, sign-ups, payers, revenue and spend of each channel."""
        out = {}
        for i, ch in enumerate(cat.CHANNELS):
            users = int(self.users[i])
            out[ch.name] = {
                "users": users,
                "signed_up": int(self.signed_up[i]),
                "paying": int(self.paying[i]),
                "revenue_cny": round(float(self.revenue[i]), 2),
                "cpi_cny": ch.cpi,
                "spend_cny": round(users * ch.cpi, 2),
            }
        return out


def _fresh_project(rt: Runtime, name: str) -> tuple[Project, str | None]:
    """The named project emptied of events, or a new one with its (one-time) secret key."""
    try:
        project = get_project(rt.state, name)
    except NotFound:
        new = create_project(rt.state, name)
        return new.project, new.secret_key
    rt.store.delete_project_data(project.id)
    return project, None


@dataclass(frozen=True)
class _Chunk:
    """The rows of one chunk of users, ready to append, and what they add to the totals."""

    events: pa.Table
    persons: pa.Table
    distinct_ids: pa.Table
    channel: Any  # per user: channel index
    facts: PersonFacts


def _build_chunk(
    project_id: int,
    seed: int,
    cal: Calendar,
    chunk: int,
    first_index: int,
    n: int,
    cutoff_us: int | None,
) -> _Chunk:
    """Simulate one chunk of users and turn it into rows of the three raw tables.

    Rows are built for every simulated event, then those the server would not have received by
    ``cutoff_us`` are dropped, so an earlier cutoff yields a subset of the same rows."""
    users, events = simulate_chunk(seed, cal, chunk, first_index, n)
    text = user_text(seed, project_id, users)
    rng = np.random.default_rng([seed, 2, chunk])
    order = np.argsort(events.time, kind="stable")  # by time: narrow zone maps per block
    by_time = events.take(order)
    received = received_micros(rng, cal, by_time)
    table = events_table(project_id, rng, cal, users, by_time, received, text)
    if cutoff_us is not None:
        arrived = received <= cutoff_us
        table = table.filter(pa.array(arrived))
        kept = np.empty(len(events), dtype=bool)
        kept[order] = arrived
        events = events.take(kept)
    facts = person_facts(users, events)
    persons, ids = persons_tables(project_id, cal, users, facts, text)
    return _Chunk(table, persons, ids, users.channel, facts)


def _append(store: EventStore, chunk: _Chunk) -> None:
    """Append a chunk's rows to the raw tables (runs beside the next chunk's simulation)."""
    store.bulk_insert_arrow("raw_events", chunk.events)
    store.bulk_insert_arrow("raw_persons", chunk.persons)
    store.bulk_insert_arrow("raw_person_distinct_ids", chunk.distinct_ids)


def _progress(console: Console | None) -> Progress:
    """A progress bar of users simulated (silent without a console)."""
    return Progress(
        TextColumn("generating demo data"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("users · {task.fields[events]:,} events"),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )


def generate_demo(
    rt: Runtime,
    project: str,
    *,
    users: int,
    days: int,
    seed: int,
    console: Console | None = None,
    end: date | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Fill ``project`` with ``users`` simulated users over ``days`` days ending ``end``.

    The same seed, size and ``end`` give identical rows. Without ``end`` the period ends today
    (UTC+8) and only events received by ``now`` (default: the current time) are kept; a later
    ``now`` keeps the same rows plus newer ones. Existing events of the project are replaced.
    """
    if users < 1 or days < 1:
        raise InvalidDemo("the demo needs at least 1 user and 1 day")
    if days > MAX_DAYS:
        raise InvalidDemo(f"the demo covers at most {MAX_DAYS} days")
    started = clock.perf_counter()
    if end is None:
        now = datetime.now(UTC) if now is None else now
        now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)  # naive means UTC
        cutoff_us: int | None = int(now.timestamp() * SEC)
        last_day = (now.astimezone(UTC) + timedelta(hours=cat.LOCAL_UTC_OFFSET_HOURS)).date()
    else:
        cutoff_us, last_day = None, end
    cal = make_calendar(seed, last_day - timedelta(days=days - 1), days)
    proj, secret_key = _fresh_project(rt, project)
    tally = _Tally()
    size = chunk_users(days)
    with _progress(console) as bar, ThreadPoolExecutor(1, "yunying-demo") as appender:
        task = bar.add_task("demo", total=users, events=0)
        pending: Future[None] | None = None
        for chunk, first in enumerate(range(0, users, size)):
            built = _build_chunk(
                proj.id, seed, cal, chunk, first, min(size, users - first), cutoff_us
            )
            if pending is not None:
                pending.result()
            pending = appender.submit(_append, rt.store, built)
            tally.add(built)
            bar.update(task, advance=len(built.channel), events=tally.events)
        if pending is not None:
            pending.result()
    rt.store.refresh_overrides()  # the bulk load bypassed the writer's person overrides
    compact_events(rt.store)  # person order for funnels (and a checkpoint), as `yunying compact`
    elapsed = clock.perf_counter() - started
    stats = tally.per_channel()
    return {
        "project": proj.name,
        "project_id": proj.id,
        "write_key": proj.write_key,
        "secret_key": secret_key,
        "users": users,
        "days": days,
        "seed": seed,
        "first_day": cal.first_day.isoformat(),
        "last_day": last_day.isoformat(),
        "persons": tally.persons,
        "events": tally.events,
        "distinct_ids": tally.distinct_ids,
        "signed_up": int(tally.signed_up.sum()),
        "paying": int(tally.paying.sum()),
        "revenue_cny": round(float(tally.revenue.sum()), 2),
        "spend_cny": round(sum(s["spend_cny"] for s in stats.values()), 2),
        "channels": {name: s["users"] for name, s in stats.items()},
        "channel_stats": stats,
        "seconds": round(elapsed, 3),
        "events_per_second": round(tally.events / elapsed) if elapsed > 0 else None,
    }
