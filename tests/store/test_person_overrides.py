"""Persons on events: bulk loads and older files get their overrides rebuilt, in any process.

The writer keeps ``person_overrides`` current (``tests/ingest/test_identity_model.py``); bulk
loads bypass it. Here rows are bulk-loaded whose stored person ids disagree with the id map, the
store is closed, and a NEW store on the same files must resolve every event to the id map's person
(the reference: a plain join of raw events to the id map, written in the test) -- the demo loads
in one process and the server reads in another. A DuckDB file from before the table existed gets
it built on open.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import chdb_url
from yunying.store import EventStore, open_event_store
from yunying.store.duckdb_store import ARROW_EVENTS

P = 3
OLD, NEW, LONE = (str(uuid.uuid4()) for _ in range(3))


def _event(distinct_id: str, person_id: str, minute: int) -> dict[str, object]:
    at = datetime(2024, 5, 1, 9, minute)
    return {
        "project_id": P, "uuid": str(uuid.uuid4()), "event": "open",
        "distinct_id": distinct_id, "person_id": person_id, "timestamp": at, "received_at": at,
        "properties": "{}", "channel": None, "utm_source": None, "os": None,
        "app_version": None, "device_id": None, "ip": None, "amount": None,
    }  # fmt: skip


def _load(store: EventStore) -> None:
    """``anon`` sent events as OLD, then was merged into NEW; ``user`` always was NEW; ``lone``
    never got a person (personless)."""
    events = [_event("anon", OLD, 1), _event("anon", OLD, 2), _event("user", NEW, 3)]
    events.append(_event("lone", LONE, 4))
    store.bulk_insert_arrow("raw_events", pa.Table.from_pylist(events, schema=ARROW_EVENTS))
    store.bulk_insert_arrow(
        "raw_person_distinct_ids",
        pa.table(
            {
                "project_id": pa.array([P, P], pa.int32()),
                "distinct_id": ["anon", "user"],
                "person_id": [NEW, NEW],
            }
        ),
    )


def _resolved(store: EventStore) -> dict[str, set[str]]:
    sql = store.scoped("events", P).subquery("e")
    q = f"SELECT distinct_id, CAST(person_id AS VARCHAR) FROM {sql.sql(dialect=store.dialect)}"
    out: dict[str, set[str]] = {}
    for d, p in store.query(q).rows:
        out.setdefault(str(d), set()).add(str(p))
    return out


EXPECTED = {"anon": {NEW}, "user": {NEW}, "lone": {LONE}}


def _urls(tmp_path: Path) -> dict[str, str]:
    return {"duckdb": f"duckdb:///{tmp_path / 'events.duckdb'}", "chdb": chdb_url(tmp_path)}


@pytest.mark.parametrize("engine", ["duckdb", "chdb"])
def test_a_bulk_load_is_resolved_by_the_next_process(tmp_path: Path, engine: str) -> None:
    if engine == "chdb":
        pytest.importorskip("chdb")
    url = _urls(tmp_path)[engine]
    loader = open_event_store(url)
    _load(loader)
    loader.close()  # no read in the loading process: the flag must survive in the files

    reader = open_event_store(url)
    try:
        assert _resolved(reader) == EXPECTED
        overridden = reader.query(
            f"SELECT distinct_id FROM person_overrides WHERE project_id = {P}"
        ).rows
        assert sorted(r[0] for r in overridden) == ["anon", "lone"]  # not "user": no need
    finally:
        reader.close()
    again = open_event_store(url)  # rebuilt once: the flag is cleared
    try:
        assert _resolved(again) == EXPECTED
        assert not again._overrides_stale  # type: ignore[attr-defined]
    finally:
        again.close()


def test_a_duckdb_file_from_before_overrides_gets_them_on_open(tmp_path: Path) -> None:
    url = _urls(tmp_path)["duckdb"]
    store = open_event_store(url)
    _load(store)
    store.refresh_overrides()
    drop: Callable[[str], object] = store._con.execute  # type: ignore[attr-defined]
    drop("DROP TABLE person_overrides")
    drop("DROP TABLE store_flags")
    store.close()

    reopened = open_event_store(url)
    try:
        assert _resolved(reopened) == EXPECTED
    finally:
        reopened.close()
