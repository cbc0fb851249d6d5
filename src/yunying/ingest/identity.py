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
  ``created_at`` wins. Events are not rewritten: readers resolve person ids through the map.
- An event with ``$process_person_profile: false`` (PostHog's personless events) from a distinct
  id never seen creates no person and no link; its person id is the one the distinct id would get.
- Person property operations ride on any event: ``$set``, ``$set_once``, ``$unset``,
  ``$increment`` (add numbers) and ``$append`` (append to a list), applied in batch order, once
  per event uuid: a resent event changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from yunying.ingest.model import Event
from yunying.store.base import EventTransaction, PersonRecord

PERSON_NAMESPACE = uuid.UUID("9f1c2b4e-5a7d-4e0b-8c3f-2d6a1b9e7c50")
MAX_CACHED_IDS = 2_000_000


def person_id_for(project_id: int, distinct_id: str) -> str:
    """The id of the person first created for ``distinct_id`` (deterministic)."""
    return str(uuid.uuid5(PERSON_NAMESPACE, f"{project_id}:{distinct_id}"))


def apply_property_ops(props: dict[str, Any], event_props: dict[str, Any]) -> bool:
    """Apply the event's person operations to ``props`` in place; True if anything changed."""
    changed = False
    for key, value in (event_props.get("$set_once") or {}).items():
        if key not in props:
            props[key] = value
            changed = True
    for key, value in (event_props.get("$set") or {}).items():
        if props.get(key, object()) != value:
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
            current.append(value)
        elif current is None:
            props[key] = [value]
        else:
            props[key] = [current, value]
        changed = True
    for key in event_props.get("$unset") or []:
        if key in props:
            del props[key]
            changed = True
    return changed


def _has_ops(props: dict[str, Any]) -> bool:
    return any(op in props for op in ("$set", "$set_once", "$unset", "$increment", "$append"))


class IdentityResolver:
    """Resolves and merges persons inside the writer's transaction; caches the id map.

    Only the single ingestion writer uses a resolver, so the cache needs no locking; after a
    failed transaction call :meth:`forget` because the cache may hold uncommitted links.
    """

    def __init__(self) -> None:
        self._person_of: dict[tuple[int, str], str] = {}

    def forget(self) -> None:
        """Drop the cache (after a rollback or an outside write to the id map)."""
        self._person_of.clear()

    def ingest(
        self, tx: EventTransaction, project_id: int, events: Sequence[Event], received_at: datetime
    ) -> set[str]:
        """Resolve persons, store events, apply identity operations; returns inserted uuids."""
        if len(self._person_of) > MAX_CACHED_IDS:
            self._person_of.clear()
        batch = _Batch(self._person_of, tx, project_id)
        batch.prefetch(events)
        for ev in events:
            batch.assign(ev)
        inserted = tx.insert_events(project_id, events, received_at)
        fresh = _first_copies(events, inserted)
        batch.preload([ev.person_id for ev in fresh if _touches_person(ev)])
        for ev in fresh:
            batch.apply(ev)
        batch.flush()
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
    return ev.event in ("$identify", "$create_alias") or _has_ops(ev.properties)


class _Batch:
    """Identity work of one project within one transaction."""

    def __init__(
        self, cache: dict[tuple[int, str], str], tx: EventTransaction, project_id: int
    ) -> None:
        self.cache = cache
        self.tx = tx
        self.project_id = project_id
        self.persons: dict[str, PersonRecord] = {}
        self.new_persons: set[str] = set()
        self.dirty: set[str] = set()
        self.links: dict[str, str] = {}
        self.deleted: list[str] = []
        self.first_seen: dict[str, datetime] = {}

    def prefetch(self, events: Sequence[Event]) -> None:
        wanted = {ev.distinct_id for ev in events}
        wanted.update(o for ev in events if (o := _other_id(ev)) is not None)
        self._lookup([d for d in wanted if (self.project_id, d) not in self.cache])

    def _lookup(self, distinct_ids: list[str]) -> None:
        for d, p in self.tx.lookup_distinct_ids(self.project_id, distinct_ids).items():
            self.cache[(self.project_id, d)] = p

    def known(self, distinct_id: str) -> str | None:
        pid = self.links.get(distinct_id)
        if pid is None:
            key = (self.project_id, distinct_id)
            if key not in self.cache:
                self._lookup([distinct_id])
            pid = self.cache.get(key)
        return pid

    def link(self, distinct_id: str, person_id: str) -> None:
        self.links[distinct_id] = person_id

    def assign(self, ev: Event) -> None:
        """Set the event's person id, creating or linking a person for an unseen distinct id."""
        pid = self.known(ev.distinct_id)
        if pid is None and _personless(ev):
            ev.person_id = person_id_for(self.project_id, ev.distinct_id)
            return
        if pid is None:
            other = _other_id(ev)
            other_pid = self.known(other) if other is not None else None
            if other_pid is not None and (
                ev.event == "$create_alias" or not self._identified(other_pid)
            ):
                pid = other_pid
                self.link(ev.distinct_id, pid)
            else:
                pid = person_id_for(self.project_id, ev.distinct_id)
                self.link(ev.distinct_id, pid)
                self.persons[pid] = PersonRecord(pid, ev.timestamp)
                self.new_persons.add(pid)
                self.dirty.add(pid)
        elif pid not in self.new_persons:
            seen = self.first_seen.get(pid)
            if seen is None or ev.timestamp < seen:
                self.first_seen[pid] = ev.timestamp
        ev.person_id = pid

    def _identified(self, pid: str) -> bool:
        rec = self.persons.get(pid)
        if rec is None:
            rec = self.tx.load_persons(self.project_id, [pid]).get(pid)
        return bool(rec and rec.is_identified)

    def preload(self, person_ids: list[str | None]) -> None:
        missing = {p for p in person_ids if p is not None and p not in self.persons}
        self.persons.update(self.tx.load_persons(self.project_id, list(missing)))

    def person(self, pid: str) -> PersonRecord:
        rec = self.persons.get(pid)
        if rec is None:
            rec = self.tx.load_persons(self.project_id, [pid])[pid]
            self.persons[pid] = rec
        return rec

    def apply(self, ev: Event) -> None:
        target = self.known(ev.distinct_id)
        if target is None:  # a personless event from an unseen distinct id
            return
        other = _other_id(ev)
        if other is not None:
            target = self.merge(target, other, alias=ev.event == "$create_alias")
        if ev.event == "$identify":
            rec = self.person(target)
            if not rec.is_identified:
                rec.is_identified = True
                self.dirty.add(target)
        if _has_ops(ev.properties) and apply_property_ops(
            self.person(target).properties, ev.properties
        ):
            self.dirty.add(target)

    def merge(self, main: str, other_id: str, *, alias: bool) -> str:
        """Link ``other_id`` to person ``main``, merging persons if the rules allow."""
        other = self.known(other_id)
        if other is None:
            self.link(other_id, main)
            return main
        if other == main:
            return main
        main_rec, other_rec = self.person(main), self.person(other)
        if other_rec.is_identified and (not alias or main_rec.is_identified):
            return main  # never fuse two identified people
        for key, value in other_rec.properties.items():
            main_rec.properties.setdefault(key, value)
        main_rec.created_at = min(main_rec.created_at, other_rec.created_at)
        if other in self.first_seen:
            seen = self.first_seen.pop(other)
            self.first_seen[main] = min(seen, self.first_seen.get(main, seen))
        self.dirty.add(main)
        self.tx.repoint_person(self.project_id, other, main)
        for d, pid in self.links.items():
            if pid == other:
                self.links[d] = main
        self.cache.clear()  # other's distinct ids may be cached; the store now has the truth
        self.link(other_id, main)
        self.dirty.discard(other)
        self.persons.pop(other, None)
        if other in self.new_persons:
            self.new_persons.discard(other)
        else:
            self.deleted.append(other)
        return main

    def flush(self) -> None:
        self.tx.map_distinct_ids(self.project_id, self.links)
        for pid, seen in self.first_seen.items():
            rec = self.persons.get(pid)
            if rec is not None and seen < rec.created_at:
                rec.created_at = seen
                self.dirty.add(pid)
        self.tx.upsert_persons(self.project_id, [self.persons[p] for p in self.dirty])
        rest = {p: t for p, t in self.first_seen.items() if p not in self.persons}
        self.tx.lower_created_at(self.project_id, rest)
        self.tx.delete_persons(self.project_id, self.deleted)
        for d, p in self.links.items():
            self.cache[(self.project_id, d)] = p
