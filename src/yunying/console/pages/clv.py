"""Customer lifetime value (客户终身价值): fit BG/NBD + Gamma-Gamma for the project, show the
fitted parameters, the value bands and churn risk, and the persons with the highest predicted
value; three CSVs (``?format=csv&table=model|bands|top``).

The fit is :func:`yunying.audience.clv.fit_clv` (what ``yunying clv fit`` and ``POST
/api/v1/clv/fit`` run) and the page reads :func:`~yunying.audience.clv.latest_model`; the top
persons are read from the ``clv:*`` person values the fit wrote. Reading needs ``view`` (top
persons: ``explore``); fitting writes every person's predictions, so it needs ``segments``.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from yunying.audience.clv import (
    UNITS,
    ClvError,
    ClvRequest,
    InvalidClvRequest,
    ModelNotFound,
    NotEnoughData,
    fit_clv,
    latest_model,
)
from yunying.console.data import N_, Table, top_predicted
from yunying.console.pages.audience import csv_denied
from yunying.console.web import ConsoleApp, Ctx, NavItem, csv_response, redirect
from yunying.errors import M_, message_from_record

log = logging.getLogger("yunying.console")
TOP = 20
UNIT_LABELS = {"day": N_("Days"), "week": N_("Weeks"), "month": N_("Months")}
BAND_LABELS = {"high": N_("High"), "medium": N_("Medium"), "low": N_("Low")}
#: The purchase event a new fit proposes when the project has it (the demo's membership sale).
DEFAULT_EVENT = "purchase_membership"


def model_rows(model: dict[str, Any]) -> list[tuple[str, Any]]:
    """The fitted model as (parameter, value) rows: what the page shows and the CSV holds."""
    rows: list[tuple[str, Any]] = [
        ("event", model["event"]),
        ("unit", model["unit"]),
        ("calibration_end", model["calibration_end"]),
        ("created_at", model["created_at"]),
        ("horizon", model.get("horizon")),
        ("discount_rate", model.get("discount_rate")),
        ("amount_field", model.get("amount_field")),
    ]
    for key in ("r", "alpha", "a", "b", "log_likelihood", "converged"):
        rows.append((f"bgnbd.{key}", (model.get("bgnbd") or {}).get(key)))
    gg = model.get("gamma_gamma") or {}
    for key in ("p", "q", "v", "mean_spend", "customers", "frequency_spend_correlation"):
        rows.append((f"gamma_gamma.{key}", gg.get(key)))
    for key, value in (model.get("counts") or {}).items():
        rows.append((f"counts.{key}", value))
    pred = model.get("predictions") or {}
    for key in ("persons", "expected_purchases_total", "mean_p_alive", "predicted_value_total"):
        rows.append((f"predictions.{key}", pred.get(key)))
    return rows


def band_rows(model: dict[str, Any]) -> list[tuple[str, str, int, float | None]]:
    """(kind, label, persons, lower bound) for the value bands and churn-risk classes."""
    pred = model.get("predictions") or {}
    t = pred.get("value_band_thresholds") or [None, None]
    lower = {"high": t[1], "medium": t[0], "low": None}
    rows: list[tuple[str, str, int, float | None]] = [
        ("value_band", k, int((pred.get("value_band") or {}).get(k, 0)), lower[k])
        for k in ("high", "medium", "low")
    ]
    rows += [
        ("churn_risk", k, int((pred.get("churn_risk") or {}).get(k, 0)), None)
        for k in ("low", "medium", "high")
    ]
    return rows


def register(console: ConsoleApp) -> None:
    """Add the CLV page."""
    runtime = console.runtime
    console.nav(NavItem("clv", "/clv", N_("Lifetime value"), N_("Audience"), "view", 215))

    def defaults(ctx: Ctx) -> dict[str, str]:
        assert ctx.project is not None
        events = console.events(ctx.project)
        span = console.span(ctx.project)
        today = date.today()
        last = min(span.last_day, today) if span.last_day else today
        event = DEFAULT_EVENT if DEFAULT_EVENT in events or not events else events[0]
        return {"event": event, "calibration_end": last.isoformat(), "unit": "week",
                "horizon": "52", "amount_field": "amount", "discount_rate": "0"}  # fmt: skip

    def view(
        ctx: Ctx,
        form: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
        status: int = 200,
    ) -> Response:
        assert ctx.project is not None
        project = ctx.project
        try:
            model: dict[str, Any] | None = latest_model(runtime.state, project)
        except ModelNotFound:
            model = None
        top: list[dict[str, Any]] = []
        if model is not None and ctx.can("explore"):
            top = console.cached(
                project,
                ("clv-top", model["id"]),
                lambda: top_predicted(runtime.store, project, TOP),
            )
        if ctx.param("format") == "csv" and ctx.can("export") and model is not None:
            table = ctx.param("table", "model")
            if table == "bands":
                return csv_response(
                    Table(("kind", "label", "persons", "lower_bound"), tuple(band_rows(model))),
                    f"clv-{model['id']}-bands.csv",
                )
            if table == "top" and ctx.can("explore"):
                return csv_response(
                    Table(
                        ("person_id", "distinct_id", "value_band", "predicted_value", "p_alive",
                         "expected_purchases"),
                        tuple(
                            (p["person_id"], (p["distinct_ids"] or [""])[0], p["band"],
                             p["predicted_value"], p["p_alive"], p["expected_purchases"])
                            for p in top
                        ),
                    ),
                    f"clv-{model['id']}-top.csv",
                )  # fmt: skip
            return csv_response(
                Table(("parameter", "value"), tuple(model_rows(model))),
                f"clv-{model['id']}-model.csv",
            )
        chart = None
        if model is not None:
            rows = band_rows(model)
            chart = {
                "data": [
                    {
                        "type": "bar",
                        "name": ctx.gettext("Value band"),
                        "x": [ctx.gettext(BAND_LABELS[r[1]]) for r in rows[:3]],
                        "y": [r[2] for r in rows[:3]],
                        "marker": {"color": ["#2da44e", "#d4a72c", "#8c959f"]},
                    }
                ],
                "layout": {"height": 220, "margin": {"t": 10, "b": 40, "l": 50, "r": 10}},
            }
        notes = []
        if model is not None:  # the fit's notes in the page's language where they were marked
            records = model.get("warning_messages") or []
            for i, text in enumerate(model.get("warnings") or []):
                notes.append(
                    ctx.tr(message_from_record(records[i] if i < len(records) else None, text))
                )
        return console.render(
            ctx,
            "clv.html",
            status,
            model=model,
            notes=notes,
            top=top,
            chart=chart,
            bands=band_rows(model) if model else [],
            band_labels=BAND_LABELS,
            unit_labels=UNIT_LABELS,
            units=UNITS,
            form=form or defaults(ctx),
            events=console.events(project),
            errors=ctx.field_errors(errors or []),
        )

    @console.router.get("/clv")
    def clv_page(request: Request) -> Response:
        """The latest fitted model of the project, its value bands and top persons."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return console.render(ctx, "clv.html", no_project=True, model=None, errors=[])
        return view(ctx)

    @console.router.post("/clv")
    async def clv_fit(request: Request) -> Response:
        """Fit the models with the form's settings and show the result."""
        ctx = console.context(request, "segments")
        data = await request.form()
        console.check_csrf(ctx, data)
        if ctx.project is None:
            return redirect("/clv")
        form = {k: str(data.get(k) or "").strip() for k in defaults(ctx)}
        errors: list[dict[str, Any]] = []
        numbers: dict[str, float] = {}
        for key in ("horizon", "discount_rate"):
            try:
                numbers[key] = float(form[key])
            except ValueError:
                errors.append({"field": key, "message": M_("Enter a number.")})
        try:
            day = date.fromisoformat(form["calibration_end"])
        except ValueError:
            errors.append({"field": "calibration_end",
                           "message": M_("Enter a date like 2026-11-01.")})  # fmt: skip
        if errors:
            return view(ctx, form, errors, 400)
        try:
            request_ = ClvRequest(
                event=form["event"],
                calibration_end=day,
                unit=form["unit"],
                amount_field=form["amount_field"] or None,
                horizon=numbers["horizon"],
                discount_rate=numbers["discount_rate"],
            )
            fit_clv(runtime.store, runtime.state, ctx.project, request_)
        except InvalidClvRequest as exc:
            errors = [{"field": exc.field or "event", "message": exc.message}]
            return view(ctx, form, errors, 400)
        except (NotEnoughData, ClvError) as exc:
            errors = [{"field": "event", "message": exc.message}]
            return view(ctx, form, errors, 400)
        except Exception:  # the optimiser or the integrals failed on this data
            log.exception("CLV fit failed", extra={"project": ctx.project.name})
            errors = [{"field": "", "message": M_(
                "The fit failed on this data (details in the server log); try another "
                "calibration end, time unit or horizon.")}]  # fmt: skip
            return view(ctx, form, errors, 500)
        return redirect("/clv")
