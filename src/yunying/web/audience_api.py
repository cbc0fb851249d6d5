"""/api/v1/audience: audience settings, lifecycle stages, RFM, personas and person profiles.

Authenticated like every management endpoint (:class:`~yunying.web.auth.ManagementAuth`): a
project's secret key implies the project (``project`` naming another is a 403), the local admin
token names it with ``project`` (a query parameter, or a body field for ``POST /persona``) when
the installation has several.

- ``GET  /settings``, ``PUT /settings`` (body: the settings document; omitted fields default)
- ``GET  /stages?as_of=`` distribution; ``/stages/over-time?date_from&date_to&interval``;
  ``/stages/transitions?date_from&date_to&interval``;
  ``/stages/transitions/members?as_of&interval&from&to&limit&offset``
- ``POST /stages/store?as_of=`` and ``POST /rfm/store?as_of=``: write person_values scopes
  ``stage`` and ``rfm`` (what segment rules read)
- ``GET  /rfm?as_of=``
- ``POST /persona`` (:class:`PersonaRequest`)
- ``GET  /persons/{id or distinct id}``, ``GET /persons/{id}/events?limit&cursor&event``

Dates are local days of the project's time zone (default: today). Errors are
``{"error": message, "field": name, ...}``: 400 for a refused query, 404 for an unknown person,
422 for values that do not validate (with ``errors``: every problem as ``{"field", "message"}``).
See docs/audience-reports.md for the JSON shapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import date, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from pydantic import Field as Doc

from yunying.analytics.common import AnalyticsError, DateRange, InvalidQuery
from yunying.audience.persona import DIMENSIONS, GroupKind, PersonaQuery, persona
from yunying.audience.profile import InvalidCursor, PersonNotFound, person_events, person_profile
from yunying.audience.rfm import rfm_report, store_rfm
from yunying.audience.settings import (
    AudienceSettings,
    InvalidSettings,
    get_settings,
    put_settings,
)
from yunying.audience.stages import (
    NONE,
    STAGES,
    local_today,
    period_of,
    stage_distribution,
    stage_transitions,
    stages_over_time,
    store_stages,
    transition_members,
)
from yunying.runtime import Runtime
from yunying.state import Project
from yunying.web.analytics_api import BODY_LIMIT, _ReadRequest, first_day, validation_problem
from yunying.web.auth import ManagementAuth
from yunying.web.http import HTTPProblem, json_response, read_body

log = logging.getLogger("yunying.web")
T = TypeVar("T")

#: Periods in the default range of the stage timeline and transitions, per interval.
DEFAULT_PERIODS = {"day": 30, "week": 12, "month": 6}

ProjectParam = Annotated[
    str | None, Query(description="Project name (admin token, several projects).")
]
AsOf = Annotated[date | None, Query(description="Local day, YYYY-MM-DD (default: today).")]
DateFrom = Annotated[date | None, Query(description="First local day (default by interval).")]
DateTo = Annotated[date | None, Query(description="Last local day (default: today).")]
IntervalParam = Annotated[
    Literal["day", "week", "month"], Query(description="Period length (weeks start Monday).")
]


class PersonaRequest(BaseModel):
    """Body of ``POST /api/v1/audience/persona``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = Doc(default=None, description="Project name (admin token).")
    group: GroupKind = Doc(
        default="everyone", description="everyone, segment (value: segment id), stage, rfm."
    )
    value: str | None = Doc(
        default=None, max_length=200, description="Segment id, stage or RFM class code."
    )
    date_from: date | None = Doc(
        default=None, description="First local day (default: 29 days before date_to)."
    )
    date_to: date | None = Doc(default=None, description="Last local day (default: today).")
    properties: list[Annotated[str, Doc(min_length=1, max_length=200)]] = Doc(
        default_factory=list, max_length=50, description="Person properties to break down."
    )
    dimensions: list[str] = Doc(
        default_factory=lambda: [d[0] for d in DIMENSIONS],
        description="Event-derived breakdowns: channel, os, device, city.",
    )
    top_events: int = Doc(default=10, ge=0, le=100)
    values_limit: int = Doc(default=20, ge=1, le=1000)


def default_range(
    date_from: date | None, date_to: date | None, interval: str, timezone: str
) -> DateRange:
    """The requested range, defaulting to the last few periods ending today."""
    last = date_to or local_today(timezone)
    first = date_from or first_day(last, interval, DEFAULT_PERIODS[interval])
    try:
        return DateRange(first, last, timezone)
    except InvalidQuery as exc:
        raise HTTPProblem(400, str(exc), field="date_from") from None


def persona_field(body: PersonaRequest, message: str) -> str:
    """The body field a persona refusal is about."""
    known = {d[0] for d in DIMENSIONS}
    if any(d not in known for d in body.dimensions):
        return "dimensions"
    if "date" in message:
        return "date_from"
    return "value"


def audience_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation."""
    auth = ManagementAuth(runtime)

    class AudienceRoute(APIRoute):
        """Authenticate and read the body (bounded) first; validation errors in house shape."""

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
                    errors = []
                    for e in exc.errors():
                        loc = list(e.get("loc", ()))
                        if loc[:1] in (["query"], ["path"]):
                            loc = ["body", *loc[1:]]
                        errors.append({**e, "loc": loc})
                    raise validation_problem(errors) from None

            return guarded

    router = APIRouter(prefix="/api/v1/audience", tags=["audience"], route_class=AudienceRoute)

    def project_of(request: Request, name: str | None) -> Project:
        return auth.project_for(request.state.principal, name)

    async def answer(what: str, work: Callable[[], T]) -> Response:
        try:
            result = await asyncio.to_thread(work)
        except HTTPProblem:
            raise
        except PersonNotFound as exc:
            raise HTTPProblem(404, str(exc), field="id") from None
        except InvalidCursor as exc:
            raise HTTPProblem(400, str(exc), field="cursor") from None
        except InvalidSettings as exc:
            raise HTTPProblem(422, str(exc), field=exc.field, errors=exc.errors) from None
        except InvalidQuery as exc:
            raise HTTPProblem(400, str(exc)) from None
        except AnalyticsError as exc:  # the engine has no SQL renderer
            raise HTTPProblem(501, str(exc)) from None
        except Exception:
            log.exception("audience report failed", extra={"report": what})
            raise HTTPProblem(500, f"the {what} report failed; see the server log") from None
        return json_response(result)

    def settings_of(project: Project) -> AudienceSettings:
        return get_settings(runtime.state, project.id)

    @router.get("/settings")
    async def get_settings_endpoint(request: Request, project: ProjectParam = None) -> Response:
        """The project's audience settings (defaults where none were stored)."""
        p = project_of(request, project)
        return await answer(
            "settings",
            lambda: {"project": p.name, "settings": settings_of(p).model_dump(mode="json")},
        )

    @router.put("/settings")
    async def put_settings_endpoint(request: Request, project: ProjectParam = None) -> Response:
        """Replace the settings document (omitted fields take their defaults)."""
        import orjson

        p = project_of(request, project)
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
        return await answer(
            "settings",
            lambda: {
                "project": p.name,
                "settings": put_settings(runtime.state, p.id, doc).model_dump(mode="json"),
            },
        )

    @router.get("/stages")
    async def stages_endpoint(
        request: Request, as_of: AsOf = None, project: ProjectParam = None
    ) -> Response:
        """Persons per lifecycle stage as of a local day."""
        p = project_of(request, project)
        day = as_of or local_today(p.timezone)
        return await answer(
            "stages",
            lambda: stage_distribution(runtime.store, p.id, settings_of(p), day, p.timezone),
        )

    @router.get("/stages/over-time")
    async def stages_over_time_endpoint(
        request: Request,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        interval: IntervalParam = "day",
        project: ProjectParam = None,
    ) -> Response:
        """Persons per stage at the end of each period."""
        p = project_of(request, project)
        rng = default_range(date_from, date_to, interval, p.timezone)
        return await answer(
            "stages",
            lambda: stages_over_time(runtime.store, p.id, settings_of(p), rng, interval),
        )

    @router.get("/stages/transitions")
    async def transitions_endpoint(
        request: Request,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        interval: IntervalParam = "week",
        project: ProjectParam = None,
    ) -> Response:
        """Persons moving between stages from the end of one period to the end of the next."""
        p = project_of(request, project)
        rng = default_range(date_from, date_to, interval, p.timezone)
        return await answer(
            "transitions",
            lambda: stage_transitions(runtime.store, p.id, settings_of(p), rng, interval),
        )

    @router.get("/stages/transitions/members")
    async def transition_members_endpoint(
        request: Request,
        from_stage: Annotated[
            str, Query(alias="from", description="Stage at the previous period's end, or none.")
        ],
        to_stage: Annotated[str, Query(alias="to", description="Stage at this period's end.")],
        as_of: AsOf = None,
        interval: IntervalParam = "week",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        project: ProjectParam = None,
    ) -> Response:
        """The persons of one transition: the period holding ``as_of``, taken as of ``as_of``."""
        p = project_of(request, project)
        day = as_of or local_today(p.timezone)
        period = period_of(day, interval)

        if from_stage not in (NONE, *STAGES):
            raise HTTPProblem(
                400,
                f"unknown stage {from_stage!r}; use {NONE} or {', '.join(STAGES)}",
                field="from",
            )
        if to_stage not in STAGES:
            raise HTTPProblem(
                400, f"unknown stage {to_stage!r}; use one of {', '.join(STAGES)}", field="to"
            )

        def work() -> dict[str, Any]:
            return transition_members(
                runtime.store, p.id, settings_of(p), period, from_stage, to_stage,
                p.timezone, limit, offset,
            )  # fmt: skip

        return await answer("transition members", work)

    @router.post("/stages/store")
    async def store_stages_endpoint(
        request: Request, as_of: AsOf = None, project: ProjectParam = None
    ) -> Response:
        """Write every person's current stage to ``person_values`` scope ``stage``."""
        p = project_of(request, project)
        return await answer(
            "stages", lambda: {"scope": "stage", "persons": store_stages(runtime, p, as_of)}
        )

    @router.post("/rfm/store")
    async def store_rfm_endpoint(
        request: Request, as_of: AsOf = None, project: ProjectParam = None
    ) -> Response:
        """Write every scored person's RFM class to ``person_values`` scope ``rfm``."""
        p = project_of(request, project)
        return await answer(
            "rfm", lambda: {"scope": "rfm", "persons": store_rfm(runtime, p, as_of)}
        )

    @router.get("/rfm")
    async def rfm_endpoint(
        request: Request, as_of: AsOf = None, project: ProjectParam = None
    ) -> Response:
        """RFM class distribution (persons, revenue and their shares) as of a local day."""
        p = project_of(request, project)
        day = as_of or local_today(p.timezone)
        return await answer(
            "rfm", lambda: rfm_report(runtime.store, p.id, settings_of(p), day, p.timezone)
        )

    @router.post("/persona")
    async def persona_endpoint(request: Request, body: PersonaRequest) -> Response:
        """Persona of a group next to the whole population."""
        p = project_of(request, body.project)
        last = body.date_to or local_today(p.timezone)
        first = body.date_from or last - timedelta(days=29)
        try:
            q = PersonaQuery(
                body.group,
                DateRange(first, last, p.timezone),
                body.value,
                tuple(body.properties),
                body.top_events,
                body.values_limit,
                tuple(body.dimensions),
            )
        except InvalidQuery as exc:
            raise HTTPProblem(400, str(exc), field=persona_field(body, str(exc))) from None
        return await answer("persona", lambda: persona(runtime.store, p.id, q, settings_of(p)))

    @router.get("/persons/{key:path}/events")
    async def person_events_endpoint(
        request: Request,
        key: str,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
        event: Annotated[str | None, Query(max_length=200)] = None,
        project: ProjectParam = None,
    ) -> Response:
        """A page of the person's events, newest first; pass ``next_cursor`` for the next."""
        p = project_of(request, project)
        return await answer(
            "timeline", lambda: person_events(runtime.store, p.id, key, limit, cursor, event)
        )

    @router.get("/persons/{key:path}")
    async def person_endpoint(request: Request, key: str, project: ProjectParam = None) -> Response:
        """A person's profile, by person id or any distinct id (which may contain ``/``;
        the timeline route is matched first)."""
        p = project_of(request, project)
        today = local_today(p.timezone)
        return await answer(
            "profile",
            lambda: person_profile(runtime.store, p.id, key, settings_of(p), p.timezone, today),
        )

    return router
