"""PostHog's wire protocol: the capture endpoints PostHog's SDKs send to, with only host and key changed.

Two generations of the protocol are served:

- **v0** (every PostHog SDK: posthog-python, -node, -js, -ios, -android, -go, ...): ``/batch/``,
  ``/capture/``, ``/e/``, ``/i/v0/e/``, ``/track/`` and the AI lane's ``/i/v0/ai/batch/``. The
  project key is in the body (``api_key``/``token``, per event, or ``properties.token``); the body
  is one event, a JSON array, or ``{"api_key", "batch": [...], "sent_at"}``; JSON, gzip, or a
  form ``data=`` field in base64 or lz64 (posthog-js). Success is ``{"status": 1}``; errors are
  PostHog's ``{"type", "code", "detail", "attr"}``.
- **v1** (posthog-python with ``capture_mode="v1"``): ``POST /i/v1/analytics/events``, Bearer key,
  one ``{"created_at", "batch": [...]}`` envelope, per-event ``{"results": {uuid: {"result"}}}``.

Every event is mapped to the native shape (:func:`map_event`) and stored through
:func:`yunying.web.http.store_events`, so validation, identity and dedupe are the platform's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import uuid as uuidlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from yunying.ingest.model import FieldError, parse_timestamp
from yunying.web.http import HTTPProblem, bearer, client_ip, gunzip, read_body, store_events

if TYPE_CHECKING:
    from yunying.runtime import Runtime

PROTOCOL = "posthog"

#: Namespace of the uuid5 ids given to events whose own id is not a UUID, or that have none.
#: Never change it: stored events would stop matching their resends.
ID_NAMESPACE = uuidlib.UUID("5b0c1f3e-8d27-4a61-9c3e-7f2a4d6b8e10")

#: Apparent clock differences up to this are network latency, not a wrong device clock.
SKEW_TOLERANCE = timedelta(seconds=30)

V0_PATHS = ("/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/", "/i/v0/ai/batch/")
V1_PATHS = ("/i/v1/analytics/events", "/i/v1/analytics/events/")

#: Bodies larger than this are decoded in a worker thread.
INLINE_DECODE_BYTES = 16 * 1024

COMPRESSIONS = frozenset({"", "none", "gzip", "gzip-js", "base64", "lz64"})
ERROR_URI = "https://posthog.com/docs/api/capture"

#: Person operations PostHog SDKs put at the top level of an event; moved into properties.
TOP_LEVEL_OPERATIONS = ("$set", "$set_once", "$unset")

#: v1 ``options`` and the v0 properties they came from (the SDK moved them out).
V1_OPTIONS = {
    "cookieless_mode": ("$cookieless_mode", "bool"),
    "disable_skew_correction": ("$ignore_sent_at", "bool"),
    "process_person_profile": ("$process_person_profile", "bool"),
    "product_tour_id": ("$product_tour_id", "str"),
}

#: Per-event drop tags (v1 ``details``), by the native field at fault.
DROP_TAGS = {
    "": "invalid_event",
    "event": "invalid_event_name",
    "distinct_id": "invalid_distinct_id",
    "timestamp": "invalid_event_timestamp",
    "offset": "invalid_event_timestamp",
    "uuid": "invalid_event_uuid",
    "properties": "invalid_event_properties",
    "options": "invalid_options",
}

_BASE64_RE = re.compile(rb"^[A-Za-z0-9+/=_\-\s]+$")


class CaptureError(Exception):
    """A refusal of the whole request, answered in the v0 or v1 error shape."""

    def __init__(self, status: int, code: str, detail: str, attr: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.attr = attr


@dataclass(frozen=True, slots=True)
class Context:
    """What one request contributes to the mapping of each of its events."""

    project_id: int
    now: datetime  # receive time, aware UTC
    sent_at: datetime | None  # the client's clock when it sent the request
    write_key: str
    lib: tuple[str, str] | None = None  # ($lib, $lib_version) from v1's PostHog-Sdk-Info


# -- errors ---------------------------------------------------------------------------------------


def from_problem(exc: HTTPProblem, *, v1: bool) -> CaptureError:
    """The PostHog-shaped error for a problem raised by the shared body reader or store."""
    message = str(exc.body.get("error", exc))
    codes = {413: "payload_too_large", 415: "unsupported_encoding", 503: "service_unavailable"}
    code = codes.get(exc.status, "request_decoding_error" if v1 else "invalid_payload")
    return CaptureError(exc.status, code, message)


def error_type(status: int) -> str:
    """PostHog's error ``type`` for a status."""
    if status in (401, 403):
        return "authentication_error"
    return "server_error" if status >= 500 else "validation_error"


def v0_error_body(exc: CaptureError) -> dict[str, Any]:
    """PostHog's (Django capture's) error body, which the SDKs read ``detail`` from."""
    return {
        "type": error_type(exc.status),
        "code": exc.code,
        "detail": exc.detail,
        "attr": exc.attr,
    }


def v1_error_body(exc: CaptureError) -> dict[str, Any]:
    """Capture v1's error body, which posthog-python reads ``error_description`` from."""
    return {"error": exc.code, "error_description": exc.detail, "error_uri": ERROR_URI}


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _error_response(exc: CaptureError, *, v1: bool) -> Response:
    headers = {"Retry-After": "1"} if exc.status >= 500 else None
    return _json(v1_error_body(exc) if v1 else v0_error_body(exc), exc.status, headers)


def _cors(request: Request, response: Response) -> Response:
    """Let posthog-js read the answer from any site's pages, as PostHog's capture does."""
    origin = request.headers.get("origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


# -- body decoding --------------------------------------------------------------------------------


_LZ_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_LZ_VALUE = {c: i for i, c in enumerate(_LZ_ALPHABET)}


def lz64_decompress(text: str, limit: int) -> str:
    """``LZString.decompressFromBase64`` (posthog-js's legacy ``lz64``), output capped at ``limit``.

    Raises ValueError for corrupt data and :class:`CaptureError` (413) past the limit.
    """
    text = text.strip()
    if not text:
        raise ValueError("lz64 data is empty")
    try:
        values = [_LZ_VALUE[c] for c in text]
    except KeyError as exc:
        raise ValueError(
            f"lz64 data has a character outside its alphabet: {exc.args[0]!r}"
        ) from None
    length = len(values)
    val, position, index = values[0], 32, 1

    def bits(n: int) -> int:
        nonlocal val, position, index
        out = 0
        for shift in range(n):
            if val & position:
                out |= 1 << shift
            position >>= 1
            if position == 0:
                position = 32
                val = values[index] if index < length else 0
                index += 1
        return out

    first = bits(2)
    if first == 2:
        return ""
    if first not in (0, 1):
        raise ValueError("lz64 data is corrupt (bad first code)")
    w = chr(bits(8 if first == 0 else 16))
    dictionary = ["", "", "", w]
    out = [w]
    size, enlarge_in, num_bits = 1, 4, 3
    while True:
        if index > length:
            raise ValueError("lz64 data is truncated")
        code = bits(num_bits)
        if code in (0, 1):
            dictionary.append(chr(bits(8 if code == 0 else 16)))
            code = len(dictionary) - 1
            enlarge_in -= 1
        elif code == 2:
            joined = "".join(out)
            try:
                return joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
            except UnicodeError:
                raise ValueError("lz64 data decodes to invalid UTF-16") from None
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1
        if code < len(dictionary):
            entry = dictionary[code]
        elif code == len(dictionary):
            entry = w + w[0]
        else:
            raise ValueError("lz64 data is corrupt (unknown dictionary code)")
        out.append(entry)
        size += len(entry)
        if size > limit:
            raise CaptureError(
                413, "payload_too_large", f"decompressed lz64 data is larger than {limit} bytes"
            )
        dictionary.append(w + entry[0])
        enlarge_in -= 1
        w = entry
        if enlarge_in == 0:
            enlarge_in = 1 << num_bits
            num_bits += 1


def decode_base64(data: bytes | str, limit: int) -> bytes:
    """Standard or URL-safe base64 (padding optional); gzip inside is unpacked too."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    raw = re.sub(rb"\s", b"", raw).replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    try:
        out = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CaptureError(400, "invalid_payload", "data is not valid base64", "data") from None
    if out[:2] == b"\x1f\x8b":
        try:
            out = gunzip(out, limit)
        except HTTPProblem as exc:
            raise from_problem(exc, v1=False) from None
    return out


def parse_json(data: bytes | str) -> Any:
    """JSON text → value; a 400 naming the parse error otherwise."""
    if not (data.strip() if isinstance(data, str) else data.strip()):
        raise CaptureError(400, "invalid_payload", "empty body: send an event or a batch")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CaptureError(400, "invalid_payload", f"body is not valid JSON: {exc}") from None


def form_fields(body: bytes, content_type: str, query: Mapping[str, str]) -> dict[str, str] | None:
    """Fields of a form body (posthog-js ``data=...``), or of a GET's query; ``None`` for raw bodies."""
    if "form" in content_type.lower() or body.lstrip()[:5] == b"data=":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CaptureError(400, "invalid_payload", "form body is not UTF-8 text") from None
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    if not body.strip() and "data" in query:
        return dict(query)
    return None


def decode_payload(body: bytes, content_type: str, query: Mapping[str, str], limit: int) -> Any:
    """The JSON value a v0 request carries, whatever its packing (gzip already undone by the reader).

    Packings: raw JSON; a form or query ``data`` field holding JSON, base64 or lz64 (posthog-js,
    ``compression`` in the query or the form); a raw base64 or lz64 body (old clients).
    """
    fields = form_fields(body, content_type, query)
    compression = (fields or {}).get("compression") or query.get("compression") or ""
    compression = compression.strip().lower()
    if compression not in COMPRESSIONS:
        raise CaptureError(
            400,
            "unsupported_compression",
            f"compression {compression!r} is not supported: use gzip-js, gzip, base64 or lz64",
            "compression",
        )
    if fields is not None:
        if "data" not in fields:
            raise CaptureError(400, "invalid_payload", "form body has no 'data' field", "data")
        data = fields["data"]
        if compression == "lz64":
            return parse_json(_lz64(data.replace(" ", "+"), limit))
        if data.lstrip()[:1] in ("{", "["):
            return parse_json(data)
        return parse_json(decode_base64(data.replace(" ", "+"), limit))
    if compression == "lz64":
        return parse_json(_lz64(body.decode("ascii", "replace"), limit))
    if compression == "base64":
        return parse_json(decode_base64(body, limit))
    if body.lstrip()[:1] not in (b"{", b"[") and _BASE64_RE.match(body):
        try:  # a bare base64 body (old clients); anything else is parsed as JSON below
            decoded = decode_base64(body, limit)
        except CaptureError as exc:
            if exc.status != 400:
                raise
            decoded = b""
        if decoded.lstrip()[:1] in (b"{", b"["):
            return parse_json(decoded)
    return parse_json(body)


def _lz64(text: str, limit: int) -> str:
    try:
        out = lz64_decompress(text, limit)
    except ValueError as exc:
        raise CaptureError(
            400, "invalid_payload", f"data is not valid lz64: {exc}", "data"
        ) from None
    if not out:
        raise CaptureError(400, "invalid_payload", "lz64 data decodes to nothing", "data")
    return out


# -- envelope and key -----------------------------------------------------------------------------


def envelope(payload: Any) -> tuple[list[Any], dict[str, Any]]:
    """The events of a v0 payload and its top-level fields (key, ``sent_at``)."""
    if isinstance(payload, list):
        events, top = payload, {}
    elif isinstance(payload, dict) and "batch" in payload:
        if not isinstance(payload["batch"], list):
            raise CaptureError(
                400, "invalid_payload", "field 'batch' must be a list of events", "batch"
            )
        events, top = payload["batch"], payload
    elif isinstance(payload, dict):
        events, top = [payload], payload
    else:
        raise CaptureError(
            400, "invalid_payload", 'body must be an event, a list of events or {"batch": [...]}'
        )
    if not events:
        raise CaptureError(400, "empty_batch", "request holds no event", "batch")
    return events, top


def _key_in(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    for name in ("api_key", "token", "$token"):
        value = obj.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def find_write_key(
    top: Mapping[str, Any], events: list[Any], query: Mapping[str, str], header: str | None
) -> str | None:
    """The project key: the body's, else the events' (which must agree), else query or header."""
    key = _key_in(top)
    if key:
        return key
    keys = {k for ev in events if (k := _key_in(ev) or _key_in(_props(ev)))}
    if len(keys) > 1:
        raise CaptureError(
            401, "invalid_api_key", "batch submitted with inconsistent api_key values", "api_key"
        )
    if keys:
        return keys.pop()
    return _key_in(query) or header


def _props(ev: Any) -> Any:
    return ev.get("properties") if isinstance(ev, dict) else None


def parse_sent_at(value: Any, cache_buster: str | None) -> datetime | None:
    """The client's send time: the body's ``sent_at`` (ISO-8601), else posthog-js's ``_`` (ms)."""
    if value is not None:
        try:
            return parse_timestamp(value).replace(tzinfo=UTC)
        except ValueError as exc:
            raise CaptureError(400, "invalid_payload", f"sent_at: {exc}", "sent_at") from None
    if cache_buster and cache_buster.isdigit():
        try:
            return datetime.fromtimestamp(int(cache_buster) / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


# -- event mapping (pure) -------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1"))


def event_time(
    raw: Mapping[str, Any], props: Mapping[str, Any], ctx: Context
) -> tuple[str | None, FieldError | None]:
    """The event's UTC time as PostHog computes it, or ``None`` for "receive time".

    ``timestamp`` is corrected by the client's clock error (receive time minus ``sent_at``) when
    that error is beyond :data:`SKEW_TOLERANCE` and the event does not set ``$ignore_sent_at``;
    without a timestamp, ``offset`` (ms before sending) counts back from the receive time.
    """
    ts_raw = raw.get("timestamp")
    if ts_raw is not None:
        try:
            ts = parse_timestamp(ts_raw).replace(tzinfo=UTC)
        except ValueError as exc:
            return None, FieldError(0, "timestamp", str(exc))
        if ctx.sent_at is not None and not _truthy(props.get("$ignore_sent_at")):
            skew = ctx.now - ctx.sent_at
            if abs(skew) > SKEW_TOLERANCE:
                ts += skew
        return ts.isoformat(), None
    offset = raw.get("offset")
    if offset is not None:
        if (
            isinstance(offset, bool)
            or not isinstance(offset, int | float)
            or not math.isfinite(offset)
        ):
            return None, FieldError(0, "offset", "must be a number of milliseconds")
        return (ctx.now - timedelta(milliseconds=offset)).isoformat(), None
    return None, None


def event_uuid(raw: Mapping[str, Any], content: Mapping[str, Any], project_id: int) -> str | None:
    """The event's stored uuid: its own if a UUID, else derived from its id or its content.

    Without an id, an event with a client ``timestamp`` gets a uuid5 of its content, so a resent
    request is recognised; one with neither id nor timestamp cannot be told from a new one
    (``None``: a fresh uuid4).
    """
    own = raw.get("uuid")
    if own is not None and own != "":
        text = own.strip() if isinstance(own, str) else orjson.dumps(own).decode()
        try:
            return str(uuidlib.UUID(text))
        except ValueError:
            return str(uuidlib.uuid5(ID_NAMESPACE, f"{PROTOCOL}:{project_id}:{text}"))
    if not isinstance(raw.get("timestamp"), str):
        return None
    canonical = orjson.dumps(
        {"project": project_id, "protocol": PROTOCOL, **content},
        option=orjson.OPT_SORT_KEYS,
        default=str,
    )
    return str(uuidlib.uuid5(ID_NAMESPACE, canonical.decode()))


def _fill_platform_properties(props: dict[str, Any]) -> None:
    """Add the platform's well-known names where PostHog has an equivalent under another name."""
    if "$os" not in props and isinstance(props.get("$os_name"), str):
        props["$os"] = props["$os_name"]
    revenue = props.get("revenue")
    if (
        "$amount" not in props
        and "amount" not in props
        and isinstance(revenue, int | float)
        and not isinstance(revenue, bool)
        and math.isfinite(revenue)
    ):
        props["$amount"] = revenue
        if isinstance(props.get("currency"), str):
            props.setdefault("$currency", props["currency"])


def map_event(raw: Any, ctx: Context) -> dict[str, Any] | list[FieldError]:
    """One PostHog (v0-shaped) event → a native event dict, or its field errors (index 0)."""
    if not isinstance(raw, dict):
        return [FieldError(0, "", "each event must be a JSON object")]
    props_raw = raw.get("properties")
    if props_raw is not None and not isinstance(props_raw, dict):
        return [FieldError(0, "properties", "must be an object")]
    props: dict[str, Any] = dict(props_raw or {})
    for op in TOP_LEVEL_OPERATIONS:
        top = raw.get(op)
        if top is None:
            continue
        current = props.get(op)
        if isinstance(top, dict) and isinstance(current, dict):
            props[op] = {**top, **current}  # the properties' value wins, as in PostHog
        elif op not in props:
            props[op] = top
    if props.get("token") == ctx.write_key:
        del props["token"]  # the transport's key, not data
    if ctx.lib and "$lib" not in props:
        props["$lib"], props["$lib_version"] = ctx.lib
    _fill_platform_properties(props)

    name = raw.get("event")
    if name == "$merge_dangerously":  # posthog-js: same link as an alias, same safety rule
        name = "$create_alias"
        props["$merge_dangerously"] = True
    distinct_id = raw.get("distinct_id")
    if distinct_id is None or distinct_id == "":
        distinct_id = props.get("distinct_id", raw.get("$distinct_id"))

    timestamp, error = event_time(raw, props, ctx)
    if error is not None:
        return [error]
    native: dict[str, Any] = {"event": name, "distinct_id": distinct_id, "properties": props}
    content = {**native, "timestamp": raw.get("timestamp")}
    event_id = event_uuid(raw, content, ctx.project_id)
    if timestamp is not None:
        native["timestamp"] = timestamp
    if event_id is not None:
        native["uuid"] = event_id
    return native


def v1_to_v0(raw: Any) -> dict[str, Any] | list[FieldError]:
    """A capture-v1 event → the v0 shape it was made from (options and ids back into properties)."""
    if not isinstance(raw, dict):
        return [FieldError(0, "", "each event must be a JSON object")]
    props_raw = raw.get("properties")
    if props_raw is not None and not isinstance(props_raw, dict):
        return [FieldError(0, "properties", "must be an object")]
    props = dict(props_raw or {})
    for field, prop in (("session_id", "$session_id"), ("window_id", "$window_id")):
        if raw.get(field) is not None:
            props.setdefault(prop, raw[field])
    options = raw.get("options")
    if options is not None and not isinstance(options, dict):
        return [FieldError(0, "options", "must be an object")]
    errors: list[FieldError] = []
    for name, (prop, kind) in V1_OPTIONS.items():
        value = (options or {}).get(name)
        if value is None:
            continue
        coerced = _coerce_option(value, kind)
        if coerced is None:
            errors.append(FieldError(0, f"options.{name}", f"must be a {kind}"))
        else:
            props.setdefault(prop, coerced)
    if errors:
        return errors
    rest = {k: v for k, v in raw.items() if k not in ("options", "session_id", "window_id")}
    return {**rest, "properties": props}


def _coerce_option(value: Any, kind: str) -> bool | str | None:
    """v1's lenient option typing: bools from bool/"true"/"1"/numbers, strings from str/int."""
    if kind == "str":
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        return True if lowered in ("true", "1") else False if lowered in ("false", "0") else None
    if isinstance(value, int | float):
        return value != 0
    return None


def map_v1_event(raw: Any, ctx: Context) -> dict[str, Any] | list[FieldError]:
    """One capture-v1 event → a native event dict, or its field errors (index 0)."""
    shaped = v1_to_v0(raw)
    return shaped if isinstance(shaped, list) else map_event(shaped, ctx)


def map_events(
    raws: list[Any], ctx: Context, *, v1: bool = False
) -> tuple[list[dict[str, Any]], list[int], list[FieldError]]:
    """Map a batch: native dicts, each one's index in the batch, and the errors of the rest."""
    mapper = map_v1_event if v1 else map_event
    natives: list[dict[str, Any]] = []
    positions: list[int] = []
    errors: list[FieldError] = []
    for i, raw in enumerate(raws):
        result = mapper(raw, ctx)
        if isinstance(result, dict):
            natives.append(result)
            positions.append(i)
        else:
            errors.extend(FieldError(i, e.field, e.message) for e in result)
    return natives, positions, errors


async def _store(
    runtime: Runtime, request: Request, project_id: int, raws: list[Any], ctx: Context, v1: bool
) -> tuple[list[FieldError], int, int]:
    """Map and store a batch once; every error by its batch index, the accepted and duplicates."""
    natives, positions, errors = map_events(raws, ctx, v1=v1)
    accepted = duplicates = 0
    if natives:
        batch, result = await store_events(
            runtime, project_id, natives, client_ip(request), sdk=True
        )
        errors += [FieldError(positions[e.index], e.field, e.message) for e in batch.errors]
        accepted, duplicates = len(batch.events), result.duplicates
    errors.sort(key=lambda e: e.index)
    return errors, accepted, duplicates


# -- v0 -------------------------------------------------------------------------------------------


async def handle_capture(
    runtime: Runtime, request: Request, body: bytes, payload: Any = None
) -> Response:
    """PostHog capture/batch body on a shared path; ``body`` is already size-checked and gunzipped.

    ``payload``: the body's JSON when the caller (the shared-path dispatcher) already parsed it.
    """
    try:
        response = await _capture(runtime, request, body, payload)
    except CaptureError as exc:
        response = _error_response(exc, v1=False)
    except HTTPProblem as exc:
        response = _error_response(from_problem(exc, v1=False), v1=False)
    return _cors(request, response)


async def _capture(runtime: Runtime, request: Request, body: bytes, payload: Any) -> Response:
    now = datetime.now(UTC)
    query = dict(request.query_params)
    limit = runtime.settings.max_body_bytes
    content_type = request.headers.get("content-type", "")
    if payload is not None:
        pass
    elif len(body) > INLINE_DECODE_BYTES:  # lz64 and big JSON take a while: keep the loop free
        payload = await asyncio.to_thread(decode_payload, body, content_type, query, limit)
    else:
        payload = decode_payload(body, content_type, query, limit)
    events, top = envelope(payload)
    key = find_write_key(top, events, query, bearer(request))
    if key is None:
        raise CaptureError(
            401,
            "missing_api_key",
            "API key not provided: send the project's write key as 'api_key' in the body",
            "api_key",
        )
    project = runtime.project_for_write_key(key)
    if project is None:
        raise CaptureError(
            401, "invalid_api_key", "Project API key invalid: unknown write key", "api_key"
        )
    sent_at = parse_sent_at(top.get("sent_at"), query.get("_"))
    ctx = Context(project.id, now, sent_at, key)
    errors, accepted, duplicates = await _store(runtime, request, project.id, events, ctx, False)
    if not errors:
        return _json({"status": 1})
    return _json(rejection_body(errors, len(events), accepted, duplicates), 400)


def rejection_body(
    errors: list[FieldError], total: int, accepted: int, duplicates: int
) -> dict[str, Any]:
    """The 400 for a batch with bad events: PostHog's error shape plus each bad event's field."""
    rejected = len({e.index for e in errors})
    first = errors[0]
    where = f"batch[{first.index}].{first.field}".rstrip(".")
    detail = (
        f"{rejected} of {total} events rejected and not stored (the others were stored); "
        f"first: {where}: {first.message}"
    )
    return {
        **v0_error_body(CaptureError(400, "invalid_payload", detail, where)),
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected,
        "errors": [e.as_dict() for e in errors],
    }


# -- v1 -------------------------------------------------------------------------------------------


def sdk_lib(header: str | None) -> tuple[str, str] | None:
    """``PostHog-Sdk-Info: posthog-python/7.1.0`` → (``$lib``, ``$lib_version``)."""
    if not header or len(header) > 200:
        return None
    lib, _, version = header.rpartition("/")
    lib, version = lib.strip(), version.strip()
    return (lib, version) if lib and version else None


def v1_batch(payload: Any) -> list[dict[str, Any]]:
    """The events of a v1 envelope, checked as PostHog does before any is looked at singly.

    Results are keyed by event uuid, so a missing, invalid or repeated uuid refuses the batch.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise CaptureError(
            400, "invalid_batch", 'body must be {"created_at": ..., "batch": [...]}', "batch"
        )
    created_at = payload.get("created_at")
    if created_at is not None:
        try:
            parse_timestamp(created_at)
        except ValueError as exc:
            raise CaptureError(400, "invalid_batch", f"created_at: {exc}", "created_at") from None
    events = payload["batch"]
    if not events:
        raise CaptureError(400, "empty_batch", "request batch is empty", "batch")
    seen: set[uuidlib.UUID] = set()
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise CaptureError(
                400, "request_parsing_error", f"batch[{i}] is not an event object", f"batch[{i}]"
            )
        raw_id = ev.get("uuid")
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise CaptureError(
                400, "missing_event_uuid", f"batch[{i}] has no uuid", f"batch[{i}].uuid"
            )
        try:
            parsed = uuidlib.UUID(raw_id.strip())
        except ValueError:
            raise CaptureError(
                400,
                "invalid_event_uuid",
                f"batch[{i}].uuid {raw_id[:40]!r} is not a UUID",
                f"batch[{i}].uuid",
            ) from None
        if parsed in seen:
            raise CaptureError(
                400, "duplicate_event_uuid", f"duplicate event uuid: {raw_id}", f"batch[{i}].uuid"
            )
        seen.add(parsed)
    return events


def v1_results(events: list[dict[str, Any]], errors: list[FieldError]) -> dict[str, Any]:
    """``{"results": {uuid: {"result": "ok"} | {"result": "drop", "details": ...}}}``."""
    by_index: dict[int, FieldError] = {}
    for e in errors:
        by_index.setdefault(e.index, e)
    results: dict[str, Any] = {}
    for i, ev in enumerate(events):
        key = ev["uuid"].strip()
        bad = by_index.get(i)
        if bad is None:
            results[key] = {"result": "ok"}
        else:
            tag = DROP_TAGS.get(re.split(r"[.\[]", bad.field, maxsplit=1)[0], "invalid_event")
            where = f"{bad.field}: " if bad.field else ""
            results[key] = {"result": "drop", "details": f"{tag}: {where}{bad.message}"}
    return {"results": results}


async def read_v1_body(request: Request, limit: int) -> bytes:
    """The v1 body: gzip via the shared reader, plus zlib ``deflate`` that posthog-python can send."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding != "deflate":
        return await read_body(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    d = zlib.decompressobj()
    try:
        out = d.decompress(b"".join(chunks), limit + 1)
    except zlib.error as exc:
        raise HTTPProblem(400, f"body is not valid deflate (zlib) data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPProblem(413, f"decompressed body is larger than the limit of {limit} bytes")
    if not d.eof:
        raise HTTPProblem(400, "deflate body is truncated")
    return out


async def handle_v1(runtime: Runtime, request: Request) -> Response:
    """``POST /i/v1/analytics/events``: Bearer key, per-event results keyed by uuid."""
    try:
        return await _v1(runtime, request)
    except CaptureError as exc:
        return _error_response(exc, v1=True)
    except HTTPProblem as exc:
        return _error_response(from_problem(exc, v1=True), v1=True)


async def _v1(runtime: Runtime, request: Request) -> Response:
    now = datetime.now(UTC)
    key = bearer(request)
    if key is None:
        raise CaptureError(
            401, "invalid_api_token", "missing 'Authorization: Bearer <project api key>'"
        )
    project = runtime.project_for_write_key(key)
    if project is None:
        raise CaptureError(401, "invalid_api_token", "API token is not valid: unknown write key")
    body = await read_v1_body(request, runtime.settings.max_body_bytes)
    if not body.strip():
        raise CaptureError(400, "empty_body", "request body is empty")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CaptureError(400, "request_parsing_error", f"body is not valid JSON: {exc}") from None
    events = v1_batch(payload)
    sent_header = request.headers.get("posthog-request-timestamp")
    sent_at = None
    if sent_header:
        try:
            sent_at = parse_timestamp(sent_header).replace(tzinfo=UTC)
        except ValueError as exc:
            raise CaptureError(
                400, "invalid_header_value", f"PostHog-Request-Timestamp: {exc}"
            ) from None
    ctx = Context(project.id, now, sent_at, key, sdk_lib(request.headers.get("posthog-sdk-info")))
    errors, _accepted, _duplicates = await _store(runtime, request, project.id, events, ctx, True)
    return _json(v1_results(events, errors))


# -- routes ---------------------------------------------------------------------------------------


def router(runtime: Runtime) -> APIRouter:
    """PostHog's own capture paths (``/track/`` and ``/batch/`` are shared: see the package)."""
    api = APIRouter()
    limit = runtime.settings.max_body_bytes

    async def capture(request: Request) -> Response:
        try:
            body = await read_body(request, limit)
        except HTTPProblem as exc:
            return _cors(request, _error_response(from_problem(exc, v1=False), v1=False))
        return await handle_capture(runtime, request, body)

    async def preflight(request: Request) -> Response:
        response = Response(status_code=200)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "access-control-request-headers", "Content-Type"
        )
        response.headers["Access-Control-Max-Age"] = "86400"
        return _cors(request, response)

    async def v1(request: Request) -> Response:
        return await handle_v1(runtime, request)

    for path in V0_PATHS:
        api.add_api_route(path, capture, methods=["GET", "POST"], include_in_schema=False)
        api.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)
    for path in V1_PATHS:
        api.add_api_route(path, v1, methods=["POST"], include_in_schema=False)
    return api
