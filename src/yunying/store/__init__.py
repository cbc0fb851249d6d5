"""Events engines behind the :class:`EventStore` interface (DuckDB embedded by default)."""

from yunying.store.base import (
    PERSON_VALUES,
    RELATIONS,
    EventStore,
    EventTransaction,
    PersonRecord,
    QueryResult,
    person_values_table,
)
from yunying.store.duckdb_store import DuckDBEventStore
from yunying.store.readonly_sql import rewrite, run_readonly_sql

__all__ = [
    "PERSON_VALUES",
    "RELATIONS",
    "DuckDBEventStore",
    "EventStore",
    "EventTransaction",
    "PersonRecord",
    "QueryResult",
    "compact_events",
    "compact_if_needed",
    "event_layout",
    "open_event_store",
    "person_values_table",
    "rewrite",
    "run_readonly_sql",
]


def compact_events(store: EventStore) -> dict[str, object]:
    """Put the stored events in person order where the engine needs it done
    (:meth:`DuckDBEventStore.compact_events`): ``compacted``, ``rows`` and ``seconds``, or why
    not. ClickHouse keeps its own order: MergeTree merges its parts in the background."""
    compact = getattr(store, "compact_events", None)
    if not callable(compact):
        return {
            "compacted": False,
            "rows": 0,
            "seconds": 0.0,
            "reason": "ClickHouse keeps events in order itself (MergeTree merges its parts)",
        }
    return {"compacted": True, **compact()}


def compact_if_needed(store: EventStore, min_events: int) -> dict[str, object] | None:
    """:func:`compact_events` when a project with at least ``min_events`` events is no longer
    in person order (DuckDB); ``None`` when none is (or the engine keeps its own order)."""
    layout = getattr(store, "event_layout", None)
    if not callable(layout):
        return None
    if not any(p["events"] >= min_events and not p["person_ordered"] for p in layout()):
        return None
    return compact_events(store)


def event_layout(store: EventStore) -> list[dict[str, object]]:
    """Per project: events, events in person order at the last compaction, and whether it
    counts as in person order now; empty on ClickHouse (it keeps its own order)."""
    layout = getattr(store, "event_layout", None)
    return list(layout()) if callable(layout) else []


def open_event_store(url: str) -> EventStore:
    """The events engine for a URL: ``duckdb:///PATH`` (embedded DuckDB, the default),
    ``chdb:///ABSOLUTE/PATH`` (ClickHouse in this process) or
    ``clickhouse://user:password@host:port/database`` (a ClickHouse server)."""
    from yunying.config import duckdb_path

    if url.startswith(("chdb://", "clickhouse://", "clickhouses://")):
        from yunying.store.clickhouse_store import ClickHouseEventStore

        return ClickHouseEventStore(url)
    if not url.startswith("duckdb:///"):
        raise ValueError(f"unknown events engine URL {url!r}")
    return DuckDBEventStore(duckdb_path(url))
