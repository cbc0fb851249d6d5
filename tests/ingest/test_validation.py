"""Every validation rule of the one event model, field by field."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from yunying.ingest.model import Event, FieldError, validate_batch, validate_event

NOW = datetime(2026, 11, 23, 8, 0, 0)


def ok(raw: dict[str, Any], ip: str | None = None) -> Event:
    result = validate_event(raw, 0, NOW, ip)
    assert isinstance(result, Event), result
    return result


def fields(raw: Any) -> dict[str, str]:
    result = validate_event(raw, 0, NOW, None)
    assert isinstance(result, list), f"expected errors, got {result}"
    return {e.field: e.message for e in result}


def test_minimal_event_gets_a_uuid_and_the_receive_time() -> None:
    ev = ok({"event": "app_open", "distinct_id": "d1"})
    assert ev.timestamp == NOW
    assert len(ev.uuid) == 36 and ev.properties == {}


def test_timestamps_are_converted_to_utc() -> None:
    assert ok(
        {"event": "x", "distinct_id": "d", "timestamp": "2026-11-23T16:00:00+08:00"}
    ).timestamp == datetime(2026, 11, 23, 8)
    assert ok(
        {"event": "x", "distinct_id": "d", "timestamp": "2026-11-23T08:00:00Z"}
    ).timestamp == datetime(2026, 11, 23, 8)
    assert ok(
        {"event": "x", "distinct_id": "d", "timestamp": "2026-11-23 07:59:59"}
    ).timestamp == datetime(2026, 11, 23, 7, 59, 59)


def test_uuid_is_normalised() -> None:
    ev = ok({"event": "x", "distinct_id": "d", "uuid": "0192F0A3-0000-4000-8000-00000000000A"})
    assert ev.uuid == "0192f0a3-0000-4000-8000-00000000000a"


def test_numeric_distinct_ids_become_text() -> None:
    assert ok({"event": "x", "distinct_id": 1234}).distinct_id == "1234"


def test_first_class_columns_come_from_well_known_properties() -> None:
    ev = ok(
        {
            "event": "purchase_membership",
            "distinct_id": "u1",
            "properties": {
                "utm_source": "douyin",
                "$os": "iOS",
                "app_version": "2.1.0",
                "$device_id": "dev-9",
                "amount": 30,
                "plan": "monthly",
            },
        },
        ip="10.0.0.7",
    )
    assert (ev.channel, ev.utm_source, ev.os, ev.app_version, ev.device_id, ev.ip, ev.amount) == (
        "douyin",
        "douyin",
        "iOS",
        "2.1.0",
        "dev-9",
        "10.0.0.7",
        30.0,
    )
    assert ev.properties["plan"] == "monthly"


def test_explicit_channel_wins_over_utm_source_and_ip_property_over_client_address() -> None:
    ev = ok(
        {
            "event": "x",
            "distinct_id": "d",
            "properties": {"channel": "kol", "utm_source": "sem", "$ip": "1.2.3.4"},
        },
        ip="9.9.9.9",
    )
    assert (ev.channel, ev.utm_source, ev.ip) == ("kol", "sem", "1.2.3.4")


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ([1, 2], "", "JSON object"),
        ({"distinct_id": "d"}, "event", "required"),
        ({"event": "", "distinct_id": "d"}, "event", "required"),
        ({"event": 5, "distinct_id": "d"}, "event", "required"),
        ({"event": "x" * 201, "distinct_id": "d"}, "event", "at most 200"),
        ({"event": "$made_up", "distinct_id": "d"}, "event", "reserved"),
        ({"event": "x"}, "distinct_id", "required"),
        ({"event": "x", "distinct_id": ""}, "distinct_id", "required"),
        ({"event": "x", "distinct_id": True}, "distinct_id", "required"),
        ({"event": "x", "distinct_id": {"a": 1}}, "distinct_id", "required"),
        ({"event": "x", "distinct_id": "d" * 201}, "distinct_id", "at most 200"),
        ({"event": "x", "distinct_id": "undefined"}, "distinct_id", "placeholder"),
        ({"event": "x", "distinct_id": "NULL"}, "distinct_id", "placeholder"),
        ({"event": "x", "distinct_id": "d", "timestamp": "yesterday"}, "timestamp", "ISO-8601"),
        ({"event": "x", "distinct_id": "d", "timestamp": 1700000000}, "timestamp", "ISO-8601"),
        (
            {"event": "x", "distinct_id": "d", "timestamp": "2026-11-25T08:00:01"},
            "timestamp",
            "future",
        ),
        (
            {"event": "x", "distinct_id": "d", "timestamp": "1999-12-31T23:59:59"},
            "timestamp",
            "2000",
        ),
        ({"event": "x", "distinct_id": "d", "uuid": "not-a-uuid"}, "uuid", "not a UUID"),
        ({"event": "x", "distinct_id": "d", "uuid": 12}, "uuid", "UUID string"),
        ({"event": "x", "distinct_id": "d", "properties": [1]}, "properties", "object"),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$secret": 1}},
            "properties.$secret",
            "reserved",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$set": [1]}},
            "properties.$set",
            "object",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$set_once": "a"}},
            "properties.$set_once",
            "object",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$unset": "a"}},
            "properties.$unset",
            "list",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$unset": [1]}},
            "properties.$unset",
            "list",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$append": 3}},
            "properties.$append",
            "object",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$increment": {"n": "1"}}},
            "properties.$increment.n",
            "number",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$increment": {"n": True}}},
            "properties.$increment.n",
            "number",
        ),
        ({"event": "$create_alias", "distinct_id": "d"}, "properties.alias", "required"),
        (
            {"event": "$identify", "distinct_id": "u", "properties": {"$anon_distinct_id": ["x"]}},
            "properties.$anon_distinct_id",
            "string",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"amount": "30"}},
            "properties.amount",
            "number",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"amount": float("nan")}},
            "properties.amount",
            "number",
        ),
        (
            {"event": "x", "distinct_id": "d", "properties": {"$os": {"n": 1}}},
            "properties.$os",
            "string",
        ),
    ],
)
def test_each_bad_field_is_named(raw: Any, field: str, fragment: str) -> None:
    errors = fields(raw)
    assert field in errors, errors
    assert fragment in errors[field]


def test_timestamp_within_a_day_of_skew_is_accepted() -> None:
    ts = (NOW + timedelta(hours=23)).isoformat()
    assert ok({"event": "x", "distinct_id": "d", "timestamp": ts}).timestamp == NOW + timedelta(
        hours=23
    )


def test_all_problems_of_one_event_are_reported_together() -> None:
    errors = fields({"event": "", "distinct_id": "", "uuid": "x", "properties": 3})
    assert set(errors) == {"event", "distinct_id", "uuid", "properties"}


def test_a_batch_keeps_good_events_and_indexes_the_bad_ones() -> None:
    batch = validate_batch(
        [
            {"event": "a", "distinct_id": "1"},
            {"event": ""},
            {"event": "b", "distinct_id": "2"},
            "junk",
        ],
        now=NOW,
    )
    assert [e.event for e in batch.events] == ["a", "b"]
    assert batch.rejected == 2
    assert {(e.index, e.field) for e in batch.errors} == {(1, "event"), (1, "distinct_id"), (3, "")}
    assert all(isinstance(e, FieldError) for e in batch.errors)


def test_platform_events_and_properties_are_allowed() -> None:
    ev = ok(
        {
            "event": "$pageview",
            "distinct_id": "d",
            "properties": {"$current_url": "https://x", "$lib": "web"},
        }
    )
    assert ev.event == "$pageview"
