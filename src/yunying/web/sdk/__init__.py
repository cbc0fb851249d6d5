"""Endpoints that the official SDKs send to unchanged: only the host (and key) differ.

One module per wire protocol turns its payloads into native-shaped events and calls
:func:`yunying.web.http.store_events`, so every protocol shares validation, identity and dedupe.
Two paths are shared by two protocols and dispatched here by the body's shape:

- ``/track`` and ``/track/`` (PostHog's legacy capture, Mixpanel's events): a form body, a
  ``?data=`` query or an empty body is Mixpanel's; a JSON body whose records are Mixpanel events
  (only ``event`` and ``properties``, with ``properties.token``, no PostHog envelope) is
  Mixpanel's; any other body is PostHog's.
- ``/batch`` and ``/batch/`` (PostHog's batch, Amplitude's Batch API): a JSON object with
  ``events`` and without ``batch`` is Amplitude's; any other body is PostHog's.

A JSON body is parsed once, here, and handed to the protocol's handler. A body that cannot be
read at all (over the size limit, broken gzip, an unknown ``Content-Encoding``, truncated JSON)
belongs to no protocol yet, so it is answered in one shape that every SDK sending to these paths
takes as a permanent error (see :func:`shared_problem`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from yunying.web.http import HTTPProblem, read_body
from yunying.web.sdk import amplitude, mixpanel, posthog, segment, sensors

if TYPE_CHECKING:
    from yunying.runtime import Runtime

PROTOCOLS = (posthog, segment, mixpanel, amplitude, sensors)

#: Top-level keys of a Mixpanel event record; a record with any other key is not Mixpanel's.
MIXPANEL_RECORD_KEYS = frozenset({"event", "properties"})


def shared_problem(request: Request, problem: HTTPProblem) -> Response:
    """An unreadable body on a shared path, answered so that every SDK there gives up on it.

    - PostHog SDKs do not retry 4xx other than 408/429 and report ``detail``;
    - mixpanel-python raises ``MixpanelException(error)`` when ``status`` is not 1 and retries
      5xx only;
    - amplitude-analytics reads the status from ``code``; a 400 with ``missing_field`` fails the
      upload's events instead of resending them, and a 413 makes it split the batch (one event
      alone is then reported as failed).
    """
    message = str(problem.body.get("error", problem))
    body: dict[str, Any] = {
        "error": message,
        "detail": message,
        "status": 0,
        "code": problem.status,
    }
    if problem.status != 413:
        body["missing_field"] = "events"
    response = Response(
        orjson.dumps(body), status_code=problem.status, media_type="application/json"
    )
    origin = request.headers.get("origin")
    if origin:  # let browser SDKs read the answer, as the protocols' own answers do
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


def _looks_like_form(request: Request, body: bytes) -> bool:
    ctype = request.headers.get("content-type", "")
    return (
        "form" in ctype
        or body.lstrip()[:5] in (b"data=", b"ip=1&", b"verbo")
        or request.query_params.get("data") is not None
    )


def _looks_like_json(request: Request, body: bytes) -> bool:
    return "form" not in request.headers.get("content-type", "") and body.lstrip()[:1] in (
        b"{",
        b"[",
    )


async def parse_json(body: bytes) -> Any:
    """The JSON value of a body; :class:`HTTPProblem` (400) naming the problem if it is not JSON."""
    try:
        if len(body) > posthog.INLINE_DECODE_BYTES:  # keep the event loop free
            return await asyncio.to_thread(orjson.loads, body)
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None


def is_mixpanel_track(payload: Any) -> bool:
    """Whether a JSON ``/track`` body holds Mixpanel events rather than PostHog ones.

    Mixpanel event records have exactly ``event`` and ``properties`` (the project token inside
    ``properties.token``); PostHog's carry ``api_key``, ``batch``, ``distinct_id``, ``uuid`` or
    ``timestamp`` at the top level.
    """
    records = payload if isinstance(payload, list) else [payload]
    if not records or not all(
        isinstance(r, dict) and r.keys() <= MIXPANEL_RECORD_KEYS for r in records
    ):
        return False
    return any(isinstance(p := r.get("properties"), dict) and "token" in p for r in records)


def is_amplitude_batch(payload: Any) -> bool:
    """Whether a JSON ``/batch`` body is Amplitude's ``{api_key, events}`` (PostHog's: ``batch``)."""
    return isinstance(payload, dict) and "events" in payload and "batch" not in payload


def include_sdk_routes(app: FastAPI, runtime: Runtime) -> None:
    """Mount every protocol's routes, plus the two shared paths."""
    for module in PROTOCOLS:
        app.include_router(module.router(runtime))

    limit = runtime.settings.max_body_bytes

    async def track(request: Request) -> Response:
        try:
            body = await read_body(request, limit)
            if _looks_like_form(request, body) or not body.strip():
                return await mixpanel.handle_track(runtime, request, body)
            if not _looks_like_json(request, body):  # posthog-js packings: base64, lz64
                return await posthog.handle_capture(runtime, request, body)
            payload = await parse_json(body)
        except HTTPProblem as problem:
            return shared_problem(request, problem)
        if is_mixpanel_track(payload):
            return await mixpanel.handle_track(runtime, request, body, payload)
        return await posthog.handle_capture(runtime, request, body, payload)

    async def batch(request: Request) -> Response:
        try:
            body = await read_body(request, limit)
            if not _looks_like_json(request, body):  # posthog-js packings: form, base64, lz64
                return await posthog.handle_capture(runtime, request, body)
            payload = await parse_json(body)
        except HTTPProblem as problem:
            return shared_problem(request, problem)
        if is_amplitude_batch(payload):
            return await amplitude.handle_batch(runtime, request, body, payload)
        return await posthog.handle_capture(runtime, request, body, payload)

    for path in ("/track", "/track/"):
        app.add_api_route(path, track, methods=["GET", "POST"], include_in_schema=False)
    for path in ("/batch", "/batch/"):
        app.add_api_route(path, batch, methods=["POST"], include_in_schema=False)
