"""Identity resolution (ID-mapping, 用户关联): which person each distinct id belongs to.

Rules (close to PostHog's, so teams moving over see the same people):

- An unseen distinct id gets a new person whose id is derived from project and distinct id, so
  replaying the same events yields the same person ids.
- ``$identify`` from distinct id U with ``$anon_distinct_id`` A links A to U's person. If A already
  has its own person, that person is merged into U's -- unless it is itself identified (a shared
  device whose earlier user logged in): two identified people are never merged by ``$identify``.
- ``$create_alias`` (distinct id D, ``properties.alias`` A) links the two the same way, refusing only
  when both persons are identified.
- A merge moves every distinct id of the absorbed person to the survivor; the survivor keeps its
  own property values and takes the absorbed person's for names it lacks; the earlier
  ``created_at`` wins. Events are not rewritten: an event carries the person its batch settled
  on, and the ids whose stored events carry an older person get an override that readers take.
- An event with ``$process_person_profile: false`` (PostHog's personless events) from a distinct
  id never seen creates no person and no link; its person id is the one the distinct id would get.
- The survivor of a merge is identified if either person was; ``created_at`` of a person is the
  earliest timestamp of the events attributed to it, whatever order they arrive in.
- Person property operations ride on any event: ``$set_once``, ``$set``, ``$increment`` (add
  numbers), ``$append`` (append to a list), ``$union`` (append values not yet in the list),
  ``$remove`` (remove values from a list) and ``$unset``, in that order within one event; events
  apply in the order they were sent, once per event uuid: a resent event changes nothing. The
  event ``$delete_person`` empties the person's properties first (its events and ids stay).
- Batching never changes the outcome: a batch is processed event by event, in order, exactly as
  if each event had come alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from yunying.ingest.model import PERSON_OPERATION_SET, Event
from yunying.store.base import EventTransaction, PersonRecord

PERSON_NAMESPACE = uuid.UUID("9f1c2b4e-5a7d-4e0b-8c3f-2d6a1b9e7c50")
MAX_CACHED_IDS = 2_000_000
#: Events that act on the person even without property operations.
PERSON_EVENTS = ("$identify", "$create_alias", "$delete_person")


@lru_cache(maxsize=1 << 16)
def person_id_for(project_id: int, distinct_id: str) -> str:
    """The id of the person first created for ``distinct_id`` (deterministic)."""
    return str(uuid.uuid5(PERSON_NAMESPACE, f"{project_id}:{distinct_id}"))


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` and ``1`` is not ``1.0`` here, unlike in Python,
    inside lists and objects too (``[true]`` is not ``[1.0]``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def apply_property_ops(props: dict[str, Any], event_props: dict[str, Any]) -> bool:
    """Apply the event's person operations to ``props`` in place; True if anything changed."""
    changed = False
    for key, value in (event_props.get("$set_once") or {}).items():
        if key not in props:
            props[key] = value
            changed = True
    for key, value in (event_props.get("$set") or {}).items():
        if key not in props or not _same(props[key], value):
            props[key] = value
            changed = True
    for key, value in (event_props.get("$increment") or {}).items():
        current = props.get(key)
        if isinstance(current, int | float) and not isinstance(current, bool):
            props[key] = current + value
        else:
            props[key] = value
        changed = True
    for key, value in (event_props.get("$append") or {}).items():
        current = props.get(key)
        if isinstance(current, list):
            props[key] = [*current, value]
        elif current is None:
            props[key] = [value]
        else:
            props[key] = [current, value]
        changed = True
    for key, value in (event_props.get("$union") or {}).items():
        current = props.get(key)
        items = list(current) if isinstance(current, list) else [] if current is None else [current]
        for v in _values(value):
            if not any(_same(v, old) for old in items):
                items.append(v)
        if key not in props or not _same(current, items):
            props[key] = items
            changed = True
    for key, value in (event_props.get("$remove") or {}).items():
        current = props.get(key)
        if isinstance(current, list):
            gone = _values(value)
            kept = [old for old in current if not any(_same(old, v) for v in gone)]
            if len(kept) != len(current):
                props[key] = kept
                changed = True
    for key in event_props.get("$unset") or []:
        if key in props:
            del props[key]
            changed = True
    return changed


def _has_ops(props: dict[str, Any]) -> bool:
    return not PERSON_OPERATION_SET.isdisjoint(props)


class IdentityResolver:
    """Resolves and merges persons inside the writer's transaction; caches the id map.

    Only the single ingestion writer uses a resolver, so the cache needs no locking; after a
    failed transaction call :meth:`forget` because the cache may hold uncommitted links.
    """

    def __init__(self) -> None:
        self._person_of: dict[tuple[int, str], str] = {}
        #: absorbed person -> survivor, so cached ids of a merged person stay right
        self._merged_into: dict[str, str] = {}
        #: person -> created_at as committed, so most batches need not touch created_at at all
        self._created: dict[str, datetime] = {}

    def forget(self) -> None:
        """Drop the cache (after a rollback or an outside write to the id map)."""
        self._person_of.clear()
        self._merged_into.clear()
        self._created.clear()

    def ingest(
        self, tx: EventTransaction, project_id: int, events: Sequence[Event], received_at: datetime
    ) -> set[str]:
        """Store events, then resolve persons and apply identity operations; returns new uuids.

        Events are handed to the store first with the person their distinct id has now (or would
        get), which tells which of them are new; those, first copies only, are then processed one
        by one in order, and each takes the person its distinct id ends the batch with. A store
        that wrote an event before that gets told (``settle_persons``) and overrides the id.
        """
        if len(self._person_of) > MAX_CACHED_IDS or len(self._created) > MAX_CACHED_IDS:
            self.forget()
        batch = _Batch(self._person_of, self._merged_into, self._created, tx, project_id)
        batch.prefetch(events)
        for ev in events:
            ev.person_id = batch.known(ev.distinct_id) or person_id_for(project_id, ev.distinct_id)
        inserted = tx.insert_events(project_id, events, received_at)
        fresh = _first_copies(events, inserted)
        batch.preload(fresh)
        for ev in fresh:
            batch.process(ev)
        persons_of, personless = batch.settle(fresh)
        batch.flush()
        tx.override_distinct_ids(project_id, personless)
        tx.settle_persons(project_id, persons_of)
        return inserted


def _first_copies(events: Sequence[Event], inserted: set[str]) -> list[Event]:
    """The events actually stored, each uuid once (a batch may repeat an event)."""
    seen: set[str] = set()
    fresh = []
    for ev in events:
        if ev.uuid in inserted and ev.uuid not in seen:
            seen.add(ev.uuid)
            fresh.append(ev)
    return fresh


def _other_id(ev: Event) -> str | None:
    """The second distinct id an identity event links (anonymous id or alias)."""
    if ev.event == "$identify":
        other = ev.properties.get("$anon_distinct_id")
    elif ev.event == "$create_alias":
        other = ev.properties.get("alias")
    else:
        return None
    return None if other is None or str(other) == ev.distinct_id else str(other)


def _personless(ev: Event) -> bool:
    """PostHog's ``$process_person_profile: false``: record the event, create no person."""
    return ev.properties.get("$process_person_profile") is False and _other_id(ev) is None


def _touches_person(ev: Event) -> bool:
    return ev.event in PERSON_EVENTS or _has_ops(ev.properties)


class _Batch:
    """Identity work of one project within one transaction, event by event."""

    def __init__(
        self,
        cache: dict[tuple[int, str], str],
        merged_into: dict[str, str],
        created: dict[str, datetime],
        tx: EventTransaction,
        project_id: int,
    ) -> None:
        self.cache = cache
        self.merged_into = merged_into
        self.created = created
        self.tx = tx
        self.project_id = project_id
        self.absent: set[str] = set()  # distinct ids looked up in the store and not found
        self.persons: dict[str, PersonRecord] = {}
        self.dirty: set[str] = set()
        self.links: dict[str, str] = {}
        self.absorbed: set[str] = set()  # persons merged away in this batch
        self.first_seen: dict[str, datetime] = {}

    def prefetch(self, events: Sequence[Event]) -> None:
        """Look up every distinct id the batch names in one query."""
        wanted = {ev.distinct_id for ev in events}
        wanted.update(o for ev in events if (o := _other_id(ev)) is not None)
        self._lookup([d for d in wanted if (self.project_id, d) not in self.cache])

    def _lookup(self, distinct_ids: list[str]) -> None:
        found = self.tx.lookup_distinct_ids(self.project_id, distinct_ids)
        for d in distinct_ids:
            p = found.get(d)
            if p is None:
                self.absent.add(d)
            else:
                self.cache[(self.project_id, d)] = p

    def survivor(self, pid: str) -> str:
        while pid in self.merged_into:
            pid = self.merged_into[pid]
        return pid

    def known(self, distinct_id: str) -> str | None:
        """The person ``distinct_id`` belongs to now, or None for an id never seen."""
        pid = self.links.get(distinct_id)
        if pid is None:
            key = (self.project_id, distinct_id)
            pid = self.cache.get(key)
            if pid is None:
                if distinct_id in self.absent:
                    return None
                self._lookup([distinct_id])
                pid = self.cache.get(key)
                if pid is None:
                    return None
        return self.survivor(pid)

    def preload(self, events: Sequence[Event]) -> None:
        """Load, in one query, the persons that events of the batch will read or change."""
        wanted: set[str] = set()
        for ev in events:
            if _touches_person(ev):
                for d in (ev.distinct_id, _other_id(ev)):
                    pid = self.known(d) if d is not None else None
                    if pid is not None and pid not in self.persons:
                        wanted.add(pid)
        self.persons.update(self.tx.load_persons(self.project_id, list(wanted)))

    def person(self, pid: str) -> PersonRecord:
        rec = self.persons.get(pid)
        if rec is None:
            rec = self.tx.load_persons(self.project_id, [pid])[pid]
            self.persons[pid] = rec
        return rec

    def seen(self, pid: str, at: datetime) -> None:
        """Remember an event of person ``pid`` at ``at`` (for ``created_at``)."""
        first = self.first_seen.get(pid)
        if first is None or at < first:
            self.first_seen[pid] = at

    def process(self, ev: Event) -> None:
        """Attribute one stored event to a person and apply its identity and property operations."""
        pid = self.known(ev.distinct_id)
        other = _other_id(ev)
        if pid is None:
            if _personless(ev):
                return
            other_pid = self.known(other) if other is not None else None
            if other_pid is not None and (
                ev.event == "$create_alias" or not self.person(other_pid).is_identified
            ):
                pid = other_pid
            else:
                pid = person_id_for(self.project_id, ev.distinct_id)
                self.persons[pid] = PersonRecord(pid, ev.timestamp)
                self.dirty.add(pid)
            self.links[ev.distinct_id] = pid
        if other is not None:
            pid = self.merge(pid, other, alias=ev.event == "$create_alias")
        self.seen(pid, ev.timestamp)
        if not _touches_person(ev):
            return
        rec = self.person(pid)
        if ev.event == "$identify" and not rec.is_identified:
            rec.is_identified = True
            self.dirty.add(pid)
        if ev.event == "$delete_person" and rec.properties:
            rec.properties = {}
            self.dirty.add(pid)
        if apply_property_ops(rec.properties, ev.properties):
            self.dirty.add(pid)

    def merge(self, main: str, other_id: str, *, alias: bool) -> str:
        """Link ``other_id`` to person ``main``, merging persons if the rules allow."""
        other = self.known(other_id)
        if other is None:
            self.links[other_id] = main
            return main
        if other == main:
            return main
        main_rec, other_rec = self.person(main), self.person(other)
        if other_rec.is_identified and (not alias or main_rec.is_identified):
            return main  # never fuse two identified people
        for key, value in other_rec.properties.items():
            main_rec.properties.setdefault(key, value)
        main_rec.created_at = min(main_rec.created_at, other_rec.created_at)
        main_rec.is_identified = main_rec.is_identified or other_rec.is_identified
        if other in self.first_seen:
            self.seen(main, self.first_seen.pop(other))
        self.dirty.add(main)
        self.dirty.discard(other)
        del self.persons[other]
        self.merged_into[other] = main
        self.absorbed.add(other)
        self.links[other_id] = main
        return main

    def settle(self, events: Sequence[Event]) -> tuple[dict[str, str], dict[str, str]]:
        """Give each event the person its distinct id ends the batch with; returns that map, and
        the personless ids among it (no person yet), whose events readers must follow to the
        person a later link gives them."""
        persons_of: dict[str, str] = {}
        personless: dict[str, str] = {}
        for ev in events:
            pid = persons_of.get(ev.distinct_id)
            if pid is None:
                pid = self.known(ev.distinct_id)
                if pid is None:
                    pid = personless[ev.distinct_id] = person_id_for(
                        self.project_id, ev.distinct_id
                    )
                persons_of[ev.distinct_id] = pid
            ev.person_id = pid
        return persons_of, personless

    def flush(self) -> None:
        """Write what the batch changed: id map, merged persons, person rows, created_at."""
        survivors = {p: self.survivor(p) for p in self.absorbed}
        self.tx.repoint_persons(self.project_id, survivors)
        links = {d: self.survivor(p) for d, p in self.links.items()}
        self.tx.map_distinct_ids(self.project_id, links)
        for pid, at in self.first_seen.items():
            rec = self.persons.get(pid)
            if rec is not None and at < rec.created_at:
                rec.created_at = at
                self.dirty.add(pid)
        self.tx.upsert_persons(self.project_id, [self.persons[p] for p in self.dirty])
        self._lower_created_at({p: t for p, t in self.first_seen.items() if p not in self.persons})
        self.tx.delete_persons(self.project_id, list(self.absorbed))
        for p in self.absorbed:
            self.created.pop(p, None)
        for rec in self.persons.values():
            self.created[rec.id] = rec.created_at
        for d, p in links.items():
            self.cache[(self.project_id, d)] = p

    def _lower_created_at(self, first_seen: dict[str, datetime]) -> None:
        """Move ``created_at`` of persons not loaded in this batch earlier where an event says so."""
        unknown = [p for p in first_seen if p not in self.created]
        self.created.update(self.tx.created_at_of(self.project_id, unknown))
        lower = {p: t for p, t in first_seen.items() if p in self.created and t < self.created[p]}
        self.tx.lower_created_at(self.project_id, lower)
        self.created.update(lower)
