"""/api/v1/segments and /api/v1/tags: segment and tag management and membership.

Authenticated like every management endpoint (:class:`~yunying.web.auth.ManagementAuth`): a
project's secret key implies its project; the local admin token names one with ``project`` (a
query parameter, or a field of a JSON body) when the installation has several.

Segments (``{ref}`` is an id, or a name):

- ``GET /segments``, ``POST /segments`` (create; computed at once unless ``compute`` is false),
  ``GET|PATCH|DELETE /segments/{ref}``;
- ``POST /segments/preview`` (size and SQL of a rule tree, nothing saved);
- ``POST /segments/recompute`` (stages, RFM, tags, then segments in dependency order),
  ``POST /segments/{ref}/recompute``;
- ``GET /segments/{ref}/members?limit=&offset=``, ``GET /segments/{ref}/export`` (CSV),
  ``GET /segments/{ref}/sizes`` (size history);
- ``POST /segments/{ref}/upload?id_type=&mode=`` (CSV body: members of a static segment),
  ``POST /segments/{ref}/snapshot`` (a static copy of the current members).

Tags: ``GET|POST /tags``, ``GET|PATCH|DELETE /tags/{ref}``, ``POST /tags/{ref}/recompute``,
``GET /tags/{ref}/members``, ``GET /tags/{ref}/export``.

Errors: ``{"error": message, ...}``; 422 with ``field`` (a dotted path such as
``rules.rules.1.window.last_days``) and ``errors`` for invalid definitions; 404 unknown segment,
tag or project; 409 for a taken name, a dependency cycle, or deleting something a rule reads.

The router also runs the scheduler: every ``YUNYING_SEGMENT_SCHEDULER_SECONDS`` seconds (default
60; 0 turns it off) a background task computes the scheduled tags and segments that are due
(:func:`~yunying.audience.segments.recompute_due`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as Doc

from yunying.audience import segments as seg
from yunying.audience import tags as tagmod
from yunying.errors import Conflict, NotFound
from yunying.runtime import Runtime
from yunying.state import Project
from yunying.web.analytics_api import validation_problem
from yunying.web.auth import ManagementAuth
from yunying.web.http import HTTPProblem, in_background, json_response, read_body

log = logging.getLogger("yunying.web")

BODY_LIMIT = 1_000_000
#: Largest CSV upload (about a million ids).
UPLOAD_LIMIT = 64_000_000
SCHEDULER_ENV = "YUNYING_SEGMENT_SCHEDULER_SECONDS"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = Doc(None, description="Project name (see the module docs).")


class SegmentCreate(_Body):
    """Body of ``POST /api/v1/segments``."""

    name: str = Doc(min_length=1, max_length=200)
    description: str = Doc("", max_length=10_000)
    kind: Literal["dynamic", "static"] = "dynamic"
    rules: Any = Doc(None, description="The rule tree (dynamic segments); see docs/audience.md.")
    schedule_minutes: int | None = Doc(
        None, description="Recompute every this many minutes (null: on demand only)."
    )
    compute: bool = Doc(True, description="Compute the members at once (dynamic segments).")


class SegmentUpdate(_Body):
    """Body of ``PATCH /api/v1/segments/{ref}``: only the fields given change."""

    name: str | None = None
    description: str | None = None
    rules: Any = None
    schedule_minutes: int | None = None


class TagCreate(_Body):
    """Body of ``POST /api/v1/tags``."""

    name: str = Doc(min_length=1, max_length=100)
    description: str = Doc("", max_length=10_000)
    rules: Any = Doc(description="The rule tree; see docs/audience.md.")
    schedule_minutes: int | None = None
    compute: bool = True


class TagUpdate(_Body):
    """Body of ``PATCH /api/v1/tags/{ref}``."""

    description: str | None = None
    rules: Any = None
    schedule_minutes: int | None = None


class RecomputeBody(_Body):
    """Body of the recompute endpoints (all optional)."""

    now: datetime | None = Doc(
        None, description="Evaluate the rules as of this instant (default: now)."
    )
    derived: bool = Doc(
        True, description="Recompute all: refresh lifecycle stages and RFM classes first."
    )


class SnapshotBody(_Body):
    """Body of ``POST /api/v1/segments/{ref}/snapshot``."""

    name: str | None = Doc(None, max_length=200)


class PreviewBody(_Body):
    """Body of ``POST /api/v1/segments/preview``."""

    rules: Any
    now: datetime | None = None


def _problem(exc: Exception) -> HTTPProblem:
    """The HTTP answer to a domain error."""
    if isinstance(exc, seg.InvalidSegment | tagmod.InvalidTag):
        return HTTPProblem(422, str(exc), field=exc.field, errors=exc.errors)
    if isinstance(exc, NotFound):
        return HTTPProblem(404, str(exc))
    if isinstance(exc, Conflict):
        return HTTPProblem(409, str(exc))
    raise exc


class _ReadRequest(Request):
    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._read = body

    async def body(self) -> bytes:
        return self._read


def segments_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation, and the scheduler task."""
    auth = ManagementAuth(runtime)

    class SegmentsRoute(APIRoute):
        """Authenticate and read the body (bounded) first; answer in the house shape."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            limit = UPLOAD_LIMIT if self.path.endswith("/upload") else BODY_LIMIT

            async def guarded(request: Request) -> Response:
                who = auth.principal(request)
                body = await read_body(request, limit)
                request = _ReadRequest(request, body)
                request.state.principal = who
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    raise validation_problem(list(exc.errors())) from None
                except (seg.SegmentError, tagmod.InvalidTag, NotFound, Conflict) as exc:
                    raise _problem(exc) from None

            return guarded

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        seconds = float(os.environ.get(SCHEDULER_ENV, "60") or 0)
        async with in_background(scheduler(runtime, seconds) if seconds > 0 else None):
            yield

    router = APIRouter(
        prefix="/api/v1", tags=["segments"], route_class=SegmentsRoute, lifespan=lifespan
    )

    def project_of(request: Request, name: str | None = None) -> Project:
        name = name or request.query_params.get("project")
        return auth.project_for(request.state.principal, name)

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except (seg.SegmentError, tagmod.InvalidTag, NotFound, Conflict) as exc:
            raise _problem(exc) from None
        except HTTPProblem:
            raise
        except Exception:
            log.exception("segment operation failed")
            raise HTTPProblem(500, "the segment operation failed; see the server log") from None

    def page_args(request: Request) -> tuple[int, int]:
        try:
            limit = int(request.query_params.get("limit", "100"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            raise HTTPProblem(
                422, "limit and offset must be whole numbers", field="limit"
            ) from None
        return limit, offset

    def csv_response(rows: Iterator[str], filename: str) -> Response:
        return StreamingResponse(
            rows,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    # -- segments ---------------------------------------------------------------------------

    @router.get("/segments")
    async def list_segments(request: Request) -> Response:
        """Every segment of the project."""
        project = project_of(request)
        found = await call(seg.list_segments, runtime.state, project.id)
        return json_response({"segments": [s.as_dict() for s in found]})

    @router.post("/segments")
    async def create_segment(request: Request, body: SegmentCreate) -> Response:
        """Create a segment (and compute it, unless ``compute`` is false or it is static)."""
        project = project_of(request, body.project)

        def work() -> dict[str, Any]:
            s = seg.create_segment(
                runtime,
                project,
                body.name,
                kind=body.kind,
                rules=body.rules,
                description=body.description,
                schedule_minutes=body.schedule_minutes,
            )
            if body.compute and s.kind == "dynamic":
                s = seg.compute_segment(runtime, project, s.id)
            return s.as_dict()

        return json_response(await call(work), 201)

    @router.post("/segments/preview")
    async def preview(request: Request, body: PreviewBody) -> Response:
        """How many persons a rule tree matches, and its SQL; nothing is saved."""
        project = project_of(request, body.project)
        return json_response(await call(seg.preview, runtime, project, body.rules, body.now))

    @router.post("/segments/recompute")
    async def recompute_all(request: Request, body: RecomputeBody | None = None) -> Response:
        """Refresh stages and RFM, then every tag and segment in dependency order."""
        body = body or RecomputeBody.model_validate({})
        project = project_of(request, body.project)
        report = await call(seg.recompute_all, runtime, project, body.now, body.derived)
        return json_response(report.as_dict())

    @router.get("/segments/{ref}")
    async def show_segment(request: Request, ref: str) -> Response:
        """One segment with its latest size history."""
        project = project_of(request)
        s = await call(seg.get_segment, runtime.state, project.id, ref)
        history = await call(seg.size_history, runtime.state, s.id, 30)
        return json_response({**s.as_dict(), "sizes": history})

    @router.patch("/segments/{ref}")
    async def update_segment(request: Request, ref: str, body: SegmentUpdate) -> Response:
        """Change name, description, rules or schedule (only the fields given)."""
        project = project_of(request, body.project)
        changes = {k: getattr(body, k) for k in body.model_fields_set if k != "project"}
        s = await call(seg.update_segment, runtime, project, ref, changes)
        return json_response(s.as_dict())

    @router.delete("/segments/{ref}")
    async def delete_segment(request: Request, ref: str) -> Response:
        """Delete a segment and its membership (409 while a rule reads it)."""
        project = project_of(request)
        await call(seg.delete_segment, runtime, project, ref)
        return json_response({"deleted": ref})

    @router.post("/segments/{ref}/recompute")
    async def recompute_segment(
        request: Request, ref: str, body: RecomputeBody | None = None
    ) -> Response:
        """Compute one segment now."""
        body = body or RecomputeBody.model_validate({})
        project = project_of(request, body.project)
        s = await call(seg.compute_segment, runtime, project, ref, body.now)
        return json_response(s.as_dict())

    @router.get("/segments/{ref}/members")
    async def segment_members(request: Request, ref: str) -> Response:
        """A page of members (person id, distinct ids, properties) ordered by person id."""
        project = project_of(request)
        limit, offset = page_args(request)
        s = await call(seg.get_segment, runtime.state, project.id, ref)
        page = await call(seg.members_page, runtime, project, s.scope, limit, offset)
        return json_response({"segment": s.as_dict(), **page})

    @router.get("/segments/{ref}/export")
    async def export_segment(request: Request, ref: str) -> Response:
        """Every member as CSV: person_id,distinct_id (a row per distinct id)."""
        project = project_of(request)
        s = await call(seg.get_segment, runtime.state, project.id, ref)
        rows = await call(lambda: list(seg.export_csv(runtime, project, s.scope)))
        return csv_response(iter(rows), f"segment-{s.id}.csv")

    @router.get("/segments/{ref}/sizes")
    async def segment_sizes(request: Request, ref: str) -> Response:
        """The size after each computation, oldest first (``limit``, default 200)."""
        project = project_of(request)
        limit, _ = page_args(request)
        s = await call(seg.get_segment, runtime.state, project.id, ref)
        history = await call(seg.size_history, runtime.state, s.id, max(1, min(limit, 1000)))
        return json_response({"segment": s.as_dict(), "sizes": history})

    @router.post("/segments/{ref}/upload")
    async def upload(request: Request, ref: str) -> Response:
        """Members of a static segment from a CSV body (distinct ids or person ids)."""
        project = project_of(request)
        id_type = request.query_params.get("id_type")
        mode = request.query_params.get("mode", "replace")
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPProblem(400, "the CSV body must be UTF-8 text", field="body") from None
        report = await call(seg.upload_members, runtime, project, ref, text, id_type, mode)
        return json_response(report.as_dict())

    @router.post("/segments/{ref}/snapshot")
    async def snapshot(request: Request, ref: str, body: SnapshotBody | None = None) -> Response:
        """A new static segment holding the current members."""
        body = body or SnapshotBody.model_validate({})
        project = project_of(request, body.project)
        s = await call(seg.snapshot_segment, runtime, project, ref, body.name)
        return json_response(s.as_dict(), 201)

    # -- tags -------------------------------------------------------------------------------

    @router.get("/tags")
    async def list_tags(request: Request) -> Response:
        """Every tag of the project."""
        project = project_of(request)
        found = await call(tagmod.list_tags, runtime.state, project.id)
        return json_response({"tags": [t.as_dict() for t in found]})

    @router.post("/tags")
    async def create_tag(request: Request, body: TagCreate) -> Response:
        """Create a tag (and stamp its persons at once unless ``compute`` is false)."""
        project = project_of(request, body.project)

        def work() -> dict[str, Any]:
            t = tagmod.create_tag(
                runtime.state,
                project,
                body.name,
                body.rules,
                body.description,
                body.schedule_minutes,
            )
            if body.compute:
                t = seg.compute_tag(runtime, project, t.id)
            return t.as_dict()

        return json_response(await call(work), 201)

    @router.get("/tags/{ref}")
    async def show_tag(request: Request, ref: str) -> Response:
        project = project_of(request)
        t = await call(tagmod.get_tag, runtime.state, project.id, ref)
        return json_response(t.as_dict())

    @router.patch("/tags/{ref}")
    async def update_tag(request: Request, ref: str, body: TagUpdate) -> Response:
        project = project_of(request, body.project)
        changes = {k: getattr(body, k) for k in body.model_fields_set if k != "project"}
        t = await call(tagmod.update_tag, runtime.state, project, ref, changes)
        return json_response(t.as_dict())

    @router.delete("/tags/{ref}")
    async def delete_tag(request: Request, ref: str) -> Response:
        project = project_of(request)
        await call(seg.delete_tag, runtime, project, ref)
        return json_response({"deleted": ref})

    @router.post("/tags/{ref}/recompute")
    async def recompute_tag(
        request: Request, ref: str, body: RecomputeBody | None = None
    ) -> Response:
        body = body or RecomputeBody.model_validate({})
        project = project_of(request, body.project)
        t = await call(seg.compute_tag, runtime, project, ref, body.now)
        return json_response(t.as_dict())

    @router.get("/tags/{ref}/members")
    async def tag_members(request: Request, ref: str) -> Response:
        project = project_of(request)
        limit, offset = page_args(request)
        t = await call(tagmod.get_tag, runtime.state, project.id, ref)
        page = await call(seg.members_page, runtime, project, t.scope, limit, offset)
        return json_response({"tag": t.as_dict(), **page})

    @router.get("/tags/{ref}/export")
    async def export_tag(request: Request, ref: str) -> Response:
        project = project_of(request)
        t = await call(tagmod.get_tag, runtime.state, project.id, ref)
        rows = await call(lambda: list(seg.export_csv(runtime, project, t.scope)))
        return csv_response(iter(rows), f"tag-{t.name}.csv")

    return router


async def scheduler(runtime: Runtime, seconds: float) -> None:
    """Every ``seconds``, compute the scheduled tags and segments that are due (in a thread)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            reports = await asyncio.to_thread(seg.recompute_due, runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled segment recompute failed")
            continue
        for r in reports:
            log.info("scheduled recompute", extra={"report": orjson.dumps(r.as_dict()).decode()})


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate a body as the API does (the CLI's local path); 422 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(list(exc.errors()), body_prefix=False) from None
