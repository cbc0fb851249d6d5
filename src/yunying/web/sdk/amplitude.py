"""Amplitude's wire protocol: HTTP V2 and Batch uploads, with only host and API key changed.

Served paths (amplitude-analytics for Python, analytics-browser / -node / -go / -java, the mobile
SDKs, and anything speaking the HTTP V2 API):

- ``POST /2/httpapi`` and ``POST /batch`` (the latter shared with PostHog and dispatched by
  :mod:`yunying.web.sdk`): ``{"api_key": write key, "events": [...], "options": {...}}``, JSON,
  optionally gzip.

Each Amplitude event becomes a native event (:func:`map_event`): the distinct id is ``user_id``,
else ``device_id``; an event carrying both links the device to the user the way ``$identify``
does; ``user_properties`` operations become person operations; ``insert_id`` is the dedupe id.
All events of a request are stored with one call to :func:`yunying.web.http.store_events`.

Answers are Amplitude's, as the SDKs parse them: ``{"code": 200, "events_ingested": n, ...}``;
``400`` with ``error`` and ``missing_field`` for a request that cannot be read (the SDK then
reports every event as failed instead of retrying), or with ``events_with_invalid_fields``,
``events_with_missing_fields`` and ``events_with_invalid_id_lengths`` (field → event indexes) for
refused events, after the valid ones were stored (the SDK reports the refused events and resends
the others, which are recognised by ``insert_id``); ``400 "Invalid API key: ..."`` for a key no
project has.
"""

from __future__ import annotations

import math
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from yunying.ingest.model import FieldError
from yunying.web.http import HTTPProblem, client_ip, read_body, store_events

if TYPE_CHECKING:
    from yunying.runtime import Runtime

PROTOCOL = "amplitude"

#: Namespace of the uuid5 ids given to events whose ``insert_id`` is not a UUID, or that have
#: none. Never change it: stored events would stop matching their resends.
ID_NAMESPACE = uuidlib.UUID("8c2b5e17-4f3a-4d9e-b1c6-7a0d2e9f4b81")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Amplitude refuses ``user_id``/``device_id`` shorter than this unless ``options`` say otherwise.
DEFAULT_MIN_ID_LENGTH = 5
#: iOS sends this IDFA when ad tracking is limited; Amplitude drops it as a device id.
ZERO_DEVICE_ID = "00000000-0000-0000-0000-000000000000"
#: ``ip`` value meaning "the address of the upload request".
REMOTE_IP = "$remote"

#: Top-level fields that are not kept as properties: they become the event itself.
STRUCTURAL_FIELDS = frozenset({"event_type", "time", "event_properties", "user_properties"})
TEXT_FIELDS = (
    "app_version", "version_name", "platform", "os_name", "os_version", "device_brand",
    "device_manufacturer", "device_model", "carrier", "country", "region", "city", "dma",
    "language", "productId", "revenueType", "currency", "ip", "library", "partner_id",
    "user_agent",
)  # fmt: skip
NUMBER_FIELDS = ("price", "quantity", "revenue", "location_lat", "location_lng")
OBJECT_FIELDS = ("event_properties", "user_properties", "groups", "group_properties")

#: ``user_properties`` operations and the native person operation each becomes.
USER_OPERATIONS = {
    "$set": "$set",
    "$setOnce": "$set_once",
    "$add": "$increment",
    "$postInsert": "$union",
    "$remove": "$remove",
}
#: Operations appending each listed value.
APPEND_OPERATIONS = ("$append",)
UNSET = "$unset"
#: Native operations that came from ``user_properties`` (errors on them name that field).
NATIVE_USER_OPERATIONS = (*USER_OPERATIONS.values(), "$append", "$unset")
#: Empties the user's properties: the native event ``$delete_person``.
CLEAR_ALL = "$clearAll"
#: Operations Yunying cannot apply yet; an event carrying one is refused, naming it.
REFUSED_OPERATIONS = {
    "$prepend": "prepending to a list property is not supported yet",
    "$preInsert": "inserting at the front of a list property is not supported yet",
}


class Bad(Exception):
    """One event's problem: which Amplitude error list it goes in, the field, and why."""

    def __init__(self, kind: str, field: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "invalid", "missing" or "id_length"
        self.field = field
        self.message = message


@dataclass
class Upload:
    """A decoded upload: the project's key, its events and ``options.min_id_length``."""

    api_key: str
    events: list[Any]
    min_id_length: int


@dataclass
class Translation:
    """Native events of an upload, which Amplitude event each came from, and refused events."""

    raws: list[dict[str, Any]] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    fields: list[Callable[[str], str]] = field(default_factory=list)
    problems: list[Bad] = field(default_factory=list)
    problem_index: list[int] = field(default_factory=list)
    seen: set[tuple[int, str, str]] = field(default_factory=set)

    def add(self, index: int, events: list[dict[str, Any]], names: Callable[[str], str]) -> None:
        self.raws.extend(events)
        self.origin.extend([index] * len(events))
        self.fields.extend([names] * len(events))

    def fail(self, index: int, bad: Bad) -> None:
        key = (index, bad.field, bad.message)
        if key in self.seen:
            return  # the same problem on a second native event of this Amplitude event
        self.seen.add(key)
        self.problems.append(bad)
        self.problem_index.append(index)

    def absorb(self, errors: list[FieldError]) -> None:
        """Record native validation errors against the Amplitude events they came from."""
        for err in errors:
            name = self.fields[err.index](err.field)
            self.fail(self.origin[err.index], Bad("invalid", name, f"{name}: {err.message}"))


# -- decoding -----------------------------------------------------------------------------------


def request_error(message: str, missing: str) -> HTTPProblem:
    """A 400 for an unreadable upload, naming a ``missing_field`` so SDKs do not retry it."""
    return HTTPProblem(400, message, missing_field=missing)


def parse_upload(body: bytes) -> Upload:
    """The API key, events and options of an upload body; raises :class:`HTTPProblem`."""
    if not body.strip():
        raise request_error("Request body is empty: send {api_key, events}", "api_key")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise request_error(f"Invalid JSON request body: {exc}", "events") from None
    return upload_of(payload)


def upload_of(payload: Any) -> Upload:
    """The API key, events and options of a decoded upload; raises :class:`HTTPProblem`."""
    if not isinstance(payload, dict):
        raise request_error("Request body must be a JSON object {api_key, events}", "api_key")
    api_key = payload.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise request_error("Request missing required field: api_key", "api_key")
    events = payload.get("events")
    if events is None:
        raise request_error("Request missing required field: events", "events")
    if not isinstance(events, list):
        raise request_error("Field 'events' must be a list of events", "events")
    if not events:
        raise request_error("Field 'events' is empty", "events")
    options = payload.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise request_error("Field 'options' must be an object", "options")
    min_id_length = options.get("min_id_length", DEFAULT_MIN_ID_LENGTH)
    if isinstance(min_id_length, bool) or not isinstance(min_id_length, int) or min_id_length < 1:
        raise request_error("Field 'options.min_id_length' must be a positive integer", "options")
    return Upload(api_key, events, min_id_length)


# -- mapping ------------------------------------------------------------------------------------


def ms_to_iso(value: Any) -> str:
    """Amplitude ``time`` (milliseconds since the epoch) as an ISO-8601 UTC string."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Bad("invalid", "time", "time must be milliseconds since the epoch, a number")
    try:
        return (EPOCH + timedelta(milliseconds=value)).isoformat()
    except OverflowError:
        raise Bad("invalid", "time", f"time {value!r} is out of range") from None


def event_uuid(project_id: int, insert_id: Any, content: dict[str, Any] | None) -> str:
    """The native uuid: ``insert_id`` (kept if a UUID), a hash of the content, or random.

    ``content`` is hashed only for events carrying their own ``time``, so that a resend is
    recognised while two equal events sent without a time are not fused.
    """
    if isinstance(insert_id, str) and insert_id.strip():
        try:
            return str(uuidlib.UUID(insert_id))
        except ValueError:
            return str(uuidlib.uuid5(ID_NAMESPACE, f"{PROTOCOL}:{project_id}:{insert_id}"))
    if content is not None:
        canonical = orjson.dumps(
            {"protocol": PROTOCOL, "project": project_id, **content}, option=orjson.OPT_SORT_KEYS
        ).decode()
        return str(uuidlib.uuid5(ID_NAMESPACE, canonical))
    return str(uuidlib.uuid4())


def link_uuid(project_id: int, user_id: str, device_id: str) -> str:
    """The uuid of the ``$identify`` linking a device to a user: one per pair, ever."""
    return str(
        uuidlib.uuid5(ID_NAMESPACE, f"{PROTOCOL}:{project_id}:link:{user_id}\x00{device_id}")
    )


def step_uuid(main: str, step: int) -> str:
    """The uuid of the ``step``-th extra event an event expands into (stable across resends)."""
    return str(uuidlib.uuid5(ID_NAMESPACE, f"{PROTOCOL}:{main}:{step}"))


def clear_uuid(main: str) -> str:
    """The uuid of the ``$delete_person`` an event's ``$clearAll`` becomes."""
    return str(uuidlib.uuid5(ID_NAMESPACE, f"{PROTOCOL}:{main}:{CLEAR_ALL}"))


def identifier(event: dict[str, Any], name: str, min_length: int) -> str | None:
    """``user_id`` or ``device_id`` as text; ``None`` when absent; refused when too short."""
    value = event.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Bad("invalid", name, f"{name} must be a string")
    text = str(value)
    if name == "device_id" and text == ZERO_DEVICE_ID:
        return None
    if len(text) < min_length:
        raise Bad(
            "id_length",
            name,
            f"{name} {text!r} is shorter than {min_length} characters (options.min_id_length)",
        )
    return text


@dataclass
class UserOperations:
    """``user_properties`` as native person operations, values to append one by one, and
    whether the user's properties are cleared first (``$clearAll``)."""

    ops: dict[str, Any] = field(default_factory=dict)
    appends: dict[str, list[Any]] = field(default_factory=dict)
    clear_all: bool = False


def user_operations(user_props: dict[str, Any]) -> UserOperations:
    """``user_properties`` as native person operations.

    Names without a leading ``$`` are ``$set``, as Amplitude does. ``$clearAll`` stands alone
    (the SDKs drop every other operation when it is set), so combining it is refused.
    """
    out = UserOperations()
    ops, appends = out.ops, out.appends
    for op, value in user_props.items():
        if op in REFUSED_OPERATIONS:
            raise Bad(
                "invalid", "user_properties", f"user_properties.{op}: {REFUSED_OPERATIONS[op]}"
            )
        if op == CLEAR_ALL:
            if len(user_props) > 1:
                raise Bad(
                    "invalid",
                    "user_properties",
                    f"user_properties.{CLEAR_ALL} cannot be combined with other operations",
                )
            out.clear_all = True
            continue
        is_op = op in USER_OPERATIONS or op in APPEND_OPERATIONS or op == UNSET
        if is_op and not (isinstance(value, dict) or (op == UNSET and isinstance(value, list))):
            raise Bad("invalid", "user_properties", f"user_properties.{op} must be an object")
        if op in USER_OPERATIONS:
            ops.setdefault(USER_OPERATIONS[op], {}).update(value)
        elif op in APPEND_OPERATIONS:
            for name, values in value.items():
                appends.setdefault(name, []).extend(
                    values if isinstance(values, list) else [values]
                )
        elif op == UNSET:
            ops["$unset"] = [*ops.get("$unset", []), *value]
        else:
            ops.setdefault("$set", {})[op] = value
    return out


def spread_appends(ops: dict[str, Any], appends: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Person operations as steps in which each property is appended to at most once.

    The native ``$append`` takes one value per property name; appending several values
    therefore spreads over several events, applied in order.
    """
    steps: list[dict[str, Any]] = [dict(ops)]
    for name, values in appends.items():
        step = 0
        for value in values:
            while name in steps[step].get("$append", {}):
                step += 1
                if step == len(steps):
                    steps.append({})
            steps[step].setdefault("$append", {})[name] = value
    return steps


def amount_of(event: dict[str, Any], props: dict[str, Any]) -> float | None:
    """The money amount: price × quantity (quantity 1 if absent), else revenue."""

    def number(v: Any) -> float | None:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else None

    price = number(event.get("price", props.get("$price")))
    quantity = number(event.get("quantity", props.get("$quantity")))
    revenue = number(event.get("revenue", props.get("$revenue")))
    if price is not None:
        return price * (quantity if quantity is not None else 1.0)
    return revenue


def platform_properties(event: dict[str, Any], props: dict[str, Any], ip: str | None) -> None:
    """Fill the platform's well-known properties from Amplitude's top-level fields."""
    web = str(event.get("platform", "")).lower() == "web"
    pairs: list[tuple[str, Any]] = [
        ("$device_id", event.get("device_id")),
        ("$app_version", event.get("app_version") or event.get("version_name")),
        ("$city", event.get("city")),
        ("$country", event.get("country")),
        ("$session_id", event.get("session_id")),
        ("$insert_id", event.get("insert_id")),
        ("$currency", event.get("currency")),
    ]
    if web:  # browser SDKs put the browser in os_name and the OS in device_model
        pairs += [
            ("$browser", event.get("os_name")),
            ("$browser_version", event.get("os_version")),
            ("$os", event.get("device_model")),
        ]
    else:
        pairs += [("$os", event.get("os_name")), ("$os_version", event.get("os_version"))]
    library = event.get("library")
    if isinstance(library, str) and library:
        name, _, version = library.partition("/")
        pairs += [("$lib", name), ("$lib_version", version or None)]
    if event.get("ip") == REMOTE_IP:
        props.pop("ip", None)
        pairs.append(("$ip", ip))
    else:
        pairs.append(("$ip", event.get("ip")))
    amount = amount_of(event, props)
    if amount is not None:
        pairs.append(("$amount", amount))
    for name, value in pairs:
        if value is not None and value != "" and name not in props:
            props[name] = value


def check_types(event: dict[str, Any]) -> None:
    """Refuse top-level fields of the wrong type, naming the field."""
    for name in TEXT_FIELDS:
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            raise Bad("invalid", name, f"{name} must be a string")
    for name in NUMBER_FIELDS:
        value = event.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Bad("invalid", name, f"{name} must be a number")
    for name in OBJECT_FIELDS:
        value = event.get(name)
        if value is not None and not isinstance(value, dict):
            raise Bad("invalid", name, f"{name} must be an object")
    insert_id = event.get("insert_id")
    if insert_id is not None and not isinstance(insert_id, str):
        raise Bad("invalid", "insert_id", "insert_id must be a string")


def field_names(id_field: str) -> Callable[[str], str]:
    """Native event field → Amplitude field, for events whose distinct id came from ``id_field``."""

    def name(native: str) -> str:
        if native == "event":
            return "event_type"
        if native == "distinct_id":
            return id_field
        if native == "timestamp":
            return "time"
        if native == "uuid":
            return "insert_id"
        if native.startswith(tuple(f"properties.{op}" for op in NATIVE_USER_OPERATIONS)):
            return "user_properties"
        if native in ("properties.$amount", "properties.amount"):
            return "revenue"
        if native == "properties.$anon_distinct_id":
            return "device_id"
        if native.startswith("properties.$group"):
            return "group_properties"
        if native.startswith("properties."):
            return "event_properties"
        return native or "event"

    return name


def map_event(
    raw: Any, project_id: int, min_id_length: int, ip: str | None
) -> list[dict[str, Any]]:
    """One Amplitude event as native events (a device-to-user link first when it has both ids).

    Raises :class:`Bad` naming the Amplitude field at fault.
    """
    if not isinstance(raw, dict):
        raise Bad("invalid", "event", "each event must be a JSON object")
    event_type = raw.get("event_type")
    if event_type is None or event_type == "":
        raise Bad("missing", "event_type", "event_type is required")
    if not isinstance(event_type, str):
        raise Bad("invalid", "event_type", "event_type must be a string")
    check_types(raw)
    user_id = identifier(raw, "user_id", min_id_length)
    device_id = identifier(raw, "device_id", min_id_length)
    groups = raw.get("groups") or {}
    group_props = raw.get("group_properties") or {}
    distinct_id = user_id or device_id
    if distinct_id is None and event_type == "$groupidentify" and groups:
        group_type, group_name = next(iter(groups.items()))
        distinct_id = f"${group_type}_{group_name}"
    if distinct_id is None:
        raise Bad("missing", "device_id", "user_id or device_id is required")
    timestamp = ms_to_iso(raw["time"]) if raw.get("time") is not None else None

    props = {k: v for k, v in raw.items() if k not in STRUCTURAL_FIELDS and v is not None}
    props.update(raw.get("event_properties") or {})
    platform_properties(raw, props, ip)
    user_ops = user_operations(raw.get("user_properties") or {})

    name = event_type
    linked = False
    if event_type == "$identify":
        if user_id is None:
            name = "$set"  # an anonymous device's properties: not a login
        elif device_id is not None and device_id != user_id:
            props["$anon_distinct_id"] = device_id
            linked = True
    elif event_type == "$groupidentify" and groups:
        group_type, group_name = next(iter(groups.items()))
        props["$group_type"], props["$group_key"] = group_type, str(group_name)
        sets = group_props.get("$set", {k: v for k, v in group_props.items() if k[:1] != "$"})
        props["$group_set"] = sets
    if groups:
        props["$groups"] = groups

    content = {"event": name, "distinct_id": distinct_id, "time": raw.get("time"), "raw": raw}
    main = event_uuid(project_id, raw.get("insert_id"), content if timestamp else None)
    events: list[dict[str, Any]] = []
    if user_id and device_id and device_id != user_id and not linked:
        link: dict[str, Any] = {
            "event": "$identify",
            "distinct_id": user_id,
            "uuid": link_uuid(project_id, user_id, device_id),
            "properties": {"$anon_distinct_id": device_id, "$device_id": device_id},
        }
        if timestamp is not None:
            link["timestamp"] = timestamp
        events.append(link)
    for step, step_ops in enumerate(spread_appends(user_ops.ops, user_ops.appends)):
        native: dict[str, Any] = {
            "event": name if step == 0 else "$set",
            "distinct_id": distinct_id,
            "uuid": main if step == 0 else step_uuid(main, step),
            "properties": {**props, **step_ops} if step == 0 else step_ops,
        }
        if timestamp is not None:
            native["timestamp"] = timestamp
        events.append(native)
    if user_ops.clear_all:
        # after the event itself, so that a login merges first and the merged person is cleared
        clear: dict[str, Any] = {
            "event": "$delete_person",
            "distinct_id": distinct_id,
            "uuid": clear_uuid(main),
            "properties": {"$amplitude_operation": CLEAR_ALL},
        }
        if timestamp is not None:
            clear["timestamp"] = timestamp
        events.append(clear)
    return events


def translate(upload: Upload, project_id: int, ip: str | None) -> Translation:
    """Map every event of an upload; refused events are kept with their index and field."""
    out = Translation()
    linked: set[tuple[str, str]] = set()
    for index, raw in enumerate(upload.events):
        try:
            events = map_event(raw, project_id, upload.min_id_length, ip)
        except Bad as bad:
            out.fail(index, bad)
            continue
        kept = []
        for event in events:
            anon = event["properties"].get("$anon_distinct_id")
            if event["event"] == "$identify" and anon is not None:
                pair = (event["distinct_id"], anon)
                if pair in linked and event["uuid"] == link_uuid(project_id, *pair):
                    continue  # this upload already linked the device to the user
                linked.add(pair)
            kept.append(event)
        has_user = isinstance(raw, dict) and raw.get("user_id") not in (None, "")
        out.add(index, kept, field_names("user_id" if has_user else "device_id"))
    return out


# -- answers ------------------------------------------------------------------------------------


def reply(status: int, body: dict[str, Any]) -> Response:
    """An answer with Amplitude's ``code`` field (the SDK reads the status from it)."""
    return Response(
        orjson.dumps({"code": status, **body}), status_code=status, media_type="application/json"
    )


def problem_reply(problem: HTTPProblem) -> Response:
    """A request-level error in Amplitude's shape."""
    return reply(problem.status, problem.body)


def outcome(translation: Translation, total: int, payload_size: int) -> Response:
    """200 with the count, or 400 listing each refused event's index by field (Amplitude's)."""
    base = {
        "payload_size_bytes": payload_size,
        "server_upload_time": int(time.time() * 1000),
    }
    refused = sorted(set(translation.problem_index))
    ingested = total - len(refused)
    if not refused:
        return reply(200, {"events_ingested": ingested, **base})
    lists: dict[str, dict[str, list[int]]] = {}
    for index, bad in zip(translation.problem_index, translation.problems, strict=True):
        key = f"events_with_{'invalid_id_lengths' if bad.kind == 'id_length' else bad.kind + '_fields'}"
        indexes = lists.setdefault(key, {}).setdefault(bad.field, [])
        if index not in indexes:
            indexes.append(index)
    details = [
        {"index": i, "field": b.field, "message": b.message}
        for i, b in sorted(
            zip(translation.problem_index, translation.problems, strict=True),
            key=lambda pair: pair[0],
        )
    ]
    shown = "; ".join(f"[{d['index']}] {d['message']}" for d in details[:5])
    error = f"{len(refused)} of {total} events failed validation: {shown}"
    body = {"error": error, "events_ingested": ingested, **base, **lists, "details": details}
    return reply(400, body)


# -- handlers -----------------------------------------------------------------------------------


async def handle_batch(
    runtime: Runtime, request: Request, body: bytes, payload: Any = None
) -> Response:
    """Amplitude /batch on the shared path; ``body`` is already size-checked and gunzipped.

    ``payload``: the body's JSON when the caller (the shared-path dispatcher) already parsed it.
    """
    try:
        upload = parse_upload(body) if payload is None else upload_of(payload)
        project = runtime.project_for_write_key(upload.api_key)
        if project is None:
            raise HTTPProblem(400, f"Invalid API key: {upload.api_key[:64]}")
        translation = translate(upload, project.id, client_ip(request))
        batch, _ = await store_events(runtime, project.id, translation.raws, None, sdk=True)
    except HTTPProblem as problem:
        return problem_reply(problem)
    translation.absorb(batch.errors)
    return outcome(translation, len(upload.events), len(body))


def router(runtime: Runtime) -> APIRouter:
    """Routes of this protocol: ``/2/httpapi`` (``/batch`` is shared with PostHog)."""
    api = APIRouter(include_in_schema=False)
    limit = runtime.settings.max_body_bytes

    async def httpapi(request: Request) -> Response:
        try:
            body = await read_body(request, limit)
        except HTTPProblem as problem:
            if problem.status != 413:  # unreadable (bad gzip, encoding): not worth a retry
                problem.body.setdefault("missing_field", "events")
            return problem_reply(problem)
        return await handle_batch(runtime, request, body)

    for path in ("/2/httpapi", "/2/httpapi/"):
        api.add_api_route(path, httpapi, methods=["POST"])
    return api
