"""Audience pages (用户): segments (list, detail with members and persona, rule editor, recompute,
CSV), 用户分层 (lifecycle stages over time, transitions, RFM classes) and the person profile.

Everything comes from :mod:`yunying.audience` called as plain functions; reading needs ``view``
(lists and reports) or ``explore`` (members, personas, person profiles), changing a segment
needs ``segments``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import date, timedelta
from typing import Any, Literal, TypeVar

import orjson
import yaml
from fastapi import Request
from fastapi.responses import Response

from yunying.analytics import DateRange, InvalidQuery
from yunying.audience.profile import PersonNotFound, person_events, person_profile
from yunying.audience.rfm import rfm_report
from yunying.audience.segment_persona import segment_persona, stored_persona
from yunying.audience.segments import (
    DependencyCycle,
    InvalidSegment,
    Segment,
    compute_segment,
    create_segment,
    export_rows,
    get_segment,
    list_segments,
    members_page,
    parse_csv,
    preview,
    size_history,
    snapshot_segment,
    update_segment,
    upload_members,
)
from yunying.audience.settings import get_settings
from yunying.audience.stages import STAGE_NAMES_ZH, STAGES, local_today, stages_and_transitions
from yunying.console.data import N_, Table
from yunying.console.web import ConsoleApp, Ctx, NavItem, csv_response, redirect
from yunying.errors import M_, Conflict, NotFound, YunyingError

T = TypeVar("T")
PAGE_SIZE = 50
#: Largest member list accepted from the browser (bytes); bigger lists go through the API/CLI.
MAX_UPLOAD = 20 * 1024 * 1024
#: Fields of the static-segment upload form (distinct from the rule editor's on the same page),
#: by the field names :mod:`yunying.audience.segments` reports.
UPLOAD_FIELDS = {"name": "static_name", "description": "static_description", "body": "members",
                 "id_type": "id_type", "kind": "members", "mode": "mode"}  # fmt: skip
#: An example rule for a new segment (docs/audience.md).
EXAMPLE_RULE = """type: and
rules:
  - {type: event, event: purchase_membership, count: at_least, times: 1, window: {last_days: 30}}
  - {type: event, event: edit_video, count: at_least, times: 3, window: {last_days: 7}}
"""
DIMENSION_LABELS = {
    "channel": N_("First-touch channel"),
    "os": N_("OS"),
    "device": N_("Device type"),
    "city": N_("City"),
}
STAGE_LABELS = {
    "new": N_("New"),
    "active": N_("Active"),
    "retained": N_("Retained"),
    "silent": N_("Silent"),
    "churned": N_("Churned"),
    "returned": N_("Returned"),
    "none": N_("(not yet seen)"),
}


def sparkline(values: list[int], width: int = 120, height: int = 24) -> str:
    """An SVG polyline's points for ``values`` (empty when fewer than two)."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1
    step = width / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
        for i, v in enumerate(values)
    )


def csv_denied(console: ConsoleApp, ctx: Ctx) -> Response | None:
    """A 403 page when a role without ``export`` asks for a CSV (as the analytics pages do)."""
    if ctx.param("format") == "csv" and not ctx.can("export"):
        return console.render(ctx, "error_inline.html", 403, reason="export")
    return None


def slow(console: ConsoleApp, ctx: Ctx, compute: Callable[[], T]) -> tuple[bool, T | None]:
    """``(True, result)``, or ``(False, None)`` when the computation takes longer than the
    console's ``compute_wait`` (the page then shows the self-reloading "computing" state and the
    reload picks up the same work)."""
    if console.compute_wait is None or ctx.param("format") == "csv":
        return True, compute()
    assert ctx.project is not None
    key = (ctx.locale, ctx.project.id, ctx.request.url.path, ctx.request.url.query)
    running = console.start(key, compute)
    try:
        return True, running.result(timeout=console.compute_wait)
    except FutureTimeout:
        return False, None
    finally:
        console.finish(key, running)


def parse_rule_text(text: str) -> Any:
    """A rule tree from the editor's YAML or JSON text (:class:`InvalidSegment` otherwise)."""
    try:
        data = orjson.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidSegment(
            M_("not valid YAML or JSON: {error}", error=str(exc)), "rules"
        ) from None
    if not isinstance(data, dict):
        raise InvalidSegment(M_("a rule is a mapping with a type field"), "rules")
    return data


def rule_form(form: Any) -> dict[str, str]:
    """A segment or tag editor's fields as typed (``name``, ``description``, ``schedule``,
    ``text``), also what the form shows again when a save is refused."""
    return {
        "name": str(form.get("name") or "").strip(),
        "description": str(form.get("description") or "").strip(),
        "schedule": str(form.get("schedule_minutes") or "").strip(),
        "text": str(form.get("rules") or ""),
    }


def save_problems(exc: YunyingError) -> list[dict[str, Any]]:
    """The field problems of a refused segment or tag save: a rule's own list, a dependency
    cycle on the rules, a taken name on the name, anything else for the whole form."""
    from yunying.audience.tags import InvalidTag

    if isinstance(exc, InvalidSegment | InvalidTag):
        return list(exc.errors)
    field = (
        "rules" if isinstance(exc, DependencyCycle) else "name" if isinstance(exc, Conflict) else ""
    )
    return [{"field": field, "message": exc.message}]


def rule_text(seg: Segment | None) -> str:
    """The stored rule as YAML for the editor."""
    if seg is None or seg.rules is None:
        return EXAMPLE_RULE
    return str(yaml.safe_dump(seg.rules, allow_unicode=True, sort_keys=False))


def register(console: ConsoleApp) -> None:
    """Add the segment, 用户分层 and person pages."""
    runtime = console.runtime
    console.nav(NavItem("segments", "/segments", N_("Segments"), N_("Audience"), "view", 200))
    console.nav(
        NavItem("layers", "/audience/layers", N_("User layers"), N_("Audience"), "view", 210)
    )
    console.nav(
        NavItem("persons", "/persons", N_("Person profile"), N_("Audience"), "explore", 220)
    )

    def no_project(ctx: Ctx, template: str, **values: Any) -> Response:
        return console.render(ctx, template, no_project=True, **values)

    @console.router.get("/segments")
    def segments_page(request: Request) -> Response:
        """Every segment with its size, last computation, schedule and size sparkline."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return no_project(ctx, "segments.html", rows=[])
        rows: list[dict[str, Any]] = []
        for seg in list_segments(runtime.state, ctx.project.id):
            sizes = [int(h["size"]) for h in size_history(runtime.state, seg.id, 30)]
            rows.append({"seg": seg, "spark": sparkline(sizes)})
        if ctx.param("format") == "csv" and ctx.can("export"):
            table = Table(
                ("id", "name", "kind", "size", "last_computed_at", "schedule_minutes", "error"),
                tuple(
                    (
                        r["seg"].id,
                        r["seg"].name,
                        r["seg"].kind,
                        r["seg"].size,
                        r["seg"].last_computed_at.isoformat() if r["seg"].last_computed_at else "",
                        r["seg"].schedule_minutes,
                        r["seg"].last_error or "",
                    )
                    for r in rows
                ),
            )
            return csv_response(table, "segments.csv")
        return console.render(ctx, "segments.html", rows=rows)

    def editor(
        ctx: Ctx,
        seg: Segment | None,
        *,
        name: str = "",
        description: str = "",
        schedule: str = "",
        text: str | None = None,
        errors: list[dict[str, str]] | None = None,
        size: int | None = None,
        status: int = 200,
        upload: dict[str, str] | None = None,
    ) -> Response:
        return console.render(
            ctx,
            "segment_form.html",
            status,
            seg=seg,
            name=name or (seg.name if seg else ""),
            description=description or (seg.description if seg else ""),
            schedule=schedule
            or (str(seg.schedule_minutes) if seg and seg.schedule_minutes else ""),
            text=rule_text(seg) if text is None else text,
            errors=ctx.field_errors(errors or []),
            preview_size=size,
            upload=upload or {},
        )

    @console.router.get("/segments/new")
    def segment_new(request: Request) -> Response:
        """The rule editor for a new segment."""
        ctx = console.context(request, "segments")
        return editor(ctx, None)

    @console.router.get("/segments/{seg_id:int}/edit")
    def segment_edit(request: Request, seg_id: int) -> Response:
        """The rule editor for an existing segment."""
        ctx = console.context(request, "segments")
        assert ctx.project is not None
        try:
            seg = get_segment(runtime.state, ctx.project.id, seg_id)
        except NotFound:
            return console.render(
                ctx, "message.html", 404, message=ctx.gettext("No such segment."), back="/segments"
            )
        return editor(ctx, seg)

    @console.router.post("/segments/save")
    async def segment_save(request: Request) -> Response:
        """Preview the size of the rule, or save (create or update) and compute the segment."""
        ctx = console.context(request, "segments")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/segments")
        project = ctx.project
        sid = str(form.get("segment_id") or "")
        try:
            seg = get_segment(runtime.state, project.id, int(sid)) if sid.isdigit() else None
        except NotFound:
            return redirect("/segments")
        keep: dict[str, Any] = rule_form(form)
        name, description, schedule, text = (
            keep[k] for k in ("name", "description", "schedule", "text")
        )
        try:
            rules = parse_rule_text(text)
            minutes = int(schedule) if schedule else None
            if form.get("action") == "preview":
                size = int(preview(runtime, project, rules)["size"])
                return editor(ctx, seg, size=size, **keep)
            if seg is None:
                seg = create_segment(
                    runtime,
                    project,
                    name,
                    rules=rules,
                    description=description,
                    schedule_minutes=minutes,
                )
            else:
                seg = update_segment(
                    runtime,
                    project,
                    seg.id,
                    {
                        "name": name,
                        "description": description,
                        "rules": rules,
                        "schedule_minutes": minutes,
                    },
                )
        except ValueError:
            errs = [{"field": "schedule_minutes", "message": ctx.gettext("Enter whole minutes.")}]
            return editor(ctx, seg, errors=errs, status=400, **keep)
        except YunyingError as exc:
            return editor(ctx, seg, errors=save_problems(exc), status=400, **keep)
        # a failure is stored as the segment's last_error, which its page shows
        with contextlib.suppress(Exception):
            compute_segment(runtime, project, seg.id)
        return redirect(f"/segments/{seg.id}")

    async def read_upload(form: Any) -> tuple[str | None, list[dict[str, Any]]]:
        """The uploaded CSV as text, or the problem with it (field ``members``)."""
        file = form.get("members")
        raw = await file.read(MAX_UPLOAD + 1) if hasattr(file, "read") else b""
        if not raw:
            return None, [{"field": "members", "message": M_("Choose a CSV file of user ids.")}]
        if len(raw) > MAX_UPLOAD:
            return None, [{"field": "members", "message": M_(
                "The file is larger than {mb} MB; upload it with `yunying segment upload` "
                "instead.", mb=MAX_UPLOAD // 1024 // 1024)}]  # fmt: skip
        try:
            return raw.decode("utf-8-sig"), []
        except UnicodeDecodeError:
            return None, [{"field": "members",
                           "message": M_("The file is not UTF-8 text; save it as CSV (UTF-8).")}]  # fmt: skip

    def upload_errors(exc: InvalidSegment | Conflict) -> list[dict[str, Any]]:
        if isinstance(exc, InvalidSegment):
            return [{"field": UPLOAD_FIELDS.get(str(e.get("field")), "members"),
                     "message": e.get("message")} for e in exc.errors]  # fmt: skip
        return [{"field": "static_name", "message": exc.message}]

    def uploaded(seg_id: int, report: Any) -> Response:
        return redirect(
            f"/segments/{seg_id}?uploaded={report.rows}&matched={report.matched}"
            f"&unmatched={report.unmatched}"
        )

    @console.router.post("/segments/upload")
    async def segment_upload_new(request: Request) -> Response:
        """A new static segment whose members are the ids of an uploaded CSV file."""
        ctx = console.context(request, "segments")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/segments")
        project = ctx.project
        keep = {"static_name": str(form.get("static_name") or "").strip(),
                "static_description": str(form.get("static_description") or "").strip(),
                "id_type": str(form.get("id_type") or "")}  # fmt: skip
        id_type = keep["id_type"] or None
        text, errors = await read_upload(form)
        try:
            if text is not None:
                parse_csv(text, id_type)  # refuse an unusable file before creating anything
        except InvalidSegment as exc:
            errors = upload_errors(exc)
        if errors or text is None:
            return editor(ctx, None, errors=errors, status=400, upload=keep)
        try:
            seg = create_segment(
                runtime, project, keep["static_name"], kind="static",
                description=keep["static_description"], source="upload",
            )  # fmt: skip
            report = upload_members(runtime, project, seg.id, text, id_type, "replace")
        except (InvalidSegment, Conflict) as exc:
            return editor(ctx, None, errors=upload_errors(exc), status=400, upload=keep)
        return uploaded(seg.id, report)

    @console.router.post("/segments/{seg_id:int}/upload")
    async def segment_upload(request: Request, seg_id: int) -> Response:
        """Replace (or extend) a static segment's members with an uploaded CSV file."""
        ctx = console.context(request, "segments")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/segments")
        mode: Literal["replace", "append"] = "append" if form.get("mode") == "append" else "replace"
        id_type = str(form.get("id_type") or "") or None
        text, errors = await read_upload(form)
        if text is not None:
            try:
                report = upload_members(runtime, ctx.project, seg_id, text, id_type, mode)
                return uploaded(seg_id, report)
            except NotFound:
                return redirect("/segments")
            except InvalidSegment as exc:
                errors = upload_errors(exc)
        return detail(request, ctx, seg_id, errors, 400)

    @console.router.post("/segments/{seg_id:int}/snapshot")
    async def segment_snapshot(request: Request, seg_id: int) -> Response:
        """A static copy of the segment's current members (computed first if it never was)."""
        ctx = console.context(request, "segments")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/segments")
        name = str(form.get("snapshot_name") or "").strip() or None
        try:
            snap = snapshot_segment(runtime, ctx.project, seg_id, name)
        except NotFound:
            return redirect("/segments")
        except (InvalidSegment, Conflict) as exc:
            field = "snapshot_name"
            return detail(request, ctx, seg_id, [{"field": field, "message": exc.message}], 400)
        return redirect(f"/segments/{snap.id}")

    @console.router.post("/segments/{seg_id:int}/recompute")
    async def segment_recompute(request: Request, seg_id: int) -> Response:
        """Compute the segment now."""
        ctx = console.context(request, "segments")
        console.check_csrf(ctx, await request.form())
        assert ctx.project is not None
        try:
            compute_segment(runtime, ctx.project, seg_id)
        except NotFound:
            return redirect("/segments")
        except Exception:  # noqa: BLE001 - recorded in last_error and shown on the page
            pass
        return redirect(f"/segments/{seg_id}")

    @console.router.get("/segments/{seg_id:int}")
    def segment_detail(request: Request, seg_id: int) -> Response:
        """A segment: size history, a page of members and its persona next to everyone."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        return detail(request, ctx, seg_id)

    def detail(
        request: Request,
        ctx: Ctx,
        seg_id: int,
        errors: list[dict[str, Any]] | None = None,
        status: int = 200,
    ) -> Response:
        assert ctx.project is not None
        project = ctx.project
        try:
            seg = get_segment(runtime.state, project.id, seg_id)
        except NotFound:
            return console.render(ctx, "message.html", 404, message=ctx.gettext("No such segment."))
        if ctx.param("format") == "csv" and ctx.can("export"):
            computed_at = seg.last_computed_at
            if ctx.param("table") == "persona" and ctx.can("explore") and computed_at:
                stored = segment_persona(runtime, project, seg.id, computed_at)
                return csv_response(persona_table(stored), f"segment-{seg.id}-persona.csv")
            rows = tuple(tuple(r) for r in export_rows(runtime, project, seg.scope))
            return csv_response(Table(rows[0], rows[1:]), f"segment-{seg.id}.csv")
        history = size_history(runtime.state, seg.id, 200)
        chart = None
        if len(history) > 1:
            chart = {
                "data": [
                    {
                        "type": "scatter",
                        "mode": "lines+markers",
                        "x": [h["computed_at"] for h in history],
                        "y": [h["size"] for h in history],
                        "name": ctx.gettext("Size"),
                    }
                ],
                "layout": {"height": 220, "margin": {"t": 10, "b": 40, "l": 50, "r": 10}},
            }
        members = None
        report = None
        persona_error = None
        lift_chart = None
        computing = False
        page = max(0, int(ctx.param("page", "0") or 0)) if ctx.param("page").isdigit() else 0
        if ctx.can("explore") and seg.last_computed_at is not None:
            members = console.cached(
                project,
                ("members", seg.id, str(seg.last_computed_at), page),
                lambda: members_page(runtime, project, seg.scope, PAGE_SIZE, page * PAGE_SIZE),
            )
            try:
                computed_at = seg.last_computed_at
                # stored with the computation; computed (and stored) here only when missing
                report = stored_persona(runtime.state, seg.id, computed_at)
                if report is None:
                    done, report = slow(
                        console,
                        ctx,
                        lambda: console.cached(
                            project,
                            ("persona", seg.id, str(computed_at)),
                            lambda: segment_persona(runtime, project, seg.id, computed_at),
                        ),
                    )
                    computing = not done
                lift_chart = persona_chart(ctx, report) if report else None
            except (InvalidQuery, YunyingError) as exc:
                persona_error = ctx.tr(exc)
        return console.render(
            ctx,
            "segment_detail.html",
            status,
            seg=seg,
            history=history,
            chart=chart or lift_chart,
            size_chart=chart,
            lift_chart=lift_chart,
            members=members,
            page=page,
            page_size=PAGE_SIZE,
            report=report,
            persona_error=persona_error,
            dim_labels=DIMENSION_LABELS,
            computing=computing,
            errors=ctx.field_errors(errors or []),
            upload_report={k: ctx.param(k) for k in ("uploaded", "matched", "unmatched")}
            if ctx.param("uploaded").isdigit()
            else None,
        )

    @console.router.get("/audience/layers")
    def layers(request: Request) -> Response:
        """用户分层: lifecycle stages over time, stage transitions and the eight RFM classes."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return no_project(ctx, "layers.html")
        project = ctx.project
        interval = ctx.param("interval", "week")
        if interval not in ("day", "week", "month"):
            interval = "week"
        today = local_today(project.timezone)
        periods = {"day": 30, "week": 12, "month": 6}[interval]
        first = {
            "day": today - timedelta(days=periods - 1),
            "week": today - timedelta(weeks=periods - 1),
            "month": date(today.year - (1 if today.month <= periods - 1 else 0),
                          (today.month - periods) % 12 + 1, 1),
        }[interval]  # fmt: skip
        dr = DateRange(first, today, project.timezone)
        settings = get_settings(runtime.state, project.id)
        store = runtime.store

        def compute() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            timeline, transitions = stages_and_transitions(
                store, project.id, settings, dr, interval
            )
            return (
                timeline,
                transitions,
                rfm_report(store, project.id, settings, today, project.timezone),
            )

        try:
            done, found = slow(
                console,
                ctx,
                lambda: console.cached(
                    project, ("layers", interval, today, str(settings)), compute
                ),
            )
        except (InvalidQuery, YunyingError) as exc:
            return console.render(ctx, "layers.html", error=ctx.tr(exc), interval=interval)
        if not done or found is None:
            return console.render(ctx, "layers.html", computing=True, interval=interval)
        timeline, transitions, rfm = found
        last = transitions["periods"][-1] if transitions["periods"] else None
        trans_rows = sorted((last["transitions"] if last else []), key=lambda t: -int(t["persons"]))
        table = ctx.param("table", "rfm")

        def stage_name(stage: str) -> str:
            """The stage's Chinese name from the audience module in Chinese, else English."""
            if ctx.locale == "zh_CN" and stage in STAGE_NAMES_ZH:
                return STAGE_NAMES_ZH[stage]
            return ctx.gettext(STAGE_LABELS.get(stage, stage))

        if ctx.param("format") == "csv" and ctx.can("export"):
            if table == "stages":
                cols = ("period_end", *STAGES)
                rows = tuple(
                    (end, *(timeline["stages"][s][i] for s in STAGES))
                    for i, end in enumerate(timeline["as_of"])
                )
                return csv_response(Table(cols, rows), "stages.csv")
            if table == "transitions":
                return csv_response(
                    Table(
                        ("from", "to", "persons"),
                        tuple((t["from"], t["to"], t["persons"]) for t in trans_rows),
                    ),
                    "stage-transitions.csv",
                )
            return csv_response(
                Table(
                    ("class", "name_zh", "persons", "share", "revenue", "revenue_share"),
                    tuple(
                        (
                            c["class"],
                            c["name_zh"],
                            c["persons"],
                            c["share"],
                            c["revenue"],
                            c["revenue_share"],
                        )
                        for c in rfm["classes"]
                    ),  # fmt: skip
                ),
                "rfm.csv",
            )
        chart = {
            "data": [
                {
                    "type": "bar",
                    "name": stage_name(s),
                    "x": timeline["labels"],
                    "y": timeline["stages"][s],
                }
                for s in STAGES
            ],
            "layout": {
                "barmode": "stack",
                "xaxis": {"type": "category"},
                "height": 340,
                "margin": {"t": 10, "b": 40, "l": 50, "r": 10},
                "legend": {"orientation": "h"},
            },
        }
        return console.render(
            ctx,
            "layers.html",
            chart=chart,
            interval=interval,
            last=last,
            transitions=trans_rows,
            rfm=rfm,
            stage_name=stage_name,
            error=None,
        )

    @console.router.get("/persons")
    def person_page(request: Request) -> Response:
        """A person's profile and latest events, found by distinct id or person id."""
        ctx = console.context(request, "explore")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        key = ctx.param("q")
        profile = events = None
        error = None
        if key and ctx.project is not None:
            project = ctx.project
            settings = get_settings(runtime.state, project.id)
            today = local_today(project.timezone)
            try:
                profile, events = console.cached(
                    project,
                    ("person", key, today, str(settings)),
                    lambda: (
                        person_profile(
                            runtime.store, project.id, key, settings, project.timezone, today
                        ),
                        person_events(runtime.store, project.id, key, 50),
                    ),
                )
            except PersonNotFound:
                error = ctx.gettext(
                    "No person has this id. Check the distinct id your app sends "
                    "(a user id or device id) or copy one from a segment's member list."
                )
            if profile and ctx.param("format") == "csv" and ctx.can("export"):
                assert events is not None
                return csv_response(
                    Table(
                        ("timestamp", "event", "distinct_id", "amount", "properties"),
                        tuple(
                            (
                                e["timestamp"],
                                e["event"],
                                e["distinct_id"],
                                e.get("amount"),
                                orjson.dumps(e["properties"]).decode(),
                            )
                            for e in events["events"]
                        ),  # fmt: skip
                    ),
                    "person-events.csv",
                )
        return console.render(
            ctx, "person.html", q=key, profile=profile, events=events, error=error
        )


def persona_table(report: dict[str, Any]) -> Table:
    """A persona as one CSV: each dimension's values (segment and everyone, shares, lift), the
    top events (their rates and reach), active-day buckets and revenue, one row each."""
    head = ("section", "name", "value", "segment", "segment_share", "everyone",
            "everyone_share", "lift")  # fmt: skip
    rows: list[tuple[Any, ...]] = []
    for dist in report["distributions"]:
        for v in dist["values"]:
            rows.append(("distribution", dist["field"], v["value"], v["group"], v["group_share"],
                         v["population"], v["population_share"], v["lift"]))  # fmt: skip
    for e in report["top_events"]:
        rows.append(("event_rate", e["event"], None, e["group_rate"], e["group_reach"],
                     e["population_rate"], e["population_reach"], e["lift"]))  # fmt: skip
    group, everyone = report["active_days"]["group"], report["active_days"]["population"]
    for mine, all_ in zip(group["buckets"], everyone["buckets"], strict=True):
        rows.append(("active_days", "bucket", mine["bucket"], mine["persons"], mine["share"],
                     all_["persons"], all_["share"], None))  # fmt: skip
    rows.append(("active_days", "average", None, group["average"], None, everyone["average"],
                 None, None))  # fmt: skip
    money_g, money_p = report["revenue"]["group"], report["revenue"]["population"]
    for key in ("persons", "payers", "revenue", "paying_rate", "arpu", "arppu"):
        rows.append(("revenue", key, None, money_g[key], None, money_p[key], None, None))
    return Table(head, tuple(rows))


def persona_chart(ctx: Ctx, report: dict[str, Any]) -> dict[str, Any] | None:
    """Group vs population shares of the first distribution with values (a grouped bar chart)."""
    for dist in report.get("distributions", []):
        values = [v for v in dist["values"] if v["value"] is not None][:10]
        if not values:
            continue
        x = [str(v["value"]) for v in values]
        return {
            "data": [
                {
                    "type": "bar",
                    "name": ctx.gettext("Segment"),
                    "x": x,
                    "y": [v["group_share"] for v in values],
                },
                {
                    "type": "bar",
                    "name": ctx.gettext("Everyone"),
                    "x": x,
                    "y": [v["population_share"] for v in values],
                },
            ],  # fmt: skip
            "layout": {
                "barmode": "group",
                "height": 280,
                "yaxis": {"tickformat": ".0%"},
                "margin": {"t": 30, "b": 60, "l": 50, "r": 10},
                "title": {
                    "text": ctx.gettext(DIMENSION_LABELS.get(dist["field"], dist["label"])),
                    "font": {"size": 13},
                },
            },
        }
    return None
