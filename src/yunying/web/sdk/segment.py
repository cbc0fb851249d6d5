"""Segment and RudderStack wire protocol: ``/v1/batch`` and the single-message paths.

Both vendors' SDKs send the same message spec (track, identify, alias, page, screen, group) with
the write key as the HTTP Basic user name (or ``writeKey`` in the body, as analytics.js does),
often gzipped. Each message becomes one native-shaped event; the request is stored with one call
to :func:`yunying.web.http.store_events`. Answers follow the vendors' servers: 200
``{"success": true}``; errors carry ``code`` and ``message``, the two keys both Python SDKs read
(rudder-sdk-python takes a JSON error without them for a network failure and retries it). The
SDKs retry 5xx and 429 (Segment's also 408, 410, 460) and give up on any other 4xx, so
malformed input is always one of those other 4xx: reported once, never retried.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Awaitable, Callable
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

PROTOCOL = "segment"
#: Fixed namespace of the uuid5 ids derived from ``messageId`` values that are not UUIDs.
MESSAGE_ID_NAMESPACE = uuid.UUID("4a3c8e7e-2f0b-5d61-9a57-6c1e0f3b8d24")

MESSAGE_TYPES = ("track", "identify", "alias", "page", "screen", "group")

#: Per-message size limit: Segment's documented 32 KB (its SDKs drop larger messages client-side).
MAX_MESSAGE_BYTES = 32 * 1024
#: RudderStack's SDKs send messages up to 4 MB; a message with a ``channel`` field is theirs.
MAX_RUDDERSTACK_MESSAGE_BYTES = 4 * 1024 * 1024
#: Device clocks within this of the server's are trusted as they are (latency is not skew).
SKEW_TOLERANCE = timedelta(seconds=60)
#: Errors listed in the ``message`` text of a 400 (all are in ``errors``).
MESSAGE_ERRORS_SHOWN = 5

#: ``context`` fields copied into the event's properties (only where the message lacks them).
CONTEXT_PROPERTIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ip",), "$ip"),
    (("os", "name"), "$os"),
    (("os", "version"), "$os_version"),
    (("app", "version"), "$app_version"),
    (("device", "id"), "$device_id"),
    (("library", "name"), "$lib"),
    (("library", "version"), "$lib_version"),
    (("campaign", "source"), "utm_source"),
    (("campaign", "medium"), "utm_medium"),
    (("campaign", "name"), "utm_campaign"),
    (("campaign", "term"), "utm_term"),
    (("campaign", "content"), "utm_content"),
    (("page", "url"), "$current_url"),
    (("page", "path"), "$pathname"),
    (("page", "referrer"), "$referrer"),
    (("location", "city"), "$city"),
    (("location", "country"), "$country"),
)

#: Placeholder addresses some SDKs put in ``context.ip``; the peer address is better.
PLACEHOLDER_IPS = frozenset({"", "0.0.0.0", "::"})

#: Trait names that carry a person operation other than ``$set`` (a Yunying extension).
TRAIT_OPERATIONS = ("$set_once", "$unset", "$increment", "$append")

#: Paths answered, and the message type each implies (``None``: a batch of typed messages).
PATHS: dict[str, str | None] = {
    "/v1/batch": None,  # server SDKs (Python, Node, Go, Java...), RudderStack mobile and JS
    "/v1/b": None,  # analytics.js batching, analytics-kotlin, analytics-swift, React Native
    "/v1/import": None,  # older analytics-android and analytics-ios, bulk import scripts
    "/beacon/v1/batch": None,  # RudderStack JS beacon transport (writeKey in the query)
    **{f"/v1/{t}": t for t in MESSAGE_TYPES},  # RudderStack JS, HTTP API users
    **{f"/v1/{t[0]}": t for t in MESSAGE_TYPES},  # analytics.js: /v1/t, /v1/i, /v1/p...
}

ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


class SegmentError(Exception):
    """A whole-request error, answered with ``status`` and ``{"code", "message"}``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ERROR_CODES.get(status, "invalid_request")


class MessageError(ValueError):
    """One problem with one field of one message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(slots=True)
class Envelope:
    """A parsed request body: its messages and the batch-level fields that apply to them."""

    messages: list[Any]
    write_key: str | None = None
    sent_at: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Mapped:
    """A message turned into a native event, with the message fields it was read from."""

    event: dict[str, Any]
    id_field: str
    time_field: str | None
    kind: str


# -- parsing ------------------------------------------------------------------------------------


def parse_body(body: bytes, kind: str | None) -> Envelope:
    """Messages of a batch body (``kind`` None) or of a one-message body of type ``kind``."""
    if not body.strip():
        raise SegmentError(400, "empty body: send a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SegmentError(400, f"body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(payload, dict):
        raise SegmentError(400, "body must be a JSON object")
    key = payload.get("writeKey")
    if key is not None and not isinstance(key, str):
        raise SegmentError(401, "field 'writeKey' must be a string: the source's write key")
    if kind is not None:
        return Envelope([payload], key)  # its sentAt is the message's own
    sent_at = None
    if payload.get("sentAt") is not None:
        try:
            sent_at = parse_time(payload["sentAt"])
        except MessageError as exc:
            raise SegmentError(400, f"field 'sentAt' {exc.message}") from None
    context = payload.get("context")
    if context is not None and not isinstance(context, dict):
        raise SegmentError(400, "field 'context' must be an object")
    if "batch" not in payload:
        raise SegmentError(400, "field 'batch' is required: a list of messages")
    messages = payload["batch"]
    if not isinstance(messages, list):
        raise SegmentError(400, "field 'batch' must be a list of messages")
    if not messages:
        raise SegmentError(400, "field 'batch' is empty")
    if (
        key is None
        and isinstance(messages[0], dict)
        and isinstance(messages[0].get("writeKey"), str)
    ):
        key = messages[0]["writeKey"]  # analytics.js puts it in each message
    return Envelope(messages, key, sent_at, context or {})


def parse_time(value: Any) -> datetime:
    """An ISO-8601 string → aware UTC datetime (naive is UTC); MessageError otherwise."""
    if not isinstance(value, str):
        raise MessageError("", "must be an ISO-8601 string, e.g. 2026-11-23T08:00:00.000Z")
    try:
        ts = datetime.fromisoformat(value.strip())
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except ValueError:
        raise MessageError("", f"{value[:40]!r} is not an ISO-8601 date-time") from None
    except OverflowError:
        raise MessageError("", f"{value[:40]!r} is out of range in UTC") from None


def write_key_from_header(header: str) -> str | None:
    """The write key of an ``Authorization: Basic base64(key:)`` (or ``Bearer key``) header."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return token
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise SegmentError(
            401, "Authorization header is not valid Basic credentials: send base64('<write_key>:')"
        ) from None
    key = decoded.partition(":")[0]
    if not key:
        raise SegmentError(401, "Basic credentials carry an empty user name: it is the write key")
    return key


# -- mapping ------------------------------------------------------------------------------------


def _object(msg: dict[str, Any], name: str) -> dict[str, Any]:
    value = msg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(name, "must be an object")
    return value


def _id_text(msg: dict[str, Any], name: str) -> str | None:
    """An id field as text: strings as they are, numbers turned into text, empty as absent."""
    value = msg.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(int(value)) if float(value).is_integer() else str(value)
    raise MessageError(name, "must be a string (or a number)")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def context_properties(context: dict[str, Any]) -> dict[str, Any]:
    """Platform properties read from a message's ``context`` (os.name → $os, ip → $ip...)."""
    out: dict[str, Any] = {}
    for path, prop in CONTEXT_PROPERTIES:
        node: Any = context
        for i, step in enumerate(path):
            if node is None:
                break
            if not isinstance(node, dict):
                raise MessageError("context." + ".".join(path[:i]), "must be an object")
            node = node.get(step)
        if node is None or node == "":
            continue
        if isinstance(node, bool) or not isinstance(node, str | int | float):
            raise MessageError("context." + ".".join(path), "must be a string")
        out[prop] = node if isinstance(node, str) else str(node)
    if out.get("$ip") in PLACEHOLDER_IPS:
        del out["$ip"]
    return out


def event_time(
    msg: dict[str, Any], batch_sent_at: datetime | None, received_at: datetime
) -> tuple[str | None, str | None]:
    """The event's ISO-8601 UTC time and the field it came from; ``None`` means receive time.

    ``timestamp`` (else ``originalTimestamp``) is the device's time of the call; with a
    ``sentAt`` (the message's, else the batch's) the device clock's skew is
    ``receivedAt - sentAt`` and is added, as Segment and RudderStack compute
    ``timestamp = receivedAt - (sentAt - originalTimestamp)``. Skews within
    :data:`SKEW_TOLERANCE` are network latency, not a wrong clock, and are left alone so that a
    server SDK's explicit timestamps are stored exactly.
    """
    for name in ("timestamp", "originalTimestamp"):
        if msg.get(name) is not None:
            try:
                ts = parse_time(msg[name])
            except MessageError as exc:
                raise MessageError(name, exc.message) from None
            break
    else:
        return None, None
    sent_at = batch_sent_at
    if msg.get("sentAt") is not None:
        try:
            sent_at = parse_time(msg["sentAt"])
        except MessageError as exc:
            raise MessageError("sentAt", exc.message) from None
    if sent_at is not None:
        skew = received_at - sent_at
        if abs(skew) > SKEW_TOLERANCE:
            try:
                ts = ts + skew
            except OverflowError:
                raise MessageError(name, "is out of range after clock-skew correction") from None
    return ts.isoformat(), name


def message_uuid(project_id: int, message_id: str | None, content: dict[str, Any]) -> str | None:
    """The event uuid: the messageId if it is a UUID, else a uuid5 of it (or of the content).

    A message without ``messageId`` gets a uuid5 over its canonical content only when it names
    its own time, so a resent copy is recognised; without either, ``None`` (a fresh uuid).
    """
    if message_id is not None:
        try:
            return str(uuid.UUID(message_id))
        except ValueError:
            return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{PROTOCOL}:{project_id}:{message_id}"))
    if content.get("time") is None:
        return None
    canonical = orjson.dumps(
        {"project": project_id, "protocol": PROTOCOL, **content},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, canonical.decode()))


def _message_size_limit(msg: dict[str, Any]) -> int:
    return MAX_RUDDERSTACK_MESSAGE_BYTES if "channel" in msg else MAX_MESSAGE_BYTES


def _revenue(props: dict[str, Any]) -> None:
    """Fill ``$amount`` from Segment's ``revenue`` (the money of an order) when it is a number."""
    revenue = props.get("revenue")
    if "$amount" in props or "amount" in props or revenue is None:
        return
    if (
        isinstance(revenue, int | float)
        and not isinstance(revenue, bool)
        and math.isfinite(revenue)
    ):
        props["$amount"] = revenue
        if isinstance(props.get("currency"), str):
            props.setdefault("$currency", props["currency"])


def _person_operations(traits: dict[str, Any]) -> dict[str, Any]:
    """Traits as person operations: ``$set`` of the plain traits, plus any lifted operations."""
    plain = {k: v for k, v in traits.items() if k not in TRAIT_OPERATIONS and k != "$set"}
    ops: dict[str, Any] = {}
    explicit_set = traits.get("$set")
    if isinstance(explicit_set, dict):
        plain = {**plain, **explicit_set}
    elif explicit_set is not None:
        raise MessageError("traits.$set", "must be an object")
    if plain:
        ops["$set"] = plain
    for op in TRAIT_OPERATIONS:
        if op in traits:
            ops[op] = traits[op]
    return ops


def message_type(msg: dict[str, Any], kind: str | None) -> str:
    """The message's type: the path's, else its ``type`` field (batch paths)."""
    if kind is not None:
        return kind
    declared = msg.get("type")
    if not isinstance(declared, str) or not declared:
        raise MessageError("type", f"required: one of {', '.join(MESSAGE_TYPES)}")
    if declared.lower() not in MESSAGE_TYPES:
        raise MessageError(
            "type",
            f"{declared[:40]!r} is not a message type: use one of {', '.join(MESSAGE_TYPES)}",
        )
    return declared.lower()


def distinct_id_of(msg: dict[str, Any], kind: str) -> tuple[str, str]:
    """The event's distinct id and the field it came from: userId, else anonymousId."""
    user_id = _id_text(msg, "userId")
    anonymous_id = _id_text(msg, "anonymousId")
    if kind == "alias" and user_id is None:
        raise MessageError("userId", "required for alias: the id previousId is linked to")
    if user_id is not None:
        return user_id, "userId"
    if anonymous_id is not None:
        return anonymous_id, "anonymousId"
    raise MessageError("userId", "userId or anonymousId is required")


def track_event(msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """track → the named event with its properties (``revenue`` also as ``$amount``)."""
    name = msg.get("event")
    if not isinstance(name, str) or not name.strip():
        raise MessageError("event", "required for track: a non-empty string naming the event")
    props = dict(_object(msg, "properties"))
    _revenue(props)
    return name, props


def view_event(msg: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """page → ``$pageview``, screen → ``$screen``; the name and URL fields as properties."""
    props = dict(_object(msg, "properties"))
    for key in ("name", "category"):
        value = msg.get(key)
        if value is not None and not isinstance(value, str):
            raise MessageError(key, "must be a string")
        if value:
            props.setdefault(key, value)
    if kind == "screen":
        if msg.get("name"):
            props.setdefault("$screen_name", msg["name"])
        return "$screen", props
    for src, dst in (("url", "$current_url"), ("path", "$pathname"), ("referrer", "$referrer")):
        if isinstance(props.get(src), str) and props[src]:
            props.setdefault(dst, props[src])
    return "$pageview", props


def identify_event(msg: dict[str, Any], context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """identify → ``$identify`` linking anonymousId, traits as ``$set``; anonymous → ``$set``.

    Traits come from ``traits`` and ``context.traits`` (where RudderStack's SDKs put them). An
    identify without userId only describes a visitor: it is not a login, so it is not an
    ``$identify`` (which would mark the device's person identified and stop a later merge).
    """
    context_traits = context.get("traits")
    if context_traits is not None and not isinstance(context_traits, dict):
        raise MessageError("context.traits", "must be an object")
    props = _person_operations({**(context_traits or {}), **_object(msg, "traits")})
    user_id = _id_text(msg, "userId")
    anonymous_id = _id_text(msg, "anonymousId")
    if user_id is None:
        return "$set", props
    if anonymous_id is not None and anonymous_id != user_id:
        props["$anon_distinct_id"] = anonymous_id
    return "$identify", props


def alias_event(msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """alias (previousId → userId) → ``$create_alias`` on userId with ``alias`` = previousId."""
    previous_id = _id_text(msg, "previousId")
    if previous_id is None:
        raise MessageError("previousId", "required for alias: the id being linked")
    return "$create_alias", {"alias": previous_id}


def group_event(msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """group → ``$groupidentify`` of group type ``group`` keyed by groupId, traits as its set."""
    group_id = _id_text(msg, "groupId")
    if group_id is None:
        raise MessageError("groupId", "required for group: the group's id")
    traits = dict(_object(msg, "traits"))
    return "$groupidentify", {"$group_type": "group", "$group_key": group_id, "$group_set": traits}


def map_message(
    msg: Any, kind: str | None, project_id: int, batch: Envelope, received_at: datetime
) -> Mapped:
    """One Segment/RudderStack message → one native-shaped event; MessageError if malformed."""
    if not isinstance(msg, dict):
        raise MessageError("", "each message must be a JSON object")
    size, limit = len(orjson.dumps(msg)), _message_size_limit(msg)
    if size > limit:
        raise MessageError("", f"message is {size} bytes, over the limit of {limit} bytes")
    kind = message_type(msg, kind)
    distinct_id, id_field = distinct_id_of(msg, kind)
    context = _object(msg, "context")
    if batch.context:
        context = _deep_merge(batch.context, context)
    if kind == "track":
        name, props = track_event(msg)
    elif kind in ("page", "screen"):
        name, props = view_event(msg, kind)
    elif kind == "identify":
        name, props = identify_event(msg, context)
    elif kind == "alias":
        name, props = alias_event(msg)
    else:
        name, props = group_event(msg)
    for key, value in context_properties(context).items():
        props.setdefault(key, value)
    message_id = _id_text(msg, "messageId")
    time_iso, time_field = event_time(msg, batch.sent_at, received_at)

    event: dict[str, Any] = {"event": name, "distinct_id": distinct_id, "properties": props}
    if time_iso is not None:
        event["timestamp"] = time_iso
    raw_time = msg.get(time_field) if time_field else None
    content = {"event": name, "distinct_id": distinct_id, "time": raw_time, "properties": props}
    event_uuid = message_uuid(project_id, message_id, content)
    if event_uuid is not None:
        event["uuid"] = event_uuid
    return Mapped(event, id_field, time_field, kind)


def message_field(native_field: str, mapped: Mapped) -> str:
    """The message field behind a native validation error's field (distinct_id → userId...)."""
    head, _, rest = native_field.partition(".")
    if head == "distinct_id":
        return mapped.id_field
    if head == "timestamp":
        return mapped.time_field or "timestamp"
    if head == "uuid":
        return "messageId"
    if head == "event":
        return "event" if mapped.kind == "track" else "type"
    if head == "properties":
        if rest == "$anon_distinct_id" and mapped.kind == "identify":
            return "anonymousId"
        if rest == "alias" and mapped.kind == "alias":
            return "previousId"
        if mapped.kind in ("identify", "group"):
            op, _, sub = rest.partition(".")
            base = "traits" if op in ("$set", "$group_set") else f"traits.{op}"
            return f"{base}.{sub}" if sub else base
    return native_field


def map_messages(
    envelope: Envelope, kind: str | None, project_id: int, received_at: datetime
) -> tuple[list[dict[str, Any]], list[Mapped], list[int], list[FieldError]]:
    """Map every message: native events, their mapping notes and message indexes, and errors."""
    events: list[dict[str, Any]] = []
    notes: list[Mapped] = []
    indexes: list[int] = []
    errors: list[FieldError] = []
    for i, msg in enumerate(envelope.messages):
        try:
            mapped = map_message(msg, kind, project_id, envelope, received_at)
        except MessageError as exc:
            errors.append(FieldError(i, exc.field, exc.message))
            continue
        events.append(mapped.event)
        notes.append(mapped)
        indexes.append(i)
    return events, notes, indexes, errors


# -- HTTP ---------------------------------------------------------------------------------------


def _error_body(
    status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None
) -> Response:
    """An error answer in the vendors' shape: ``code`` and ``message`` are what SDKs read."""
    code = code or ERROR_CODES.get(status, "invalid_request")
    body = {"success": False, "code": code, "message": message, **(extra or {})}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _with_cors(request: Request, response: Response) -> Response:
    """Let browser SDKs (analytics.js, RudderStack JS) read the answer from any origin."""
    origin = request.headers.get("origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


def _describe(errors: list[FieldError], total: int, kind: str | None) -> str:
    where = "batch[{}]" if kind is None else f"{kind} message" + "{}"
    parts = []
    for e in errors[:MESSAGE_ERRORS_SHOWN]:
        prefix = where.format(e.index) if kind is None else where.format("")
        parts.append(f"{prefix}{'.' + e.field if e.field else ''}: {e.message}")
    more = (
        f"; and {len(errors) - MESSAGE_ERRORS_SHOWN} more"
        if len(errors) > MESSAGE_ERRORS_SHOWN
        else ""
    )
    rejected = len({e.index for e in errors})
    return f"{rejected} of {total} messages rejected: " + "; ".join(parts) + more


async def _authenticate(runtime: Runtime, request: Request, envelope: Envelope | None) -> int:
    """The project id of the request's write key: Basic header, else body, else query."""
    key = write_key_from_header(request.headers.get("authorization", ""))
    if key is None and envelope is not None:
        key = envelope.write_key
    if key is None:
        key = request.query_params.get("writeKey") or None
    if key is None:
        raise SegmentError(
            401, "missing write key: send 'Authorization: Basic base64(<write_key>:)' or 'writeKey'"
        )
    project = runtime.project_for_write_key(key)
    if project is None:
        raise SegmentError(401, "unknown write key")
    return project.id


async def handle_messages(runtime: Runtime, request: Request, kind: str | None) -> Response:
    """One request to a batch path (``kind`` None) or a one-message path; answers after commit."""
    received_at = datetime.now(UTC)
    try:
        if request.headers.get("authorization"):
            write_key_from_header(request.headers["authorization"])  # refuse bad auth unread
        try:
            body = await read_body(request, runtime.settings.max_body_bytes)
        except HTTPProblem as exc:
            raise SegmentError(exc.status, str(exc)) from None
        envelope = parse_body(body, kind)
        project_id = await _authenticate(runtime, request, envelope)
        events, notes, indexes, errors = map_messages(envelope, kind, project_id, received_at)
        accepted = duplicates = 0
        if events:
            try:
                batch, result = await store_events(
                    runtime, project_id, events, client_ip(request), sdk=True
                )
            except HTTPProblem as exc:
                raise SegmentError(exc.status, str(exc)) from None
            accepted, duplicates = len(batch.events), result.duplicates
            for e in batch.errors:
                note = notes[e.index]
                errors.append(FieldError(indexes[e.index], message_field(e.field, note), e.message))
    except SegmentError as exc:
        return _with_cors(request, _error_body(exc.status, exc.message, exc.code))
    if errors:
        errors.sort(key=lambda e: e.index)
        body_out = {
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": len({e.index for e in errors}),
            "errors": [e.as_dict() for e in errors],
        }
        message = _describe(errors, len(envelope.messages), kind)
        return _with_cors(request, _error_body(400, message, extra=body_out))
    ok = Response(b'{"success":true}', media_type="application/json")
    return _with_cors(request, ok)


def source_config(project_name: str, project_id: int, write_key: str) -> dict[str, Any]:
    """A RudderStack source configuration with no destinations: cloud mode, everything here."""
    return {
        "isHosted": False,
        "source": {
            "id": f"yunying-{project_id}",
            "name": project_name,
            "writeKey": write_key,
            "enabled": True,
            "workspaceId": "yunying",
            "config": {},
            "destinations": [],
            "updatedAt": "2026-01-01T00:00:00.000Z",
        },
    }


def router(runtime: Runtime) -> APIRouter:
    """Routes of this protocol: every message path, CORS preflight, RudderStack source config."""
    api = APIRouter()

    def endpoint(kind: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            return await handle_messages(runtime, request, kind)

        receive.__doc__ = f"Segment/RudderStack {kind or 'batch'} messages."
        return receive

    async def preflight(request: Request) -> Response:
        """CORS preflight of browser SDKs that send an Authorization header."""
        response = Response(status_code=204)
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "access-control-request-headers",
            "Authorization, Content-Type, Content-Encoding, AnonymousId",
        )
        response.headers["Access-Control-Max-Age"] = "86400"
        return _with_cors(request, response)

    async def config(request: Request) -> Response:
        """RudderStack JS and mobile SDKs fetch their source's settings before sending."""
        try:
            key = write_key_from_header(request.headers.get("authorization", ""))
            key = key or request.query_params.get("writeKey") or None
            if key is None:
                raise SegmentError(401, "missing write key: send Basic credentials")
            project = runtime.project_for_write_key(key)
            if project is None:
                raise SegmentError(401, "unknown write key")
        except SegmentError as exc:
            return _with_cors(request, _error_body(exc.status, exc.message, exc.code))
        body = orjson.dumps(source_config(project.name, project.id, key))
        return _with_cors(request, Response(body, media_type="application/json"))

    for path, kind in PATHS.items():
        for variant in (path, path + "/"):
            api.add_api_route(variant, endpoint(kind), methods=["POST"], include_in_schema=False)
            api.add_api_route(variant, preflight, methods=["OPTIONS"], include_in_schema=False)
    for variant in ("/sourceConfig", "/sourceConfig/"):
        api.add_api_route(variant, config, methods=["GET"], include_in_schema=False)
        api.add_api_route(variant, preflight, methods=["OPTIONS"], include_in_schema=False)
    return api
