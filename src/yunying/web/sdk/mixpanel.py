"""Mixpanel's wire protocol: the endpoints Mixpanel's SDKs send to, with only host and token changed.

Served paths (every Mixpanel SDK: mixpanel-python, -js, -android, -swift/-iphone, -node, -ruby...):

- ``/track`` (shared with PostHog, dispatched by :mod:`yunying.web.sdk`): events. A form field
  ``data`` (plain JSON or base64 JSON; one object or an array), also ``GET /track?data=``, or a
  JSON body. Parameters ``verbose``, ``ip``, ``callback`` in the query string or the form.
- ``/engage``: people (profile) updates ``{"$token", "$distinct_id", "$set": {...}}`` etc.;
  every Mixpanel profile operation maps onto a native person operation, ``$delete`` onto the
  event ``$delete_person``.
- ``/import``: events with historical timestamps; form ``data`` (mixpanel-python) or a JSON /
  NDJSON body (the HTTP API). Authenticated by the write key as Basic-auth user name (or
  password), the form field ``api_key``, or each event's ``properties.token``; the project's
  secret key is accepted in those places too.
- ``/groups``: group profile ``$set``/``$set_once``/``$unset``, stored as ``$groupidentify``.

Answers follow Mixpanel: ``verbose=1`` gets ``{"status": 1, "error": null}`` or
``{"status": 0, "error": "..."}`` (what mixpanel-python checks), otherwise ``1`` / ``0``;
``/import`` with a JSON body gets the strict shape ``{"code", "num_records_imported", "status",
"failed_records"}``. Every record is mapped to the native event shape and stored with one call to
:func:`yunying.web.http.store_events`, so validation, identity and dedupe are the platform's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from yunying.ingest.model import FieldError
from yunying.state import project_by_secret_key
from yunying.web.http import HTTPProblem, client_ip, read_body, store_events

if TYPE_CHECKING:
    from yunying.runtime import Runtime
    from yunying.state import Project

PROTOCOL = "mixpanel"

#: Namespace of the uuid5 ids given to records whose own id is not a UUID, or that have none.
#: Never change it: stored events would stop matching their resends.
ID_NAMESPACE = uuidlib.UUID("3d7e9a40-52c1-4b8f-a6d2-0c9e8f1b7a35")

#: ``time`` values at least this large are milliseconds (as seconds they would be year 5138).
MS_THRESHOLD = 1e11
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Kind = Literal["track", "engage", "import", "groups"]
Style = Literal["plain", "verbose", "strict"]

#: Mixpanel profile operations and the native person operation each becomes.
ENGAGE_OPERATIONS = {
    "$set": "$set",
    "$set_once": "$set_once",
    "$add": "$increment",
    "$append": "$append",
    "$union": "$union",
    "$remove": "$remove",
    "$unset": "$unset",
}
#: ``$delete`` empties the profile: the native event ``$delete_person``.
DELETE = "$delete"
ENGAGE_ENVELOPE = ("$token", "$distinct_id", "$time")
GROUP_OPERATIONS = {"$set": "$group_set", "$set_once": "$group_set_once", "$unset": "$group_unset"}
GROUP_ENVELOPE = ("$token", "$group_key", "$group_id", "$time")

#: Envelope fields moved out of ``properties`` into the native event (the token is the write key).
TRACK_ENVELOPE = ("token", "distinct_id", "time")

STRICT_STATUS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    503: "Service Unavailable",
}
CALLBACK_RE = re.compile(r"^[A-Za-z_$][\w$.]{0,99}$")


class Bad(Exception):
    """One record's problem: the wire field at fault and a message naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Failure:
    """A refused record, reported by its index in the request."""

    index: int
    field: str
    message: str
    insert_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "field": self.field, "message": self.message}
        if self.insert_id is not None:
            out["$insert_id"] = self.insert_id
        return out


@dataclass
class Translation:
    """Native events of a request, which record each came from, and the refused records."""

    kind: Kind
    raws: list[dict[str, Any]] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    insert_ids: dict[int, str] = field(default_factory=dict)
    records: int = 0

    def add(self, index: int, events: list[dict[str, Any]]) -> None:
        self.raws.extend(events)
        self.origin.extend([index] * len(events))

    def fail(self, index: int, field: str, message: str) -> None:
        self.failures.append(Failure(index, field, message, self.insert_ids.get(index)))

    def native_failures(self, errors: list[FieldError]) -> list[Failure]:
        """Native validation errors as failures of the records the events came from."""
        out = []
        for err in errors:
            index = self.origin[err.index]
            out.append(
                Failure(
                    index,
                    wire_field(self.kind, err.field),
                    err.message,
                    self.insert_ids.get(index),
                )
            )
        return out


# -- decoding -----------------------------------------------------------------------------------


def decode_data(value: str) -> Any:
    """The JSON in a ``data`` field: plain JSON, or base64 (standard or URL-safe) of JSON."""
    text = value.strip()
    if not text:
        raise HTTPProblem(400, "field 'data' is empty: send the events as JSON or base64 JSON")
    if text[0] in "[{":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, f"field 'data' is not valid JSON: {exc}") from None
    # form decoding turns an unescaped '+' into a space; base64 has no spaces
    compact = text.replace(" ", "+").replace("\n", "").replace("\r", "")
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            raw = base64.urlsafe_b64decode(compact)
        else:
            raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPProblem(400, f"field 'data' is neither JSON nor valid base64: {exc}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"field 'data' is base64 but not of JSON: {exc}") from None


def parse_form(body: bytes) -> dict[str, str]:
    """Fields of an ``application/x-www-form-urlencoded`` body (last value wins)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPProblem(400, "form body is not UTF-8") from None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise HTTPProblem(400, f"form body is malformed: {exc}") from None


def parse_json_body(body: bytes, kind: Kind) -> Any:
    """A JSON body: one object or an array; for ``/import`` also NDJSON (one object a line)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        lines = [line for line in body.splitlines() if line.strip()]
        if kind != "import" or len(lines) < 2:
            raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, f"NDJSON line {number} is not valid JSON: {exc}") from None
    return records


def as_records(payload: Any) -> list[Any]:
    """The list of records in a decoded payload: one object or an array of them."""
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        if not payload:
            raise HTTPProblem(400, "no records: 'data' is an empty array")
        return payload
    raise HTTPProblem(400, "'data' must be a JSON object or an array of objects")


@dataclass
class Parsed:
    """A decoded request: its records, parameters, and whether it came as a form."""

    records: list[Any]
    params: dict[str, str]
    form: bool


def parse_request(body: bytes, query: Mapping[str, str], kind: Kind, payload: Any = None) -> Parsed:
    """Records and parameters of a request: form ``data``, a JSON body, or ``?data=``.

    ``payload``: the JSON body when the caller (the shared-path dispatcher) already parsed it.
    """
    params = dict(query)
    if payload is not None:
        return Parsed(as_records(payload), params, False)
    head = body.lstrip()[:1]
    if head in (b"[", b"{"):
        return Parsed(as_records(parse_json_body(body, kind)), params, False)
    form = bool(body.strip())
    if form:
        params.update(parse_form(body))
    data = params.pop("data", None)
    if data is None:
        raise HTTPProblem(400, "field 'data' is required: the events as JSON or base64 JSON")
    return Parsed(as_records(decode_data(data)), params, form)


# -- mapping ------------------------------------------------------------------------------------


def epoch_to_iso(value: Any, where: str) -> str:
    """A Mixpanel time (seconds, or milliseconds by magnitude) as an ISO-8601 UTC string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Bad(where, "must be seconds (or milliseconds) since the epoch, a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            try:
                datetime.fromisoformat(value.strip())
            except ValueError:
                raise Bad(where, f"{value[:40]!r} is not seconds since the epoch") from None
            return value.strip()
    try:
        if isinstance(value, int):
            if abs(value) >= MS_THRESHOLD:
                return (EPOCH + timedelta(milliseconds=value)).isoformat()
            return (EPOCH + timedelta(seconds=value)).isoformat()
        if not math.isfinite(value):
            raise Bad(where, "must be a finite number")
        seconds = value / 1000 if abs(value) >= MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        raise Bad(where, f"{value!r} is out of range") from None


def record_uuid(project_id: int, insert_id: Any, content: dict[str, Any] | None) -> str:
    """The native uuid: the record's own id (kept if a UUID), a hash of its content, or random.

    ``content`` is hashed only when the record carries its own time, so that a resend is
    recognised while two genuinely equal events sent without a time are not fused.
    """
    if isinstance(insert_id, int | float) and not isinstance(insert_id, bool):
        insert_id = str(insert_id)
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


def well_known(props: dict[str, Any]) -> None:
    """Fill the platform's well-known properties from Mixpanel's names for them."""
    if "$lib" not in props and isinstance(props.get("mp_lib"), str):
        props["$lib"] = props["mp_lib"]
    if "$app_version" not in props and isinstance(props.get("$app_version_string"), str):
        props["$app_version"] = props["$app_version_string"]


def map_track(record: Any, project_id: int) -> list[dict[str, Any]]:
    """One Mixpanel event (``/track`` or ``/import``) as native events; raises :class:`Bad`."""
    if not isinstance(record, dict):
        raise Bad("", "each event must be a JSON object")
    name = record.get("event")
    if not isinstance(name, str) or not name.strip():
        raise Bad("event", "required: a non-empty string naming the event")
    raw_props = record.get("properties", {})
    if not isinstance(raw_props, dict):
        raise Bad("properties", "must be an object")
    props = {k: v for k, v in raw_props.items() if k not in TRACK_ENVELOPE}
    distinct_id = raw_props.get("distinct_id")
    time = raw_props.get("time")
    timestamp = epoch_to_iso(time, "properties.time") if time is not None else None

    if name == "$identify":
        distinct_id = props.get("$identified_id", distinct_id)
        anon = props.get("$anon_distinct_id", props.get("$anon_id"))
        if anon is not None:
            props["$anon_distinct_id"] = anon
    elif name == "$merge":
        ids = props.get("$distinct_ids")
        if not (isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) for i in ids)):
            raise Bad("properties.$distinct_ids", "$merge needs a list of two distinct ids")
        name, distinct_id = "$create_alias", ids[0]
        props["alias"] = ids[1]
    well_known(props)

    content = {"event": name, "distinct_id": distinct_id, "time": time, "properties": props}
    event: dict[str, Any] = {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": record_uuid(project_id, props.get("$insert_id"), content if time else None),
        "properties": props,
    }
    if timestamp is not None:
        event["timestamp"] = timestamp
    return [event]


def map_engage(record: Any, project_id: int) -> list[dict[str, Any]]:
    """One profile update as a native event carrying person operations.

    ``$delete`` becomes the event ``$delete_person`` (the person's properties are emptied; its
    ids and events stay); every other update is a ``$set`` event.
    """
    if not isinstance(record, dict):
        raise Bad("", "each profile update must be a JSON object")
    ops: dict[str, Any] = {}
    for op, native in ENGAGE_OPERATIONS.items():
        if op not in record:
            continue
        value = record[op]
        if op == "$unset":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise Bad(op, f"{op} must be a list of property names")
        elif not isinstance(value, dict):
            raise Bad(op, f"{op} must be an object of property names to values")
        if op == "$remove":
            # Mixpanel removes one value: a list value is one element, not several values
            value = {name: [v] for name, v in value.items()}
        ops[native] = value
    delete = DELETE in record
    if not ops and not delete:
        known = ", ".join([*ENGAGE_OPERATIONS, DELETE])
        raise Bad("", f"no profile operation: send one of {known}")
    props = {
        k: v
        for k, v in record.items()
        if k not in ENGAGE_ENVELOPE and k not in ENGAGE_OPERATIONS and k != DELETE
    }
    time = record.get("$time")
    distinct_id = record.get("$distinct_id")
    content = {"event": "$engage", "distinct_id": distinct_id, "time": time, "record": record}
    event: dict[str, Any] = {
        "event": "$delete_person" if delete else "$set",
        "distinct_id": distinct_id,
        "uuid": record_uuid(project_id, None, content if time else None),
        "properties": {**props, **ops},
    }
    if time is not None:
        event["timestamp"] = epoch_to_iso(time, "$time")
    return [event]


def map_group(record: Any, project_id: int) -> list[dict[str, Any]]:
    """One group profile update as a native ``$groupidentify`` event."""
    if not isinstance(record, dict):
        raise Bad("", "each group update must be a JSON object")
    group_type, group_id = record.get("$group_key"), record.get("$group_id")
    if not isinstance(group_type, str) or not group_type:
        raise Bad("$group_key", "required: the group type, e.g. 'company'")
    if not isinstance(group_id, str | int) or isinstance(group_id, bool) or group_id == "":
        raise Bad("$group_id", "required: the group's id")
    props: dict[str, Any] = {"$group_type": group_type, "$group_key": str(group_id)}
    for op in record:
        if op.startswith("$") and op not in GROUP_ENVELOPE and op not in GROUP_OPERATIONS:
            raise Bad(op, f"{op} on group profiles is not supported yet; use $set")
    for op, native in GROUP_OPERATIONS.items():
        if op in record:
            props[native] = record[op]
    if len(props) == 2:
        raise Bad("", f"no group operation: send one of {', '.join(GROUP_OPERATIONS)}")
    time = record.get("$time")
    event: dict[str, Any] = {
        "event": "$groupidentify",
        "distinct_id": f"${group_type}_{group_id}",
        "uuid": record_uuid(
            project_id, None, {"event": "$groups", "record": record} if time else None
        ),
        "properties": props,
    }
    if time is not None:
        event["timestamp"] = epoch_to_iso(time, "$time")
    return [event]


MAPPERS: dict[Kind, Callable[[Any, int], list[dict[str, Any]]]] = {
    "track": map_track,
    "import": map_track,
    "engage": map_engage,
    "groups": map_group,
}


def record_token(record: Any, kind: Kind) -> Any:
    """The project token a record carries (``properties.token`` or ``$token``)."""
    if not isinstance(record, dict):
        return None
    if kind in ("track", "import"):
        props = record.get("properties")
        return props.get("token") if isinstance(props, dict) else None
    return record.get("$token")


def token_field(kind: Kind) -> str:
    return "properties.token" if kind in ("track", "import") else "$token"


def translate(kind: Kind, records: list[Any], project: Project, authed: bool) -> Translation:
    """Map every record to native events; refused records are kept as failures.

    ``authed``: the request itself proved the project (``/import`` credentials), so records
    may omit their token; a token naming another project is refused either way.
    """
    out = Translation(kind, records=len(records))
    mapper = MAPPERS[kind]
    for index, record in enumerate(records):
        if isinstance(record, dict) and isinstance(record.get("properties"), dict):
            insert_id = record["properties"].get("$insert_id")
            if isinstance(insert_id, str):
                out.insert_ids[index] = insert_id
        token = record_token(record, kind)
        if token is None and not authed and isinstance(record, dict):
            out.fail(index, token_field(kind), "required: the project's write key")
            continue
        if token is not None and token != project.write_key:
            out.fail(index, token_field(kind), "is not this project's write key")
            continue
        try:
            out.add(index, mapper(record, project.id))
        except Bad as bad:
            out.fail(index, bad.field, bad.message)
    return out


def wire_field(kind: Kind, native: str) -> str:
    """The Mixpanel name of a native event field, for error reports."""
    if kind in ("track", "import"):
        return {
            "distinct_id": "properties.distinct_id",
            "timestamp": "properties.time",
            "uuid": "properties.$insert_id",
        }.get(native, native)
    if native == "distinct_id":
        return "$distinct_id" if kind == "engage" else "$group_id"
    if native == "timestamp":
        return "$time"
    if native.startswith("properties."):
        rest = native.removeprefix("properties.")
        return "$add" + rest.removeprefix("$increment") if rest.startswith("$increment") else rest
    return native


# -- answers ------------------------------------------------------------------------------------


def summary(failures: list[Failure], records: int) -> str:
    """One line naming the first few refused records and why."""
    shown = "; ".join(f"[{f.index}] {f.field or 'record'}: {f.message}" for f in failures[:5])
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    refused = len({f.index for f in failures})
    return f"{refused} of {records} records failed validation: {shown}{more}"


def render(
    style: Style,
    status: int,
    *,
    error: str | None = None,
    imported: int = 0,
    failures: list[Failure] | None = None,
    callback: str | None = None,
) -> Response:
    """An answer in the shape the client asked for (plain 1/0, verbose JSON, or strict JSON)."""
    ok = status == 200
    body: Any
    if style == "plain":
        body = 1 if ok else 0
    elif style == "verbose":
        body = {"status": 1 if ok else 0, "error": error}
        if failures:
            body["failed_records"] = [f.as_dict() for f in failures]
            body["num_records_imported"] = imported
    else:
        body = {"code": status, "status": STRICT_STATUS.get(status, "Error")}
        if status in (200, 400):
            body["num_records_imported"] = imported
        if error is not None:
            body["error"] = error
        if failures:
            body["failed_records"] = [f.as_dict() for f in failures]
    payload = orjson.dumps(body)
    if callback is not None:
        # JSONP (old mixpanel-js): the script must load, so the answer is 200 either way
        return Response(
            callback.encode() + b"(" + payload + b");",
            status_code=200,
            media_type="text/javascript",
        )
    media = "text/plain" if style == "plain" else "application/json"
    return Response(payload, status_code=status, media_type=media)


def flag(params: Mapping[str, str], name: str) -> bool | None:
    """A 0/1 parameter: ``True``, ``False``, or ``None`` when absent."""
    value = params.get(name)
    if value is None:
        return None
    return value.strip().lower() in ("1", "true")


def answer_style(kind: Kind, params: Mapping[str, str], form: bool) -> Style:
    """Strict JSON for ``/import`` HTTP API bodies, verbose JSON when asked, else plain."""
    if kind == "import":
        return "verbose" if form else "strict"
    return "verbose" if flag(params, "verbose") else "plain"


def guess_style(kind: Kind, request: Request, body: bytes) -> Style:
    """The answer style for a request whose body could not be read.

    Its ``verbose`` field is unknown then (mixpanel-python sends it in the form), so the answer
    is JSON unless the query string turned it off: a JSON error is what verbose clients parse,
    and a plain client sees a failure either way.
    """
    if kind == "import":
        return "verbose" if body[:5] == b"data=" or b"&data=" in body else "strict"
    return "plain" if flag(request.query_params, "verbose") is False else "verbose"


def jsonp(params: Mapping[str, str]) -> str | None:
    callback = params.get("callback")
    return callback if callback and CALLBACK_RE.match(callback) else None


# -- authentication -----------------------------------------------------------------------------


def basic_credentials(request: Request) -> list[str]:
    """User name and password of a Basic ``Authorization`` header (non-empty ones)."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return []
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise HTTPProblem(401, "Authorization header is not valid Basic auth") from None
    user, _, password = decoded.partition(":")
    return [c for c in (user, password) if c]


async def project_for_key(runtime: Runtime, key: str) -> Project | None:
    """The project of a write key, or of a secret key (what Mixpanel's /import takes)."""
    project = runtime.project_for_write_key(key)
    if project is None and len(key) > 20:
        project = await asyncio.to_thread(project_by_secret_key, runtime.state, key)
    return project


async def resolve_project(
    runtime: Runtime, request: Request, parsed: Parsed, kind: Kind
) -> tuple[Project, bool]:
    """The request's project and whether the request itself authenticated it.

    ``/import`` may authenticate with Basic auth (write key or secret key as user name or
    password) or the form field ``api_key``; otherwise the first record's token decides.
    """
    if kind == "import":
        candidates = basic_credentials(request)
        api_key = parsed.params.get("api_key")
        if api_key:
            candidates.append(api_key)
        for key in candidates:
            project = await project_for_key(runtime, key)
            if project is not None:
                return project, True
        if candidates:
            raise HTTPProblem(401, "invalid credentials: no project has this key")
    token = next(
        (t for r in parsed.records if isinstance(t := record_token(r, kind), str) and t), None
    )
    if token is None:
        raise HTTPProblem(401, f"missing token: set {token_field(kind)} to the project's write key")
    project = runtime.project_for_write_key(token)
    if project is None:
        raise HTTPProblem(401, f"unknown token {token[:64]!r}: no project has this write key")
    return project, False


# -- handlers -----------------------------------------------------------------------------------


async def handle(
    runtime: Runtime, request: Request, body: bytes, kind: Kind, payload: Any = None
) -> Response:
    """Decode, authenticate, map and store one Mixpanel request; answer in Mixpanel's shape.

    ``payload``: the JSON body when the caller (the shared-path dispatcher) already parsed it.
    """
    style = guess_style(kind, request, body)
    callback = jsonp(request.query_params)
    try:
        parsed = parse_request(body, request.query_params, kind, payload)
        style = answer_style(kind, parsed.params, parsed.form)
        callback = jsonp(parsed.params)
        project, authed = await resolve_project(runtime, request, parsed, kind)
        translation = translate(kind, parsed.records, project, authed)
        use_ip = flag(parsed.params, "ip")
        if use_ip is None:
            use_ip = kind != "import"  # the request's address is a server's for /import
        ip = client_ip(request) if use_ip else None
        batch, _ = await store_events(runtime, project.id, translation.raws, ip, sdk=True)
    except HTTPProblem as problem:
        return render(style, problem.status, error=str(problem), callback=callback)
    failures = sorted(
        translation.failures + translation.native_failures(batch.errors),
        key=lambda f: f.index,
    )
    imported = translation.records - len({f.index for f in failures})
    if failures:
        return render(
            style,
            400,
            error=summary(failures, translation.records),
            imported=imported,
            failures=failures,
            callback=callback,
        )
    return render(style, 200, imported=imported, callback=callback)


async def handle_track(
    runtime: Runtime, request: Request, body: bytes, payload: Any = None
) -> Response:
    """Mixpanel /track on the shared path; ``body`` is already size-checked and gunzipped."""
    return await handle(runtime, request, body, "track", payload)


def router(runtime: Runtime) -> APIRouter:
    """Routes of this protocol: ``/engage``, ``/import``, ``/groups`` (``/track`` is shared)."""
    api = APIRouter(include_in_schema=False)
    limit = runtime.settings.max_body_bytes

    def endpoint(kind: Kind) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            try:
                body = await read_body(request, limit)
            except HTTPProblem as problem:
                style = guess_style(kind, request, b"")
                return render(style, problem.status, error=str(problem))
            return await handle(runtime, request, body, kind)

        return serve

    for path in ("/engage", "/engage/"):
        api.add_api_route(path, endpoint("engage"), methods=["GET", "POST"])
    for path in ("/groups", "/groups/"):
        api.add_api_route(path, endpoint("groups"), methods=["GET", "POST"])
    for path in ("/import", "/import/"):
        api.add_api_route(path, endpoint("import"), methods=["POST"])
    return api
