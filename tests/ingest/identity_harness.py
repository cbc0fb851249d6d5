"""Helpers for the identity tests: build native events, write them, read identity state back.

Everything is read through ``run_readonly_sql`` over the ``events``, ``persons`` and
``person_distinct_ids`` relations, the same path analysts use.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from yunying.ingest.identity import person_id_for
from yunying.ingest.model import Event, validate_batch
from yunying.ingest.writer import WriteResult
from yunying.runtime import Runtime
from yunying.store import run_readonly_sql

T0 = datetime(2024, 3, 1, 8, 0, 0)


def at(minute: float) -> datetime:
    """``T0`` plus some minutes (naive UTC, like stored timestamps)."""
    return T0 + timedelta(minutes=minute)


def ev(
    event: str,
    distinct_id: str,
    minute: float = 0,
    props: dict[str, Any] | None = None,
    *,
    uuid_: str | None = None,
) -> dict[str, Any]:
    """A native-API event dict; ``minute`` is its timestamp relative to ``T0``."""
    return {
        "event": event,
        "distinct_id": distinct_id,
        "timestamp": at(minute).isoformat() + "Z",
        "uuid": uuid_ or str(uuid.uuid4()),
        "properties": props or {},
    }


def identify(user: str, anon: str, minute: float = 0, props: dict[str, Any] | None = None) -> dict:
    return ev("$identify", user, minute, {"$anon_distinct_id": anon, **(props or {})})


def alias(distinct_id: str, other: str, minute: float = 0) -> dict[str, Any]:
    return ev("$create_alias", distinct_id, minute, {"alias": other})


def to_events(raws: list[dict[str, Any]]) -> list[Event]:
    """Validate native dicts (deep-copied, so nothing is shared with the caller)."""
    batch = validate_batch(copy.deepcopy(raws), now=datetime(2030, 1, 1))
    assert not batch.errors, batch.errors
    return batch.events


def send(runtime: Runtime, project_id: int, *raws: dict[str, Any]) -> WriteResult:
    """Write the events as one submission (one writer transaction) and wait for it."""
    return runtime.writer.write(project_id, to_events(list(raws)), timeout=30)


def send_each(runtime: Runtime, project_id: int, *raws: dict[str, Any]) -> None:
    """Write every event in its own transaction, in order."""
    for raw in raws:
        send(runtime, project_id, raw)


@dataclass(frozen=True)
class StoredPerson:
    id: str
    created_at: datetime
    properties: dict[str, Any]
    is_identified: bool


@dataclass(frozen=True)
class StoredIdentity:
    """What the read relations say about one project's identities."""

    project_id: int
    person_of: dict[str, str]  # person_distinct_ids: distinct id -> person id
    persons: dict[str, StoredPerson]  # persons, by id
    event_person: dict[str, str]  # events: uuid -> (resolved) person id
    event_timestamp: dict[str, datetime]

    def person(self, distinct_id: str) -> StoredPerson:
        return self.persons[self.person_of[distinct_id]]

    def creator(self, person_id: str) -> str:
        """The distinct id whose first event created the person (ids are derived from it)."""
        found = [d for d in self.person_of if person_id_for(self.project_id, d) == person_id]
        assert len(found) == 1, f"no distinct id of {person_id} derives its id"
        return found[0]

    def owners(self) -> dict[str, str]:
        """distinct id -> the distinct id that created its person: readable partitions."""
        return {d: self.creator(p) for d, p in sorted(self.person_of.items())}

    def groups(self) -> list[set[str]]:
        """The partition of distinct ids into persons, as a sorted list of sets."""
        by_person: dict[str, set[str]] = {}
        for d, p in self.person_of.items():
            by_person.setdefault(p, set()).add(d)
        return sorted(by_person.values(), key=sorted)


def _q(runtime: Runtime, project_id: int, sql: str) -> list[list[Any]]:
    return run_readonly_sql(runtime.store, project_id, sql).rows


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def stored(runtime: Runtime, project_id: int) -> StoredIdentity:
    person_of = dict(
        _q(runtime, project_id, "SELECT distinct_id, person_id FROM person_distinct_ids")
    )
    persons = {
        r[0]: StoredPerson(r[0], datetime.fromisoformat(r[1]), _json(r[2]), r[3])
        for r in _q(
            runtime, project_id, "SELECT id, created_at, properties, is_identified FROM persons"
        )
    }
    events = _q(runtime, project_id, "SELECT uuid, person_id, timestamp FROM events")
    return StoredIdentity(
        project_id,
        person_of,
        persons,
        {r[0]: r[1] for r in events},
        {r[0]: datetime.fromisoformat(r[2]) for r in events},
    )


def check_overrides(runtime: Runtime, project_id: int) -> int:
    """Persons on events: an id is overridden exactly where readers need it.

    Read from the engine's own tables: every distinct id with a stored event whose person id is
    not the id's current person is overridden, and an override names the current person (or, for
    an id without a person, the one its personless events carry). Overrides are written for
    merged and personless ids only, so ids that were neither are never overridden."""
    store = runtime.store
    final = " FINAL" if store.dialect == "clickhouse" else ""
    pid = int(project_id)

    def rows(sql: str) -> list[list[Any]]:
        return [[str(v) for v in r] for r in store.query(sql).rows]

    person_of = dict(
        rows(
            "SELECT distinct_id, CAST(person_id AS VARCHAR) "
            f"FROM raw_person_distinct_ids{final} WHERE project_id = {pid}"
        )
    )
    overrides = dict(
        rows(
            "SELECT distinct_id, CAST(person_id AS VARCHAR) "
            f"FROM person_overrides{final} WHERE project_id = {pid}"
        )
    )
    written: dict[str, set[str]] = {}
    for d, p in rows(
        f"SELECT distinct_id, CAST(person_id AS VARCHAR) FROM raw_events WHERE project_id = {pid}"
    ):
        written.setdefault(d, set()).add(p)
    for d, pids in written.items():
        current = person_of.get(d)
        if current is not None and pids != {current}:
            assert overrides.get(d) == current, f"{d}: events carry {pids}, person is {current}"
    for d, p in overrides.items():
        if d in person_of:
            assert p == person_of[d], f"override of {d} is stale"
        else:
            assert written.get(d) == {p}, f"personless {d}: events carry {written.get(d)}"
    return len(overrides)
