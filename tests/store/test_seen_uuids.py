"""The writer's set of stored uuid hashes only ever lets it skip DuckDB's conflict check for
batches that are really new: resends are caught however the earlier copy got into the table."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from yunying.config import Settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import NewProject
from yunying.store import seen
from yunying.store.duckdb_store import ARROW_EVENTS, DuckDBEventStore
from yunying.store.seen import SeenHashes

u64 = st.integers(0, 2**64 - 1)


@given(
    initial=st.lists(u64, max_size=50),
    batches=st.lists(st.lists(u64, max_size=10), max_size=10),
    other=u64,
)
def test_added_hashes_are_always_found(
    initial: list[int], batches: list[list[int]], other: int
) -> None:
    orig = seen.MERGE_EVERY
    seen.MERGE_EVERY = 7  # merge often, so both halves of the set are exercised
    try:
        s = SeenHashes(np.array(initial, dtype=np.uint64))
        added = set(initial)
        for batch in batches:
            arr = np.array(batch, dtype=np.uint64)
            s.add(arr)
            added.update(batch)
            for h in added:
                assert s.any_of(np.array([h], dtype=np.uint64))
        probe = np.array([other], dtype=np.uint64)
        assert s.any_of(probe) == (other in added)
        assert not s.any_of(np.array([], dtype=np.uint64))
    finally:
        seen.MERGE_EVERY = orig


def _raws(n: int) -> list[dict]:
    return [
        {"event": "view", "distinct_id": f"u{i % 7}", "uuid": str(uuid.uuid4())} for i in range(n)
    ]


def _write(runtime: Runtime, project_id: int, raws: list[dict]) -> tuple[int, int]:
    result = runtime.writer.write(project_id, validate_batch(raws).events, timeout=30)
    return result.stored, result.duplicates


def test_a_resend_after_a_restart_is_a_duplicate(settings: Settings, project: NewProject) -> None:
    pid = project.project.id
    raws = _raws(50)
    first = Runtime.open(settings)
    try:
        assert _write(first, pid, raws) == (50, 0)
    finally:
        first.close()
    second = Runtime.open(settings)  # the hashes are now read back from the table
    try:
        assert _write(second, pid, raws[:20] + _raws(5)) == (5, 20)
        assert _write(second, pid, raws) == (0, 50)
    finally:
        second.close()


def test_a_resend_of_bulk_loaded_events_is_a_duplicate(
    runtime: Runtime, project: NewProject
) -> None:
    pid = project.project.id
    assert _write(runtime, pid, _raws(3)) == (3, 0)  # the hash set exists now
    raws = _raws(10)
    now = datetime(2026, 1, 1)
    table = pa.Table.from_pylist(
        [
            {
                "project_id": pid,
                "uuid": r["uuid"],
                "event": r["event"],
                "distinct_id": r["distinct_id"],
                "person_id": str(uuid.uuid4()),
                "timestamp": now,
                "received_at": now,
                "properties": "{}",
            }
            for r in raws
        ],
        schema=ARROW_EVENTS,
    )
    runtime.store.bulk_insert_arrow("raw_events", table)
    assert _write(runtime, pid, raws[:4] + _raws(2)) == (2, 4)


def test_duplicates_inside_one_batch_are_stored_once(runtime: Runtime, project: NewProject) -> None:
    raws = _raws(6)
    assert _write(runtime, project.project.id, raws + raws[:3]) == (6, 3)


def test_the_hash_set_is_skipped_for_very_large_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from yunying.store import duckdb_store

    monkeypatch.setattr(duckdb_store, "MAX_SEEN_EVENTS", -1)  # every table counts as too large
    store = DuckDBEventStore(tmp_path / "e.duckdb")
    try:
        events = validate_batch(_raws(3)).events
        for ev in events:
            ev.person_id = str(uuid.uuid4())
        rounds = []
        for _ in range(2):
            with store.transaction() as tx:
                assert tx.seen is None
                rounds.append(tx.insert_events(1, events, datetime(2026, 1, 1)))
        assert rounds == [{e.uuid for e in events}, set()]
    finally:
        store.close()
