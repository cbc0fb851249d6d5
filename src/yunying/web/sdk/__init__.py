"""Endpoints that the official SDKs send to unchanged: only the host (and key) differ.

One module per wire protocol turns its payloads into native-shaped events and calls
:func:`yunying.web.http.store_events`, so every protocol shares validation, identity and dedupe.
Two paths are shared by two protocols and dispatched here by the body's shape:
``/track`` (PostHog's ``/track/`` and Mixpanel's ``/track``) and ``/batch`` (PostHog's ``/batch/``
and Amplitude's ``/batch``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response

from yunying.web.http import read_body
from yunying.web.sdk import amplitude, mixpanel, posthog, segment, sensors

if TYPE_CHECKING:
    from yunying.runtime import Runtime

PROTOCOLS = (posthog, segment, mixpanel, amplitude, sensors)


def _looks_like_form(request: Request, body: bytes) -> bool:
    ctype = request.headers.get("content-type", "")
    return (
        "form" in ctype
        or body.lstrip()[:5] in (b"data=", b"ip=1&", b"verbo")
        or request.query_params.get("data") is not None
    )


def include_sdk_routes(app: FastAPI, runtime: Runtime) -> None:
    """Mount every protocol's routes, plus the two shared paths."""
    for module in PROTOCOLS:
        app.include_router(module.router(runtime))

    limit = runtime.settings.max_body_bytes

    async def track(request: Request) -> Response:
        body = await read_body(request, limit)
        if _looks_like_form(request, body) or not body.strip():
            return await mixpanel.handle_track(runtime, request, body)
        return await posthog.handle_capture(runtime, request, body)

    async def batch(request: Request) -> Response:
        body = await read_body(request, limit)
        head = body[:4096]
        if b'"events"' in head and b'"batch"' not in head:
            return await amplitude.handle_batch(runtime, request, body)
        return await posthog.handle_capture(runtime, request, body)

    for path in ("/track", "/track/"):
        app.add_api_route(path, track, methods=["GET", "POST"], include_in_schema=False)
    for path in ("/batch", "/batch/"):
        app.add_api_route(path, batch, methods=["POST"], include_in_schema=False)
