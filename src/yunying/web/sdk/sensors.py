"""Sensors Data (神策分析) wire protocol: ``/sa`` and ``/sa.gif``, as the official SDKs send them.

Every Sensors SDK posts a form (``application/x-www-form-urlencoded``) to its ``server_url``:
``data_list`` (a JSON array of records) or ``data`` (one record), base64 encoded, gzipped first
when ``gzip=1`` (Python, Java, Android, iOS) and plain when ``gzip`` is ``0`` or absent (web JS
batch sending). Web beacons put ``data`` in the query string of a GET to ``/sa`` or ``/sa.gif``.
A record is ``{"type": "track"|"track_signup"|"profile_set"|..., "event", "distinct_id",
"time" (epoch ms), "properties", "lib", ...}``.

The SDKs send no key, so the write key travels in the query string of the server URL
(``/sa?project=NAME&token=WRITE_KEY``; every SDK keeps that query string), except from the
networks listed in ``YUNYING_SENSORS_ALLOW_NETWORKS``. Answers: 200 when every record is stored;
400/401/413 (which the SDKs treat as final: Android drops the batch, the Python SDK raises) with
``{"code": status, "error": ..., "errors": [{"index", "field", "message"}]}`` otherwise; 503
(retried) only when the store could not commit.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from yunying.errors import ConfigError, NotFound
from yunying.ingest.model import ValidatedBatch, validate_batch
from yunying.state import Project, get_project
from yunying.web.http import HTTPProblem, client_ip, gunzip, read_body, store_events

if TYPE_CHECKING:
    from yunying.runtime import Runtime

log = logging.getLogger("yunying.ingest.sensors")

PROTOCOL = "sensors"
#: Namespace of the uuid5 ids given to Sensors records (they carry no uuid of their own).
SENSORS_NAMESPACE = uuid.UUID("5e45a0d1-7c3b-4f6e-9a21-8b0c4d2e6f13")
#: A 1x1 transparent GIF, the answer to web beacons.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROJECT_TTL = 60.0
NEGATIVE_PROJECT_TTL = 5.0

LOGIN_IDENTITY = "$identity_login_id"
TRACK_TYPES = frozenset({"track", "track_signup", "track_id_bind", "track_id_unbind"})
PROFILE_OPS = {
    "profile_set": "$set",
    "profile_set_once": "$set_once",
    "profile_increment": "$increment",
    "profile_append": "$append",
    "profile_unset": "$unset",
}
ITEM_TYPES = frozenset({"item_set", "item_delete"})
KNOWN_TYPES = TRACK_TYPES | PROFILE_OPS.keys() | ITEM_TYPES | {"profile_delete"}
#: Flags the SDKs put among profile properties; they describe the call, not the person.
PROFILE_FLAGS = frozenset({"$is_login_id", "$project", "$token", "$time"})
#: ``lib`` fields copied into the event's properties when the properties lack them.
LIB_FIELDS = ("$lib", "$lib_version", "$lib_method", "$lib_detail", "$app_version")
#: Sensors property names → the platform's names for the same thing (filled when absent).
PROPERTY_ALIASES = {"$url": "$current_url", "$url_path": "$pathname"}
#: Top-level record fields kept on the event as properties, for tracing.
KEPT_FIELDS = {
    "_track_id": "$track_id",
    "anonymous_id": "$anonymous_id",
    "login_id": "$login_id",
    "identities": "$identities",
    "project": "$sensors_project",
}
#: ``gzip`` values the SDKs use for encrypted payloads (data encryption, transport encryption).
ENCRYPTED_GZIP = frozenset({"9", "13"})


class RecordProblem(ValueError):
    """One record cannot be mapped; ``field`` names the record field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Mapped:
    """Native-shaped events of a request, with the record index each came from."""

    events: list[dict[str, Any]] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)


# -- decoding -----------------------------------------------------------------------------------


def b64decode_lenient(text: str, name: str) -> bytes:
    """Standard or URL-safe base64, padding optional, unescaped '+' (read as space) restored."""
    cleaned = text.strip().replace(" ", "+").replace("\n", "").replace("\r", "")
    if "-" in cleaned or "_" in cleaned:
        cleaned = cleaned.replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPProblem(400, f"field {name!r} is not valid base64", field=name) from None


def decode_payload(value: str, name: str, gzip_flag: str | None, limit: int) -> Any:
    """The JSON inside one form field: base64, then gunzip when the bytes are gzip."""
    flag = (gzip_flag or "").strip()
    if flag in ENCRYPTED_GZIP:
        raise HTTPProblem(
            400,
            f"gzip={flag} marks an encrypted payload, which Yunying cannot decrypt: "
            "turn off the SDK's encryption (enableEncrypt / encrypt_cookie) for this server",
            field="gzip",
        )
    if flag not in ("", "0", "1"):
        raise HTTPProblem(400, f"field 'gzip' must be 0 or 1, not {flag[:20]!r}", field="gzip")
    if not value.strip():
        raise HTTPProblem(400, f"field {name!r} is empty", field=name)
    raw = b64decode_lenient(value, name)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gunzip(raw, limit)
        except HTTPProblem as exc:
            raise HTTPProblem(exc.status, f"field {name!r}: {exc}", field=name) from None
    elif flag == "1" and raw.lstrip()[:1] not in (b"[", b"{"):
        raise HTTPProblem(400, f"field {name!r} is not gzip data although gzip=1", field=name)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"field {name!r} is not valid JSON: {exc}", field=name) from None


def records_from_fields(fields: dict[str, str], limit: int) -> list[Any]:
    """The list of records carried by the form (or query) fields ``data_list`` / ``data``."""
    if "data_list" in fields:
        name = "data_list"
    elif "data" in fields:
        name = "data"
    else:
        raise HTTPProblem(
            400, "missing field 'data_list' or 'data' (base64 of the JSON records)", field="data"
        )
    payload = decode_payload(fields[name], name, fields.get("gzip"), limit)
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise HTTPProblem(
            400, f"field {name!r} must hold a JSON array of records or one record", field=name
        )
    if not payload:
        raise HTTPProblem(400, f"field {name!r} holds no records", field=name)
    return payload


def form_fields(body: bytes, query: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Form fields of the body, falling back to the query string (beacons send ``?data=``)."""
    fields = {k: v for k, v in query if k in ("data", "data_list", "gzip")}
    text = body.strip()
    if not text:
        return fields
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPProblem(
            400, "body must be an url-encoded form (data_list=...&gzip=1), not binary data"
        ) from None
    if "=" not in decoded:
        raise HTTPProblem(400, "body must be an url-encoded form: data_list=<base64>&gzip=1")
    body_fields = dict(parse_qsl(decoded, keep_blank_values=True))
    if "data_list" in body_fields or "data" in body_fields:
        fields.pop("data_list", None)
        fields.pop("data", None)
    fields.update(body_fields)
    return fields


# -- mapping ------------------------------------------------------------------------------------


def epoch_ms_to_iso(value: Any) -> str:
    """Sensors ``time`` (epoch milliseconds; 10-digit seconds too, as the SDKs allow) → ISO UTC."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise RecordProblem("time", "must be epoch milliseconds (a number)")
    if 1e9 <= value < 1e10:
        value = value * 1000
    if not 0 < value < 1e14:
        raise RecordProblem("time", f"{value!r} is not epoch milliseconds")
    return (EPOCH + timedelta(milliseconds=value)).isoformat()


def record_uuid(project_id: int, record: dict[str, Any]) -> str:
    """Deterministic event id: the record's whole content except the per-flush ``_flush_time``.

    Sensors records carry no unique id (``_track_id`` is a random 32-bit number, too small to
    be unique alone, so it is part of the content); an SDK retry resends the same record, which
    gets the same id and is stored once.
    """
    content = {k: v for k, v in record.items() if k != "_flush_time"}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
    return str(uuid.uuid5(SENSORS_NAMESPACE, f"{PROTOCOL}:{project_id}:{canonical}"))


def derived_uuid(base: str, role: str) -> str:
    """Id of an extra event made from one record (identity links, appended items)."""
    return str(uuid.uuid5(SENSORS_NAMESPACE, f"{base}:{role}"))


def identities_of(record: dict[str, Any]) -> dict[str, str]:
    """The ID-Mapping 3.0 ``identities`` object (identity key → value), checked."""
    raw = record.get("identities")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in raw.items()
    ):
        raise RecordProblem("identities", "must be an object of identity names to non-empty text")
    return raw


def identity_distinct_id(key: str, value: str, record: dict[str, Any]) -> str:
    """The distinct id an identity stands for, named as the SDKs name it.

    A login id is the user's distinct id; an id the record also uses as its distinct or
    anonymous id (device, cookie) stands for itself; any other (mobile, email...) is
    ``"<key>+<value>"``, as the SDKs' ``*_by_id`` calls name such a user.
    """
    own = {str(record[k]) for k in ("distinct_id", "anonymous_id") if record.get(k) is not None}
    if key == LOGIN_IDENTITY or value in own:
        return value
    return f"{key}+{value}"


def context_properties(record: dict[str, Any]) -> dict[str, Any]:
    """Properties describing the sending SDK: ``lib`` fields and kept top-level fields."""
    lib = record.get("lib")
    if lib is not None and not isinstance(lib, dict):
        raise RecordProblem("lib", "must be an object")
    out = {name: lib[name] for name in LIB_FIELDS if lib and lib.get(name) is not None}
    for name, prop in KEPT_FIELDS.items():
        if record.get(name) is not None:
            out[prop] = record[name]
    return out


def own_properties(record: dict[str, Any]) -> dict[str, Any]:
    """The record's ``properties`` object (empty when absent)."""
    props = record.get("properties")
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise RecordProblem("properties", "must be an object")
    return props


def event_properties(record: dict[str, Any]) -> dict[str, Any]:
    """Properties of a tracked event: its own, then SDK context and the platform's names."""
    props = own_properties(record)
    out = {**context_properties(record), **props}
    for theirs, ours in PROPERTY_ALIASES.items():
        if props.get(theirs) is not None:
            out.setdefault(ours, props[theirs])
    return out


def append_steps(values: dict[str, Any]) -> list[dict[str, Any]]:
    """``profile_append`` lists → one ``$append`` object per position (one value per name).

    The native ``$append`` adds one value per name and event, so a list of n items becomes n
    operations, applied in order.
    """
    lists: dict[str, list[Any]] = {}
    for name, value in values.items():
        if not isinstance(value, list):
            raise RecordProblem(f"properties.{name}", "profile_append values must be lists")
        lists[name] = value
    depth = max((len(v) for v in lists.values()), default=0)
    return [{n: v[i] for n, v in lists.items() if i < len(v)} for i in range(depth)]


def linked_ids(kind: str, record: dict[str, Any], identities: dict[str, str]) -> list[str]:
    """Other distinct ids a signup or bind ties to the record's distinct id, in order."""
    if kind not in ("track_signup", "track_id_bind"):
        return []
    candidates: list[str] = []
    if kind == "track_signup":
        original = record.get("original_id")
        if isinstance(original, bool) or not isinstance(original, str | int) or original == "":
            raise RecordProblem("original_id", "required for track_signup: the anonymous id")
        candidates.append(str(original))
    elif len(identities) < 2:
        raise RecordProblem("identities", "track_id_bind needs at least two identities")
    candidates += [identity_distinct_id(k, v, record) for k, v in identities.items()]
    seen = {str(record.get("distinct_id"))}
    out = []
    for other in candidates:
        if other not in seen:
            seen.add(other)
            out.append(other)
    return out


def link_operation(kind: str, other: str, login: bool) -> tuple[str, dict[str, Any], str]:
    """Name, properties and id role of the native operation tying ``other`` to the record.

    A signup, or a bind that names a login id, is a login: ``$identify`` (the person becomes
    identified and absorbs the anonymous one). A bind without a login id only aliases the ids.
    """
    if login:
        return "$identify", {"$anon_distinct_id": other, "$sensors_type": kind}, "identify"
    return "$create_alias", {"alias": other, "$sensors_type": kind}, "alias"


def check_record(record: Any) -> str:
    """The record's type, after the checks every record needs."""
    if not isinstance(record, dict):
        raise RecordProblem("", "each record must be a JSON object")
    kind = record.get("type")
    if not isinstance(kind, str) or not kind:
        raise RecordProblem("type", "required: track, track_signup, profile_set, ...")
    if kind not in KNOWN_TYPES:
        raise RecordProblem("type", f"unknown record type {kind[:40]!r}")
    if kind in ITEM_TYPES:
        raise RecordProblem(
            "type",
            f"{kind} is not supported: Yunying has no item catalogue; this record was not stored",
        )
    if record.get("time") is None:
        raise RecordProblem("time", "required: epoch milliseconds of the event")
    return kind


def map_record(record: Any, project_id: int) -> tuple[list[dict[str, Any]], list[str]]:
    """One Sensors record → native-shaped events and warnings; raises :class:`RecordProblem`."""
    kind = check_record(record)
    timestamp = epoch_ms_to_iso(record["time"])
    identities = identities_of(record)
    base = record_uuid(project_id, record)

    def event(name: str, properties: dict[str, Any], uid: str) -> dict[str, Any]:
        return {
            "event": name,
            "distinct_id": record.get("distinct_id"),
            "timestamp": timestamp,
            "uuid": uid,
            "properties": properties,
        }

    if kind in TRACK_TYPES:
        name = record.get("event")
        if not isinstance(name, str) or not name:
            raise RecordProblem("event", f"required for {kind}: the event name")
        props = event_properties(record)
        if kind != "track":
            props.setdefault("$sensors_type", kind)
        login = kind == "track_signup" or LOGIN_IDENTITY in identities
        events = []
        for other in linked_ids(kind, record, identities):
            op, op_props, role = link_operation(kind, other, login)
            events.append(event(op, op_props, derived_uuid(base, f"{role}:{other}")))
        events.append(event(name, props, base))
        warnings = []
        if kind == "track_id_unbind":
            warnings.append("track_id_unbind is stored as an event only: no id was unlinked")
        return events, warnings

    props = own_properties(record)
    flags = {k: v for k, v in props.items() if k in PROFILE_FLAGS}
    context = {**context_properties(record), **flags, "$sensors_type": kind}
    if kind == "profile_delete":
        # the person's properties are emptied; its ids and events stay
        return [event("$delete_person", context, base)], []
    if record.get("properties") is None:
        raise RecordProblem("properties", f"required for {kind}: an object of person properties")
    op = PROFILE_OPS[kind]
    values = {k: v for k, v in props.items() if k not in PROFILE_FLAGS}
    if op == "$unset":
        return [event(op, {**context, op: list(values)}, base)], []
    if op != "$append":
        return [event(op, {**context, op: values}, base)], []
    events = []
    for i, step in enumerate(append_steps(values) or [{}]):
        uid = derived_uuid(base, f"append:{i}") if i else base
        events.append(event(op, {**context, op: step} if step else dict(context), uid))
    return events, []


def map_records(records: list[Any], project_id: int) -> Mapped:
    """Map every record; a bad record becomes an error naming its index and field."""
    out = Mapped()
    for index, record in enumerate(records):
        try:
            events, warnings = map_record(record, project_id)
        except RecordProblem as exc:
            out.errors.append({"index": index, "field": exc.field, "message": exc.message})
            continue
        out.events.extend(events)
        out.origin.extend([index] * len(events))
        out.warnings.extend({"index": index, "message": w} for w in warnings)
    return out


def all_errors(mapped: Mapped, batch: ValidatedBatch) -> list[dict[str, Any]]:
    """Mapping and validation errors by record index and Sensors field, each once.

    One record may become several native events (signup, append), which may fail alike.
    """
    found = mapped.errors + [
        {"index": mapped.origin[e.index], "field": sensors_field(e.field), "message": e.message}
        for e in batch.errors
    ]
    seen: set[tuple[Any, ...]] = set()
    out = []
    for e in sorted(found, key=lambda e: e["index"]):
        key = (e["index"], e["field"], e["message"])
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def sensors_field(native_field: str) -> str:
    """A native validation field name → the Sensors record field it came from."""
    if native_field == "timestamp":
        return "time"
    for op in PROFILE_OPS.values():
        prefix = f"properties.{op}"
        if native_field == prefix:
            return "properties"
        if native_field.startswith(prefix + "."):
            return "properties." + native_field[len(prefix) + 1 :]
    return native_field


# -- access -------------------------------------------------------------------------------------


def parse_networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Allowed networks from settings; a typo is a startup error, not an open door."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"YUNYING_SENSORS_ALLOW_NETWORKS: {cidr!r} is not a network (e.g. 10.0.0.0/8)"
            ) from None
    return out


def in_networks(
    address: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    """Whether a peer address lies in one of the networks (IPv4-mapped IPv6 included)."""
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


class ProjectNames:
    """Projects by name, cached for a short time (a miss shorter still)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache: dict[str | None, tuple[float, Project | str]] = {}

    def get(self, name: str | None) -> Project:
        """The named project (or the only one); 400 with the reason when there is none."""
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is None or hit[0] <= now:
            try:
                value: Project | str = get_project(self.runtime.state, name)
                ttl = PROJECT_TTL
            except NotFound as exc:
                value, ttl = str(exc), NEGATIVE_PROJECT_TTL
                if name is None:
                    value += " (add ?project=NAME to the SDK's server_url)"
            if len(self._cache) > 10_000:
                self._cache.clear()
            hit = (now + ttl, value)
            self._cache[name] = hit
        if isinstance(hit[1], str):
            raise HTTPProblem(400, hit[1], field="project")
        return hit[1]


# -- HTTP ---------------------------------------------------------------------------------------


def cors_headers(request: Request) -> dict[str, str]:
    """Let browsers read the answer (the web SDK drops its stored batch only on a readable 200)."""
    origin = request.headers.get("origin")
    if not origin:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def answer(request: Request, body: dict[str, Any], status: int) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers=cors_headers(request),
    )


def problem_answer(request: Request, exc: HTTPProblem) -> Response:
    """An HTTPProblem in this protocol's error shape."""
    return answer(request, {"code": exc.status, **exc.body}, exc.status)


def router(runtime: Runtime) -> APIRouter:
    """Routes of the Sensors Data protocol: ``/sa`` and ``/sa.gif`` (GET, POST, OPTIONS)."""
    api = APIRouter()
    networks = parse_networks(runtime.settings.sensors_allow_networks)
    projects = ProjectNames(runtime)
    limit = runtime.settings.max_body_bytes

    def authorize(request: Request) -> Project | None:
        """The token's project; ``None`` for a tokenless request from an allowed network."""
        token = request.query_params.get("token")
        if not token:
            if in_networks(client_ip(request), networks):
                return None
            raise HTTPProblem(
                401,
                "missing token: add &token=<the project's write key> to the SDK's server_url",
                field="token",
            )
        project = runtime.project_for_write_key(token)
        if project is None:
            raise HTTPProblem(401, "unknown token: use the project's write key", field="token")
        named = request.query_params.get("project")
        if named and named != project.name:
            raise HTTPProblem(
                401,
                f"token is not the write key of project {named!r} (it is {project.name!r}'s)",
                field="token",
            )
        return project

    def choose_project(request: Request, records: list[Any]) -> Project:
        """Project of a tokenless request: ?project=, else the records' own, else the only one."""
        named = request.query_params.get("project") or None
        if named is None:
            names = sorted(
                {str(r["project"]) for r in records if isinstance(r, dict) and r.get("project")}
            )
            if len(names) > 1:
                raise HTTPProblem(
                    400,
                    f"the records name several projects ({', '.join(names)}): send each "
                    "project's records with ?project=NAME",
                    field="project",
                )
            named = names[0] if names else None
        return projects.get(named)

    async def receive(request: Request, gif: bool) -> Response:
        try:
            project = authorize(request)
            body = await read_body(request, limit) if request.method == "POST" else b""
            fields = form_fields(body, request.query_params.multi_items())
            records = records_from_fields(fields, limit)
            project = project or choose_project(request, records)
            mapped = map_records(records, project.id)
            ip = client_ip(request)
            dry_run = request.headers.get("dry-run", "").lower() == "true"
            duplicates = 0
            if dry_run or not mapped.events:
                batch = validate_batch(mapped.events, client_ip=ip, sdk=True)
            else:
                batch, result = await store_events(runtime, project.id, mapped.events, ip, sdk=True)
                duplicates = result.duplicates
        except HTTPProblem as exc:
            return problem_answer(request, exc)
        errors = all_errors(mapped, batch)
        rejected = len({e["index"] for e in errors})
        out: dict[str, Any] = {
            "code": 0,
            "accepted": len(records) - rejected,
            "rejected": rejected,
            "duplicates": duplicates,
        }
        if mapped.warnings:
            out["warnings"] = mapped.warnings
            for w in mapped.warnings:
                log.warning("sensors record %s: %s", w["index"], w["message"])
        if errors:
            message = f"{rejected} of {len(records)} records rejected"
            if rejected < len(records) and not dry_run:
                message += "; the others were stored"
            return answer(request, {**out, "code": 400, "error": message, "errors": errors}, 400)
        if gif:
            return Response(
                PIXEL_GIF,
                media_type="image/gif",
                headers={"Cache-Control": "no-store", **cors_headers(request)},
            )
        return answer(request, out, 200)

    async def sa(request: Request) -> Response:
        """Sensors records: POST form ``data_list``/``data`` (+ ``gzip``), or GET ``?data=``."""
        return await receive(request, gif=False)

    async def sa_gif(request: Request) -> Response:
        """Web beacon: like ``/sa``, answering a 1x1 GIF when the records are stored."""
        return await receive(request, gif=True)

    async def preflight(request: Request) -> Response:
        """CORS preflight for browsers that send the form with non-simple headers."""
        headers = {
            **cors_headers(request),
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get(
                "access-control-request-headers", "Content-Type"
            ),
            "Access-Control-Max-Age": "86400",
        }
        return Response(status_code=204, headers=headers)

    api.add_api_route("/sa", sa, methods=["GET", "POST"], include_in_schema=False)
    api.add_api_route("/sa.gif", sa_gif, methods=["GET", "POST"], include_in_schema=False)
    for path in ("/sa", "/sa.gif"):
        api.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)
    return api
