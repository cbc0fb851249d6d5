"""The one internal event model and the validation every wire protocol ends in.

Each protocol (native API, file import, SDK endpoints) turns its payload into plain dicts shaped
like the native API's events and hands them to :func:`validate_batch`, so every path applies the
same rules and reports errors the same way: one :class:`FieldError` per bad field, naming the
event's index in the batch and the field.
"""

from __future__ import annotations

import math
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_NAME_LENGTH = 200
MAX_FUTURE_SKEW = timedelta(days=1)
MIN_TIMESTAMP = datetime(2000, 1, 1)

#: Event names the platform gives meaning to; other names starting with ``$`` are refused.
PLATFORM_EVENTS = frozenset(
    {
        "$identify",
        "$create_alias",
        "$set",
        "$groupidentify",
        "$pageview",
        "$pageleave",
        "$screen",
        "$autocapture",
        "$signup",
        "$delete_person",
    }
)

#: Property operations on the person, carried by any event.
PERSON_OPERATIONS = (
    "$set",
    "$set_once",
    "$unset",
    "$increment",
    "$append",
    "$union",
    "$remove",
)

#: Platform properties a client may send; other names starting with ``$`` are refused.
PLATFORM_PROPERTIES = frozenset(
    {
        *PERSON_OPERATIONS,
        "$anon_distinct_id",
        "$channel",
        "$utm_source",
        "$utm_medium",
        "$utm_campaign",
        "$utm_term",
        "$utm_content",
        "$os",
        "$os_version",
        "$app_version",
        "$device_id",
        "$device_type",
        "$ip",
        "$amount",
        "$currency",
        "$lib",
        "$lib_version",
        "$browser",
        "$browser_version",
        "$current_url",
        "$pathname",
        "$referrer",
        "$screen_name",
        "$city",
        "$country",
        "$session_id",
        "$group_type",
        "$group_key",
        "$group_set",
        "$groups",
        "$insert_id",
        "$source",
        "$process_person_profile",
    }
)

#: Values SDKs emit when the app has no real id; merging on them would fuse strangers.
ILLEGAL_DISTINCT_IDS = frozenset(
    {
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
        "null",
        "none",
        "nan",
        "[object object]",
        "0",
    }
)

#: First-class columns and the properties they are read from, first match wins.
COLUMN_SOURCES: dict[str, tuple[str, ...]] = {
    "channel": ("$channel", "channel", "$utm_source", "utm_source"),
    "utm_source": ("$utm_source", "utm_source"),
    "os": ("$os", "os"),
    "app_version": ("$app_version", "app_version"),
    "device_id": ("$device_id", "device_id"),
    "ip": ("$ip", "ip"),
}
AMOUNT_SOURCES = ("$amount", "amount")
#: Every property name that feeds a column or is a person operation: events without any of them
#: (most events) skip those checks.
_SPECIAL_PROPERTIES = frozenset(
    {*(s for sources in COLUMN_SOURCES.values() for s in sources), *AMOUNT_SOURCES}
)
PERSON_OPERATION_SET = frozenset(PERSON_OPERATIONS)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(slots=True)
class Event:
    """A validated event, ready for identity resolution and storage."""

    uuid: str
    event: str
    distinct_id: str
    timestamp: datetime  # naive, UTC
    properties: dict[str, Any]
    channel: str | None = None
    utm_source: str | None = None
    os: str | None = None
    app_version: str | None = None
    device_id: str | None = None
    ip: str | None = None
    amount: float | None = None
    person_id: str | None = None


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of one event in a batch."""

    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


@dataclass(slots=True)
class ValidatedBatch:
    """The good events of a batch and the errors of the bad ones."""

    events: list[Event] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len({e.index for e in self.errors})


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 string → naive UTC datetime; naive input is taken as UTC. Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string, e.g. 2026-11-23T08:00:00Z")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO-8601 date-time") from None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def _text(value: Any) -> str | None:
    """A short identifier-like string from a string or number; ``None`` otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _check_person_ops(props: dict[str, Any], add: Any) -> None:
    for op in PERSON_OPERATIONS:
        if op not in props:
            continue
        value = props[op]
        where = f"properties.{op}"
        if op == "$unset":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                add(where, "must be a list of property names")
        elif not isinstance(value, dict):
            add(where, "must be an object of property names to values")
        elif op == "$increment":
            for k, v in value.items():
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    add(f"{where}.{k}", "increment must be a finite number")


def validate_event(
    raw: Any, index: int, now: datetime, client_ip: str | None, *, sdk: bool = False
) -> Event | list[FieldError]:
    """Validate one native-shaped event; returns the :class:`Event` or its field errors.

    ``sdk=True`` is for events translated from an SDK's wire protocol: those SDKs send their own
    ``$`` names (``$lib``, ``$screen_width``, ``$SignUp``...), which are theirs to send, so the
    reserved-name rule applies to native clients only.
    """
    errors: list[FieldError] = []

    def add(name: str, message: str) -> None:
        errors.append(FieldError(index, name, message))

    if not isinstance(raw, dict):
        return [FieldError(index, "", "each event must be a JSON object")]

    name = raw.get("event")
    if not isinstance(name, str) or not name.strip():
        add("event", "required: a non-empty string naming the event")
    elif len(name) > MAX_NAME_LENGTH:
        add("event", f"at most {MAX_NAME_LENGTH} characters")
    elif name.startswith("$") and not sdk and name not in PLATFORM_EVENTS:
        add("event", f"names starting with $ are reserved for the platform; {name!r} is not one")

    did_raw = raw.get("distinct_id")
    distinct_id = None if isinstance(did_raw, bool) else _text(did_raw)
    if distinct_id is None or not distinct_id.strip():
        add("distinct_id", "required: a non-empty string identifying the user or device")
    elif len(distinct_id) > MAX_NAME_LENGTH:
        add("distinct_id", f"at most {MAX_NAME_LENGTH} characters")
    elif distinct_id.strip().lower() in ILLEGAL_DISTINCT_IDS:
        add("distinct_id", f"{distinct_id!r} is a placeholder, not an id; send a real id")

    ts_raw = raw.get("timestamp")
    timestamp = now
    if ts_raw is not None:
        try:
            timestamp = parse_timestamp(ts_raw)
        except ValueError as exc:
            add("timestamp", str(exc))
        else:
            if timestamp > now + MAX_FUTURE_SKEW:
                add("timestamp", "more than a day in the future; check the device clock")
            elif timestamp < MIN_TIMESTAMP:
                add("timestamp", "before the year 2000")

    uuid_raw = raw.get("uuid")
    event_uuid = ""
    if uuid_raw is None:
        event_uuid = str(uuidlib.uuid4())
    elif not isinstance(uuid_raw, str):
        add("uuid", "must be a UUID string")
    elif _CANONICAL_UUID.fullmatch(uuid_raw):
        event_uuid = uuid_raw  # already as str(UUID(...)) would write it
    else:
        try:
            event_uuid = str(uuidlib.UUID(uuid_raw))
        except ValueError:
            add("uuid", f"{uuid_raw[:40]!r} is not a UUID")

    props = raw.get("properties")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        add("properties", "must be an object")
        props = {}

    if not sdk:
        for key in props:
            if key.startswith("$") and key not in PLATFORM_PROPERTIES:
                add(f"properties.{key}", "names starting with $ are reserved for the platform")
    if not PERSON_OPERATION_SET.isdisjoint(props):
        _check_person_ops(props, add)

    if name == "$create_alias" and not isinstance(props.get("alias"), str | int):
        add("properties.alias", "required for $create_alias: the other distinct id")
    for key in ("$anon_distinct_id", "alias"):
        other = props.get(key)
        if other is None or (key == "alias" and name != "$create_alias"):
            continue
        text = None if isinstance(other, bool) else _text(other)
        if text is None or not text.strip():
            add(f"properties.{key}", "must be a non-empty string")
        elif text.strip().lower() in ILLEGAL_DISTINCT_IDS:
            add(f"properties.{key}", f"{text!r} is a placeholder, not an id; send a real id")

    columns: dict[str, Any] = {}
    if not _SPECIAL_PROPERTIES.isdisjoint(props):
        _read_columns(props, columns, add)
    if errors:
        return errors
    if "ip" not in columns and client_ip:
        columns["ip"] = client_ip
    assert isinstance(name, str) and distinct_id is not None
    return Event(event_uuid, name, distinct_id, timestamp, props, **columns)


def _read_columns(props: dict[str, Any], columns: dict[str, Any], add: Any) -> None:
    """Fill the first-class columns from the properties that feed them."""
    for column, sources in COLUMN_SOURCES.items():
        for src in sources:
            value = props.get(src)
            if value is not None:
                text = _text(value)
                if text is None:
                    add(f"properties.{src}", "must be a string")
                columns[column] = text
                break
    for src in AMOUNT_SOURCES:
        value = props.get(src)
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                add(f"properties.{src}", "must be a number (amount in the project's currency)")
            else:
                columns["amount"] = float(value)
            break


def validate_batch(
    raws: list[Any],
    now: datetime | None = None,
    client_ip: str | None = None,
    *,
    sdk: bool = False,
) -> ValidatedBatch:
    """Validate a batch: good events are kept, every bad field reported with its index."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    out = ValidatedBatch()
    for i, raw in enumerate(raws):
        result = validate_event(raw, i, now, client_ip, sdk=sdk)
        if isinstance(result, Event):
            out.events.append(result)
        else:
            out.errors.extend(result)
    return out
