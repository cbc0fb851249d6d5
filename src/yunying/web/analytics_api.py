"""Analytics over HTTP: ``POST /api/v1/analytics/{funnel,retention,trends,lifecycle}``.

The project is chosen as for ``POST /api/v1/sql``: a project's secret key implies it (a body
``project`` naming another project is a 403); the local admin token needs ``project`` (a name)
when the installation has several. Request bodies are the Pydantic models below; each maps onto
the analytics query dataclass of the same name (:mod:`yunying.analytics`), and the answer is the
result's ``as_dict()``. Date ranges default to the last 30 local days of the project's time zone.

Errors are answered like every other endpoint, ``{"error": message, ...}``:

- 401 without or with an unknown key, 403 for another project's name, 404 for an unknown project;
- 400 for a body that is not JSON, and for a query the analytics refuse (``InvalidQuery``);
- 422 for a body that does not match the model, with ``field`` (a dotted path such as
  ``steps.1.event``) and ``errors`` (every problem as ``{"field", "message"}``).

The CLI (``yunying funnel`` ...) validates and runs the same models with :func:`run_analysis`
when no server is running, so its ``--json`` output is the API's answer in both cases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic import Field as Doc
from pydantic_core import PydanticCustomError

from yunying.analytics import (
    AnalyticsError,
    DateRange,
    Filter,
    FunnelExclusion,
    FunnelQuery,
    FunnelStep,
    FunnelTimeToConvertQuery,
    FunnelTrendsQuery,
    InvalidQuery,
    LifecycleQuery,
    PathsQuery,
    RetentionQuery,
    Series,
    Source,
    TrendsQuery,
    funnel,
    funnel_time_to_convert,
    funnel_trends,
    lifecycle,
    paths,
    retention,
    trends,
)
from yunying.analytics import Field as EventField
from yunying.analytics.common import FilterOp
from yunying.analytics.trends import Math
from yunying.runtime import Runtime
from yunying.state import Project
from yunying.web.auth import ManagementAuth
from yunying.web.http import HTTPProblem, json_response, read_body

log = logging.getLogger("yunying.web")

#: Largest accepted request body (queries are small; this bounds what a client can make us parse).
BODY_LIMIT = 1_000_000
#: Days in the default date range, ending today in the project's time zone.
DEFAULT_DAYS = 30


# -- request models ---------------------------------------------------------------------------------


def _invalid(exc: InvalidQuery) -> PydanticCustomError:
    """An analytics refusal as a validation error located at the model that caused it."""
    return PydanticCustomError("invalid_query", "{message}", {"message": str(exc)})


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldRef(_Body):
    """A value of an event: a first-class column (``{"kind": "column", "name": "channel"}``), a
    top-level key of its properties (``{"kind": "property", "name": "plan"}``), or a fact of its
    person (``person``, ``segment``, ``value``)."""

    # checked by the analytics' own Field (not a Literal here), so kinds it gains are accepted
    kind: str = Doc(
        "property",
        description="`column`: one of event, distinct_id, channel, utm_source, os, app_version, "
        "device_id, ip, amount. `property`: a top-level key of the event's properties. "
        "`person`: a top-level key of the current properties of the event's person. "
        "`segment`: membership of a segment (name = segment id; text `true`/`false`, e.g. "
        '`{"field": {"kind": "segment", "name": "12"}, "op": "eq", "value": true}`). '
        "`value`: the person's label in a person-values scope (name = `stage`, `rfm`, "
        "`clv:churn_risk`, `clv:value_band`, `tag:NAME`, `segment:ID`).",
    )
    name: str = Doc(min_length=1, description="Column name or property key.")

    @model_validator(mode="after")
    def _check(self) -> FieldRef:
        try:
            self.to_field()
        except InvalidQuery as exc:
            raise _invalid(exc) from None
        return self

    def to_field(self) -> EventField:
        """The analytics :class:`~yunying.analytics.Field`."""
        return EventField(self.name, self.kind)  # type: ignore[arg-type]


class FilterBody(_Body):
    """A condition on one field (see docs/analytics.md, Filters)."""

    field: FieldRef = Doc(description="The column or property the condition is on.")
    op: FilterOp = Doc(
        "eq",
        description="eq, neq, in, not_in, contains compare text (neq/not_in also match events "
        "without the field); gt, gte, lt, lte compare numbers; is_set, is_not_set.",
    )
    value: Any = Doc(
        None,
        description="Text or number for eq/neq/contains, a non-empty list for in/not_in, a "
        "number for gt/gte/lt/lte, nothing for is_set/is_not_set.",
    )

    @model_validator(mode="after")
    def _check(self) -> FilterBody:
        try:
            self.to_filter()
        except InvalidQuery as exc:
            raise _invalid(exc) from None
        return self

    def to_filter(self) -> Filter:
        """The analytics :class:`~yunying.analytics.Filter`."""
        value = tuple(self.value) if isinstance(self.value, list) else self.value
        return Filter(self.field.to_field(), self.op, value)


Filters = Annotated[
    list[FilterBody],
    Doc(default_factory=list, max_length=100, description="Conditions, all of which must hold."),
]


def _event_shorthand(value: Any) -> Any:
    """``"sign_up"`` stands for ``{"event": "sign_up"}`` in lists of steps and series (and
    ``null`` for any event)."""
    return value if isinstance(value, dict) else {"event": value}


class StepBody(_Body):
    """One funnel step. A plain string ``"sign_up"`` is short for ``{"event": "sign_up"}``."""

    event: str | None = Doc(description="Event name; null means any event.")
    filters: Filters
    name: str | None = Doc(None, description="Label in the result (default: the event name).")

    def to_step(self) -> FunnelStep:
        return FunnelStep(self.event, tuple(f.to_filter() for f in self.filters), self.name)


class ExclusionBody(_Body):
    """An event that must not happen between two steps of a person's chain."""

    event: str | None = Doc(description="Event name; null means any event.")
    filters: Filters
    from_step: int = Doc(0, ge=0, description="0-based index of the step it must not follow.")
    to_step: int = Doc(1, ge=1, description="0-based index of the step it must not precede.")

    def to_exclusion(self) -> FunnelExclusion:
        return FunnelExclusion(
            self.event, tuple(f.to_filter() for f in self.filters), self.from_step, self.to_step
        )


class SeriesBody(_Body):
    """One trends series. A plain string ``"export_video"`` is short for
    ``{"event": "export_video"}`` (math ``total``)."""

    event: str | None = Doc(description="Event name; null means any event.")
    math: Math = Doc(
        "total",
        description="total (events), unique_persons / dau, wau, mau (persons), or sum, avg, "
        "min, max, median, p90 of math_field.",
    )
    math_field: FieldRef | None = Doc(
        None, description="The numeric field of sum..p90 (default: the amount column)."
    )
    filters: Filters
    name: str | None = Doc(None, description="Label in the result (default: 'event (math)').")

    def to_series(self) -> Series:
        return Series(
            self.event,
            self.math,
            None if self.math_field is None else self.math_field.to_field(),
            tuple(f.to_filter() for f in self.filters),
            self.name,
        )


class AnalysisRequest(_Body):
    """What every analysis takes: the project and the local calendar days to look at."""

    kind: ClassVar[str]

    project: str | None = Doc(
        None,
        description="Project name. Optional with a project's secret key (it implies the "
        "project); with the local admin token, needed when there are several projects.",
    )
    date_from: date | None = Doc(
        None,
        description="First local day (YYYY-MM-DD, included). Default: 29 days before date_to.",
    )
    date_to: date | None = Doc(
        None, description="Last local day (included). Default: today in the project's time zone."
    )
    filters: Filters

    def date_range(self, timezone: str, today: date) -> DateRange:
        """The range asked for, defaults filled in the project's time zone."""
        date_to = self.date_to or today
        date_from = self.date_from or date_to - timedelta(days=DEFAULT_DAYS - 1)
        return DateRange(date_from, date_to, timezone)

    def _filters(self) -> tuple[Filter, ...]:
        return tuple(f.to_filter() for f in self.filters)

    def run(self, source: Source, project_id: int, timezone: str, today: date) -> dict[str, Any]:
        """Run the analysis; the result's ``as_dict()``."""
        raise NotImplementedError


class FunnelRequest(AnalysisRequest):
    """Body of ``POST /api/v1/analytics/funnel`` (:class:`~yunying.analytics.FunnelQuery`)."""

    kind: ClassVar[str] = "funnel"

    steps: list[Annotated[StepBody, BeforeValidator(_event_shorthand)]] = Doc(
        min_length=1,
        max_length=20,
        description='The steps in order: event names ("sign_up") or step objects.',
    )
    window: int = Doc(14, gt=0, description="Conversion window: step 1 + window, included.")
    window_unit: Literal["second", "minute", "hour", "day", "week"] = Doc(
        "day", description="Unit of window (fixed lengths: a day is 86,400 s)."
    )
    order: Literal["ordered", "strict", "unordered"] = Doc(
        "ordered",
        description="ordered: steps in order, other events allowed between; strict: no other "
        "event between steps; unordered: steps in any order within the window.",
    )
    breakdown: FieldRef | None = Doc(
        None, description="Split persons by this field's value on an event of their chain."
    )
    breakdown_attribution: Literal["first_touch", "last_touch", "step"] = Doc(
        "first_touch",
        description="Which event of the chain gives the breakdown value: step 1 (first_touch), "
        "the last step reached (last_touch) or attribution_step (step).",
    )
    attribution_step: int = Doc(0, ge=0, description="0-based step index for attribution step.")
    exclusions: list[ExclusionBody] = Doc(
        default_factory=list,
        max_length=20,
        description="Drop persons whose chain has one of these events between two steps.",
    )
    view: Literal["steps", "time_to_convert", "trends"] = Doc(
        "steps",
        description="steps: persons per step (FunnelResult); time_to_convert: how long persons "
        "took from from_step to to_step, in bins (FunnelTimeToConvertResult); trends: per period "
        "of step 1, persons who entered and who converted (FunnelTrendsResult).",
    )
    from_step: int = Doc(0, ge=0, description="time_to_convert: the 0-based step timed from.")
    to_step: int | None = Doc(
        None, ge=1, description="time_to_convert: the 0-based step timed to (default: the last)."
    )
    bins: int = Doc(10, ge=1, le=1000, description="time_to_convert: equal-width bins.")
    interval: Literal["hour", "day", "week", "month"] = Doc(
        "day", description="trends: the periods of step 1 that persons are counted in."
    )

    def run(self, source: Source, project_id: int, timezone: str, today: date) -> dict[str, Any]:
        query = FunnelQuery(
            tuple(s.to_step() for s in self.steps),
            self.date_range(timezone, today),
            window=self.window,
            window_unit=self.window_unit,
            order=self.order,
            filters=self._filters(),
            breakdown=None if self.breakdown is None else self.breakdown.to_field(),
            breakdown_attribution=self.breakdown_attribution,
            attribution_step=self.attribution_step,
            exclusions=tuple(x.to_exclusion() for x in self.exclusions),
        )
        if self.view == "time_to_convert":
            ttc = FunnelTimeToConvertQuery(query, self.from_step, self.to_step, self.bins)
            return funnel_time_to_convert(source, project_id, ttc).as_dict()
        if self.view == "trends":
            periods = FunnelTrendsQuery(query, self.interval)
            return funnel_trends(source, project_id, periods).as_dict()
        return funnel(source, project_id, query).as_dict()


class RetentionRequest(AnalysisRequest):
    """Body of ``POST /api/v1/analytics/retention`` (:class:`~yunying.analytics.RetentionQuery`)."""

    kind: ClassVar[str] = "retention"

    target_event: str | None = Doc(
        description="The event that puts a person in a cohort (null: any event)."
    )
    return_event: str | None = Doc(description="The event that counts as coming back (null: any).")
    period: Literal["day", "week", "month"] = Doc(
        "day", description="Cohort and return periods (weeks start on Monday)."
    )
    periods: int | None = Doc(
        None,
        ge=1,
        le=1000,
        description="Instead of date_from: the range covers this many periods, the last one "
        "holding date_to (so there are at most this many cohorts and columns).",
    )
    cohort: Literal["first_time", "recurring"] = Doc(
        "first_time",
        description="first_time: a person's cohort is the period of their first-ever target "
        "event; recurring: every period in which they did it.",
    )
    mode: Literal["on", "on_or_after"] = Doc(
        "on",
        description="on: returned in exactly period N; on_or_after: in period N or later.",
    )
    target_filters: Filters
    return_filters: Filters

    @model_validator(mode="after")
    def _periods_or_date_from(self) -> RetentionRequest:
        if self.periods is not None and self.date_from is not None:
            raise PydanticCustomError(
                "periods_and_date_from", "give either periods or date_from, not both"
            )
        return self

    def date_range(self, timezone: str, today: date) -> DateRange:
        if self.periods is None:
            return super().date_range(timezone, today)
        date_to = self.date_to or today
        return DateRange(first_day(date_to, self.period, self.periods), date_to, timezone)

    def run(self, source: Source, project_id: int, timezone: str, today: date) -> dict[str, Any]:
        query = RetentionQuery(
            self.target_event,
            self.return_event,
            self.date_range(timezone, today),
            period=self.period,
            cohort=self.cohort,
            mode=self.mode,
            target_filters=tuple(f.to_filter() for f in self.target_filters),
            return_filters=tuple(f.to_filter() for f in self.return_filters),
            filters=self._filters(),
        )
        return retention(source, project_id, query).as_dict()


class TrendsRequest(AnalysisRequest):
    """Body of ``POST /api/v1/analytics/trends`` (:class:`~yunying.analytics.TrendsQuery`)."""

    kind: ClassVar[str] = "trends"

    series: list[Annotated[SeriesBody, BeforeValidator(_event_shorthand)]] = Doc(
        min_length=1,
        max_length=20,
        description='What to count: event names ("export_video") or series objects.',
    )
    interval: Literal["hour", "day", "week", "month"] = Doc(
        "day", description="One value per local hour, day, week (Monday) or month."
    )
    breakdown: FieldRef | None = Doc(None, description="One line per value of this field.")
    breakdown_limit: int = Doc(
        25, ge=1, le=1000, description="Keep the lines with the largest totals."
    )
    compare: bool = Doc(
        False, description="Add the same lines for the previous range of equal length."
    )
    formula: str | None = Doc(
        None,
        max_length=1000,
        description="Combine series by letter (A is the first): 'B / A * 100'. Its lines come "
        "in `formula`.",
    )

    def run(self, source: Source, project_id: int, timezone: str, today: date) -> dict[str, Any]:
        query = TrendsQuery(
            tuple(s.to_series() for s in self.series),
            self.date_range(timezone, today),
            interval=self.interval,
            filters=self._filters(),
            breakdown=None if self.breakdown is None else self.breakdown.to_field(),
            breakdown_limit=self.breakdown_limit,
            compare=self.compare,
            formula=self.formula,
        )
        return trends(source, project_id, query).as_dict()


class LifecycleRequest(AnalysisRequest):
    """Body of ``POST /api/v1/analytics/lifecycle`` (:class:`~yunying.analytics.LifecycleQuery`)."""

    kind: ClassVar[str] = "lifecycle"

    event: str | None = Doc(description="The event that makes a person active (null: any).")
    interval: Literal["day", "week", "month"] = Doc("day", description="Period length.")

    def run(self, source: Source, project_id: int, timezone: str, today: date) -> dict[str, Any]:
        query = LifecycleQuery(
            self.event, self.date_range(timezone, today), self.interval, self._filters()
        )
        return lifecycle(source, project_id, query).as_dict()


class PathsRequest(AnalysisRequest):
    """Body of ``POST /api/v1/analytics/paths`` (:class:`~yunying.analytics.PathsQuery`)."""

    kind: ClassVar[str] = "paths"

    start_event: str | None = Doc(
        None, description="Paths from each person's first such event (step 0, then 1, 2...)."
    )
    end_event: str | None = Doc(
        None,
        description="Alone: paths to each person's first such event (steps 0, -1, -2...). With "
        "start_event: the first one after the start ends the path.",
    )
    steps: int = Doc(5, ge=2, le=20, description="Events per person, the anchor included.")
    include_events: list[str] = Doc(
        default_factory=list, max_length=100, description="Only these events (empty: all)."
    )
    exclude_events: list[str] = Doc(
        default_factory=list, max_length=100, description="Leave these events out."
    )
    limit: int = Doc(
        20, ge=1, le=1000, description="Transitions kept per step, most persons first."
    )

    def run(self, source: Source, project_id: int, timezone: str, today: date) -> dict[str, Any]:
        query = PathsQuery(
            self.date_range(timezone, today),
            start_event=self.start_event,
            end_event=self.end_event,
            steps=self.steps,
            filters=self._filters(),
            include_events=tuple(self.include_events),
            exclude_events=tuple(self.exclude_events),
            limit=self.limit,
        )
        return paths(source, project_id, query).as_dict()


#: Request model of each analysis, by the last part of its path.
REQUESTS: dict[str, type[AnalysisRequest]] = {
    m.kind: m
    for m in (FunnelRequest, RetentionRequest, TrendsRequest, LifecycleRequest, PathsRequest)
}


def first_day(last: date, period: str, count: int) -> date:
    """First day of the ``count``-th period counting back from the one holding ``last``."""
    if period == "day":
        return last - timedelta(days=count - 1)
    if period == "week":
        return last - timedelta(days=last.weekday() + 7 * (count - 1))
    months = last.year * 12 + last.month - 1 - (count - 1)
    return date(months // 12, months % 12 + 1, 1)


def local_today(timezone: str) -> date:
    """Today's date in ``timezone``."""
    return datetime.now(ZoneInfo(timezone)).date()


def run_analysis(
    source: Source, project: Project, request: AnalysisRequest, today: date | None = None
) -> dict[str, Any]:
    """Run a validated request for ``project``: the JSON the API answers (blocking).

    Raises :class:`~yunying.analytics.InvalidQuery` for a query the analytics refuse.
    """
    day = today or local_today(project.timezone)
    return request.run(source, project.id, project.timezone, day)


# -- errors -----------------------------------------------------------------------------------------


def validation_problem(errors: list[Any], body_prefix: bool = True) -> HTTPProblem:
    """The 422 (or 400 for unreadable JSON) answering Pydantic's ``errors()``."""
    listed = []
    for e in errors:
        loc = list(e.get("loc", ()))
        if body_prefix and loc[:1] == ["body"]:
            loc = loc[1:]
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", e.get("msg"))
            return HTTPProblem(400, f"body is not valid JSON: {detail}")
        # drop the function name Pydantic adds for BeforeValidator'd list items
        loc = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
        field = ".".join(str(p) for p in loc)
        message = str(e.get("msg", "invalid"))
        if not field:
            if e.get("type") == "missing":
                message = "a JSON object body is required"
            elif e.get("type") == "model_attributes_type":
                message = "body must be a JSON object"
        listed.append({"field": field, "message": message})
    text = "; ".join(f"field {x['field']!r}: {x['message']}" if x["field"] else x["message"]
                     for x in listed)  # fmt: skip
    return HTTPProblem(422, text, field=listed[0]["field"] if listed else "", errors=listed)


def parse_request(kind: str, body: dict[str, Any]) -> AnalysisRequest:
    """Validate a body as the API does; :class:`HTTPProblem` (422) naming the field otherwise."""
    try:
        return REQUESTS[kind].model_validate(body)
    except ValidationError as exc:
        raise validation_problem(list(exc.errors()), body_prefix=False) from None


# -- routes -----------------------------------------------------------------------------------------


class _ReadRequest(Request):
    """A request whose body was already read, within the limit and gunzipped."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._read = body

    async def body(self) -> bytes:
        return self._read


def analytics_router(runtime: Runtime) -> APIRouter:
    """The analyses under ``/api/v1/analytics``, authenticated as ``/api/v1/sql``."""
    auth = ManagementAuth(runtime)

    class AnalyticsRoute(APIRoute):
        """Authenticate and read the body (bounded) before FastAPI validates it, and answer
        validation errors in the house shape."""

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
                    raise validation_problem(list(exc.errors())) from None

            return guarded

    router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], route_class=AnalyticsRoute)

    def project_of(request: Request, name: str | None) -> Project:
        return auth.project_for(request.state.principal, name)

    async def answer(request: Request, body: AnalysisRequest) -> Response:
        project = project_of(request, body.project)
        try:
            result = await asyncio.to_thread(run_analysis, runtime.store, project, body)
        except InvalidQuery as exc:
            raise HTTPProblem(400, str(exc)) from None
        except AnalyticsError as exc:  # the engine has no SQL renderer
            raise HTTPProblem(501, str(exc)) from None
        except Exception:
            log.exception("analysis failed", extra={"analysis": body.kind})
            raise HTTPProblem(500, f"the {body.kind} analysis failed; see the server log") from None
        return json_response(result)

    @router.post("/funnel")
    async def funnel_endpoint(request: Request, body: FunnelRequest) -> Response:
        """Persons through ordered steps within a conversion window: FunnelResult.as_dict(), or
        with ``view`` FunnelTimeToConvertResult / FunnelTrendsResult.as_dict()."""
        return await answer(request, body)

    @router.post("/retention")
    async def retention_endpoint(request: Request, body: RetentionRequest) -> Response:
        """Cohorts by target event, and who returned N periods later: RetentionResult.as_dict()."""
        return await answer(request, body)

    @router.post("/trends")
    async def trends_endpoint(request: Request, body: TrendsRequest) -> Response:
        """One value per interval per series (and breakdown value): TrendsResult.as_dict()."""
        return await answer(request, body)

    @router.post("/lifecycle")
    async def lifecycle_endpoint(request: Request, body: LifecycleRequest) -> Response:
        """New / returning / resurrecting / dormant persons per period: LifecycleResult.as_dict()."""
        return await answer(request, body)

    @router.post("/paths")
    async def paths_endpoint(request: Request, body: PathsRequest) -> Response:
        """Transitions step by step from a start event, to an end event or from one to the
        other: PathsResult.as_dict()."""
        return await answer(request, body)

    return router
