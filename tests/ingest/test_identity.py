"""Identity resolution (ID-mapping) as users of the platform see it, example by example.

Each test writes native-shaped events through the real writer and reads the result back through
the ``events``, ``persons`` and ``person_distinct_ids`` relations. ``owners()`` names each person by
the distinct id whose first event created it (person ids are ``person_id_for(project, that id)``),
so ``{"dev-1": "dev-1", "user-1": "dev-1"}`` reads "user-1 joined the person dev-1 started".

Several examples pin down what once went wrong when events shared a batch: a shared device,
events out of order, resent and personless events, values Python compares equal across types.
"""

from __future__ import annotations

from concurrent.futures import Future
from datetime import datetime

import orjson
import pytest

from tests.ingest.identity_harness import (
    alias,
    at,
    ev,
    identify,
    send,
    send_each,
    stored,
    to_events,
)
from yunying.ingest.identity import person_id_for
from yunying.ingest.model import validate_batch
from yunying.ingest.writer import WriteResult
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project


@pytest.fixture
def pid(project: NewProject) -> int:
    return project.project.id


def _ids(*distinct_ids: str, owner: str) -> dict[str, str]:
    return dict.fromkeys(distinct_ids, owner)


# -- login: anonymous events join the person ---------------------------------------------------


def test_login_attributes_the_earlier_anonymous_events_to_the_person(
    runtime: Runtime, pid: int
) -> None:
    browsing = [ev("$pageview", "dev-1", 0), ev("$pageview", "dev-1", 1)]
    send(runtime, pid, *browsing)
    before = stored(runtime, pid)
    assert before.person("dev-1").is_identified is False

    login = identify("user-1", "dev-1", 2)
    send(runtime, pid, login, ev("purchase", "user-1", 3))

    s = stored(runtime, pid)
    # user-1 was unseen: it joins the anonymous person instead of getting one of its own
    assert s.owners() == _ids("dev-1", "user-1", owner="dev-1")
    person = s.person("user-1")
    assert person.id == person_id_for(pid, "dev-1")
    assert person.is_identified is True
    assert set(s.event_person.values()) == {person.id}
    assert person.created_at == at(0)
    assert list(s.persons) == [person.id]


def test_login_of_a_known_user_merges_the_device_person_into_the_user(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, ev("signup", "user-1", 5, {"$set": {"plan": "pro"}}))
    send(runtime, pid, ev("$pageview", "dev-1", 0, {"$set": {"plan": "free", "os": "ios"}}))
    anonymous = stored(runtime, pid).person_of["dev-1"]

    send(runtime, pid, identify("user-1", "dev-1", 10))

    s = stored(runtime, pid)
    user = s.person("user-1")
    assert s.owners() == _ids("dev-1", "user-1", owner="user-1")
    assert anonymous not in s.persons  # the merged-away person is deleted
    assert set(s.event_person.values()) == {user.id}  # dev-1's earlier event included
    assert user.properties == {"plan": "pro", "os": "ios"}  # survivor's values win
    assert user.created_at == at(0)  # the earlier created_at wins
    assert user.is_identified is True


def test_a_second_device_logging_in_joins_the_same_person(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, ev("$pageview", "phone", 0))
    send(runtime, pid, identify("user-1", "phone", 1))
    send(runtime, pid, ev("$pageview", "laptop", 2), ev("$pageview", "laptop", 3))
    laptop_person = stored(runtime, pid).person_of["laptop"]
    send(runtime, pid, identify("user-1", "laptop", 4))
    send(runtime, pid, ev("$pageview", "laptop", 5))

    s = stored(runtime, pid)
    assert s.owners() == _ids("laptop", "phone", "user-1", owner="phone")
    assert laptop_person not in s.persons
    assert len(set(s.event_person.values())) == 1
    assert len(s.persons) == 1
    assert s.person("laptop").is_identified is True


def test_identify_with_the_anonymous_id_equal_to_the_user_only_identifies(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, identify("user-1", "user-1", 0))
    s = stored(runtime, pid)
    assert s.owners() == {"user-1": "user-1"}
    assert s.person("user-1").is_identified is True


# -- shared devices: two identified people are never merged ------------------------------------


def _shared_device() -> list[dict]:
    return [
        ev("$pageview", "kiosk", 0),
        identify("alice", "kiosk", 1),
        ev("purchase", "alice", 2),
        identify("bob", "kiosk", 3),  # bob logs in on alice's device
        ev("purchase", "bob", 4),
        ev("$pageview", "kiosk", 5),
    ]


def _assert_alice_and_bob_separate(runtime: Runtime, pid: int) -> None:
    s = stored(runtime, pid)
    assert s.owners() == {"alice": "kiosk", "bob": "bob", "kiosk": "kiosk"}
    assert s.person("alice").is_identified and s.person("bob").is_identified
    assert s.person("alice").id != s.person("bob").id
    assert len(s.persons) == 2


def test_two_users_on_a_shared_device_are_never_merged(runtime: Runtime, pid: int) -> None:
    send_each(runtime, pid, *_shared_device())
    _assert_alice_and_bob_separate(runtime, pid)


def test_two_users_on_a_shared_device_are_never_merged_within_one_batch(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, *_shared_device())
    _assert_alice_and_bob_separate(runtime, pid)


def test_identify_refuses_to_absorb_an_identified_person_even_into_an_anonymous_one(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, identify("alice", "kiosk", 0))
    send(runtime, pid, ev("$pageview", "dev-9", 1))
    # an anonymous id claims alice's id as its anonymous id: alice's person is identified
    send(runtime, pid, identify("dev-9", "alice", 2))
    s = stored(runtime, pid)
    assert s.owners() == {"alice": "alice", "dev-9": "dev-9", "kiosk": "alice"}
    assert s.person("dev-9").is_identified is True


# -- $create_alias -----------------------------------------------------------------------------


def test_create_alias_links_an_unseen_id_to_the_person(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, identify("user-1", "dev-1", 0))
    send(runtime, pid, alias("user-1", "crm-42", 1))
    send(runtime, pid, ev("order_paid", "crm-42", 2, {"$set": {"vip": True}}))

    s = stored(runtime, pid)
    assert s.owners() == _ids("crm-42", "dev-1", "user-1", owner="user-1")
    assert s.person("user-1").properties == {"vip": True}
    assert len(set(s.event_person.values())) == 1


def test_create_alias_merges_two_anonymous_persons(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, ev("$pageview", "web-a", 0, {"$set": {"src": "web"}}))
    send(runtime, pid, ev("$pageview", "app-b", 1, {"$set": {"src": "app", "os": "android"}}))
    send(runtime, pid, alias("app-b", "web-a", 2))

    s = stored(runtime, pid)
    assert s.owners() == _ids("app-b", "web-a", owner="app-b")
    survivor = s.person("web-a")
    assert survivor.properties == {"src": "app", "os": "android"}
    assert survivor.created_at == at(0)
    assert survivor.is_identified is False  # an alias does not identify
    assert list(s.persons) == [survivor.id]


def test_create_alias_from_an_unseen_id_joins_an_identified_person(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, identify("user-1", "dev-1", 0))
    send(runtime, pid, alias("new-id", "user-1", 1))
    s = stored(runtime, pid)
    assert s.owners() == _ids("dev-1", "new-id", "user-1", owner="user-1")


def test_create_alias_refuses_to_merge_two_identified_persons(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, identify("alice", "dev-a", 0))
    send(runtime, pid, identify("bob", "dev-b", 1))
    send(runtime, pid, alias("alice", "bob", 2))
    s = stored(runtime, pid)
    assert s.owners() == {"alice": "alice", "bob": "bob", "dev-a": "alice", "dev-b": "bob"}
    assert len(s.persons) == 2


def test_create_alias_merges_an_anonymous_person_into_an_identified_one(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, identify("alice", "dev-a", 0))
    send(runtime, pid, ev("$pageview", "dev-b", 1))
    send(runtime, pid, alias("alice", "dev-b", 2))
    s = stored(runtime, pid)
    assert s.owners() == _ids("alice", "dev-a", "dev-b", owner="alice")
    assert s.person("dev-b").is_identified is True


def test_an_alias_merge_keeps_the_person_identified(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, identify("alice", "dev-a", 0))
    send(runtime, pid, ev("$pageview", "dev-b", 1))
    # dev-b (anonymous) aliases alice: alice's identified person is merged into dev-b's
    send(runtime, pid, alias("dev-b", "alice", 2))
    s = stored(runtime, pid)
    assert s.owners() == _ids("alice", "dev-a", "dev-b", owner="dev-b")
    assert s.person("alice").is_identified is True
    # consequence of the bug: bob logging in on dev-b swallows alice
    send(runtime, pid, identify("bob", "dev-b", 3))
    assert stored(runtime, pid).person("alice").id != stored(runtime, pid).person("bob").id


def test_placeholder_ids_never_link_strangers(runtime: Runtime, pid: int) -> None:
    raws = [
        ev("$pageview", "dev-a", 0),
        ev("$pageview", "dev-b", 1),
        alias("dev-a", "undefined", 2),  # an SDK with no real id sends its placeholder
        alias("dev-b", "undefined", 3),
    ]
    for raw in raws:  # whatever validation keeps (ideally it refuses the placeholder)
        runtime.writer.write(pid, validate_batch([raw]).events, timeout=30)
    s = stored(runtime, pid)
    assert s.person_of["dev-a"] != s.person_of["dev-b"]


# -- person properties -------------------------------------------------------------------------


def _props_after(runtime: Runtime, pid: int, *ops: dict) -> dict:
    send_each(runtime, pid, *[ev("update", "u", i, op) for i, op in enumerate(ops)])
    return stored(runtime, pid).person("u").properties


def test_set_overwrites(runtime: Runtime, pid: int) -> None:
    ops = [{"$set": {"plan": "free", "city": "杭州"}}, {"$set": {"plan": "pro"}}]
    assert _props_after(runtime, pid, *ops) == {"plan": "pro", "city": "杭州"}


def test_set_replaces_a_value_python_calls_equal(runtime: Runtime, pid: int) -> None:
    # [true] == [1.0] and {"x": 1} == {"x": true} in Python, not in JSON: the $set must land
    ops = [
        {"$set": {"c": [1.0], "d": {"x": 1}, "e": [[0]]}},
        {"$set": {"c": [True], "d": {"x": True}, "e": [[False]]}},
        {"$union": {"c": 1}},  # true is not 1: a second element
    ]
    got = orjson.dumps(_props_after(runtime, pid, *ops), option=orjson.OPT_SORT_KEYS)
    assert got == b'{"c":[true,1],"d":{"x":true},"e":[[false]]}'


def test_set_once_only_fills_absent_names(runtime: Runtime, pid: int) -> None:
    ops = [
        {"$set_once": {"first_channel": "douyin"}},
        {"$set_once": {"first_channel": "wechat", "first_os": "ios"}},
    ]
    assert _props_after(runtime, pid, *ops) == {"first_channel": "douyin", "first_os": "ios"}


def test_unset_removes_names(runtime: Runtime, pid: int) -> None:
    ops = [{"$set": {"a": 1, "b": 2}}, {"$unset": ["a", "missing"]}]
    assert _props_after(runtime, pid, *ops) == {"b": 2}


def test_increment_adds_numbers(runtime: Runtime, pid: int) -> None:
    ops = [
        {"$increment": {"coins": 5}},  # missing: starts at the increment
        {"$increment": {"coins": -2, "score": 1.5}},
        {"$set": {"label": "x"}},
        {"$increment": {"label": 3}},  # not a number: replaced by the increment
    ]
    assert _props_after(runtime, pid, *ops) == {"coins": 3, "score": 1.5, "label": 3}


def test_append_appends_to_lists(runtime: Runtime, pid: int) -> None:
    ops = [
        {"$append": {"tags": "new"}},  # missing: a one-element list
        {"$append": {"tags": "vip"}},
        {"$set": {"single": "a"}},
        {"$append": {"single": "b"}},  # a scalar becomes [old, new]
        {"$append": {"tags": ["nested"]}},  # a list value is appended as one element
    ]
    assert _props_after(runtime, pid, *ops) == {
        "tags": ["new", "vip", ["nested"]],
        "single": ["a", "b"],
    }


def test_operations_of_one_event_run_set_once_set_increment_append_unset(
    runtime: Runtime, pid: int
) -> None:
    op = {
        "$set_once": {"a": "once", "k": 1},
        "$set": {"a": "set", "k": 10},
        "$increment": {"k": 5},
        "$append": {"k": "x"},
        "$unset": ["a"],
    }
    assert _props_after(runtime, pid, op) == {"k": [15, "x"]}


def test_operations_apply_in_send_order_not_timestamp_order(runtime: Runtime, pid: int) -> None:
    send(
        runtime,
        pid,
        ev("update", "u", 50, {"$set": {"plan": "old"}}),
        ev("update", "u", 10, {"$set": {"plan": "new"}}),  # sent later, older timestamp
    )
    assert stored(runtime, pid).person("u").properties == {"plan": "new"}


def test_identify_can_carry_property_operations(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, ev("$pageview", "dev-1", 0, {"$set": {"os": "ios"}}))
    send(runtime, pid, identify("user-1", "dev-1", 1, {"$set": {"email": "a@example.com"}}))
    assert stored(runtime, pid).person("dev-1").properties == {
        "os": "ios",
        "email": "a@example.com",
    }


def test_set_replaces_a_value_of_another_type_that_compares_equal(
    runtime: Runtime, pid: int
) -> None:
    ops = [{"$set": {"flag": 1, "ratio": 2}}, {"$set": {"flag": True, "ratio": 2.0}}]
    props = _props_after(runtime, pid, *ops)
    assert props == {"flag": True, "ratio": 2.0}
    assert props["flag"] is True and isinstance(props["ratio"], float)


def test_union_adds_only_values_not_yet_in_the_list(runtime: Runtime, pid: int) -> None:
    ops = [
        {"$union": {"tags": ["vip", "creator"]}},
        {"$union": {"tags": ["creator", "editor", 1], "plan": "pro"}},
        {"$union": {"tags": [True]}},  # true is not 1 in JSON
    ]
    props = _props_after(runtime, pid, *ops)
    assert props == {"tags": ["vip", "creator", "editor", 1, True], "plan": ["pro"]}


def test_remove_takes_values_out_of_a_list(runtime: Runtime, pid: int) -> None:
    ops = [
        {"$set": {"tags": ["vip", "creator", "vip", 1], "plan": "pro"}},
        {"$remove": {"tags": ["vip", True], "plan": "pro", "missing": "x"}},
    ]
    props = _props_after(runtime, pid, *ops)
    assert props == {"tags": ["creator", 1], "plan": "pro"}


def test_delete_person_empties_the_profile_but_keeps_ids_and_events(
    runtime: Runtime, pid: int
) -> None:
    send_each(
        runtime,
        pid,
        ev("open", "dev", 0, {"$set": {"plan": "pro", "city": "sh"}}),
        identify("user", "dev", 1),
        ev("$delete_person", "user", 2),
        ev("open", "user", 3, {"$set_once": {"city": "bj"}}),
    )
    s = stored(runtime, pid)
    assert s.person("user").properties == {"city": "bj"}
    assert s.person_of["dev"] == s.person_of["user"]
    assert len(s.event_person) == 4 and set(s.event_person.values()) == {s.person_of["dev"]}


def test_placeholder_ids_are_refused_as_the_other_id() -> None:
    batch = validate_batch(
        [
            identify("alice", "undefined"),
            alias("bob", "null"),
            identify("carol", "dev-1"),
        ],
        now=datetime(2030, 1, 1),
    )
    assert [(e.index, e.field) for e in batch.errors] == [
        (0, "properties.$anon_distinct_id"),
        (1, "properties.alias"),
    ]
    assert [e.distinct_id for e in batch.events] == ["carol"]


# -- personless events ($process_person_profile: false) ----------------------------------------

PERSONLESS = {"$process_person_profile": False}


def test_a_personless_event_from_a_new_id_creates_no_person(runtime: Runtime, pid: int) -> None:
    event = ev("$pageview", "visitor", 0, {**PERSONLESS, "$set": {"x": 1}})
    send(runtime, pid, event)
    s = stored(runtime, pid)
    assert s.person_of == {} and s.persons == {}
    assert s.event_person == {event["uuid"]: person_id_for(pid, "visitor")}

    send(runtime, pid, ev("$pageview", "visitor", 10, {"$set": {"y": 2}}))
    s = stored(runtime, pid)
    person = s.person("visitor")
    assert person.id == person_id_for(pid, "visitor")
    assert person.properties == {"y": 2}  # the personless event's operations were dropped
    assert person.created_at == at(10)  # ... and it does not count for created_at
    assert set(s.event_person.values()) == {person.id}


def test_a_personless_event_of_a_later_linked_id_resolves_to_the_person(
    runtime: Runtime, pid: int
) -> None:
    event = ev("$pageview", "visitor", 0, PERSONLESS)
    send(runtime, pid, event)
    send(runtime, pid, identify("user-1", "visitor", 5))
    s = stored(runtime, pid)
    assert s.owners() == _ids("user-1", "visitor", owner="user-1")
    assert s.event_person[event["uuid"]] == person_id_for(pid, "user-1")


def test_a_personless_event_from_a_known_id_is_an_ordinary_event(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, ev("$pageview", "u", 10))
    send(runtime, pid, ev("$pageview", "u", 0, {**PERSONLESS, "$set": {"x": 1}}))
    person = stored(runtime, pid).person("u")
    assert person.properties == {"x": 1}
    assert person.created_at == at(0)


def test_an_identify_is_never_personless(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, ev("$pageview", "dev-1", 0))
    send(runtime, pid, ev("$identify", "user-1", 1, {**PERSONLESS, "$anon_distinct_id": "dev-1"}))
    s = stored(runtime, pid)
    assert s.owners() == _ids("dev-1", "user-1", owner="dev-1")
    assert s.person("user-1").is_identified is True


def test_a_personless_event_drops_its_operations_in_a_batch_too(runtime: Runtime, pid: int) -> None:
    send(
        runtime,
        pid,
        ev("$pageview", "visitor", 0, {**PERSONLESS, "$set": {"x": 1}}),
        ev("$pageview", "visitor", 10, {"$set": {"y": 2}}),
    )
    assert stored(runtime, pid).person("visitor").properties == {"y": 2}


def test_resending_a_personless_event_changes_nothing(runtime: Runtime, pid: int) -> None:
    personless = ev("$pageview", "visitor", 0, PERSONLESS)
    send(runtime, pid, personless)
    send(runtime, pid, ev("$pageview", "visitor", 10))
    before = stored(runtime, pid)
    assert send(runtime, pid, personless).duplicates == 1
    assert stored(runtime, pid) == before


# -- resent events -----------------------------------------------------------------------------


def _counter_event() -> dict:
    return ev("checkin", "u", 0, {"$increment": {"days": 1}, "$append": {"log": "d1"}})


def test_a_resent_event_changes_nothing(runtime: Runtime, pid: int) -> None:
    checkin = _counter_event()
    assert send(runtime, pid, checkin).stored == 1
    result = send(runtime, pid, checkin)
    assert (result.stored, result.duplicates) == (0, 1)
    s = stored(runtime, pid)
    assert s.person("u").properties == {"days": 1, "log": ["d1"]}
    assert list(s.event_person) == [checkin["uuid"]]


def test_a_resent_identify_changes_nothing(runtime: Runtime, pid: int) -> None:
    login = identify("user-1", "dev-1", 0, {"$increment": {"logins": 1}})
    send(runtime, pid, login)
    send(runtime, pid, ev("$pageview", "dev-2", 1))
    result = send(runtime, pid, login, ev("$pageview", "dev-2", 2))
    assert (result.stored, result.duplicates) == (1, 1)
    s = stored(runtime, pid)
    assert s.owners() == {"dev-1": "user-1", "dev-2": "dev-2", "user-1": "user-1"}
    assert s.person("user-1").properties == {"logins": 1}
    assert s.person("dev-2").is_identified is False


def test_an_event_repeated_within_one_batch_applies_once(runtime: Runtime, pid: int) -> None:
    checkin = _counter_event()
    result = send(runtime, pid, checkin, checkin)
    assert (result.stored, result.duplicates) == (1, 1)
    assert stored(runtime, pid).person("u").properties == {"days": 1, "log": ["d1"]}


# -- batching does not matter ------------------------------------------------------------------


def _journey() -> list[dict]:
    return [
        ev("$pageview", "dev-1", 0, {"$set_once": {"first_src": "ad"}}),
        ev("$pageview", "dev-2", 1, {"$increment": {"visits": 1}}),
        identify("user-1", "dev-1", 2, {"$set": {"plan": "free"}}),
        ev("$pageview", "dev-2", 3, {"$increment": {"visits": 1}}),
        identify("user-1", "dev-2", 4),
        ev("purchase", "user-1", 5, {"$set": {"plan": "pro"}, "$append": {"orders": "o-1"}}),
        ev("$pageview", "dev-3", 6),
        ev("$pageview", "dev-4", 7),
        alias("dev-4", "dev-3", 8),
        ev("$pageview", "dev-3", 9, {"$unset": ["first_src"]}),
    ]


def _canonical(runtime: Runtime, pid: int) -> tuple:
    s = stored(runtime, pid)
    persons = sorted(
        (
            s.creator(p.id),
            p.created_at,
            sorted(p.properties.items(), key=repr),
            p.is_identified,
        )
        for p in s.persons.values()
    )
    events = sorted((u, s.creator(p)) for u, p in s.event_person.items())
    return s.owners(), persons, events


@pytest.mark.parametrize("split", ["one batch", "one per event", "halves"])
def test_merges_give_the_same_result_however_events_are_batched(
    runtime: Runtime, pid: int, split: str
) -> None:
    journey = _journey()
    if split == "one batch":
        send(runtime, pid, *journey)
    elif split == "one per event":
        send_each(runtime, pid, *journey)
    else:
        send(runtime, pid, *journey[:5])
        send(runtime, pid, *journey[5:])

    owners, persons, events = _canonical(runtime, pid)
    assert owners == {
        "dev-1": "dev-1",
        "dev-2": "dev-1",
        "user-1": "dev-1",
        "dev-3": "dev-4",
        "dev-4": "dev-4",
    }
    assert persons == [
        (
            "dev-1",
            at(0),
            [("first_src", "ad"), ("orders", ["o-1"]), ("plan", "pro"), ("visits", 2)],
            True,
        ),
        ("dev-4", at(6), [], False),
    ]
    assert {creator for _, creator in events} == {"dev-1", "dev-4"}


# -- timestamps --------------------------------------------------------------------------------


def test_created_at_is_the_earliest_event_even_when_it_arrives_late(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, ev("$pageview", "u", 30))
    send(runtime, pid, ev("$pageview", "u", 10))  # an offline device uploads old events
    send(runtime, pid, ev("$pageview", "u", 20))
    assert stored(runtime, pid).person("u").created_at == at(10)


def test_a_merge_keeps_the_earlier_created_at(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, ev("$pageview", "user-1", 30))
    send(runtime, pid, ev("$pageview", "dev-1", 5))
    send(runtime, pid, identify("user-1", "dev-1", 40))
    assert stored(runtime, pid).person("user-1").created_at == at(5)


def test_created_at_is_the_earliest_event_of_a_batch_in_any_order(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, ev("$pageview", "u", 30), ev("$pageview", "u", 10))
    assert stored(runtime, pid).person("u").created_at == at(10)


def test_created_at_counts_the_event_of_an_id_joining_a_person(runtime: Runtime, pid: int) -> None:
    send(runtime, pid, ev("$pageview", "dev-1", 30))
    send(runtime, pid, identify("user-1", "dev-1", 10))  # queued offline, older than dev-1's
    s = stored(runtime, pid)
    assert s.owners() == _ids("dev-1", "user-1", owner="dev-1")
    assert s.person("user-1").created_at == at(10)


def test_created_at_is_the_minimum_event_timestamp_of_each_person(
    runtime: Runtime, pid: int
) -> None:
    send_each(runtime, pid, *_journey())
    send(runtime, pid, ev("late", "dev-3", -5))
    s = stored(runtime, pid)
    earliest: dict[str, datetime] = {}
    for u, p in s.event_person.items():
        t = s.event_timestamp[u]
        earliest[p] = min(t, earliest.get(p, t))
    assert {p.id: p.created_at for p in s.persons.values()} == earliest
    assert s.person("dev-4").created_at == at(-5)


# -- projects ----------------------------------------------------------------------------------


def _write_in_one_transaction(
    runtime: Runtime, *submissions: tuple[int, list[dict]]
) -> list[WriteResult]:
    """Write several submissions in one writer transaction, as the writer does when requests
    queue up concurrently (calls the writer's batch step directly to make that deterministic;
    the writer thread is idle meanwhile)."""
    pending = [(project_id, to_events(raws), Future()) for project_id, raws in submissions]
    runtime.writer._write(pending)  # type: ignore[arg-type]
    return [fut.result(0) for _, _, fut in pending]


def _two_projects_scenario() -> list[dict]:
    return [
        ev("$pageview", "dev-1", 0, {"$increment": {"n": 1}}),
        identify("user-1", "dev-1", 1),
    ]


def test_persons_of_two_projects_with_the_same_distinct_ids_are_separate(
    runtime: Runtime, pid: int
) -> None:
    other = create_project(runtime.state, "另一个应用").project.id
    shared = _two_projects_scenario()
    # the same distinct ids and even the same uuids, in one transaction
    _write_in_one_transaction(runtime, (pid, shared), (other, shared))
    send(runtime, other, ev("$pageview", "dev-1", 2, {"$increment": {"n": 1}}))
    send(runtime, other, identify("user-2", "dev-1", 3))  # dev-1 is identified in `other` only
    send(runtime, pid, ev("$pageview", "user-2", 4))

    a, b = stored(runtime, pid), stored(runtime, other)
    assert a.owners() == {"dev-1": "dev-1", "user-1": "dev-1", "user-2": "user-2"}
    assert b.owners() == {"dev-1": "dev-1", "user-1": "dev-1", "user-2": "user-2"}
    assert a.person("dev-1").id == person_id_for(pid, "dev-1")
    assert b.person("dev-1").id == person_id_for(other, "dev-1")
    assert a.person("dev-1").id != b.person("dev-1").id
    assert a.person("dev-1").properties == {"n": 1}
    assert b.person("dev-1").properties == {"n": 2}
    assert a.person("user-2").is_identified is False
    assert b.person("user-2").is_identified is True
    assert len(a.event_person) == 3 and len(b.event_person) == 4
    assert not set(a.persons) & set(b.persons)


def test_the_same_uuid_in_two_projects_is_stored_in_both_and_reported_so(
    runtime: Runtime, pid: int
) -> None:
    other = create_project(runtime.state, "另一个应用").project.id
    shared = _two_projects_scenario()
    results = _write_in_one_transaction(runtime, (pid, shared), (other, shared))
    assert len(stored(runtime, pid).event_person) == len(stored(runtime, other).event_person) == 2
    assert results == [WriteResult(2, 0), WriteResult(2, 0)]


# -- the read relations after merges -----------------------------------------------------------


def test_persons_has_no_leftover_after_merges_and_distinct_ids_lists_every_id(
    runtime: Runtime, pid: int
) -> None:
    send(runtime, pid, ev("$pageview", "a", 0), ev("$pageview", "b", 1), ev("$pageview", "c", 2))
    send(runtime, pid, ev("$pageview", "d", 3))
    send(runtime, pid, identify("user", "a", 4))  # user joins a's person
    send(runtime, pid, identify("user", "b", 5), alias("c", "d", 6))  # b merged; d merged into c
    send(runtime, pid, alias("user", "c", 7))  # c's person merged into the user's
    send(runtime, pid, identify("user", "never-seen", 8))  # linked without any event

    s = stored(runtime, pid)
    survivor = person_id_for(pid, "a")
    assert s.person_of == dict.fromkeys(["a", "b", "c", "d", "user", "never-seen"], survivor)
    assert list(s.persons) == [survivor]
    assert set(s.persons) == set(s.person_of.values())
    assert set(s.event_person.values()) == {survivor}
    assert s.persons[survivor].created_at == at(0)
