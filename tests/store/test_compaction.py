"""Compaction of DuckDB's events into person order while events keep arriving: every event
stored before, during and after it is there once, and the compacted part is in person order."""

from __future__ import annotations

import threading
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from yunying.analytics import DateRange, FunnelQuery, FunnelStep, funnel
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import create_project
from yunying.store.duckdb_store import ARROW_EVENTS

T0 = datetime(2024, 3, 1)
RANGE = DateRange(date(2024, 3, 1), date(2024, 3, 2), "UTC")  # the bulk part only


def bulk(project_id: int, n: int, persons: int) -> pa.Table:
    """``n`` events of ``persons`` persons, in time order (as written)."""
    ids = [uuid.UUID(int=i + 1) for i in range(persons)]
    rows = {
        "project_id": [project_id] * n,
        "uuid": [str(uuid.UUID(int=(1 << 64) + i)) for i in range(n)],
        "event": ["edit_video"] * n,
        "distinct_id": [f"d{i % persons}" for i in range(n)],
        "person_id": [str(ids[i % persons]) for i in range(n)],
        "timestamp": [T0 + timedelta(seconds=i) for i in range(n)],
        "received_at": [T0 + timedelta(seconds=i) for i in range(n)],
    }
    return pa.table({f.name: rows.get(f.name, [None] * n) for f in ARROW_EVENTS}, ARROW_EVENTS)


def test_events_written_during_compaction_are_kept(tmp_path: Path) -> None:
    rt = Runtime.open(load_settings(data_dir=tmp_path / "d"))
    pid = create_project(rt.state, "p", "UTC").project.id
    store = rt.store
    store.bulk_insert_arrow("raw_events", bulk(pid, 150_000, 5_000))
    written: list[str] = []
    done = threading.Event()

    def keep_writing() -> None:
        i = 0
        while not done.is_set() or i < 3:
            raws = [
                {"event": "sign_up", "distinct_id": f"late{i}-{k}", "uuid": str(uuid.uuid4()),
                 "timestamp": (T0 + timedelta(days=3, seconds=i)).isoformat() + "Z"}
                for k in range(20)
            ]  # fmt: skip
            rt.writer.write(pid, validate_batch(raws).events)
            written.extend(r["uuid"] for r in raws)
            i += 1

    answers: list[list[int]] = []
    failures: list[BaseException] = []

    def keep_reading() -> None:  # readers go on while the tables are swapped
        q = FunnelQuery((FunnelStep("edit_video"), FunnelStep("edit_video")), RANGE, window=1)
        while not done.is_set():
            try:
                answers.append(funnel(store, pid, q).counts)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
                return

    threads = [threading.Thread(target=keep_writing), threading.Thread(target=keep_reading)]
    for t in threads:
        t.start()
    report = store.compact_events()
    done.set()
    for t in threads:
        t.join()
    assert not failures, failures
    assert answers and all(a == answers[0] for a in answers)  # the bulk part: same every time
    assert report["rows"] >= 150_000 and report["writers_waited_seconds"] < report["seconds"]
    stored = store.query(
        f"SELECT uuid::VARCHAR, count(*) FROM raw_events WHERE project_id = {pid} GROUP BY 1"
    ).rows
    counts = dict((str(u), int(n)) for u, n in stored)
    assert all(n == 1 for n in counts.values())  # each once
    assert len(counts) == 150_000 + len(written)
    assert set(written) <= set(counts)
    # the bulk part, compacted: each person's events together, in time order
    people = [
        str(r[0])
        for r in store.query(
            f"SELECT person_id FROM raw_events WHERE project_id = {pid} AND event = 'edit_video'"
        ).rows
    ]
    assert len([p for k, p in enumerate(people) if k == 0 or people[k - 1] != p]) == 5_000
    rt.close()
