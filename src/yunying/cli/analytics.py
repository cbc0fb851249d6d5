"""``yunying funnel | retention | trend | lifecycle | paths``: the analyses from the command line.

Each command builds the body of ``POST /api/v1/analytics/<kind>`` (see
:mod:`yunying.web.analytics_api`), sends it to the server advertised in ``DATA_DIR/server.json``
when one runs (DuckDB allows one process), or else validates and runs it locally with the same
models. ``--json`` prints the API's answer either way; without it, Rich tables.

The commands are defined by :func:`register`, called at the end of :mod:`yunying.cli.main`, so
that they share its options (``--data-dir``...) without this module importing it at load time.
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

import re
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from yunying.config import Settings
    from yunying.runtime import Runtime

#: ``--window 7d``: a number and a unit (s, m, h, d, w or the words); a bare number is days.
WINDOW_UNITS = {
    "s": "second", "sec": "second", "second": "second", "seconds": "second",
    "m": "minute", "min": "minute", "minute": "minute", "minutes": "minute",
    "h": "hour", "hour": "hour", "hours": "hour",
    "": "day", "d": "day", "day": "day", "days": "day",
    "w": "week", "week": "week", "weeks": "week",
}  # fmt: skip
FIELD_KINDS = {"col": "column", "column": "column", "prop": "property", "property": "property",
               "person": "person", "segment": "segment", "value": "value"}  # fmt: skip
FILTER = re.compile(r"^(?P<field>[^=!<>~]+?)\s*(?P<op>>=|<=|!=|=|>|<|~)\s*(?P<value>.*)$")
FILTER_OPS = {"=": "eq", "!=": "neq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte",
              "~": "contains"}  # fmt: skip
ANY_EVENT = "*"

FILTER_HELP = (
    "Condition on every event considered, repeatable: FIELD=V, FIELD!=V, FIELD~V (contains), "
    "FIELD>N, >=, <, <=. FIELD is a column (channel, os, amount...) or a property; "
    "prop:NAME forces a property."
)


class UsageError(Exception):
    """An option value the command cannot turn into a request."""


def parse_window(text: str) -> tuple[int, str]:
    """``7d`` → (7, "day"); ``24h``, ``30m``, ``2w``, ``90s``; ``7`` is days."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = WINDOW_UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise UsageError(f"--window must be like 7d, 24h, 30m, 2w or 90s, not {text!r}")
    return int(m.group(1)), unit


def parse_field(text: str) -> dict[str, str]:
    """A field as the API takes it: ``channel`` is a column (it is one), ``plan`` a property,
    ``prop:NAME`` / ``column:NAME`` say which explicitly, ``person:NAME`` is a person property,
    ``segment:ID`` membership of a segment, ``value:SCOPE`` a stored person value (``value:stage``,
    ``value:rfm``, ``value:tag:NAME``)."""
    from yunying.analytics.common import COLUMNS

    kind, sep, name = text.partition(":")
    if sep and kind in FIELD_KINDS:
        return {"kind": FIELD_KINDS[kind], "name": name}
    return {"kind": "column" if text in COLUMNS else "property", "name": text}


def parse_filter(text: str) -> dict[str, Any]:
    """``channel=douyin``, ``amount>=10``, ``prop:title~cat`` as the API's filter object."""
    m = FILTER.match(text)
    if m is None:
        raise UsageError(f"--filter must be like channel=douyin or amount>10, not {text!r}")
    op = FILTER_OPS[m.group("op")]
    raw = m.group("value").strip()
    value: Any = raw
    if op in ("gt", "gte", "lt", "lte"):
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"--filter {text!r}: {m.group('op')} needs a number") from None
        value = int(value) if value.is_integer() else value
    return {"field": parse_field(m.group("field").strip()), "op": op, "value": value}


def parse_date(option: str, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"{option} must be a date like 2026-11-01, not {text!r}") from None


def event_of(text: str) -> str | None:
    """``*`` means any event."""
    return None if text == ANY_EVENT else text


def parse_exclusion(text: str, steps: int) -> dict[str, Any]:
    """``--exclude EVENT[:FROM:TO]``: EVENT (``*`` any) must not happen between step FROM and
    step TO, numbered from 1 as in the table (default: the first and the last step). The API
    counts steps from 0."""
    event, sep, rest = text.partition(":")
    lo, hi = 1, steps
    if sep:
        m = re.fullmatch(r"(\d+):(\d+)", rest)
        if m is None:
            raise UsageError(f"--exclude must be like EVENT or EVENT:1:3, not {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2))
    if not event:
        raise UsageError(f"--exclude needs an event name: {text!r}")
    if not 1 <= lo < hi <= steps:
        raise UsageError(
            f"--exclude {text!r}: steps must satisfy 1 <= FROM < TO <= {steps} (numbered from 1)"
        )
    return {"event": event_of(event), "from_step": lo - 1, "to_step": hi - 1}


def parse_attribution(text: str, steps: int) -> tuple[str, int]:
    """``first_touch``, ``last_touch`` or ``step:N`` (N from 1) → the API's attribution fields."""
    if text in ("first_touch", "last_touch"):
        return text, 0
    m = re.fullmatch(r"step:(\d+)", text)
    if m is None:
        raise UsageError(f"--attribution must be first_touch, last_touch or step:N, not {text!r}")
    n = int(m.group(1))
    if not 1 <= n <= steps:
        raise UsageError(f"--attribution {text!r}: N must be a step number from 1 to {steps}")
    return "step", n - 1


def per_series(option: str, values: list[str] | None, count: int) -> list[str | None]:
    """A repeatable option of ``trend`` paired with the ``--event``s: none, one for all, or one
    per ``--event`` in the same order."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise UsageError(
            f"give {option} once (for every --event) or once per --event ({count}), "
            f"not {len(values)} times"
        )
    return list(values)


def common_body(
    project: str | None, date_from: str | None, date_to: str | None, filters: list[str] | None
) -> dict[str, Any]:
    return {
        "project": project,
        "date_from": parse_date("--from", date_from),
        "date_to": parse_date("--to", date_to),
        "filters": [parse_filter(f) for f in filters or []],
    }


def analyze(settings: "Settings", kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The API's answer to ``body``: from the running server, or computed here.

    Raises :class:`~yunying.errors.YunyingError` (server refusals, unknown project, refused
    query) or :class:`~yunying.web.http.HTTPProblem` (a body that does not validate).
    """
    from yunying.cli.remote import call_api
    from yunying.state import get_project
    from yunying.web.analytics_api import parse_request, run_analysis

    def local(rt: "Runtime") -> dict[str, Any]:
        request = parse_request(kind, body)
        return run_analysis(rt.store, get_project(rt.state, request.project), request)

    return dict(call_api(settings, "POST", f"/api/v1/analytics/{kind}", local, json=body))


# -- human output -----------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86_400}d {s % 86_400 // 3600}h"


def number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def funnel_tables(result: dict[str, Any]) -> list[Table]:
    table = Table("step", "persons", "from first", "from previous", "median time", "avg time")
    for s in result["steps"]:
        table.add_row(
            escape(f"{s['index'] + 1}. {s['name']}"),
            number(s["count"]),
            pct(s["conversion_from_first"]),
            pct(s["conversion_from_previous"]) if s["index"] else "",
            duration(s["median_seconds_from_previous"]),
            duration(s["average_seconds_from_previous"]),
        )
    tables = [table]
    if result.get("breakdowns"):
        names = [escape(s["name"]) for s in result["steps"]]
        by = Table("value", *names, "conversion")
        for b in result["breakdowns"]:
            counts = [number(s["count"]) for s in b["steps"]]
            by.add_row(
                "(not set)" if b["value"] is None else escape(b["value"]),
                *counts,
                pct(b["steps"][-1]["conversion_from_first"]),
            )
        tables.append(by)
    return tables


def time_to_convert_table(result: dict[str, Any]) -> Table:
    """One row per bin of conversion times, then the average and median."""
    table = Table("from", "to", "persons")
    for b in result["bins"]:
        table.add_row(
            duration(b["lower_seconds"]), duration(b["upper_seconds"]), number(b["count"])
        )
    table.add_row("average", duration(result["average_seconds"]), "", style="bold")
    table.add_row("median", duration(result["median_seconds"]), number(result["converted"]),
                  style="bold")  # fmt: skip
    return table


def funnel_trend_table(result: dict[str, Any]) -> Table:
    """Per period of step 1: persons who entered, converted, and the rate."""
    table = Table("period", "entered", "converted", "conversion")
    for label, e, c, rate in zip(
        result["labels"], result["entered"], result["converted"], result["conversion_rate"],
        strict=True,
    ):  # fmt: skip
        table.add_row(label, number(e), number(c), pct(rate))
    return table


def retention_table(result: dict[str, Any]) -> Table:
    width = len(result["weighted_mean"])
    table = Table(result["period"], "persons", *[str(n) for n in range(width)])
    for c in result["cohorts"]:
        cells = [f"{r:,} ({pct(rate)})" if c["size"] else "" for r, rate in
                 zip(c["retained"], c["rates"], strict=True)]  # fmt: skip
        table.add_row(c["label"], number(c["size"]), *cells, *[""] * (width - len(cells)))
    table.add_row("mean", "", *[pct(m) for m in result["weighted_mean"]], style="bold")
    return table


def trend_table(result: dict[str, Any]) -> Table:
    """Periods down, one column per line (series, then formula lines)."""
    lines = [*result["series"], *result.get("formula", [])]
    split = len({(x["series_index"], x["compare"]) for x in lines}) < len(lines)
    heads = []
    for s in lines:
        head = s["label"]
        if split or s["breakdown_value"] is not None:
            head += f" [{'(not set)' if s['breakdown_value'] is None else s['breakdown_value']}]"
        if s["compare"] == "previous":
            head += " (previous)"
        heads.append(escape(head))
    table = Table("period", *heads)
    labels = lines[0]["labels"] if lines else []
    for i, label in enumerate(labels):
        table.add_row(label, *[number(s["values"][i]) for s in lines])
    table.add_row("total", *[number(s["total"]) for s in lines], style="bold")
    return table


def paths_table(result: dict[str, Any]) -> Table:
    """One row per transition kept, step by step."""
    table = Table("step", "from", "to", "persons")
    for e in result["edges"]:
        table.add_row(
            str(e["step"]), escape(e["source"]), escape(e["target"]), number(e["persons"])
        )
    return table


def lifecycle_table(result: dict[str, Any]) -> Table:
    statuses = ("new", "returning", "resurrecting", "dormant")
    table = Table("period", *statuses)
    for i, label in enumerate(result["labels"]):
        table.add_row(label, *[number(result[s][i]) for s in statuses])
    return table


# -- commands ---------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``funnel``, ``retention``, ``trend`` and ``lifecycle`` to the ``yunying`` command."""
    from yunying.cli.main import (
        DataDir,
        EventsURL,
        JSONOut,
        ProjectName,
        StateURL,
        console,
        fail,
        print_json,
        settings_of,
    )

    DateFrom = Annotated[
        str | None,
        typer.Option("--from", help="First local day, YYYY-MM-DD (default: 29 days before --to)."),
    ]
    DateTo = Annotated[
        str | None,
        typer.Option("--to", help="Last local day, YYYY-MM-DD (default: today, project time)."),
    ]
    Filters = Annotated[
        list[str] | None, typer.Option("--filter", metavar="CONDITION", help=FILTER_HELP)
    ]
    Breakdown = Annotated[
        str | None,
        typer.Option(help="Split by a column (channel, os...) or property (prop:NAME forces one)."),
    ]

    def execute(
        kind: str,
        body: dict[str, Any],
        json_out: bool,
        data_dir: Any,
        events_url: str | None,
        state_url: str | None,
    ) -> dict[str, Any]:
        from yunying.cli.remote import refusals_fail

        settings = settings_of(data_dir, events_url, state_url)
        with refusals_fail():
            result = analyze(settings, kind, body)
        if json_out:
            print_json(result)
        return result

    def body_of(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Build the body now, turning option errors into the command's error."""
        try:
            return make()
        except UsageError as exc:
            fail(str(exc))

    @app.command(rich_help_panel="Analytics")
    def funnel(
        steps: Annotated[
            str, typer.Option(help="Comma-separated event names in order (* is any event).")
        ],
        window: Annotated[
            str, typer.Option(help="Conversion window from step 1: 7d, 24h, 30m, 2w, 90s.")
        ] = "14d",
        order: Annotated[str, typer.Option(help="ordered, strict or unordered.")] = "ordered",
        breakdown: Breakdown = None,
        attribution: Annotated[
            str,
            typer.Option(
                help="Which event of a person's chain gives the breakdown value: first_touch, "
                "last_touch or step:N (N from 1)."
            ),
        ] = "first_touch",
        exclude: Annotated[
            list[str] | None,
            typer.Option(
                metavar="EVENT[:FROM:TO]",
                help="Drop persons whose chain has EVENT (* any) between step FROM and step TO "
                "(numbered from 1; default the first and last step). Repeatable.",
            ),
        ] = None,
        view: Annotated[
            str,
            typer.Option(
                help="steps (persons per step), time_to_convert (how long from --from-step to "
                "--to-step, in --bins bins) or trends (entered and converted per --interval)."
            ),
        ] = "steps",
        from_step: Annotated[
            int, typer.Option(help="time_to_convert: the step timed from (numbered from 1).")
        ] = 1,
        to_step: Annotated[
            int | None,
            typer.Option(help="time_to_convert: the step timed to (from 1; default the last)."),
        ] = None,
        bins: Annotated[int, typer.Option(help="time_to_convert: equal-width bins.")] = 10,
        interval: Annotated[
            str, typer.Option(help="trends: hour, day, week or month of step 1.")
        ] = "day",
        date_from: DateFrom = None,
        date_to: DateTo = None,
        filters: Filters = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Persons going through steps in order within a conversion window; with --view, the
        time they took or the conversion per period."""

        def make() -> dict[str, Any]:
            count, unit = parse_window(window)
            names = [s.strip() for s in steps.split(",")]
            if not all(names):
                raise UsageError(f"--steps must be event names separated by commas: {steps!r}")
            how, step = parse_attribution(attribution, len(names))
            for option, n in (("--from-step", from_step), ("--to-step", to_step)):
                if n is not None and not 1 <= n <= len(names):
                    raise UsageError(f"{option} must be a step number from 1 to {len(names)}")
            return {
                **common_body(project, date_from, date_to, filters),
                "steps": [event_of(s) for s in names],
                "window": count,
                "window_unit": unit,
                "order": order,
                "breakdown": None if breakdown is None else parse_field(breakdown),
                "breakdown_attribution": how,
                "attribution_step": step,
                "exclusions": [parse_exclusion(x, len(names)) for x in exclude or []],
                "view": view,
                "from_step": from_step - 1,
                "to_step": None if to_step is None else to_step - 1,
                "bins": bins,
                "interval": interval,
            }

        result = execute("funnel", body_of(make), json_out, data_dir, events_url, state_url)
        if json_out:
            return
        if view == "time_to_convert":
            console.print(time_to_convert_table(result))
        elif view == "trends":
            console.print(funnel_trend_table(result))
        else:
            for table in funnel_tables(result):
                console.print(table)

    @app.command(rich_help_panel="Analytics")
    def retention(
        start_event: Annotated[
            str,
            typer.Option(
                "--start-event", "--target-event", help="Event entering a cohort (* is any)."
            ),
        ],
        return_event: Annotated[
            str, typer.Option(help="Event counting as coming back (* is any).")
        ],
        period: Annotated[str, typer.Option(help="day, week or month.")] = "day",
        periods: Annotated[
            int | None,
            typer.Option(help="Cover this many periods ending at --to (instead of --from)."),
        ] = None,
        cohort: Annotated[str, typer.Option(help="first_time or recurring.")] = "first_time",
        mode: Annotated[
            str, typer.Option(help="on (exactly period N) or on_or_after (N or later).")
        ] = "on",
        date_from: DateFrom = None,
        date_to: DateTo = None,
        filters: Filters = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Cohorts by their first (or every) start event, and who came back N periods later."""

        def make() -> dict[str, Any]:
            return {
                **common_body(project, date_from, date_to, filters),
                "target_event": event_of(start_event),
                "return_event": event_of(return_event),
                "period": period,
                "periods": periods,
                "cohort": cohort,
                "mode": mode,
            }

        result = execute("retention", body_of(make), json_out, data_dir, events_url, state_url)
        if not json_out:
            console.print(retention_table(result))

    @app.command(rich_help_panel="Analytics")
    def trend(
        events: Annotated[
            list[str],
            typer.Option("--event", "-e", help="Event to count, repeatable: one series each."),
        ],
        math: Annotated[
            list[str] | None,
            typer.Option(
                help="total, unique_persons, dau, wau, mau, avg_per_person..., or "
                "sum/avg/min/max/median/p90 of --math-field. Once for every --event, or once "
                "per --event in the same order (default total)."
            ),
        ] = None,
        math_field: Annotated[
            list[str] | None,
            typer.Option(
                help="Numeric field of sum..p90 (default: amount); once for all, or once per "
                "--event ('-' for none)."
            ),
        ] = None,
        interval: Annotated[str, typer.Option(help="hour, day, week or month.")] = "day",
        breakdown: Breakdown = None,
        breakdown_limit: Annotated[int, typer.Option(help="Lines kept per series.")] = 25,
        compare: Annotated[
            bool, typer.Option("--compare", help="Add the previous range of equal length.")
        ] = False,
        formula: Annotated[
            str | None,
            typer.Option(help="Combine the series by letter, A = first --event: 'B / A * 100'."),
        ] = None,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        filters: Filters = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Events, persons or values of a field per interval (the API's `trends`)."""

        def make() -> dict[str, Any]:
            maths = per_series("--math", math, len(events))
            fields = per_series("--math-field", math_field, len(events))
            series = [
                {
                    "event": event_of(e),
                    "math": m or "total",
                    "math_field": None if f in (None, "-") else parse_field(f),
                }
                for e, m, f in zip(events, maths, fields, strict=True)
            ]
            return {
                **common_body(project, date_from, date_to, filters),
                "series": series,
                "interval": interval,
                "breakdown": None if breakdown is None else parse_field(breakdown),
                "breakdown_limit": breakdown_limit,
                "compare": compare,
                "formula": formula,
            }

        result = execute("trends", body_of(make), json_out, data_dir, events_url, state_url)
        if not json_out:
            console.print(trend_table(result))

    @app.command(rich_help_panel="Analytics")
    def lifecycle(
        event: Annotated[str, typer.Option(help="Event that makes a person active (* is any).")],
        interval: Annotated[str, typer.Option(help="day, week or month.")] = "day",
        date_from: DateFrom = None,
        date_to: DateTo = None,
        filters: Filters = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """New, returning, resurrecting and dormant persons per period."""

        def make() -> dict[str, Any]:
            return {
                **common_body(project, date_from, date_to, filters),
                "event": event_of(event),
                "interval": interval,
            }

        result = execute("lifecycle", body_of(make), json_out, data_dir, events_url, state_url)
        if not json_out:
            console.print(lifecycle_table(result))

    @app.command(rich_help_panel="Analytics")
    def paths(
        start_event: Annotated[
            str | None, typer.Option(help="Paths from each person's first such event.")
        ] = None,
        end_event: Annotated[
            str | None,
            typer.Option(
                help="Paths to each person's first such event; with --start-event, the first "
                "one after the start ends the path."
            ),
        ] = None,
        steps: Annotated[int, typer.Option(help="Events per person, the anchor included.")] = 5,
        include: Annotated[
            list[str] | None, typer.Option(help="Only these events (repeatable).")
        ] = None,
        exclude: Annotated[
            list[str] | None, typer.Option(help="Leave these events out (repeatable).")
        ] = None,
        limit: Annotated[int, typer.Option(help="Transitions kept per step.")] = 20,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        filters: Filters = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """The most frequent next (or previous) events, step by step."""

        def make() -> dict[str, Any]:
            return {
                **common_body(project, date_from, date_to, filters),
                "start_event": start_event,
                "end_event": end_event,
                "steps": steps,
                "include_events": include or [],
                "exclude_events": exclude or [],
                "limit": limit,
            }

        result = execute("paths", body_of(make), json_out, data_dir, events_url, state_url)
        if not json_out:
            console.print(paths_table(result))
