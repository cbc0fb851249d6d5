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
