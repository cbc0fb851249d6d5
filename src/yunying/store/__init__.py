"""Events engines behind the :class:`EventStore` interface (DuckDB embedded by default)."""

from yunying.store.base import RELATIONS, EventStore, EventTransaction, PersonRecord, QueryResult
from yunying.store.duckdb_store import DuckDBEventStore
from yunying.store.readonly_sql import rewrite, run_readonly_sql

__all__ = [
    "RELATIONS",
    "DuckDBEventStore",
    "EventStore",
    "EventTransaction",
    "PersonRecord",
    "QueryResult",
    "open_event_store",
    "rewrite",
    "run_readonly_sql",
]


def open_event_store(url: str) -> EventStore:
    """The events engine for a ``duckdb:///PATH`` URL."""
    from yunying.config import duckdb_path

    return DuckDBEventStore(duckdb_path(url))
