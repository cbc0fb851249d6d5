"""The scale-out events engine: ClickHouse, embedded (``chdb``) or a server (``clickhouse-connect``).

Both paths run the same SQL; only the transport differs (:class:`_ChdbBackend`,
:class:`_ServerBackend`). Layout (``docs/engines.md`` explains the choices):

- ``raw_events``: ``MergeTree`` ordered by ``(project_id, distinct_id, timestamp, uuid)``. A
  person is a handful of distinct ids, so the events of one person sit in a few contiguous key
  ranges, in time order; funnels, paths and retention read them without a sort. The distinct id
  is the right key rather than the stored ``person_id`` because a merge never rewrites events.
  Not ``Replacing``: the writer stores each ``(project_id, uuid)`` once by checking before it
  inserts, so reads need no ``FINAL`` on the big table.
- ``raw_persons`` and ``raw_person_distinct_ids``: ``ReplacingMergeTree(version, is_deleted)``.
  Every update, merge and delete is an insert of a row with a higher ``version`` (a tombstone for
  a delete); readers take the latest version with ``FINAL``, which also drops tombstones.
- ``person_overrides``: ``ReplacingMergeTree(version)``, the distinct ids whose stored events may
  carry another person id than their current one (merged, or personless until linked). Events
  carry the person their batch settled on, so the ``events`` relation joins only this small table
  instead of the whole id map.

ClickHouse has no multi-statement transactions. A write "transaction" here applies the identity
writes (ids, persons) as they come, each a synchronous insert, and inserts the batch's events
last, in one insert (one part: all or nothing) when the block exits. The events are the commit
marker: a crash before them leaves the events unstored, so the client was not acknowledged and its
retry processes them again (see ``docs/engines.md`` for what that retry can repeat).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import orjson
import pyarrow as pa
import sqlglot
from sqlglot import exp

from yunying.store.base import PersonRecord, QueryResult, person_values_table
from yunying.store.duckdb_store import EVENT_COLUMNS, STALE, events_arrow, jsonable

if TYPE_CHECKING:
    from yunying.ingest.model import Event

#: Table options of every table: an insert returns only after its part is fsynced.
_DURABLE = "fsync_after_insert = 1, fsync_part_directory = 1"

SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS raw_events (
    project_id   Int32,
    uuid         UUID,
    event        String,
    distinct_id  String,
    person_id    UUID,
    timestamp    DateTime64(6, 'UTC'),
    received_at  DateTime64(6, 'UTC'),
    properties   String,
    channel      Nullable(String),
    utm_source   Nullable(String),
    os           Nullable(String),
    app_version  Nullable(String),
    device_id    Nullable(String),
    ip           Nullable(String),
    amount       Nullable(Float64)
) ENGINE = MergeTree
ORDER BY (project_id, distinct_id, timestamp, uuid)
SETTINGS {_DURABLE}
""",
    f"""
CREATE TABLE IF NOT EXISTS raw_persons (
    project_id    Int32,
    id            UUID,
    created_at    DateTime64(6, 'UTC'),
    properties    String,
    is_identified Bool,
    version       UInt64,
    is_deleted    UInt8 DEFAULT 0
) ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (project_id, id)
SETTINGS {_DURABLE}
""",
    f"""
CREATE TABLE IF NOT EXISTS raw_person_distinct_ids (
    project_id  Int32,
    distinct_id String,
    person_id   UUID,
    version     UInt64,
    is_deleted  UInt8 DEFAULT 0,
    INDEX person_idx person_id TYPE bloom_filter GRANULARITY 1
) ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (project_id, distinct_id)
SETTINGS {_DURABLE}
""",
    f"""
CREATE TABLE IF NOT EXISTS person_overrides (
    project_id  Int32,
    distinct_id String,
    person_id   UUID,
    version     UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project_id, distinct_id)
SETTINGS {_DURABLE}
""",
    f"""
CREATE TABLE IF NOT EXISTS store_flags (
    name String
) ENGINE = MergeTree
ORDER BY name
SETTINGS {_DURABLE}
""",
    f"""
CREATE TABLE IF NOT EXISTS person_values (
    project_id  Int32,
    scope       String,
    person_id   UUID,
    label       Nullable(String),
    value       Nullable(Float64),
    computed_at DateTime64(6, 'UTC')
) ENGINE = MergeTree
ORDER BY (project_id, scope, person_id)
SETTINGS {_DURABLE}
""",
)

RAW_TABLES = ("raw_events", "raw_persons", "raw_person_distinct_ids")
_VERSIONED = ("raw_persons", "raw_person_distinct_ids", "person_overrides")

#: Rebuild of ``person_overrides`` (after bulk loads, on first open): the distinct ids with an
#: event whose person is not their current one, and the ids without a person whose events agree
#: on one (personless), so that a later link updates them. ``{version}`` is filled in.
REBUILD_OVERRIDES = """
INSERT INTO person_overrides (project_id, distinct_id, person_id, version)
SELECT e.project_id, e.distinct_id,
       if(countIf(d.person_id IS NOT NULL) > 0, any(d.person_id), any(e.person_id)), {version}
FROM raw_events AS e
LEFT JOIN (
    SELECT project_id, distinct_id, toNullable(person_id) AS person_id
    FROM raw_person_distinct_ids FINAL
) AS d ON d.project_id = e.project_id AND d.distinct_id = e.distinct_id
GROUP BY e.project_id, e.distinct_id
HAVING countIf(d.person_id IS NOT NULL AND d.person_id != e.person_id) > 0
    OR (countIf(d.person_id IS NOT NULL) = 0 AND uniqExact(e.person_id) = 1)
SETTINGS join_use_nulls = 1
"""

#: A key list travels as one JSON-array String parameter, not as SQL text: 20,000 ids stay far
#: below ``max_query_size`` and parse in milliseconds (an ``Array(String)`` parameter takes seconds).
_KEYS = "(SELECT arrayJoin(JSONExtract({keys:String}, 'Array(String)')))"
_UUID_KEYS = "(SELECT toUUID(arrayJoin(JSONExtract({keys:String}, 'Array(String)'))))"

ARROW_PERSONS = pa.schema(
    [
        ("project_id", pa.int32()),
        ("id", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("properties", pa.string()),
        ("is_identified", pa.bool_()),
        ("version", pa.uint64()),
        ("is_deleted", pa.uint8()),
    ]
)
ARROW_IDS = pa.schema(
    [
        ("project_id", pa.int32()),
        ("distinct_id", pa.string()),
        ("person_id", pa.string()),
        ("version", pa.uint64()),
        ("is_deleted", pa.uint8()),
    ]
)


class _Backend(Protocol):
    def command(self, sql: str) -> None: ...

    def query_arrow(self, sql: str, keys: Sequence[str] | None = None) -> pa.Table: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None: ...

    def close(self) -> None: ...


def _escaped(value: str) -> str:
    """A String parameter in ClickHouse's escaped text form (how chdb parses parameters)."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\0", "\\0")
    )


#: Session settings for reads. ClickHouse 26.x reorders joins so that the analytics' per-step
#: self-joins on person_id can turn into cross joins (an ordered funnel took 143 s instead of
#: 0.25 s at 220k events); keeping the written join order avoids that.
READ_SETTINGS = {"query_plan_optimize_join_order_limit": 0}


def _keys_json(keys: Sequence[str]) -> str:
    return orjson.dumps(list(keys)).decode()


class _ChdbBackend:
    """The ClickHouse engine in this process; one session per store, shared by all threads.

    chdb allows one data directory per process at a time and one statement at a time per
    session (a streaming insert blocks the connection), so every call takes the same lock.
    """

    def __init__(self, path: str) -> None:
        from chdb import session

        self._session = session.Session(path)
        self._lock = threading.Lock()
        for name, value in READ_SETTINGS.items():
            self._session.query(f"SET {name} = {int(value)}", "CSV")

    def command(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql, "CSV")

    def query_arrow(self, sql: str, keys: Sequence[str] | None = None) -> pa.Table:
        params = None if keys is None else {"keys": _escaped(_keys_json(keys))}
        with self._lock:
            result = self._session.query(sql, "ArrowTable", params=params)
        assert isinstance(result, pa.Table)
        return result

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        columns = ", ".join(data.column_names)
        with (
            self._lock,
            self._session.send_insert(f"INSERT INTO {table} ({columns})", "ArrowStream") as ins,
        ):
            ins.append(sink.getvalue().to_pybytes())
            ins.finish()

    def close(self) -> None:
        with self._lock:
            self._session.close()


class _ServerBackend:
    """A ClickHouse server through ``clickhouse-connect`` (HTTP). Not exercised by the test
    suite (no server there): it only moves the same SQL and Arrow tables as :class:`_ChdbBackend`.
    """

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        secure = parts.scheme in ("clickhouses", "clickhouse+https")
        self._client: Any = clickhouse_connect.get_client(
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if secure else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=parts.path.strip("/") or "default",
            secure=secure,
            autogenerate_session_id=False,
            # synchronous inserts only: a returned insert is written, not buffered
            settings={"async_insert": 0, **READ_SETTINGS},
        )
        self._lock = threading.Lock()

    def command(self, sql: str) -> None:
        with self._lock:
            self._client.command(sql)

    def query_arrow(self, sql: str, keys: Sequence[str] | None = None) -> pa.Table:
        params = None if keys is None else {"keys": _keys_json(keys)}
        with self._lock:
            result: pa.Table = self._client.query_arrow(sql, parameters=params)
        return result

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        with self._lock:
            self._client.insert_arrow(table, data)

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _naive_utc(table: pa.Table) -> pa.Table:
    """Timestamps as naive UTC, like DuckDB's ``TIMESTAMP`` (so both engines answer alike)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = table.column(i).cast(pa.timestamp(field.type.unit))
            table = table.set_column(i, field.name, naive)
    return table


def _rows(table: pa.Table) -> list[list[Any]]:
    columns = [c.to_pylist() for c in _naive_utc(table).columns]
    return [[jsonable(v) for v in row] for row in zip(*columns, strict=True)]


class ClickHouseTransaction:
    """The writer's view of one batch on ClickHouse; events are inserted by :meth:`commit`."""

    def __init__(self, store: ClickHouseEventStore) -> None:
        self.store = store
        self.db = store.db
        self._pending: list[tuple[int, list[Event], datetime]] = []
        self._pending_uuids: dict[int, set[str]] = {}

    # -- reads (latest versions) ----------------------------------------------------------------

    def lookup_distinct_ids(self, project_id: int, distinct_ids: Sequence[str]) -> dict[str, str]:
        if not distinct_ids:
            return {}
        t = self.db.query_arrow(
            "SELECT distinct_id, toString(person_id) AS person_id "
            f"FROM raw_person_distinct_ids FINAL WHERE project_id = {int(project_id)} "
            f"AND distinct_id IN {_KEYS}",
            distinct_ids,
        )
        return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))

    def _persons(self, project_id: int, person_ids: Sequence[str]) -> pa.Table:
        return _naive_utc(
            self.db.query_arrow(
                "SELECT toString(id) AS id, created_at, properties, is_identified "
                f"FROM raw_persons FINAL WHERE project_id = {int(project_id)} "
                f"AND id IN {_UUID_KEYS}",
                person_ids,
            )
        )

    def load_persons(self, project_id: int, person_ids: Sequence[str]) -> dict[str, PersonRecord]:
        if not person_ids:
            return {}
        return {
            r["id"]: PersonRecord(
                r["id"], r["created_at"], orjson.loads(r["properties"]), r["is_identified"]
            )
            for r in self._persons(project_id, person_ids).to_pylist()
        }

    def created_at_of(self, project_id: int, person_ids: Sequence[str]) -> dict[str, datetime]:
        if not person_ids:
            return {}
        t = self._persons(project_id, person_ids)
        return dict(
            zip(t.column("id").to_pylist(), t.column("created_at").to_pylist(), strict=True)
        )

    # -- events: checked now, inserted at commit ----------------------------------------------

    def insert_events(
        self, project_id: int, events: Sequence[Event], received_at: datetime
    ) -> set[str]:
        if not events:
            return set()
        wanted = list(dict.fromkeys(e.uuid for e in events))
        t = self.db.query_arrow(
            f"SELECT toString(uuid) FROM raw_events WHERE project_id = {int(project_id)} "
            f"AND uuid IN {_UUID_KEYS}",
            wanted,
        )
        taken = set(t.column(0).to_pylist()) | self._pending_uuids.get(project_id, set())
        fresh: list[Event] = []
        new: set[str] = set()
        for ev in events:  # the first copy of each uuid not yet stored
            if ev.uuid not in taken and ev.uuid not in new:
                new.add(ev.uuid)
                fresh.append(ev)
        if fresh:  # built into a table at commit, with the persons the batch settles on
            self._pending.append((project_id, fresh, received_at))
            self._pending_uuids.setdefault(project_id, set()).update(new)
        return new

    def settle_persons(self, project_id: int, persons_of: dict[str, str]) -> None:
        """Nothing to do: events are inserted at commit, with the persons they carry then."""

    def override_distinct_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        if not mapping:
            return
        n = len(mapping)
        self.db.insert_arrow(
            "person_overrides",
            pa.table(
                {
                    "project_id": pa.array([project_id] * n, pa.int32()),
                    "distinct_id": pa.array(list(mapping.keys()), pa.string()),
                    "person_id": pa.array(list(mapping.values()), pa.string()),
                    "version": pa.array([self.store.next_version()] * n, pa.uint64()),
                }
            ),
        )

    def commit(self) -> None:
        """Insert the batch's events in one insert (one part), after every identity write."""
        if self._pending:
            self.db.insert_arrow(
                "raw_events",
                pa.concat_tables([events_arrow(p, evs, at) for p, evs, at in self._pending]),
            )
        self._pending.clear()
        self._pending_uuids.clear()

    # -- identity writes: each an insert of newer versions --------------------------------------

    def _insert_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        n = len(mapping)
        version = self.store.next_version()
        self.db.insert_arrow(
            "raw_person_distinct_ids",
            pa.table(
                {
                    "project_id": pa.array([project_id] * n, pa.int32()),
                    "distinct_id": pa.array(list(mapping.keys()), pa.string()),
                    "person_id": pa.array(list(mapping.values()), pa.string()),
                    "version": pa.array([version] * n, pa.uint64()),
                    "is_deleted": pa.array([0] * n, pa.uint8()),
                },
                schema=ARROW_IDS,
            ),
        )

    def map_distinct_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        if not mapping:
            return
        self._insert_ids(project_id, mapping)
        # an overridden id (personless until now) keeps pointing at its current person
        overridden = self.db.query_arrow(
            "SELECT DISTINCT distinct_id FROM person_overrides "
            f"WHERE project_id = {int(project_id)} AND distinct_id IN {_KEYS}",
            list(mapping),
        ).column(0)
        self.override_distinct_ids(project_id, {d: mapping[d] for d in overridden.to_pylist()})

    def repoint_persons(self, project_id: int, survivors: dict[str, str]) -> None:
        if not survivors:
            return
        pid = int(project_id)
        # candidates through the person_id skip index (may include superseded rows) ...
        cands = self.db.query_arrow(
            "SELECT DISTINCT distinct_id FROM raw_person_distinct_ids "
            f"WHERE project_id = {pid} AND person_id IN {_UUID_KEYS}",
            list(survivors),
        ).column(0)
        if not len(cands):
            return
        # ... then their current rows by primary key
        current = self.lookup_distinct_ids(project_id, cands.to_pylist())
        moved = {d: survivors[p] for d, p in current.items() if p in survivors}
        if moved:
            self._insert_ids(project_id, moved)
            # stored events of these ids carry the absorbed person: override them
            self.override_distinct_ids(project_id, moved)

    def _insert_persons(self, project_id: int, rows: list[tuple[str, datetime, str, bool]]) -> None:
        n = len(rows)
        version = self.store.next_version()
        ids, created, props, identified = zip(*rows, strict=True) if rows else ((), (), (), ())
        self.db.insert_arrow(
            "raw_persons",
            pa.table(
                {
                    "project_id": pa.array([project_id] * n, pa.int32()),
                    "id": pa.array(ids, pa.string()),
                    "created_at": pa.array(created, pa.timestamp("us")),
                    "properties": pa.array(props, pa.string()),
                    "is_identified": pa.array(identified, pa.bool_()),
                    "version": pa.array([version] * n, pa.uint64()),
                    "is_deleted": pa.array([0] * n, pa.uint8()),
                },
                schema=ARROW_PERSONS,
            ),
        )

    def upsert_persons(self, project_id: int, persons: Sequence[PersonRecord]) -> None:
        if persons:
            self._insert_persons(
                project_id,
                [
                    (p.id, p.created_at, orjson.dumps(p.properties).decode(), p.is_identified)
                    for p in persons
                ],
            )

    def lower_created_at(self, project_id: int, first_seen: dict[str, datetime]) -> None:
        if not first_seen:
            return
        rows = [
            (r["id"], first_seen[r["id"]], r["properties"], r["is_identified"])
            for r in self._persons(project_id, list(first_seen)).to_pylist()
            if first_seen[r["id"]] < r["created_at"]
        ]
        if rows:
            self._insert_persons(project_id, rows)

    def delete_persons(self, project_id: int, person_ids: Sequence[str]) -> None:
        if not person_ids:
            return
        n = len(person_ids)
        version = self.store.next_version()
        self.db.insert_arrow(
            "raw_persons",
            pa.table(
                {
                    "project_id": pa.array([project_id] * n, pa.int32()),
                    "id": pa.array(list(person_ids), pa.string()),
                    "created_at": pa.array([datetime(1970, 1, 1)] * n, pa.timestamp("us")),
                    "properties": pa.array(["{}"] * n, pa.string()),
                    "is_identified": pa.array([False] * n, pa.bool_()),
                    "version": pa.array([version] * n, pa.uint64()),
                    "is_deleted": pa.array([1] * n, pa.uint8()),
                },
                schema=ARROW_PERSONS,
            ),
        )


def _scoped_sql(relation: str, project_id: int) -> str:
    pid = int(project_id)
    if relation == "events":
        columns = [
            "coalesce(d.person_id, e.person_id) AS person_id"
            if c == "person_id"
            else f"e.{c} AS {c}"
            for c in EVENT_COLUMNS
        ]
        return (
            f"SELECT {', '.join(columns)} FROM raw_events AS e LEFT JOIN ("
            "SELECT distinct_id, toNullable(person_id) AS person_id "
            f"FROM person_overrides FINAL WHERE project_id = {pid}"
            f") AS d ON d.distinct_id = e.distinct_id WHERE e.project_id = {pid}"
        )
    if relation == "persons":
        return (
            "SELECT id, created_at, properties, is_identified "
            f"FROM raw_persons FINAL WHERE project_id = {pid}"
        )
    if relation == "person_distinct_ids":
        return (
            "SELECT distinct_id, person_id "
            f"FROM raw_person_distinct_ids FINAL WHERE project_id = {pid}"
        )
    if relation == "person_values":
        return (
            "SELECT scope, person_id, label, value, computed_at "
            f"FROM person_values WHERE project_id = {pid}"
        )
    raise KeyError(relation)


def _quote(value: str) -> str:
    """A ClickHouse string literal (rendered by SQLGlot, which escapes quotes)."""
    return exp.Literal.string(value).sql(dialect="clickhouse")


class ClickHouseEventStore:
    """:class:`~yunying.store.base.EventStore` on ClickHouse: ``chdb:///PATH`` (embedded) or
    ``clickhouse://user:password@host:port/database`` (a server, over HTTP)."""

    dialect = "clickhouse"

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("chdb://"):
            from yunying.config import chdb_path

            self.db: _Backend = _ChdbBackend(chdb_path(url))
        elif url.startswith(("clickhouse://", "clickhouses://")):
            self.db = _ServerBackend(url)
        else:
            raise ValueError(f"not a ClickHouse URL: {url!r}")
        had_overrides = bool(
            self.db.query_arrow("EXISTS TABLE person_overrides").column(0)[0].as_py()
        )
        for ddl in SCHEMA:
            self.db.command(ddl)
        self._write_lock = threading.Lock()
        #: overrides must be rebuilt before the next read or write (bulk load, older tables); kept
        #: in a table too, since a bulk load and later reads may be different processes
        self._stale_flag = bool(
            self.db.query_arrow(f"SELECT count() FROM store_flags WHERE name = '{STALE}'")
            .column(0)[0]
            .as_py()
        )
        self._overrides_stale = not had_overrides or self._stale_flag
        self._version_lock = threading.Lock()
        stored = max(
            int(self.db.query_arrow(f"SELECT max(version) FROM {t}").column(0)[0].as_py() or 0)
            for t in _VERSIONED
        )
        self._version = max(stored, time.time_ns())

    def next_version(self) -> int:
        """A version above every one written so far (clock-based, never going back)."""
        with self._version_lock:
            self._version = max(self._version + 1, time.time_ns())
            return self._version

    # -- writes -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[ClickHouseTransaction]:
        """One batch: identity writes as they come, then the events (see the module docstring)."""
        self.refresh_overrides(only_if_stale=True)
        with self._write_lock:
            tx = ClickHouseTransaction(self)
            yield tx
            tx.commit()

    def bulk_insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table in the DuckDB layout (``ARROW_EVENTS``, demo tables)."""
        if table not in RAW_TABLES:
            raise ValueError(f"unknown table {table}")
        if table in _VERSIONED:
            n = data.num_rows
            version = self.next_version()
            data = data.append_column("version", pa.array([version] * n, pa.uint64()))
            data = data.append_column("is_deleted", pa.array([0] * n, pa.uint8()))
        with self._write_lock:
            self.db.insert_arrow(table, data)
            if table != "raw_persons":
                if not self._stale_flag:
                    self.db.command(f"INSERT INTO store_flags VALUES ('{STALE}')")
                    self._stale_flag = True
                self._overrides_stale = True

    def refresh_overrides(self, *, only_if_stale: bool = False) -> None:
        """Rebuild ``person_overrides`` from the stored events and id map (one pass over events);
        bulk loads bypass the writer that keeps it up to date, so they mark it stale."""
        if only_if_stale and not self._overrides_stale:
            return
        with self._write_lock:
            if only_if_stale and not self._overrides_stale:
                return
            self.db.command("TRUNCATE TABLE person_overrides")
            self.db.command(REBUILD_OVERRIDES.format(version=self.next_version()))
            self.db.command("TRUNCATE TABLE store_flags")
            self._overrides_stale = self._stale_flag = False

    def replace_person_values(self, project_id: int, scope: str, data: pa.Table) -> None:
        """Swap the rows of one ``scope`` in ``person_values`` (a synchronous lightweight delete,
        then an insert: readers may briefly see the scope empty, never half old and half new)."""
        self.replace_person_values_many(project_id, {scope: data})

    def replace_person_values_many(self, project_id: int, scopes: dict[str, pa.Table]) -> None:
        """:meth:`replace_person_values` of several scopes with ONE lightweight delete (it only
        masks those scopes' rows; ``ALTER TABLE … DELETE`` would rewrite every part, all scopes)
        and ONE insert."""
        if not scopes:
            return
        now = datetime.now(UTC).replace(tzinfo=None)
        parts = []
        for scope, data in scopes.items():
            data = person_values_table(data)
            n = data.num_rows
            parts.append(
                pa.table(
                    {
                        "project_id": pa.repeat(pa.scalar(project_id, pa.int32()), n),
                        "scope": pa.repeat(pa.scalar(scope, pa.string()), n),
                        "person_id": data.column("person_id"),
                        "label": data.column("label"),
                        "value": data.column("value"),
                        "computed_at": pa.repeat(pa.scalar(now, pa.timestamp("us")), n),
                    }
                )
            )
        rows = pa.concat_tables(parts)
        names = ", ".join(_quote(s) for s in scopes)
        with self._write_lock:
            self.db.command(
                f"DELETE FROM person_values WHERE project_id = {int(project_id)} "
                f"AND scope IN ({names}) SETTINGS lightweight_deletes_sync = 2"
            )
            if rows.num_rows:
                self.db.insert_arrow("person_values", rows)

    def delete_project_data(self, project_id: int) -> None:
        """Remove every event, person, distinct id and person value of a project (a synchronous
        mutation)."""
        with self._write_lock:
            for table in (*RAW_TABLES, "person_overrides", "person_values"):
                self.db.command(
                    f"ALTER TABLE {table} DELETE WHERE project_id = {int(project_id)} "
                    "SETTINGS mutations_sync = 2"
                )

    # -- reads --------------------------------------------------------------------------------

    def scoped(self, relation: str, project_id: int) -> exp.Query:
        if relation == "events":
            self.refresh_overrides(only_if_stale=True)
        tree = sqlglot.parse_one(_scoped_sql(relation, project_id), dialect="clickhouse")
        assert isinstance(tree, exp.Query)
        return tree

    def query(self, sql: str) -> QueryResult:
        table = self.db.query_arrow(sql)
        return QueryResult(list(table.column_names), _rows(table))

    def query_arrow(self, sql: str) -> pa.Table:
        return self.db.query_arrow(sql)

    def iter_query(self, sql: str, batch_rows: int = 10_000) -> Iterator[list[Any]]:
        """Rows of a read query, converted ``batch_rows`` at a time (the result is fetched whole:
        chdb cannot stream while other statements wait on the session)."""
        table = self.db.query_arrow(sql)
        for batch in table.to_batches(max_chunksize=batch_rows):
            yield from _rows(pa.Table.from_batches([batch], schema=table.schema))

    def close(self) -> None:
        with self._write_lock:
            self.db.close()
