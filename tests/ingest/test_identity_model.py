"""Identity resolution agrees with the reference model (``identity_reference``) on random histories.

Hypothesis draws sequences of events over a small pool of distinct ids, so identity events collide
often: ordinary events carrying ``$set``/``$set_once``/``$increment``/``$append``/``$unset``,
``$identify`` with ``$anon_distinct_id``, ``$create_alias``, resent copies of earlier events (same
uuid) and random timestamps. The sequence is cut into random batches and written through a real
:class:`~yunying.runtime.Runtime`'s writer (a fresh DuckDB per example); the read relations must
match the model: the same distinct id -> person map (so the same partition and the same person
ids), no other persons, the same ``is_identified``, ``created_at`` and properties, and every event
attributed to the same person through the ``events`` relation.

Histories deliberately include what once broke the batched writer: several identity events in
one batch, timestamps out of order, values that Python compares equal across JSON types
(``true``/``1``/``1.0``), personless events followed by events of the same id, and resent copies.
"""

from __future__ import annotations

import copy
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import chdb_url
from tests.ingest.identity_harness import (
    T0,
    StoredIdentity,
    alias,
    at,
    check_overrides,
    ev,
    identify,
    stored,
    to_events,
)
from tests.ingest.identity_reference import IdentityModel, apply_operations
from yunying.config import load_settings
from yunying.ingest.identity import person_id_for
from yunying.runtime import Runtime

PROJECT_ID = 7
KEYS = ("a", "b", "c")
#: Ordinary events, then identity events; drawn with the weights below.
EVENT_NAMES = ("$pageview", "purchase", "$identify", "$create_alias", "$delete_person")
EVENT_WEIGHTS = (2, 1, 2, 2, 1)

PERSONLESS = {"$process_person_profile": False}


@dataclass(repr=False)
class History:
    """A drawn scenario: native events in send order and how they are cut into batches."""

    events: list[dict[str, Any]]
    batches: list[list[dict[str, Any]]] = field(default_factory=list)

    def describe(self) -> str:
        lines = []
        for i, batch in enumerate(self.batches):
            lines.append(f"batch {i}:")
            for raw in batch:
                ts = raw["timestamp"][11:19]
                props = raw["properties"]
                lines.append(
                    f"  {raw['uuid'][-4:]} {ts} {raw['event']:<13} {raw['distinct_id']:<3} {props}"
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "History(\n" + self.describe() + "\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's failure report
        printer.text(repr(self))


def _values() -> st.SearchStrategy[Any]:
    scalar = st.one_of(
        st.integers(-3, 9),
        st.sampled_from(["x", "y", "z"]),
        st.booleans(),
        st.sampled_from([0.5, 1.0, 2.0, -1.5]),
        st.none(),
    )
    return st.one_of(scalar, st.lists(scalar, max_size=2))


def _operations(draw: st.DrawFn) -> dict[str, Any]:
    values = _values()
    keys = st.sampled_from(KEYS)
    increments = st.one_of(st.integers(-2, 5), st.sampled_from([0.5, -1.5]))
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "$set": st.dictionaries(keys, values, min_size=1, max_size=2),
        "$set_once": st.dictionaries(keys, values, min_size=1, max_size=2),
        "$increment": st.dictionaries(keys, increments, min_size=1, max_size=2),
        "$append": st.dictionaries(keys, values, min_size=1, max_size=2),
        "$union": st.dictionaries(keys, values, min_size=1, max_size=2),
        "$remove": st.dictionaries(keys, values, min_size=1, max_size=2),
        "$unset": st.lists(keys, min_size=1, max_size=2, unique=True),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(strategies)), max_size=3, unique=True))
    return {op: draw(strategies[op]) for op in chosen}


_WEIGHTED_NAMES = [n for n, w in zip(EVENT_NAMES, EVENT_WEIGHTS, strict=True) for _ in range(w)]


@st.composite
def histories(draw: st.DrawFn) -> History:
    pool = [f"d{i}" for i in range(draw(st.integers(2, 6)))]
    ids = st.sampled_from(pool)
    count = draw(st.integers(3, 28))
    minutes = draw(st.lists(st.integers(0, 600), min_size=count, max_size=count))
    events: list[dict[str, Any]] = []
    for i in range(count):
        if events and draw(st.integers(0, 6)) == 0:  # a client resends an earlier event
            events.append(copy.deepcopy(draw(st.sampled_from(events))))
            continue
        name = draw(st.sampled_from(_WEIGHTED_NAMES))
        distinct_id = draw(ids)
        props = _operations(draw)
        if name in ("$identify", "$create_alias"):
            # half the time an id that has sent events already, so that persons collide
            seen = sorted({e["distinct_id"] for e in events} - {distinct_id})
            other = draw(st.sampled_from(seen)) if seen and draw(st.booleans()) else draw(ids)
            if name == "$identify":
                raw = identify(distinct_id, other, minutes[i], props)
            else:
                raw = alias(distinct_id, other, minutes[i])
                raw["properties"].update(props)
        else:
            raw = ev(name, distinct_id, minutes[i], props)
        if draw(st.integers(0, 5)) == 0:
            raw["properties"].update(PERSONLESS)
        raw["uuid"] = str(uuid.UUID(int=i + 1))
        events.append(raw)

    history = History(events)
    batch: list[dict[str, Any]] = []
    for raw in events:
        if batch and draw(st.booleans()):
            history.batches.append(batch)
            batch = []
        batch.append(raw)
    history.batches.append(batch)
    return history


def _exact(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _write(history: History, engine: str) -> tuple[StoredIdentity, int, int, int]:
    """Write the batches into a fresh installation; what the relations say, stored, duplicates,
    overridden ids."""
    with tempfile.TemporaryDirectory(prefix="yunying-identity-") as data_dir:
        url = chdb_url(Path(data_dir)) if engine == "chdb" else None
        runtime = Runtime.open(load_settings(data_dir=data_dir, events_url=url))
        try:
            stored_total = duplicates = 0
            for batch in history.batches:
                result = runtime.writer.write(PROJECT_ID, to_events(batch), timeout=30)
                stored_total += result.stored
                duplicates += result.duplicates
            overridden = check_overrides(runtime, PROJECT_ID)
            return stored(runtime, PROJECT_ID), stored_total, duplicates, overridden
        finally:
            runtime.close()


def _check(history: History, engine: str = "duckdb") -> None:
    model = IdentityModel(PROJECT_ID)
    model.process_all(to_events(history.events))
    event(f"merges: {min(model.merges, 3)}{'+' if model.merges >= 3 else ''}")
    event(f"events: {'<8' if len(history.events) < 8 else '8+'}")
    event(f"refused merges: {'yes' if model.refused_merges else 'no'}")
    event(f"batches: {'1' if len(history.batches) == 1 else '2+'}")
    event(f"personless events: {'yes' if model.personless else 'no'}")
    actual, stored_total, duplicates, overridden = _write(history, engine)
    if not model.merges and not model.personless and not duplicates:
        assert overridden == 0  # persons on events: plain histories need no override at all

    assert stored_total == len(model.event_distinct_id)
    assert duplicates == len(history.events) - stored_total
    # the same distinct id -> person map: same partition, same (deterministic) person ids
    assert actual.person_of == model.person_of
    # persons: exactly the model's (merged-away persons are gone), with the same state
    assert set(actual.persons) == set(model.persons)
    for person_id, expected in model.persons.items():
        got = actual.persons[person_id]
        assert got.is_identified == expected.is_identified, person_id
        # as JSON text: Python's == would take true for 1 and 1.0 for 1
        assert _exact(got.properties) == _exact(expected.properties), person_id
        assert got.created_at == expected.created_at, person_id
    # every stored event resolves to the model's person for it
    assert actual.event_person == model.event_person()


COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
@settings(COMMON, max_examples=50)
@given(histories())
def test_writer_matches_the_reference_model(history: History) -> None:
    _check(history)


@pytest.mark.slow
@settings(COMMON, max_examples=12)
@given(histories())
def test_writer_on_clickhouse_matches_the_reference_model(history: History) -> None:
    pytest.importorskip("chdb")
    _check(history, "chdb")


# -- the reference model itself encodes the documented rules --------------------------------


def _model(*raws: dict[str, Any]) -> IdentityModel:
    model = IdentityModel(PROJECT_ID)
    model.process_all(to_events(list(raws)))
    return model


def test_model_shared_device_keeps_two_identified_people_apart() -> None:
    m = _model(
        ev("$pageview", "kiosk", 0),
        identify("alice", "kiosk", 1),
        identify("bob", "kiosk", 2),
    )
    assert m.person_id("alice") == m.person_id("kiosk") == person_id_for(PROJECT_ID, "kiosk")
    assert m.person_id("bob") == person_id_for(PROJECT_ID, "bob")
    assert m.person("alice").is_identified and m.person("bob").is_identified
    assert m.refused_merges == 1


def test_model_merge_keeps_survivor_values_earliest_created_at_and_identification() -> None:
    m = _model(
        identify("alice", "dev-a", 10, {"$set": {"plan": "pro", "city": "sh"}}),
        ev("$pageview", "dev-b", 5, {"$set": {"plan": "free", "os": "ios"}}),
        alias("dev-b", "alice", 20),  # identified alice is merged into anonymous dev-b
        identify("bob", "dev-b", 30),  # ... which must therefore refuse bob
    )
    person = m.person("alice")
    assert person.id == person_id_for(PROJECT_ID, "dev-b")
    assert person.properties == {"plan": "free", "os": "ios", "city": "sh"}
    assert person.created_at == at(5)
    assert person.is_identified
    assert m.person_id("bob") != person.id
    assert m.alias_absorbed_identified


def test_model_ignores_resent_events_and_orders_operations_by_sending() -> None:
    checkin = ev("checkin", "u", 30, {"$increment": {"n": 1}, "$append": {"l": 1}})
    m = _model(checkin, ev("late", "u", 10, {"$set": {"n": 7}}), checkin)
    assert m.person("u").properties == {"n": 7, "l": [1]}
    assert m.person("u").created_at == T0 + timedelta(minutes=10)
    assert len(m.event_distinct_id) == 2


def test_model_property_operations() -> None:
    props: dict[str, Any] = {"n": True, "s": "x", "keep": 1}
    apply_operations(
        props,
        {
            "$set_once": {"keep": 2, "new": None},
            "$set": {"keep": True},
            "$increment": {"n": 2, "m": 1.5},
            "$append": {"s": "y", "new": "z", "l": [1]},
            "$unset": ["missing"],
        },
    )
    assert props == {"n": 2, "s": ["x", "y"], "keep": True, "new": ["z"], "m": 1.5, "l": [[1]]}
    assert props["keep"] is True
