"""The embedded events engine: one DuckDB file holding events, persons and distinct ids.

Events carry the person id their batch resolved them to (persons on events). Events stored before
a merge (login, alias) still carry the absorbed person's id: ``person_overrides`` names the
distinct ids whose stored events may carry another person id than their current one, with that
current person, and the ``events`` relation takes the override where there is one. The table
holds only merged and personless ids, so reads join events to a small table instead of the whole
id map (see docs/architecture.md, "Persons on events").
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa
from sqlglot import exp

from yunying.store.base import PersonRecord, QueryResult, person_values_table
from yunying.store.seen import SeenHashes

if TYPE_CHECKING:
    from yunying.ingest.model import Event

#: The events table; ``{name}`` is ``raw_events``, or its replacement during compaction.
EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    project_id   INTEGER   NOT NULL,
    uuid         UUID      NOT NULL,
    event        VARCHAR   NOT NULL,
    distinct_id  VARCHAR   NOT NULL,
    person_id    UUID      NOT NULL,
    timestamp    TIMESTAMP NOT NULL,
    received_at  TIMESTAMP NOT NULL,
    properties   JSON,
    channel      VARCHAR,
    utm_source   VARCHAR,
    os           VARCHAR,
    app_version  VARCHAR,
    device_id    VARCHAR,
    ip           VARCHAR,
    amount       DOUBLE,
    PRIMARY KEY (project_id, uuid)
);
"""
SCHEMA = (
    EVENTS_TABLE.format(name="raw_events")
    + """
CREATE TABLE IF NOT EXISTS raw_persons (
    project_id    INTEGER   NOT NULL,
    id            UUID      NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    properties    JSON      NOT NULL,
    is_identified BOOLEAN   NOT NULL,
    PRIMARY KEY (project_id, id)
);
CREATE TABLE IF NOT EXISTS raw_person_distinct_ids (
    project_id  INTEGER NOT NULL,
    distinct_id VARCHAR NOT NULL,
    person_id   UUID    NOT NULL,
    PRIMARY KEY (project_id, distinct_id)
);
CREATE TABLE IF NOT EXISTS person_overrides (
    project_id  INTEGER NOT NULL,
    distinct_id VARCHAR NOT NULL,
    person_id   UUID    NOT NULL,
    PRIMARY KEY (project_id, distinct_id)
);
CREATE TABLE IF NOT EXISTS store_flags (
    name VARCHAR PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS event_layout (
    project_id   INTEGER PRIMARY KEY,
    ordered_rows BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS person_values (
    project_id  INTEGER   NOT NULL,
    scope       VARCHAR   NOT NULL,
    person_id   UUID      NOT NULL,
    label       VARCHAR,
    value       DOUBLE,
    computed_at TIMESTAMP NOT NULL
);
"""
)

EVENT_COLUMNS = (
    "uuid", "event", "distinct_id", "person_id", "timestamp", "received_at", "properties",
    "channel", "utm_source", "os", "app_version", "device_id", "ip", "amount",
)  # fmt: skip

ARROW_EVENTS = pa.schema(
    [
        ("project_id", pa.int32()),
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("person_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("received_at", pa.timestamp("us")),
        ("properties", pa.string()),
        ("channel", pa.string()),
        ("utm_source", pa.string()),
        ("os", pa.string()),
        ("app_version", pa.string()),
        ("device_id", pa.string()),
        ("ip", pa.string()),
        ("amount", pa.float64()),
    ]
)

INSERT_NEW_EVENTS = """
INSERT INTO raw_events
SELECT project_id, uuid::UUID, event, distinct_id, person_id::UUID, timestamp, received_at,
       properties::JSON, channel, utm_source, os, app_version, device_id, ip, amount
FROM _batch
"""
INSERT_EVENTS = INSERT_NEW_EVENTS + "ON CONFLICT DO NOTHING\nRETURNING uuid\n"
#: The same hash over stored events and over a batch about to be stored (same column types).
HASH_STORED = "SELECT hash(project_id, uuid) AS h FROM raw_events"
HASH_BATCH = "SELECT hash(project_id, uuid::UUID) AS h FROM _uuids"
#: Rebuild of ``person_overrides`` from the stored rows (after bulk loads and on first open):
#: every distinct id with an event whose person id is not its current one, and every distinct id
#: without a person whose events agree on one (personless ids), so a later link updates it.
REBUILD_OVERRIDES = """
INSERT INTO person_overrides
SELECT e.project_id, e.distinct_id,
       coalesce(any_value(d.person_id), any_value(e.person_id))
FROM raw_events e
LEFT JOIN raw_person_distinct_ids d
       ON d.project_id = e.project_id AND d.distinct_id = e.distinct_id
GROUP BY e.project_id, e.distinct_id
HAVING bool_or(d.person_id IS NOT NULL AND e.person_id <> d.person_id)
    OR (count(d.person_id) = 0 AND count(DISTINCT e.person_id) = 1)
"""
#: Compaction: every event again, in person order -- per project and UTC month, each person's
#: events together (by the person the id resolves to), in time order -- so that per-person
#: analyses read runs of rows instead of grouping them (``funnel_pass.person_runs``). The month
#: keeps a recent range to recent row groups, whose time zone maps skip the rest.
COMPACT_EVENTS = """
INSERT INTO raw_events_compacted
SELECT e.* FROM raw_events e
LEFT JOIN person_overrides d ON d.project_id = e.project_id AND d.distinct_id = e.distinct_id
ORDER BY e.project_id, date_trunc('month', e.timestamp), coalesce(d.person_id, e.person_id),
         e.timestamp, e.uuid
"""
#: The events stored while :data:`COMPACT_EVENTS` ran, added after the sorted ones (events are
#: only ever added meanwhile: a project's reset waits for the compaction).
COMPACT_NEWER = """
INSERT INTO raw_events_compacted
SELECT e.* FROM raw_events e
WHERE NOT EXISTS (
    SELECT 1 FROM raw_events_compacted c WHERE c.project_id = e.project_id AND c.uuid = e.uuid
)
"""
#: Share of a project's events that may have arrived since its compaction for its events to
#: count as in person order (:meth:`DuckDBEventStore.person_ordered`).
UNORDERED_SHARE = 0.1
#: The flag (in ``store_flags``) of a ``person_overrides`` table that a bulk load made stale.
STALE = "person_overrides_stale"
#: DuckDB 2.0's projection pull-up gives wrong answers on some of our plans: the persona query
#: (a UNION ALL of persons and per-person event aggregates, grouped again) read every person as
#: a non-payer once ``events`` joined a small overrides table (tests/audience/test_persona.py
#: caught it; disabling this one optimizer, or statistics propagation, fixes it).
DISABLED_OPTIMIZERS = "projection_pullup"
#: Beyond this many stored events the writer stops keeping their hashes (8 bytes each) in memory
#: and checks every batch with ON CONFLICT instead.
MAX_SEEN_EVENTS = 50_000_000


def jsonable(value: Any) -> Any:
    """Turn an engine value into something ``orjson``/JSON output can carry as-is."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def events_arrow(project_id: int, events: Sequence[Event], received_at: datetime) -> pa.Table:
    """Column-wise Arrow table of events (the fast path into DuckDB)."""
    n = len(events)
    dumps = orjson.dumps
    return pa.Table.from_pydict(
        {
            "project_id": [project_id] * n,
            "uuid": [e.uuid for e in events],
            "event": [e.event for e in events],
            "distinct_id": [e.distinct_id for e in events],
            "person_id": [e.person_id for e in events],
            "timestamp": [e.timestamp for e in events],
            "received_at": [received_at] * n,
            "properties": [dumps(e.properties).decode() for e in events],
            "channel": [e.channel for e in events],
            "utm_source": [e.utm_source for e in events],
            "os": [e.os for e in events],
            "app_version": [e.app_version for e in events],
            "device_id": [e.device_id for e in events],
            "ip": [e.ip for e in events],
            "amount": [e.amount for e in events],
        },
        schema=ARROW_EVENTS,
    )


class DuckDBTransaction:
    """The writer's view of one open DuckDB transaction.

    Events of a batch none of whose uuids is stored yet (the usual case, known from the uuid
    hashes) are staged and inserted at commit, so they carry the persons the batch settled on;
    otherwise they are inserted at once (``ON CONFLICT`` finds the duplicates) and a distinct id
    whose person then changed gets an override."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seen: SeenHashes | None = None) -> None:
        self.con = con
        self.seen = seen
        self._staged: list[tuple[int, list[Event], datetime]] = []
        #: project -> distinct id -> person ids of its events inserted before the batch settled
        self._written: dict[int, dict[str, set[str]]] = {}

    def lookup_distinct_ids(self, project_id: int, distinct_ids: Sequence[str]) -> dict[str, str]:
        if not distinct_ids:
            return {}
        ids = pa.table({"distinct_id": pa.array(list(distinct_ids), pa.string())})
        self.con.register("_ids", ids)
        try:
            rows = self.con.execute(
                "SELECT d.distinct_id, d.person_id::VARCHAR FROM raw_person_distinct_ids d "
                "JOIN _ids USING (distinct_id) WHERE d.project_id = ?",
                [project_id],
            ).fetchall()
        finally:
            self.con.unregister("_ids")
        return dict(rows)

    def load_persons(self, project_id: int, person_ids: Sequence[str]) -> dict[str, PersonRecord]:
        if not person_ids:
            return {}
        ids = pa.table({"id": pa.array(list(person_ids), pa.string())})
        self.con.register("_pids", ids)
        try:
            rows = self.con.execute(
                "SELECT p.id::VARCHAR, p.created_at, p.properties, p.is_identified "
                "FROM raw_persons p JOIN _pids ON p.id = _pids.id::UUID WHERE p.project_id = ?",
                [project_id],
            ).fetchall()
        finally:
            self.con.unregister("_pids")
        return {r[0]: PersonRecord(r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows}

    def insert_events(
        self, project_id: int, events: Sequence[Event], received_at: datetime
    ) -> set[str]:
        if not events:
            return set()
        unique: dict[str, Event] = {}
        for ev in events:
            unique.setdefault(ev.uuid, ev)
        if self.seen is not None:
            uuids = pa.table(
                {
                    "project_id": pa.repeat(pa.scalar(project_id, pa.int32()), len(unique)),
                    "uuid": pa.array(list(unique), pa.string()),
                }
            )
            self.con.register("_uuids", uuids)
            try:
                hashes = self.con.execute(HASH_BATCH).fetchnumpy()["h"]
            finally:
                self.con.unregister("_uuids")
            fresh = not self.seen.any_of(hashes)
            self.seen.add(hashes)
            if fresh:  # no uuid of the batch is stored: staged, inserted at commit
                self._staged.append((project_id, list(unique.values()), received_at))
                return set(unique)
        self.con.register("_batch", events_arrow(project_id, list(unique.values()), received_at))
        try:
            rows = self.con.execute(INSERT_EVENTS).fetchall()
        finally:
            self.con.unregister("_batch")
        inserted = {str(r[0]) for r in rows}
        written = self._written.setdefault(project_id, {})
        for ev in unique.values():
            if ev.uuid in inserted and ev.person_id is not None:
                written.setdefault(ev.distinct_id, set()).add(ev.person_id)
        return inserted

    def settle_persons(self, project_id: int, persons_of: dict[str, str]) -> None:
        written = self._written.pop(project_id, {})
        moved = {
            d: persons_of[d]
            for d, pids in written.items()
            if d in persons_of and pids != {persons_of[d]}
        }
        self.override_distinct_ids(project_id, moved)

    def override_distinct_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        if not mapping:
            return
        self.con.register("_over", _pairs("distinct_id", "person_id", mapping))
        try:
            self.con.execute(
                "INSERT INTO person_overrides SELECT ?, distinct_id, person_id::UUID FROM _over "
                "ON CONFLICT DO UPDATE SET person_id = excluded.person_id",
                [project_id],
            )
        finally:
            self.con.unregister("_over")

    def write_staged(self) -> None:
        """Insert the staged events, with the person ids they carry now (before COMMIT)."""
        for project_id, events, received_at in self._staged:
            self.con.register("_batch", events_arrow(project_id, events, received_at))
            try:
                self.con.execute(INSERT_NEW_EVENTS)
            finally:
                self.con.unregister("_batch")
        self._staged.clear()

    def map_distinct_ids(self, project_id: int, mapping: dict[str, str]) -> None:
        if not mapping:
            return
        self.con.register("_map", _pairs("distinct_id", "person_id", mapping))
        try:
            self.con.execute(
                "INSERT INTO raw_person_distinct_ids "
                "SELECT ?, distinct_id, person_id::UUID FROM _map "
                "ON CONFLICT DO UPDATE SET person_id = excluded.person_id",
                [project_id],
            )
            # an overridden id (personless until now) keeps pointing at its current person
            self.con.execute(
                "UPDATE person_overrides SET person_id = _map.person_id::UUID FROM _map "
                "WHERE person_overrides.project_id = ? "
                "AND person_overrides.distinct_id = _map.distinct_id",
                [project_id],
            )
        finally:
            self.con.unregister("_map")

    def repoint_persons(self, project_id: int, survivors: dict[str, str]) -> None:
        if not survivors:
            return
        self.con.register("_merged", _pairs("old", "new", survivors))
        try:
            # stored events of these ids carry the absorbed person: override them
            self.con.execute(
                "INSERT INTO person_overrides SELECT d.project_id, d.distinct_id, _merged.new::UUID "
                "FROM raw_person_distinct_ids d JOIN _merged ON d.person_id = _merged.old::UUID "
                "WHERE d.project_id = ? ON CONFLICT DO UPDATE SET person_id = excluded.person_id",
                [project_id],
            )
            self.con.execute(
                "UPDATE raw_person_distinct_ids SET person_id = _merged.new::UUID FROM _merged "
                "WHERE raw_person_distinct_ids.project_id = ? "
                "AND raw_person_distinct_ids.person_id = _merged.old::UUID",
                [project_id],
            )
        finally:
            self.con.unregister("_merged")

    def upsert_persons(self, project_id: int, persons: Sequence[PersonRecord]) -> None:
        if not persons:
            return
        tbl = pa.table(
            {
                "id": pa.array([p.id for p in persons], pa.string()),
                "created_at": pa.array([p.created_at for p in persons], pa.timestamp("us")),
                "properties": pa.array(
                    [orjson.dumps(p.properties).decode() for p in persons], pa.string()
                ),
                "is_identified": pa.array([p.is_identified for p in persons], pa.bool_()),
            }
        )
        self.con.register("_persons", tbl)
        try:
            self.con.execute(
                "INSERT INTO raw_persons SELECT ?, id::UUID, created_at, properties::JSON, "
                "is_identified FROM _persons ON CONFLICT DO UPDATE SET "
                "created_at = excluded.created_at, properties = excluded.properties, "
                "is_identified = excluded.is_identified",
                [project_id],
            )
        finally:
            self.con.unregister("_persons")

    def created_at_of(self, project_id: int, person_ids: Sequence[str]) -> dict[str, datetime]:
        if not person_ids:
            return {}
        self.con.register("_cids", pa.table({"id": pa.array(list(person_ids), pa.string())}))
        try:
            rows = self.con.execute(
                "SELECT p.id::VARCHAR, p.created_at FROM raw_persons p "
                "JOIN _cids ON p.id = _cids.id::UUID WHERE p.project_id = ?",
                [project_id],
            ).fetchall()
        finally:
            self.con.unregister("_cids")
        return dict(rows)

    def lower_created_at(self, project_id: int, first_seen: dict[str, datetime]) -> None:
        if not first_seen:
            return
        tbl = pa.table(
            {
                "id": pa.array(list(first_seen.keys()), pa.string()),
                "seen": pa.array(list(first_seen.values()), pa.timestamp("us")),
            }
        )
        self.con.register("_seen", tbl)
        try:
            self.con.execute(
                "UPDATE raw_persons SET created_at = _seen.seen FROM _seen "
                "WHERE raw_persons.project_id = ? AND raw_persons.id = _seen.id::UUID "
                "AND _seen.seen < raw_persons.created_at",
                [project_id],
            )
        finally:
            self.con.unregister("_seen")

    def delete_persons(self, project_id: int, person_ids: Sequence[str]) -> None:
        if not person_ids:
            return
        self.con.register("_gone", pa.table({"id": pa.array(list(person_ids), pa.string())}))
        try:
            self.con.execute(
                "DELETE FROM raw_persons WHERE project_id = ? "
                "AND id IN (SELECT id::UUID FROM _gone)",
                [project_id],
            )
        finally:
            self.con.unregister("_gone")


def _pairs(key: str, value: str, mapping: dict[str, str]) -> pa.Table:
    """A two-column Arrow table of a str -> str mapping, to join against."""
    return pa.table(
        {
            key: pa.array(list(mapping.keys()), pa.string()),
            value: pa.array(list(mapping.values()), pa.string()),
        }
    )


def _project_filter(project_id: int, table: str | None = None) -> exp.Expression:
    return exp.column("project_id", table=table).eq(exp.Literal.number(project_id))


def _ordered(ordered: int, events: int) -> bool:
    """Whether ``events`` of which ``ordered`` were compacted count as in person order."""
    return ordered > 0 and events - ordered <= UNORDERED_SHARE * events


class DuckDBEventStore:
    """:class:`~yunying.store.base.EventStore` on an embedded DuckDB file."""

    dialect = "duckdb"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {"disabled_optimizers": DISABLED_OPTIMIZERS}
        if threads:
            config["threads"] = threads
        self._con = duckdb.connect(self.path, config=config)
        had_overrides = bool(
            self._con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'person_overrides'"
            ).fetchall()[0][0]
        )
        self._con.execute(SCHEMA)
        self._write_lock = threading.Lock()
        self._compact_lock = threading.Lock()  # one compaction at a time, no reset during one
        #: overrides must be rebuilt before the next read or write (bulk load, older file); kept
        #: in the file too, since the demo loads in one process and the server reads in another
        self._stale_flag = bool(
            self._con.execute(
                f"SELECT count(*) FROM store_flags WHERE name = '{STALE}'"
            ).fetchall()[0][0]
        )
        self._overrides_stale = not had_overrides or self._stale_flag
        self._seen: SeenHashes | None = None  # built on the first write transaction
        self._local = threading.local()

    # -- writes -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[DuckDBTransaction]:
        """One write transaction; a lock keeps writers single-file even if misused."""
        self.refresh_overrides(only_if_stale=True)
        with self._write_lock:
            con = self._con.cursor()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    tx = DuckDBTransaction(con, self._seen_hashes(con))
                    yield tx
                    tx.write_staged()
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            finally:
                con.close()

    def _seen_hashes(self, con: duckdb.DuckDBPyConnection) -> SeenHashes | None:
        """The hashes of stored event uuids, read from the table once per process."""
        if self._seen is None:
            count = con.execute("SELECT count(*) FROM raw_events").fetchall()[0][0]
            if count > MAX_SEEN_EVENTS:
                return None
            self._seen = SeenHashes(con.execute(HASH_STORED).fetchnumpy()["h"])
        return self._seen

    def bulk_insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table whose columns match ``table`` (demo data, bulk loads)."""
        if table not in ("raw_events", "raw_persons", "raw_person_distinct_ids"):
            raise ValueError(f"unknown table {table}")
        with self._write_lock:
            con = self._con.cursor()
            try:
                con.register("_bulk", data)
                cols = ", ".join(data.column_names)
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _bulk")
                con.unregister("_bulk")
                self._seen = None  # rebuilt from the table on the next write
                if table != "raw_persons":
                    if not self._stale_flag:
                        con.execute(
                            f"INSERT INTO store_flags VALUES ('{STALE}') ON CONFLICT DO NOTHING"
                        )
                        self._stale_flag = True
                    self._overrides_stale = True
            finally:
                con.close()

    def refresh_overrides(self, *, only_if_stale: bool = False) -> None:
        """Rebuild ``person_overrides`` from the stored events and id map (one pass over events);
        bulk loads bypass the writer that keeps it up to date, so they mark it stale."""
        if only_if_stale and not self._overrides_stale:
            return
        with self._write_lock:
            if only_if_stale and not self._overrides_stale:
                return
            con = self._con.cursor()
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute("DELETE FROM person_overrides")
                con.execute(REBUILD_OVERRIDES)
                con.execute(f"DELETE FROM store_flags WHERE name = '{STALE}'")
                con.execute("COMMIT")
                self._overrides_stale = self._stale_flag = False
            finally:
                con.close()

    def compact_events(self) -> dict[str, Any]:
        """Rewrite ``raw_events`` in person order (:data:`COMPACT_EVENTS`), as ClickHouse's
        merges keep its parts. The sort reads a snapshot while ingestion goes on; then, with
        writers held for a moment, the events stored meanwhile are added and the tables
        swapped. The same rows, values and ids: only their order changes. Returns the rows and
        the seconds taken, and how long writers waited."""
        started = perf_counter()
        self.refresh_overrides(only_if_stale=True)
        with self._compact_lock:
            con = self._con.cursor()
            try:
                con.execute("DROP TABLE IF EXISTS raw_events_compacted")
                con.execute("BEGIN TRANSACTION")
                con.execute(EVENTS_TABLE.format(name="raw_events_compacted"))
                con.execute(COMPACT_EVENTS)
                con.execute("COMMIT")
                with self._write_lock:
                    held = perf_counter()
                    con.execute("BEGIN TRANSACTION")
                    try:
                        con.execute(COMPACT_NEWER)
                        con.execute("DROP TABLE raw_events")
                        con.execute("ALTER TABLE raw_events_compacted RENAME TO raw_events")
                        con.execute("DELETE FROM event_layout")
                        con.execute(
                            "INSERT INTO event_layout "
                            "SELECT project_id, count(*) FROM raw_events GROUP BY project_id"
                        )
                        rows = con.execute("SELECT sum(ordered_rows) FROM event_layout").fetchall()
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    con.execute("COMMIT")
                    waited = perf_counter() - held
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.execute("DROP TABLE IF EXISTS raw_events_compacted")
                con.close()
        # fold the rewritten table into the file now, unless queries are running: then DuckDB
        # does it by itself at a later commit (its WAL is past the checkpoint threshold)
        with contextlib.suppress(duckdb.TransactionException):
            self.checkpoint()
        return {
            "rows": int(rows[0][0] or 0),
            "seconds": round(perf_counter() - started, 3),
            "writers_waited_seconds": round(waited, 3),
        }

    def event_layout(self) -> list[dict[str, Any]]:
        """Per project: its events, how many were in person order at its last compaction, and
        whether it counts as in person order now (:meth:`person_ordered`)."""
        rows = (
            self._reader()
            .execute(
                "SELECT c.project_id, c.n, coalesce(l.ordered_rows, 0) FROM "
                "(SELECT project_id, count(*) AS n FROM raw_events GROUP BY project_id) AS c "
                "LEFT JOIN event_layout AS l ON l.project_id = c.project_id ORDER BY 1"
            )
            .fetchall()
        )
        return [
            {"project_id": p, "events": n, "ordered_events": o, "person_ordered": _ordered(o, n)}
            for p, n, o in rows
        ]

    def person_ordered(self, project_id: int) -> bool:
        """Whether the project's events are in person order (compacted, with at most
        :data:`UNORDERED_SHARE` of them arrived since), so per-person lists are cheaper to read
        as runs of rows than to group. Only a question of speed: runs in any order are right."""
        rows = (
            self._reader()
            .execute(
                "SELECT (SELECT ordered_rows FROM event_layout WHERE project_id = $p), "
                "(SELECT count(*) FROM raw_events WHERE project_id = $p)",
                {"p": project_id},
            )
            .fetchall()
        )
        return _ordered(rows[0][0] or 0, rows[0][1])

    def replace_person_values(self, project_id: int, scope: str, data: pa.Table) -> None:
        """Swap the rows of one ``scope`` in ``person_values`` atomically."""
        self.replace_person_values_many(project_id, {scope: data})

    def replace_person_values_many(self, project_id: int, scopes: dict[str, pa.Table]) -> None:
        """:meth:`replace_person_values` of several scopes in ONE transaction."""
        with self._write_lock:
            con = self._con.cursor()
            try:
                con.execute("BEGIN TRANSACTION")
                for scope, data in scopes.items():
                    con.register("_values", person_values_table(data))
                    con.execute(
                        "DELETE FROM person_values WHERE project_id = ? AND scope = ?",
                        [project_id, scope],
                    )
                    con.execute(
                        "INSERT INTO person_values SELECT ?, ?, person_id::UUID, label, value, "
                        "now()::TIMESTAMP FROM _values",
                        [project_id, scope],
                    )
                    con.unregister("_values")
                con.execute("COMMIT")
            finally:
                con.close()  # uncommitted: rolled back

    def delete_project_data(self, project_id: int) -> None:
        """Remove every event, person, distinct id and person value of a project (demo reset)."""
        with self._compact_lock, self._write_lock:
            con = self._con.cursor()
            try:
                con.execute("BEGIN TRANSACTION")
                for table in (
                    "raw_events",
                    "raw_persons",
                    "raw_person_distinct_ids",
                    "person_overrides",
                    "person_values",
                    "event_layout",
                ):
                    con.execute(f"DELETE FROM {table} WHERE project_id = ?", [project_id])
                con.execute("COMMIT")
            finally:
                con.close()

    # -- reads --------------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._con.cursor()
            # Arrow reads (query_arrow) get UUIDs as 16 bytes, not text; rows are unaffected
            con.execute("SET arrow_lossless_conversion = true")
            self._local.con = con
        return con

    def _has_overrides(self, project_id: int) -> bool:
        """Whether any stored event of the project may carry another person than its id's."""
        rows = (  # fetch to the end: an unfinished result would block this connection
            self._reader()
            .execute("SELECT 1 FROM person_overrides WHERE project_id = ? LIMIT 1", [project_id])
            .fetchall()
        )
        return bool(rows)

    def scoped(self, relation: str, project_id: int) -> exp.Query:
        if relation == "events":
            self.refresh_overrides(only_if_stale=True)
            if not self._has_overrides(project_id):  # no merged or personless ids: no join
                return (
                    exp.select(*[exp.column(c) for c in EVENT_COLUMNS])
                    .from_("raw_events")
                    .where(_project_filter(project_id))
                )
            resolved = exp.func(
                "COALESCE", exp.column("person_id", "d"), exp.column("person_id", "e")
            )
            columns: list[exp.Expr] = [
                exp.column(c, "e") for c in EVENT_COLUMNS if c != "person_id"
            ]
            columns.insert(3, exp.alias_(resolved, "person_id"))
            ids = (
                exp.select("distinct_id", "person_id")
                .from_("person_overrides")
                .where(_project_filter(project_id))
                .subquery("d")
            )
            return (
                exp.select(*columns)
                .from_(exp.to_table("raw_events").as_("e"))
                .join(
                    ids,
                    on=exp.column("distinct_id", "d").eq(exp.column("distinct_id", "e")),
                    join_type="left",
                )
                .where(_project_filter(project_id, "e"))
            )
        if relation == "persons":
            return (
                exp.select("id", "created_at", "properties", "is_identified")
                .from_("raw_persons")
                .where(_project_filter(project_id))
            )
        if relation == "person_distinct_ids":
            return (
                exp.select("distinct_id", "person_id")
                .from_("raw_person_distinct_ids")
                .where(_project_filter(project_id))
            )
        if relation == "person_values":
            return (
                exp.select("scope", "person_id", "label", "value", "computed_at")
                .from_("person_values")
                .where(_project_filter(project_id))
            )
        raise KeyError(relation)

    def query(self, sql: str) -> QueryResult:
        con = self._reader()
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description or []]
        rows = [[jsonable(v) for v in row] for row in cur.fetchall()]
        return QueryResult(columns, rows)

    def query_arrow(self, sql: str) -> pa.Table:
        """As :meth:`query`, as Arrow; UUID values come as 16 bytes (``arrow.uuid``), not text."""
        result: pa.Table = self._reader().sql(sql).to_arrow_table()
        return result

    def iter_query(self, sql: str, batch_rows: int = 10_000) -> Iterator[list[Any]]:
        con = self._con.cursor()
        try:
            cur = con.execute(sql)
            while chunk := cur.fetchmany(batch_rows):
                for row in chunk:
                    yield [jsonable(v) for v in row]
        finally:
            con.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""
        with self._write_lock:
            self._con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._write_lock:
            self._con.close()


def render(query: exp.Expression, dialect: str = "duckdb") -> str:
    """SQL text of an expression tree in ``dialect``."""
    return query.sql(dialect=dialect)
