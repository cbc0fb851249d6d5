"""The HTTP application: ingestion API, management API, health.

Handlers stay thin: they authenticate, read the body within limits, and call plain functions
(:mod:`yunying.ingest`, :mod:`yunying.store`) that tests call directly too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from yunying import __version__
from yunying.errors import ReadOnlyViolation
from yunying.runtime import Runtime
from yunying.store import compact_events, compact_if_needed, event_layout, run_readonly_sql
from yunying.web.activities_api import activities_router
from yunying.web.analytics_api import analytics_router
from yunying.web.audience_api import audience_router
from yunying.web.auth import ManagementAuth
from yunying.web.clv_api import clv_router
from yunying.web.http import (
    HTTPProblem,
    bearer,
    client_ip,
    in_background,
    json_response,
    read_body,
    store_events,
)
from yunying.web.risk_api import risk_router
from yunying.web.sdk import include_sdk_routes
from yunying.web.segments_api import segments_router

log = logging.getLogger("yunying.web")


def create_app(runtime: Runtime) -> FastAPI:
    """Build the ASGI app serving one installation."""
    auth = ManagementAuth(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.writer  # start the writer before the first request  # noqa: B018
        seconds = float(os.environ.get(COMPACT_SECONDS_ENV, "3600") or 0)
        min_events = int(os.environ.get(COMPACT_MIN_EVENTS_ENV, "100000") or 0)
        try:
            async with in_background(
                compactor(runtime, seconds, min_events) if seconds > 0 else None
            ):
                yield
        finally:
            runtime.writer.close()

    app = FastAPI(
        title="Yunying",
        version=__version__,
        description="Growth operations platform: ingestion and management API.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    @app.exception_handler(HTTPProblem)
    async def _problem(_request: Request, exc: HTTPProblem) -> Response:
        return json_response(exc.body, exc.status)

    @app.middleware("http")
    async def _access_log(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.url.path,
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return response

    @app.get("/health")
    async def health() -> Response:
        """Liveness and readiness: the engines answer."""
        checks = {"state": "ok", "events": "ok"}
        try:
            with runtime.state.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["state"] = f"error: {exc}"
        try:
            runtime.store.query("SELECT 1")
        except Exception as exc:  # noqa: BLE001
            checks["events"] = f"error: {exc}"
        ok = all(v == "ok" for v in checks.values())
        return json_response(
            {"status": "ok" if ok else "degraded", "version": __version__, "checks": checks},
            200 if ok else 503,
        )

    @app.post("/v1/events")
    async def ingest_events(request: Request) -> Response:
        """Native ingestion: one event or ``{"batch": [...]}``; answers after commit.

        A batch with some bad events stores the good ones and answers 400 listing each bad
        event's index and field, so a client sees its bug while nothing valid is lost.
        """
        key = bearer(request)
        if key is None:
            raise HTTPProblem(401, "missing write key: send 'Authorization: Bearer <write_key>'")
        project = runtime.project_for_write_key(key)
        if project is None:
            raise HTTPProblem(401, "unknown write key")
        body = await read_body(request, runtime.settings.max_body_bytes)
        raws = parse_events_body(body)
        batch, result = await store_events(runtime, project.id, raws, client_ip(request))
        body_out: dict[str, Any] = {
            "accepted": len(batch.events),
            "duplicates": result.duplicates,
            "rejected": batch.rejected,
        }
        if batch.errors:
            body_out["errors"] = [e.as_dict() for e in batch.errors]
            return json_response(body_out, 400)
        return json_response(body_out)

    @app.post("/api/v1/sql")
    async def sql(request: Request) -> Response:
        """Read-only SQL over the project's events, persons and person_distinct_ids."""
        try:
            payload = orjson.loads(await read_body(request, 1_000_000))
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("sql"), str):
            raise HTTPProblem(400, "field 'sql' is required: the query text")
        name = payload.get("project")
        if name is not None and not isinstance(name, str):
            raise HTTPProblem(400, "field 'project' must be a project name")
        project = auth.project(request, name)
        try:
            result = await asyncio.to_thread(
                run_readonly_sql, runtime.store, project.id, payload["sql"]
            )
        except ReadOnlyViolation as exc:
            raise HTTPProblem(400, str(exc)) from None
        except Exception as exc:  # engine errors (bad column...) are the user's to fix
            raise HTTPProblem(400, f"query failed: {exc}") from None
        return json_response({"columns": result.columns, "rows": result.rows})

    def admin(request: Request) -> None:
        if auth.principal(request) is not None:
            raise HTTPProblem(
                403, "compaction concerns every project's events: use the admin token"
            )

    @app.post("/api/v1/admin/compact")
    async def compact(request: Request) -> Response:
        """Rewrite the stored events in person order (DuckDB), for per-person analyses to read
        runs of rows; every project's events, so the local admin token only. Ingestion goes on
        but for a moment at the end (docs/engines.md)."""
        admin(request)
        return json_response(await asyncio.to_thread(compact_events, runtime.store))

    @app.get("/api/v1/admin/compact")
    async def layout(request: Request) -> Response:
        """Per project: events, events in person order at the last compaction, whether it counts
        as in person order now."""
        admin(request)
        return json_response({"projects": await asyncio.to_thread(event_layout, runtime.store)})

    for router in (
        analytics_router,
        segments_router,
        audience_router,
        clv_router,
        activities_router,
        risk_router,
    ):
        app.include_router(router(runtime))
    include_sdk_routes(app, runtime)
    from yunying.console import include_console  # web pages for the team (login, dashboards)

    include_console(app, runtime)
    return app


#: Seconds between the server's checks whether to compact the events (0: never).
COMPACT_SECONDS_ENV = "YUNYING_COMPACT_SECONDS"
#: Projects smaller than this are left in arrival order (grouping them is quick anyway).
COMPACT_MIN_EVENTS_ENV = "YUNYING_COMPACT_MIN_EVENTS"


async def compactor(runtime: Runtime, seconds: float, min_events: int) -> None:
    """Every ``seconds``, compact the events when a project with ``min_events`` or more is no
    longer in person order (a tenth of its events arrived since), in a thread."""
    while True:
        await asyncio.sleep(seconds)
        try:
            report = await asyncio.to_thread(compact_if_needed, runtime.store, min_events)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("compacting the events failed")
            continue
        if report is not None:
            log.info("events compacted", extra={"report": orjson.dumps(report).decode()})


def parse_events_body(body: bytes) -> list[Any]:
    """The list of raw events in a native body: one object or ``{"batch": [...]}``."""
    if not body.strip():
        raise HTTPProblem(400, 'empty body: send one event object or {"batch": [...]}')
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
    if isinstance(payload, dict) and "batch" in payload:
        batch = payload["batch"]
        if not isinstance(batch, list):
            raise HTTPProblem(400, "field 'batch' must be a list of events", field="batch")
        if not batch:
            raise HTTPProblem(400, "field 'batch' is empty", field="batch")
        return batch
    if isinstance(payload, dict):
        return [payload]
    raise HTTPProblem(400, 'body must be one event object or {"batch": [...]}')
