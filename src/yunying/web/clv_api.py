"""/api/v1/clv: fit and read customer lifetime value models (BG/NBD + Gamma-Gamma).

- ``POST /api/v1/clv/fit`` with :class:`FitBody` fits both models on a project's purchase event,
  writes the per-person ``clv:*`` values and answers the stored model (docs/clv.md).
- ``GET /api/v1/clv/models/latest?project=&event=`` answers the newest stored model.

Authentication is :class:`~yunying.web.auth.ManagementAuth` (a project's secret key, or the local
admin token with ``project``). Errors are ``{"error": message, ...}``: 401/403/404 for who may
call, 400 for a body that is not JSON or for purchases that cannot identify the model, 422 for a
body that does not match :class:`FitBody` with ``field`` naming the first bad field, 404 when no
model was fitted yet.

The CLI (``yunying clv fit|show``) runs :func:`parse_fit_body` and :func:`run_fit` locally when no
server serves the data dir, so its ``--json`` output is this API's answer either way.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as Doc
from sqlalchemy import Engine

from yunying.audience.clv import (
    MAX_HORIZON,
    ClvError,
    ClvRequest,
    InvalidClvRequest,
    ModelNotFound,
    NotEnoughData,
    fit_clv,
    latest_model,
)
from yunying.runtime import Runtime
from yunying.state import Project
from yunying.store.base import EventStore
from yunying.web.analytics_api import validation_problem
from yunying.web.auth import ManagementAuth
from yunying.web.http import HTTPProblem, json_response, read_body

log = logging.getLogger("yunying.web")

#: A fit request is a handful of fields.
BODY_LIMIT = 100_000


class FitBody(BaseModel):
    """What ``POST /api/v1/clv/fit`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = Doc(None, description="Project name (implied by a secret key).")
    event: str = Doc(min_length=1, max_length=200, description="The purchase event.")
    calibration_end: date = Doc(
        description="Last local day (project time zone) of the purchases the models learn from."
    )
    unit: Literal["day", "week", "month"] = Doc(
        "week", description="Time unit of t_x, T, the horizon and the fitted α."
    )
    amount_field: str | None = Doc(
        "amount",
        description="Purchase value: `amount` (the column), or an event property (`prop:NAME` "
        "or NAME); null fits no spend model and predicts no value.",
    )
    horizon: float = Doc(
        52, gt=0, le=MAX_HORIZON, description="Units ahead for expected purchases and value."
    )
    discount_rate: float = Doc(
        0.0, ge=0, lt=1, description="Discount rate per unit applied to predicted value."
    )

    def to_request(self) -> ClvRequest:
        """The :class:`~yunying.audience.clv.ClvRequest` (InvalidClvRequest if refused)."""
        return ClvRequest(
            event=self.event,
            calibration_end=self.calibration_end,
            unit=self.unit,
            amount_field=self.amount_field,
            horizon=self.horizon,
            discount_rate=self.discount_rate,
        )


def parse_fit_body(body: Any) -> FitBody:
    """Validate a body as the API does; :class:`HTTPProblem` 422 naming the field otherwise."""
    try:
        parsed = FitBody.model_validate(body)
    except ValidationError as exc:
        raise validation_problem(list(exc.errors()), body_prefix=False) from None
    try:
        parsed.to_request()
    except InvalidClvRequest as exc:
        raise _refused(exc) from None
    return parsed


def _refused(exc: InvalidClvRequest) -> HTTPProblem:
    """A 422 naming the field the models refused, in the shape of body validation errors."""
    problem = {"field": exc.field, "message": str(exc)}
    return HTTPProblem(422, str(exc), field=exc.field, errors=[problem])


def run_fit(store: EventStore, state: Engine, project: Project, body: FitBody) -> dict[str, Any]:
    """Fit for ``project`` (blocking): the API's answer; HTTPProblem 422 for a refused field
    (a calibration end after today), 400 for purchases that cannot identify the model."""
    try:
        return fit_clv(store, state, project, body.to_request())
    except InvalidClvRequest as exc:
        raise _refused(exc) from None
    except NotEnoughData as exc:
        raise HTTPProblem(400, str(exc)) from None


def clv_router(runtime: Runtime) -> APIRouter:
    """``/api/v1/clv``: fit a model, read the latest one."""
    auth = ManagementAuth(runtime)
    router = APIRouter(prefix="/api/v1/clv", tags=["clv"])

    @router.post("/fit")
    async def fit(request: Request) -> Response:
        """Fit BG/NBD + Gamma-Gamma on a purchase event, store per-person predictions."""
        who = auth.principal(request)
        raw = await read_body(request, BODY_LIMIT)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
        body = parse_fit_body(payload)
        project = auth.project_for(who, body.project)
        try:
            result = await asyncio.to_thread(run_fit, runtime.store, runtime.state, project, body)
        except HTTPProblem:
            raise
        except ClvError as exc:
            raise HTTPProblem(400, str(exc)) from None
        except Exception:
            log.exception("CLV fit failed", extra={"project": project.name})
            raise HTTPProblem(500, "the CLV fit failed; see the server log") from None
        return json_response(result)

    @router.get("/models/latest")
    async def latest(
        request: Request, project: str | None = None, event: str | None = None
    ) -> Response:
        """The newest fitted model of the project (for ``event`` when given)."""
        target = auth.project(request, project)
        try:
            result = await asyncio.to_thread(latest_model, runtime.state, target, event)
        except ModelNotFound as exc:
            raise HTTPProblem(404, str(exc)) from None
        return json_response(result)

    return router
