"""Data pages: the overview dashboard (数据看板), trends, funnels, retention and lifecycle.

Each page reads its parameters from the query string (so every view is a shareable link),
computes through :mod:`yunying.console.data` with the page cache, embeds the Plotly figure as
JSON, and answers ``?format=csv`` with the same data as a download.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from yunying.analytics import AnalyticsError, DateRange, InvalidQuery
from yunying.console import data as d
from yunying.console.data import N_
from yunying.console.web import ConsoleApp, Ctx, NavItem, csv_response
from yunying.errors import M_

PALETTE = ["#2f6fed", "#f0883e", "#2da44e", "#a371f7", "#e5534b", "#1b9aaa", "#d4a72c",
           "#8c959f", "#bf3989", "#57606a"]  # fmt: skip
MAX_WINDOW_DAYS = 90
LATER = {"day": N_("Days later"), "week": N_("Weeks later"), "month": N_("Months later")}
LIFECYCLE_COLORS = {"new": "#2f6fed", "returning": "#2da44e", "resurrecting": "#d4a72c",
                    "dormant": "#e5534b"}  # fmt: skip


def layout(ctx: Ctx, **extra: Any) -> dict[str, Any]:
    """A Plotly layout with the locale's number separators and the console's look."""
    decimal, group = (".", ",")
    base: dict[str, Any] = {
        "margin": {"l": 48, "r": 16, "t": 16, "b": 40},
        "separators": decimal + group,
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.18},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, 'PingFang SC', 'Noto Sans CJK SC', sans-serif", "size": 12},
        "xaxis": {"gridcolor": "#eaeef2"},
        "yaxis": {"gridcolor": "#eaeef2", "rangemode": "tozero"},
    }
    if ctx.locale == "zh_CN":  # plotly.js speaks English: date ticks spelled the Chinese way
        base["xaxis"] = {
            **base["xaxis"],
            "tickformat": "%-m月%-d日",
            "hoverformat": "%Y年%-m月%-d日",
        }
    base.update(extra)
    return base


def sparkline(values: tuple[float | None, ...], width: int = 120, height: int = 32) -> str:
    """SVG polyline points of a KPI's daily values (drawn server-side: no script per card)."""
    nums = [v for v in values if v is not None]
    if len(nums) < 2:
        return ""
    lo, hi = min(nums), max(nums)
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    pts = []
    for i, v in enumerate(values):
        if v is None:
            continue
        y = height - 2 - (v - lo) / span * (height - 4)
        pts.append(f"{i * step:.1f},{y:.1f}")
    return " ".join(pts)


def register(console: ConsoleApp) -> None:
    """Add the data pages and their navigation entries."""
    runtime = console.runtime
    store = runtime.store
    for item in (
        NavItem("dashboard", "/", N_("Dashboard"), N_("Analytics"), order=10),
        NavItem("trends", "/trends", N_("Trends"), N_("Analytics"), "explore", order=20),
        NavItem("funnels", "/funnels", N_("Funnels"), N_("Analytics"), "explore", order=30),
        NavItem("retention", "/retention", N_("Retention"), N_("Analytics"), "explore", order=40),
        NavItem("lifecycle", "/lifecycle", N_("Lifecycle"), N_("Analytics"), "view", order=50),
    ):
        console.nav(item)

    def page(
        request: Request,
        template: str,
        permission: str,
        compute: Callable[[Ctx, DateRange], tuple[Any, dict[str, Any]]],
        csv_name: str,
        default_days: int = 30,
    ) -> Response:
        """The shared shape of a data page: context, range, empty/error states, CSV."""
        ctx = console.context(request, permission)
        want_csv = ctx.param("format") == "csv"
        if want_csv and not ctx.can("export"):
            return console.render(ctx, "error_inline.html", 403, reason="export")
        values: dict[str, Any] = {"result": None, "error": None, "empty": False}
        if ctx.project is None:
            return console.render(ctx, template, **values, no_project=True, dr=None, chart=None)
        dr, range_error = console.date_range(ctx, default_days)
        values.update(dr=dr, range_error=range_error, span=console.span(ctx.project))
        values["events"] = console.events(ctx.project)
        if values["span"].events == 0:
            values["empty"] = True
            return console.render(ctx, template, **values, chart=None)
        try:
            if want_csv or console.compute_wait is None:
                result, extra = compute(ctx, dr)
            else:
                # a long analysis answers with a "computing" page that reloads itself, instead
                # of a browser spinning without a word; the reload picks up the same work
                key = (ctx.locale, ctx.project.id, request.url.path, request.url.query)
                running = console.start(key, lambda: compute(ctx, dr))
                try:
                    result, extra = running.result(timeout=console.compute_wait)
                except FutureTimeout:
                    return console.render(ctx, template, **values, computing=True, chart=None)
                finally:
                    console.finish(key, running)
        except AnalyticsError as exc:
            if want_csv:
                return Response(ctx.tr(exc), status_code=400, media_type="text/plain")
            values["error"] = ctx.tr(exc)
            return console.render(ctx, template, 400, **values, chart=None)
        if want_csv:
            name = f"{ctx.project.name}-{csv_name}-{dr.date_from}-{dr.date_to}.csv"
            return csv_response(result.table(), name)
        values.update(result=result, **extra)
        return console.render(ctx, template, **values)

    # -- dashboard ----------------------------------------------------------------------------------

    @console.router.get("/")
    def dashboard_page(request: Request) -> Response:
        """数据看板: KPI cards with change vs the previous period and a sparkline each."""

        def compute(ctx: Ctx, dr: DateRange) -> tuple[Any, dict[str, Any]]:
            assert ctx.project is not None
            project = ctx.project
            board = console.dashboard(project, dr)
            by_name = {k.spec.metric: k for k in board.kpis}
            chart = {
                "data": [
                    {
                        "type": "bar",
                        "name": ctx.gettext("New users"),
                        "x": list(by_name["new_users"].labels),
                        "y": list(by_name["new_users"].daily),
                        "marker": {"color": PALETTE[1]},
                    },
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": ctx.gettext("DAU"),
                        "x": list(by_name["dau"].labels),
                        "y": list(by_name["dau"].daily),
                        "line": {"color": PALETTE[0], "width": 2},
                    },
                ],  # fmt: skip
                "layout": layout(ctx, barmode="group"),
            }
            cards = [(k, sparkline(k.daily)) for k in board.kpis]
            return board, {"chart": chart, "cards": cards}

        return page(request, "dashboard.html", "view", compute, "dashboard")

    # -- trends -------------------------------------------------------------------------------------

    @console.router.get("/trends")
    def trends_page(request: Request) -> Response:
        """Trends explorer: up to three series, interval, breakdown, compare."""

        def compute(ctx: Ctx, dr: DateRange) -> tuple[Any, dict[str, Any]]:
            assert ctx.project is not None
            project = ctx.project
            # the form sends one event and one measure per row; empty rows are skipped
            events = request.query_params.getlist("event")
            maths = request.query_params.getlist("math")
            pairs: list[tuple[str | None, str]] = []
            for i, e in enumerate(events):
                m = maths[i] if i < len(maths) and maths[i] in d.TREND_MATHS else "total"
                if e.strip():
                    pairs.append((None if e.strip() == "*" else e.strip(), m))
            pairs = pairs[:3] or [("app_install", "total")]
            notice = unknown_events(console, ctx, [e for e, _ in pairs])
            interval = ctx.param("interval", "day")
            interval = interval if interval in d.INTERVALS else "day"
            breakdown = ctx.param("breakdown")
            breakdown = breakdown if breakdown in d.BREAKDOWNS else ""
            compare = ctx.param("compare") == "1"
            result: d.TrendsPage = console.cached(
                project,
                ("trends", dr, tuple(pairs), interval, breakdown, compare),
                lambda: d.trends_page(store, project, dr, pairs, interval, breakdown, compare),
            )
            traces = []
            for i, s in enumerate(result.result.series):
                name = s.label if s.breakdown_value is None else f"{s.label} · {s.breakdown_value}"
                if s.compare == "previous":
                    name += " · " + ctx.gettext("previous period")
                traces.append(
                    {
                        "type": "scatter",
                        "mode": "lines+markers" if len(s.labels) < 40 else "lines",
                        "name": name,
                        # the previous period is drawn over the current one's dates
                        "x": list(result.result.series[0].labels),
                        "y": list(s.values),
                        "line": {
                            "color": PALETTE[i % len(PALETTE)],
                            "dash": "dot" if s.compare == "previous" else "solid",
                        },
                    }
                )
            chart = {"data": traces, "layout": layout(ctx)}
            form = {"pairs": pairs, "interval": interval,
                    "breakdown": breakdown, "compare": compare}  # fmt: skip
            return result, {"chart": chart, "form": form, "notice": notice}

        return page(request, "trends.html", "explore", compute, "trends")

    # -- funnels ------------------------------------------------------------------------------------

    @console.router.get("/funnels")
    def funnels_page(request: Request) -> Response:
        """Funnel builder: ordered steps, a conversion window, an optional breakdown."""

        def compute(ctx: Ctx, dr: DateRange) -> tuple[Any, dict[str, Any]]:
            assert ctx.project is not None
            project = ctx.project
            steps = ctx.params("step") or ["app_install", "sign_up", "edit_video",
                                           "export_video", "purchase_membership"]  # fmt: skip
            raw_window = ctx.param("window", "14")
            breakdown = ctx.param("breakdown")
            breakdown = breakdown if breakdown in d.BREAKDOWNS else ""
            order = ctx.param("order", "ordered")
            order = order if order in d.FUNNEL_ORDERS else "ordered"
            view = ctx.param("view", "steps")
            view = view if view in d.FUNNEL_VIEWS else "steps"
            form = {"steps": steps, "window": raw_window, "breakdown": breakdown,
                    "order": order, "view": view}  # fmt: skip
            window = int(raw_window) if raw_window.isascii() and raw_window.isdigit() else 0
            if not 1 <= window <= MAX_WINDOW_DAYS:
                raise d_invalid(
                    M_("The conversion window is a whole number of days from 1 to {max}, "
                       "not {window!r}.", max=MAX_WINDOW_DAYS, window=raw_window)
                )  # fmt: skip
            if len(steps) < 2:
                raise d_invalid(M_("A funnel needs at least two steps."))
            if order == "unordered" and view == "time":
                raise d_invalid(
                    M_("Steps in any order have no time to convert: choose steps in order.")
                )
            notice = unknown_events(console, ctx, steps)
            result: d.FunnelPage = console.cached(
                project,
                ("funnel", dr, tuple(steps), window, breakdown, order, view),
                lambda: d.funnel_page(store, project, dr, steps, window, breakdown, order, view),
            )
            names = [f"{s.index + 1}. {s.name}" for s in result.result.steps]
            traces = [
                {"type": "bar", "name": ctx.gettext("All users"), "x": names,
                 "y": [s.count for s in result.result.steps],
                 "text": [ctx.fmt.percent(s.conversion_from_first) for s in result.result.steps],
                 "textposition": "auto", "marker": {"color": PALETTE[0]}}
            ]  # fmt: skip
            for i, b in enumerate(result.result.breakdowns[:8]):
                traces.append(
                    {"type": "bar", "name": b.value or ctx.gettext("(not set)"), "x": names,
                     "y": [s.count for s in b.steps], "marker": {"color": PALETTE[(i + 1) % 10]}}
                )  # fmt: skip
            chart = {"data": traces, "layout": layout(ctx, barmode="group", hovermode="closest")}
            if result.times is not None:  # persons per bin of hours from the first step
                bins = result.times.bins
                chart = {
                    "data": [
                        {"type": "bar", "name": ctx.gettext("Users"),
                         "x": [ctx.fmt.number(b.lower_seconds / 3600, 1) for b in bins],
                         "y": [b.count for b in bins], "marker": {"color": PALETTE[0]}}
                    ],
                    "layout": layout(ctx, bargap=0.05, xaxis={
                        "gridcolor": "#eaeef2", "type": "category",
                        "title": {"text": ctx.gettext("Hours from the first step")}}),
                }  # fmt: skip
            if result.trend is not None:
                t = result.trend
                chart = {
                    "data": [
                        {"type": "scatter", "mode": "lines+markers",
                         "name": ctx.gettext("Conversion"), "x": list(t.labels),
                         "y": list(t.conversion_rate), "marker": {"color": PALETTE[0]}}
                    ],
                    "layout": layout(ctx, yaxis={"gridcolor": "#eaeef2", "rangemode": "tozero",
                                                 "tickformat": ".0%"}),
                }  # fmt: skip
            return result, {"chart": chart, "form": form, "notice": notice}

        return page(request, "funnels.html", "explore", compute, "funnel")

    # -- retention ----------------------------------------------------------------------------------

    @console.router.get("/retention")
    def retention_page(request: Request) -> Response:
        """Retention matrix as a heat map: cohorts by first target event, returns by period."""

        def compute(ctx: Ctx, dr: DateRange) -> tuple[Any, dict[str, Any]]:
            assert ctx.project is not None
            project = ctx.project
            target = ctx.param("target", "app_install")
            returning = ctx.param("return", "*")
            period = ctx.param("period", "day")
            period = period if period in ("day", "week", "month") else "day"
            form = {"target": target, "return": returning, "period": period}
            notice = unknown_events(console, ctx, [target, returning])
            result: d.RetentionPage = console.cached(
                project,
                ("retention", dr, target, returning, period),
                lambda: d.retention_page(
                    store, project, dr, None if target == "*" else target,
                    None if returning == "*" else returning, period,
                ),
            )  # fmt: skip
            cohorts = result.result.cohorts
            n = max((len(c.retained) for c in cohorts), default=0)
            z: list[list[float | None]] = []
            text: list[list[str]] = []
            for c in cohorts:
                rates = [None if r is None else round(r * 100, 1) for r in c.rates]
                rates += [None] * (n - len(rates))
                z.append(rates)
                text.append(["" if r is None else f"{r:.1f}%" for r in rates])
            ylabels = [f"{c.label} ({c.size})" for c in cohorts]
            small = n <= 31 and len(cohorts) <= 40
            heatmap = {
                "type": "heatmap", "z": z, "text": text, "x": [str(i) for i in range(n)],
                "y": ylabels, "colorscale": [[0, "#f6f8fa"], [0.15, "#c6dbfb"], [1, "#1f4fbf"]],
                "zmin": 0, "zmax": 100, "hoverongaps": False, "colorbar": {"ticksuffix": "%"},
                "texttemplate": "%{text}" if small else "", "hovertemplate": "%{y} · %{x}: %{text}<extra></extra>",
            }  # fmt: skip
            chart = {
                "data": [heatmap],
                "layout": layout(
                    ctx, hovermode="closest", height=max(320, 22 * len(cohorts) + 80),
                    yaxis={"autorange": "reversed", "type": "category", "automargin": True},
                    xaxis={"type": "category", "title": {"text": ctx.gettext(LATER[period])}},
                ),
            }  # fmt: skip
            return result, {"chart": chart, "form": form, "periods": n, "notice": notice}

        return page(request, "retention.html", "explore", compute, "retention")

    # -- lifecycle ----------------------------------------------------------------------------------

    @console.router.get("/lifecycle")
    def lifecycle_page(request: Request) -> Response:
        """Lifecycle: new, returning, resurrecting and dormant persons per period."""

        def compute(ctx: Ctx, dr: DateRange) -> tuple[Any, dict[str, Any]]:
            assert ctx.project is not None
            project = ctx.project
            event = ctx.param("event", "*")
            interval = ctx.param("interval", "day")
            interval = interval if interval in ("day", "week", "month") else "day"
            form = {"event": event, "interval": interval}
            notice = unknown_events(console, ctx, [event])
            result: d.LifecyclePage = console.cached(
                project,
                ("lifecycle", dr, event, interval),
                lambda: d.lifecycle_page(
                    store, project, dr, None if event == "*" else event, interval
                ),
            )
            r = result.result
            traces = []
            for key, label in d.LIFECYCLE_STATES:
                values = list(getattr(r, key))
                traces.append(
                    {"type": "bar", "name": ctx.gettext(label), "x": list(r.labels),
                     "y": [-abs(v) for v in values] if key == "dormant" else values,
                     "marker": {"color": LIFECYCLE_COLORS[key]}}
                )  # fmt: skip
            chart = {"data": traces, "layout": layout(ctx, barmode="relative")}
            return result, {"chart": chart, "form": form, "notice": notice}

        return page(request, "lifecycle.html", "view", compute, "lifecycle")


def d_invalid(message: str) -> Exception:
    """An analytics error carrying a message for the page's error state."""
    return InvalidQuery(message)


def unknown_events(console: ConsoleApp, ctx: Ctx, names: Sequence[str | None]) -> str | None:
    """A notice, in the page's language, naming event names the project never received (the
    analysis still runs: an unknown event is a flat line, not an error); ``*`` and None mean any
    event. Only checked when the picker lists every name."""
    assert ctx.project is not None
    events = console.events(ctx.project)
    if len(events) >= d.EVENT_NAMES_LIMIT:
        return None
    for name in names:
        if name and name != "*" and name not in events:
            return ctx.tr(
                M_("No event named {event!r} was received in this project: pick one from the "
                   "list (names must match what your app sends exactly).", event=name)
            )  # fmt: skip
    return None
