"""/api/v1/risk: anti-fraud review queue, blocklist and per-activity risk summary.

Authenticated like every management router (:class:`~yunying.web.auth.ManagementAuth`): a
project's secret key, or the local admin token with ``project`` (a name) when there are several
projects. Routes:

- ``GET  /api/v1/risk/reviews`` — ``status`` (pending (default), approved, denied, all),
  ``activity_id``, ``person_id``, ``reason`` (a reason code), ``limit``, ``offset``;
- ``GET  /api/v1/risk/reviews/{id}``;
- ``POST /api/v1/risk/reviews/{id}/approve`` and ``/deny`` — body ``{"reviewer", "note"}``
  (both optional; the reviewer defaults to the caller); 409 when already decided, with the
  item's ``current_status``;
- ``GET  /api/v1/risk/blocklist`` — ``kind``, ``include_expired``; ``GET /blocklist/{id}``;
- ``POST /api/v1/risk/blocklist`` — body ``{"kind", "value", "reason", "expires_at" |
  "expires_in_hours"}`` (adding an existing entry refreshes its reason and expiry);
- ``DELETE /api/v1/risk/blocklist/{id}``;
- ``GET  /api/v1/risk/activities/{activity_id}/summary``.

Errors are ``{"error": message, "field": name}``: 401/403/404 for keys and projects, 404 for an
unknown review or entry, 422 for a bad field (query or body), 409 for a second decision, 500 when
the decision is stored but the activity's handler failed.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from yunying.errors import NotFound
from yunying.risk import (
    InvalidBlockEntry,
    InvalidReviewQuery,
    ReviewAlreadyDecided,
    ReviewHandlerFailed,
    activity_summary,
    add_block,
    decide,
    get_block,
    get_review,
    list_blocks,
    list_reviews,
    remove_block,
)
from yunying.runtime import Runtime
from yunying.state import Project
from yunying.web.auth import ManagementAuth
from yunying.web.http import HTTPProblem, json_response, read_body

#: Largest accepted body (decisions and blocklist entries are small).
BODY_LIMIT = 64_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecisionBody(_Body):
    """Approve or deny a held claim."""

    project: str | None = Field(default=None, description="Project name (admin token only).")
    reviewer: str | None = Field(
        default=None, max_length=200, description="Who decides (default: the caller's key)."
    )
    note: str | None = Field(default=None, max_length=2000, description="Why, for the audit trail.")


class BlockBody(_Body):
    """A blocklist entry to add (or refresh)."""

    project: str | None = Field(default=None, description="Project name (admin token only).")
    kind: Literal["person", "distinct_id", "device", "ip", "subnet"]
    value: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    created_by: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = Field(default=None, description="ISO-8601; none: never expires.")
    expires_in_hours: float | None = Field(default=None, gt=0, description="Instead of expires_at.")


def problem_of(errors: list[Any]) -> HTTPProblem:
    """A 422 naming the first bad field (or 400 for a body that is not JSON)."""
    listed = []
    for e in errors:
        loc = [p for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        if e.get("type") == "json_invalid":
            return HTTPProblem(400, "body is not valid JSON", field="")
        field = ".".join(str(p) for p in loc)
        listed.append({"field": field, "message": str(e.get("msg", "invalid"))})
    text = "; ".join(f"field {x['field']!r}: {x['message']}" if x["field"] else x["message"]
                     for x in listed)  # fmt: skip
    return HTTPProblem(422, text, field=listed[0]["field"] if listed else "", errors=listed)


class _ReadRequest(Request):
    """A request whose body was already read within the limit."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._read = body

    async def body(self) -> bytes:
        return self._read


def caller_name(who: Project | None) -> str:
    """Who a decision is attributed to when the body names nobody."""
    return "admin" if who is None else f"key {who.secret_key_prefix}…"


def expiry(body: BlockBody) -> datetime | None:
    if body.expires_at is not None and body.expires_in_hours is not None:
        raise HTTPProblem(
            422, "give either expires_at or expires_in_hours, not both", field="expires_in_hours"
        )
    if body.expires_in_hours is not None:
        return datetime.now(UTC) + timedelta(hours=body.expires_in_hours)
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        return body.expires_at.replace(tzinfo=UTC)
    return body.expires_at


def risk_router(runtime: Runtime) -> APIRouter:
    """The review-queue and blocklist routes for one installation."""
    auth = ManagementAuth(runtime)

    class RiskRoute(APIRoute):
        """Authenticate and read the (bounded) body first; answer validation errors in the
        house shape."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                who = auth.principal(request)
                body = await read_body(request, BODY_LIMIT)
                request = _ReadRequest(request, body)
                request.state.principal = who
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    raise problem_of(list(exc.errors())) from None

            return guarded

    router = APIRouter(prefix="/api/v1/risk", tags=["risk"], route_class=RiskRoute)

    def project_of(request: Request, name: str | None) -> Project:
        return auth.project_for(request.state.principal, name)

    def run(fn: Callable[[], Any]) -> Any:
        """Call the domain function, turning its errors into HTTP answers."""
        try:
            return fn()
        except NotFound as exc:
            raise HTTPProblem(404, str(exc)) from None
        except (InvalidReviewQuery, InvalidBlockEntry) as exc:
            raise HTTPProblem(422, str(exc), field=exc.field) from None
        except ReviewAlreadyDecided as exc:
            raise HTTPProblem(409, str(exc), field="status", current_status=exc.status) from None
        except ReviewHandlerFailed as exc:
            raise HTTPProblem(500, str(exc)) from None

    @router.get("/reviews")
    def reviews(
        request: Request,
        project: str | None = None,
        status: Literal["pending", "approved", "denied", "all"] = "pending",
        activity_id: int | None = None,
        person_id: str | None = None,
        reason: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> Response:
        """Review-queue items: pending ones oldest first, decided ones newest first."""
        p = project_of(request, project)
        items = run(
            lambda: list_reviews(
                runtime.state,
                p.id,
                status=None if status == "all" else status,
                activity_id=activity_id,
                person_id=person_id,
                reason=reason,
                limit=limit,
                offset=offset,
            )
        )
        return json_response({"reviews": [r.as_dict() for r in items]})

    @router.get("/reviews/{review_id}")
    def review(request: Request, review_id: int, project: str | None = None) -> Response:
        """One item with its claim and reasons."""
        p = project_of(request, project)
        return json_response(run(lambda: get_review(runtime.state, p.id, review_id)).as_dict())

    def decision(request: Request, review_id: int, body: DecisionBody, approved: bool) -> Response:
        p = project_of(request, body.project)
        reviewer = body.reviewer or caller_name(request.state.principal)
        decided = run(
            lambda: decide(
                runtime, p.id, review_id, approved=approved, reviewer=reviewer, note=body.note
            )
        )
        return json_response(get_review(runtime.state, p.id, decided.id).as_dict())

    @router.post("/reviews/{review_id}/approve")
    def approve(request: Request, review_id: int, body: DecisionBody | None = None) -> Response:
        """Approve a held claim: the activity grants it."""
        return decision(request, review_id, body or DecisionBody(), True)

    @router.post("/reviews/{review_id}/deny")
    def deny(request: Request, review_id: int, body: DecisionBody | None = None) -> Response:
        """Deny a held claim: the activity records the denial."""
        return decision(request, review_id, body or DecisionBody(), False)

    @router.get("/blocklist")
    def blocklist(
        request: Request,
        project: str | None = None,
        kind: Literal["person", "distinct_id", "device", "ip", "subnet"] | None = None,
        include_expired: bool = False,
        limit: int = Query(1000, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> Response:
        """Blocklist entries, newest first (expired ones only when asked)."""
        p = project_of(request, project)
        items = run(
            lambda: list_blocks(
                runtime.state,
                p.id,
                kind,
                include_expired=include_expired,
                limit=limit,
                offset=offset,
            )
        )
        return json_response({"entries": [e.as_dict() for e in items]})

    @router.get("/blocklist/{entry_id}")
    def block(request: Request, entry_id: int, project: str | None = None) -> Response:
        """One blocklist entry."""
        p = project_of(request, project)
        return json_response(run(lambda: get_block(runtime.state, p.id, entry_id)).as_dict())

    @router.post("/blocklist", status_code=201)
    def block_add(request: Request, body: BlockBody) -> Response:
        """Add an entry, or refresh the reason and expiry of an existing one."""
        p = project_of(request, body.project)
        expires = expiry(body)
        by = body.created_by or caller_name(request.state.principal)
        entry = run(
            lambda: add_block(
                runtime.state,
                p.id,
                body.kind,
                body.value,
                body.reason,
                created_by=by,
                expires_at=expires,
            )
        )
        return json_response(entry.as_dict(), 201)

    @router.delete("/blocklist/{entry_id}")
    def block_remove(request: Request, entry_id: int, project: str | None = None) -> Response:
        """Remove an entry; answers the removed entry."""
        p = project_of(request, project)
        return json_response(run(lambda: remove_block(runtime.state, p.id, entry_id)).as_dict())

    @router.get("/activities/{activity_id}/summary")
    def summary(request: Request, activity_id: int, project: str | None = None) -> Response:
        """Assessed claims by outcome and reason, and reviews by status, of one activity."""
        p = project_of(request, project)
        return json_response(activity_summary(runtime.state, p.id, activity_id))

    return router


def parse_block(body: dict[str, Any]) -> BlockBody:
    """Validate a blocklist body as the API does (the CLI's local path); 422 otherwise."""
    try:
        return BlockBody.model_validate(body)
    except ValidationError as exc:
        raise problem_of(list(exc.errors())) from None
