"""Interfaces the rest of the system uses to reach an events engine.

Ingestion talks to an :class:`EventStore` through one :class:`EventTransaction` per batch, so
events and identity changes become durable together; readers get project-scoped relations as
SQLGlot expressions and run them through :meth:`EventStore.query`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
from sqlglot import exp

if TYPE_CHECKING:
    from yunying.ingest.model import Event


#: The relations ``yunying sql`` and the analytics see, each scoped to one project.
RELATIONS = ("events", "persons", "person_distinct_ids", "person_values")

#: Columns a caller hands to :meth:`EventStore.replace_person_values`.
PERSON_VALUES = pa.schema(
    [("person_id", pa.string()), ("label", pa.string()), ("value", pa.float64())]
)


def person_values_table(data: pa.Table) -> pa.Table:
    """``data`` with exactly the :data:`PERSON_VALUES` columns (missing ones as nulls)."""
    n = data.num_rows
    columns = [
        data.column(f.name).cast(f.type) if f.name in data.column_names else pa.nulls(n, f.type)
        for f in PERSON_VALUES
    ]
    return pa.Table.from_arrays(columns, schema=PERSON_VALUES)


@dataclass(slots=True)
class PersonRecord:
    """A person as identity resolution reads and writes it."""

    id: str
    created_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    is_identified: bool = False


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a read query, values already JSON-friendly."""

    columns: list[str]
    rows: list[list[Any]]


class EventTransaction(Protocol):
    """Writes of one batch; all become durable at commit, or none do."""

    def lookup_distinct_ids(self, project_id: int, distinct_ids: Sequence[str]) -> dict[str, str]:
        """Person id of each known distinct id."""
        ...

    def load_persons(self, project_id: int, person_ids: Sequence[str]) -> dict[str, PersonRecord]:
        """Stored persons by id (missing ids absent)."""
        ...

    def insert_events(
        self, project_id: int, events: Sequence[Event], received_at: datetime
    ) -> set[str]:
        """Insert events, skipping uuids already stored; returns the uuids actually inserted.

        A store may stage them and write them at commit, with the ``person_id`` they carry then
        (the identity layer settles it after this call)."""
        ...

    def settle_persons(self, project_id: int, persons_of: dict[str, str]) -> None:
        """The batch's events of each distinct id belong to ``persons_of[distinct_id]``: events
        already written with another person id make that distinct id overridden."""
        ...

    def override_distinct_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        """Have readers take ``mapping[distinct_id]`` as the person of every event of those ids
        (kept current as the ids are linked and merged)."""
        ...

    def map_distinct_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        """Insert or update ``distinct_id → person_id`` rows."""
        ...

    def repoint_persons(self, project_id: int, survivors: dict[str, str]) -> None:
        """Move every distinct id of each merged-away person to its survivor (overriding those
        ids, whose stored events carry the merged-away person)."""
        ...

    def upsert_persons(self, project_id: int, persons: Sequence[PersonRecord]) -> None:
        """Insert or replace persons."""
        ...

    def delete_persons(self, project_id: int, person_ids: Sequence[str]) -> None:
        """Delete persons merged into others."""
        ...

    def created_at_of(self, project_id: int, person_ids: Sequence[str]) -> dict[str, datetime]:
        """``created_at`` of the given persons that exist."""
        ...

    def lower_created_at(self, project_id: int, first_seen: dict[str, datetime]) -> None:
        """Move each person's ``created_at`` back to the given time if that is earlier."""
        ...


class EventStore(Protocol):
    """An events engine: DuckDB now, ClickHouse with the analytics engine."""

    dialect: str

    def transaction(self) -> AbstractContextManager[EventTransaction]:
        """A write transaction (only the ingestion writer thread calls this)."""
        ...

    def scoped(self, relation: str, project_id: int) -> exp.Query:
        """The SELECT that exposes ``relation`` (one of :data:`RELATIONS`) for one project."""
        ...

    def query(self, sql: str) -> QueryResult:
        """Run a read query rendered in this engine's dialect."""
        ...

    def query_arrow(self, sql: str) -> pa.Table:
        """Run read-only SQL and return the result as an Arrow table (numeric work in numpy)."""
        ...

    def iter_query(self, sql: str, batch_rows: int = 10_000) -> Iterator[list[Any]]:
        """Stream rows of a read query."""
        ...

    def bulk_insert_arrow(self, table: str, data: Any) -> None:
        """Append rows to a raw table in one go (demo data, bulk loads); bypasses identity, so
        person overrides are rebuilt before the next read (or by :meth:`refresh_overrides`)."""
        ...

    def refresh_overrides(self, *, only_if_stale: bool = False) -> None:
        """Rebuild person overrides from stored events and the id map (one pass over events)."""
        ...

    def replace_person_values(self, project_id: int, scope: str, data: Any) -> None:
        """Replace every row of ``scope`` in ``person_values`` with ``data``.

        ``data`` is an Arrow table with columns ``person_id`` (string), ``label`` (string, may be
        null) and ``value`` (float64, may be null). Derived per-person facts live here (segment
        membership ``segment:ID``, tags ``tag:NAME``, lifecycle stage, RFM class, CLV scores) so
        analyses can filter and break down by them with a join inside the events engine.
        """
        ...

    def replace_person_values_many(self, project_id: int, scopes: dict[str, Any]) -> None:
        """:meth:`replace_person_values` for several scopes at once (one transaction on DuckDB,
        one delete and one insert on ClickHouse): a batch recompute writes all its segments."""
        ...

    def delete_project_data(self, project_id: int) -> None:
        """Remove every event, person, distinct id and person value of a project."""
        ...

    def close(self) -> None:
        """Flush and release the engine."""
        ...
