"""A plain-Python reference model of identity resolution, written from the rules in the docstring
of :mod:`yunying.ingest.identity` (not from its implementation).

The model processes events one at a time, in the order they were sent, as if every event were its
own batch. The real writer batches events and works in two phases, but the documented rules do not
mention batches, so how events are split into batches must not change the outcome.

Semantics encoded here (``D`` is the event's distinct id, ``A`` the other id of an identity event:
``$anon_distinct_id`` of ``$identify``, ``alias`` of ``$create_alias``; ``A == D`` is ignored):

1. Deduplication: an event whose uuid was already processed is ignored entirely: no person is
   created, no identity link, no property operation; the stored event is the first copy.
2. Unseen ``D``: normally a new person with id ``person_id_for(project, D)``. When the event is an
   identity event and ``A`` already belongs to a person that ``D`` may join (for ``$identify``: a
   person that is not identified; for ``$create_alias``: any person), ``D`` joins that person
   instead and no person is created (PostHog's behaviour; see the report in ``test_identity.py``).
   A person's id is therefore ``person_id_for(project, d)`` for the distinct id ``d`` whose event
   created it; a merge keeps the survivor's id.
3. ``$identify`` from D with ``A``: if ``A`` is unseen it is linked to D's person; if A's person
   is another person, it is merged into D's person unless A's person is identified. D's person is
   then marked identified (even when the merge was refused).
4. ``$create_alias`` from D with alias ``A``: the same, except that the merge is refused only when
   both persons are identified; it never marks anyone identified by itself.
5. Merge of ``absorbed`` into ``survivor``: every distinct id of the absorbed person moves to the
   survivor; the survivor keeps its own property values and takes the absorbed person's for the
   names it lacks; the earlier ``created_at`` wins; the survivor is identified if either person was
   (the docstring is silent here; anything else lets a later ``$identify`` fuse two identified
   people, which the rules forbid); the absorbed person no longer exists.
6. ``created_at`` of a person is the earliest ``timestamp`` of the (non-duplicate) events
   attributed to it (its own and those of persons merged into it), whatever order they arrive in.
7. Person property operations ride on any event and are applied, after the identity step, to the
   person the event's distinct id belongs to, in the order the events were sent (not by
   timestamp). Within one event they run in the order ``$set_once``, ``$set``, ``$increment``,
   ``$append``, ``$union``, ``$remove``, ``$unset``; the event ``$delete_person`` first empties
   the properties:

   - ``$set_once``: set names that are absent (a present ``null`` counts as present);
   - ``$set``: set (a value of a different JSON type replaces the old one even if Python thinks
     them equal, e.g. ``true`` over ``1``);
   - ``$increment``: add to a number (not a boolean); a missing or non-numeric value is replaced
     by the increment;
   - ``$append``: append to a list; a missing or ``null`` value becomes a one-element list, any
     other value becomes ``[old, new]``;
   - ``$union``: the value (or each value of a list) is appended to the list unless an equal
     JSON value is already in it; a missing or ``null`` value starts an empty list, a non-list
     value becomes a one-element list first;
   - ``$remove``: every element equal (as JSON) to the value (or to a value of a list) is removed
     from a list; a name that is missing or not a list is left alone;
   - ``$unset``: remove names.
8. Events are attributed to the person their distinct id belongs to at the end (readers resolve
   through the id map; stored events are never rewritten).
9. Personless events (``$process_person_profile: false``, PostHog's flag): when such an event's
   distinct id has no person yet, and the event links no other id, it is only stored: no person,
   no link, no identification, no property operation, and it does not count for ``created_at``.
   It is attributed to ``person_id_for(project, D)`` until ``D`` belongs to a person, then to
   that person. From a distinct id that already has a person it is an ordinary event.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from yunying.ingest.identity import person_id_for

IDENTITY_EVENTS = ("$identify", "$create_alias")


class EventLike(Protocol):
    """What the model reads from an event (``yunying.ingest.model.Event`` fits)."""

    uuid: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]


@dataclass
class RefPerson:
    id: str
    created_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    is_identified: bool = False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json(value: Any) -> str:
    """A value's JSON text: equality as JSON sees it (``true`` is not ``1``, ``1`` not ``1.0``)."""
    return json.dumps(value, sort_keys=True)


def apply_operations(props: dict[str, Any], event_props: dict[str, Any]) -> None:
    """Apply one event's person property operations to ``props`` (rule 7)."""
    for key, value in (event_props.get("$set_once") or {}).items():
        if key not in props:
            props[key] = copy.deepcopy(value)
    for key, value in (event_props.get("$set") or {}).items():
        props[key] = copy.deepcopy(value)
    for key, value in (event_props.get("$increment") or {}).items():
        old = props.get(key)
        props[key] = old + value if _is_number(old) else value
    for key, value in (event_props.get("$append") or {}).items():
        old = props.get(key)
        new = copy.deepcopy(value)
        if isinstance(old, list):
            props[key] = [*old, new]
        elif old is None:
            props[key] = [new]
        else:
            props[key] = [old, new]
    for key, value in (event_props.get("$union") or {}).items():
        old = props.get(key)
        items = list(old) if isinstance(old, list) else [] if old is None else [old]
        for new in value if isinstance(value, list) else [value]:
            if _json(new) not in {_json(v) for v in items}:
                items.append(copy.deepcopy(new))
        props[key] = items
    for key, value in (event_props.get("$remove") or {}).items():
        old = props.get(key)
        if isinstance(old, list):
            gone = {_json(v) for v in (value if isinstance(value, list) else [value])}
            props[key] = [v for v in old if _json(v) not in gone]
    for key in event_props.get("$unset") or []:
        props.pop(key, None)


class IdentityModel:
    """The identity state of one project after a sequence of events (see the module docstring)."""

    def __init__(self, project_id: int) -> None:
        self.project_id = project_id
        self.person_of: dict[str, str] = {}  # distinct id -> person id
        self.persons: dict[str, RefPerson] = {}
        self.event_distinct_id: dict[str, str] = {}  # uuid -> distinct id of the stored copy
        self.personless: set[str] = set()  # uuids of events stored without a person (rule 9)
        self.refused_merges = 0
        self.merges = 0
        #: set when an alias merged an identified person into one that was not (rule 5's
        #: survivor-becomes-identified case, which the implementation gets wrong)
        self.alias_absorbed_identified = False

    # -- queries --------------------------------------------------------------------------------

    def person_id(self, distinct_id: str) -> str | None:
        return self.person_of.get(distinct_id)

    def person(self, distinct_id: str) -> RefPerson:
        return self.persons[self.person_of[distinct_id]]

    def event_person(self) -> dict[str, str]:
        """uuid -> person id of every stored event (rules 8 and 9)."""
        return {
            u: self.person_of.get(d) or person_id_for(self.project_id, d)
            for u, d in self.event_distinct_id.items()
        }

    # -- processing -----------------------------------------------------------------------------

    def process_all(self, events: list[EventLike]) -> None:
        for ev in events:
            self.process(ev)

    def process(self, ev: EventLike) -> None:
        if ev.uuid in self.event_distinct_id:
            return  # rule 1: a resent event changes nothing
        self.event_distinct_id[ev.uuid] = ev.distinct_id
        other = self._other_id(ev)

        pid = self.person_of.get(ev.distinct_id)
        if pid is None and other is None and ev.properties.get("$process_person_profile") is False:
            self.personless.add(ev.uuid)  # rule 9
            return
        if pid is None:  # rule 2
            joinable = None
            if other is not None and other in self.person_of:
                candidate = self.persons[self.person_of[other]]
                if ev.event == "$create_alias" or not candidate.is_identified:
                    joinable = candidate.id
            if joinable is not None:
                pid = joinable
            else:
                pid = person_id_for(self.project_id, ev.distinct_id)
                assert pid not in self.persons, "person ids are derived from a fresh distinct id"
                self.persons[pid] = RefPerson(pid, ev.timestamp)
            self.person_of[ev.distinct_id] = pid

        if other is not None:  # rules 3 and 4
            self._link(pid, other, alias=ev.event == "$create_alias")
        person = self.persons[pid]
        if ev.event == "$identify":
            person.is_identified = True
        person.created_at = min(person.created_at, ev.timestamp)  # rule 6
        if ev.event == "$delete_person":
            person.properties.clear()
        apply_operations(person.properties, ev.properties)  # rule 7

    @staticmethod
    def _other_id(ev: EventLike) -> str | None:
        if ev.event == "$identify":
            other = ev.properties.get("$anon_distinct_id")
        elif ev.event == "$create_alias":
            other = ev.properties.get("alias")
        else:
            return None
        if other is None or str(other) == ev.distinct_id:
            return None
        return str(other)

    def _link(self, survivor_id: str, other: str, *, alias: bool) -> None:
        absorbed_id = self.person_of.get(other)
        if absorbed_id is None:
            self.person_of[other] = survivor_id
            return
        if absorbed_id == survivor_id:
            return
        survivor, absorbed = self.persons[survivor_id], self.persons[absorbed_id]
        refuse = (
            absorbed.is_identified and survivor.is_identified if alias else absorbed.is_identified
        )
        if refuse:
            self.refused_merges += 1
            return
        self.merges += 1  # rule 5
        if alias and absorbed.is_identified and not survivor.is_identified:
            self.alias_absorbed_identified = True
        for d, p in self.person_of.items():
            if p == absorbed_id:
                self.person_of[d] = survivor_id
        for key, value in absorbed.properties.items():
            survivor.properties.setdefault(key, value)
        survivor.created_at = min(survivor.created_at, absorbed.created_at)
        survivor.is_identified = survivor.is_identified or absorbed.is_identified
        del self.persons[absorbed_id]
