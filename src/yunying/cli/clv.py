"""Customer lifetime value: ``yunying clv fit`` (BG/NBD + Gamma-Gamma) and ``yunying clv show``.

Both go through the running server's ``/api/v1/clv`` when one serves the data dir, else run the
same code here (:mod:`yunying.web.clv_api`), so ``--json`` prints the API's answer either way.
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from yunying.runtime import Runtime


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def model_tables(result: dict[str, Any]) -> list[Table]:
    """The fitted parameters, counts and prediction summary as Rich tables."""
    head = Table("model", "parameter", "estimate", title=escape(
        f"CLV model #{result['id']} · {result['event']} · calibration to "
        f"{result['calibration_end']} · unit {result['unit']}"))  # fmt: skip
    bg = result["bgnbd"]
    for name in ("r", "alpha", "a", "b"):
        head.add_row("BG/NBD", name, _fmt(bg[name]))
    head.add_row("BG/NBD", "log-likelihood", _fmt(bg["log_likelihood"], 1))
    gg = result.get("gamma_gamma")
    if gg:
        for name in ("p", "q", "v"):
            head.add_row("Gamma-Gamma", name, _fmt(gg[name]))
        head.add_row("Gamma-Gamma", "log-likelihood", _fmt(gg["log_likelihood"], 1))
    counts = Table("count", "value")
    for key, value in result["counts"].items():
        counts.add_row(key.replace("_", " "), _fmt(value))
    pred = result["predictions"]
    counts.add_row(f"expected purchases, next {_fmt(result['horizon'], 0)} {result['unit']}s",
                   _fmt(pred["expected_purchases_total"], 1))  # fmt: skip
    counts.add_row("predicted value", _fmt(pred["predicted_value_total"], 2))
    counts.add_row("mean P(alive)", _fmt(pred["mean_p_alive"], 3))
    for band, n in pred["churn_risk"].items():
        counts.add_row(f"churn risk {band}", _fmt(n))
    return [head, counts]


def register(app: typer.Typer) -> None:
    """Add ``yunying clv fit`` and ``yunying clv show``."""
    from yunying.cli.main import (
        DataDir,
        EventsURL,
        JSONOut,
        ProjectName,
        StateURL,
        console,
        err,
        print_json,
        settings_of,
    )

    clv_app = typer.Typer(
        help="Customer lifetime value: BG/NBD + Gamma-Gamma fitted on a purchase event.",
        no_args_is_help=True,
    )
    app.add_typer(clv_app, name="clv", rich_help_panel="Audience")

    def output(result: dict[str, Any], json_out: bool) -> None:
        if json_out:
            print_json(result)
            return
        for table in model_tables(result):
            console.print(table)
        for warning in result.get("warnings", []):
            err.print(f"[yellow]warning:[/] {escape(warning)}")

    @clv_app.command("fit")
    def fit(
        event: Annotated[str, typer.Option(help="The purchase event.")],
        calibration_end: Annotated[
            str,
            typer.Option(
                help="Last local day (YYYY-MM-DD, project time zone) the models learn from."
            ),
        ],
        unit: Annotated[str, typer.Option(help="Time unit: day, week or month.")] = "week",
        amount_field: Annotated[
            str | None,
            typer.Option(help="Purchase value: amount (the column) or an event property."),
        ] = "amount",
        no_spend: Annotated[
            bool, typer.Option("--no-spend", help="Fit no spend model (no predicted value).")
        ] = False,
        horizon: Annotated[
            float, typer.Option(help="Units ahead for expected purchases and value.")
        ] = 52,
        discount_rate: Annotated[
            float, typer.Option(help="Discount rate per unit for predicted value.")
        ] = 0.0,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Fit the models, write per-person predictions (clv:* values), print the estimates."""
        from yunying.cli.remote import call_api, refusals_fail
        from yunying.state import get_project
        from yunying.web.clv_api import parse_fit_body, run_fit

        body = {
            "project": project,
            "event": event,
            "calibration_end": calibration_end,
            "unit": unit,
            "amount_field": None if no_spend else amount_field,
            "horizon": horizon,
            "discount_rate": discount_rate,
        }
        settings = settings_of(data_dir, events_url, state_url)

        def local(rt: "Runtime") -> dict[str, Any]:
            parsed = parse_fit_body(body)
            return run_fit(rt.store, rt.state, get_project(rt.state, parsed.project), parsed)

        with refusals_fail():
            result = call_api(settings, "POST", "/api/v1/clv/fit", local, json=body)
        output(dict(result), json_out)

    @clv_app.command("show")
    def show(
        event: Annotated[str | None, typer.Option(help="Only models of this event.")] = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """The latest fitted model of the project."""
        from yunying.audience.clv import latest_model
        from yunying.cli.remote import call_project_api

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            "/api/v1/clv/models/latest", lambda rt, p: latest_model(rt.state, p, event),
            params={"event": event},
        )  # fmt: skip
        output(dict(result), json_out)
