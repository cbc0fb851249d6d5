"""Tags (标签): every tag with its size, a tag's members, the rule editor and recompute.

A tag is a named rule tree like a dynamic segment's that stamps its persons (``tag:NAME``), so
rules, analytics and activities can read it. Everything here calls :mod:`yunying.audience.tags`
and the segment computation functions (:func:`~yunying.audience.segments.compute_tag`,
:func:`~yunying.audience.segments.preview`, :func:`~yunying.audience.segments.members_page`,
:func:`~yunying.audience.segments.export_rows`). Reading needs ``view`` (members: ``explore``),
changing a tag needs ``segments``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import yaml
from fastapi import Request
from fastapi.responses import Response

from yunying.audience.segments import (
    InvalidSegment,
    compute_tag,
    export_rows,
    members_page,
    preview,
)
from yunying.audience.tags import Tag, create_tag, get_tag, list_tags, update_tag
from yunying.console.data import N_, Table
from yunying.console.pages.audience import (
    PAGE_SIZE,
    csv_denied,
    parse_rule_text,
    rule_form,
    save_problems,
)
from yunying.console.web import ConsoleApp, Ctx, NavItem, csv_response, redirect
from yunying.errors import M_, NotFound, YunyingError

#: The rule a new tag starts from (docs/audience.md).
EXAMPLE_TAG_RULE = """type: event
event: edit_video
count: at_least
times: 10
window: {last_days: 30}
"""


def tag_rule_text(tag: Tag | None) -> str:
    """The stored rule as YAML for the editor."""
    if tag is None:
        return EXAMPLE_TAG_RULE
    return str(yaml.safe_dump(tag.rules, allow_unicode=True, sort_keys=False))


def register(console: ConsoleApp) -> None:
    """Add the tag pages."""
    runtime = console.runtime
    console.nav(NavItem("tags", "/tags", N_("Tags"), N_("Audience"), "view", 205))

    def missing(ctx: Ctx) -> Response:
        return console.render(
            ctx, "message.html", 404, message=ctx.gettext("No such tag."), back="/tags"
        )

    @console.router.get("/tags")
    def tags_page(request: Request) -> Response:
        """Every tag: name, description, size, last computation, schedule, last error."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return console.render(ctx, "tags.html", no_project=True, tags=[])
        tags = list_tags(runtime.state, ctx.project.id)
        if ctx.param("format") == "csv" and ctx.can("export"):
            table = Table(
                ("id", "name", "description", "size", "last_computed_at", "schedule_minutes",
                 "error"),
                tuple(
                    (t.id, t.name, t.description, t.size,
                     t.last_computed_at.isoformat() if t.last_computed_at else "",
                     t.schedule_minutes, t.last_error or "")
                    for t in tags
                ),
            )  # fmt: skip
            return csv_response(table, "tags.csv")
        return console.render(ctx, "tags.html", tags=tags)

    @console.router.get("/tags/{tag_id:int}")
    def tag_detail(request: Request, tag_id: int) -> Response:
        """A tag: its rule, size and (for explorers) a page of its members; CSV = the members."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return redirect("/tags")
        project = ctx.project
        try:
            tag = get_tag(runtime.state, project.id, tag_id)
        except NotFound:
            return missing(ctx)
        if ctx.param("format") == "csv" and ctx.can("export"):
            rows = tuple(tuple(r) for r in export_rows(runtime, project, tag.scope))
            return csv_response(Table(rows[0], rows[1:]), f"tag-{tag.name}.csv")
        page = int(ctx.param("page")) if ctx.param("page").isdigit() else 0
        members = None
        if ctx.can("explore") and tag.last_computed_at is not None:
            members = console.cached(
                project,
                ("tag-members", tag.id, str(tag.last_computed_at), page),
                lambda: members_page(runtime, project, tag.scope, PAGE_SIZE, page * PAGE_SIZE),
            )
        return console.render(
            ctx,
            "tag_detail.html",
            tag=tag,
            rule=tag_rule_text(tag),
            members=members,
            page=page,
            last_error=ctx.tr(tag.last_error) if tag.last_error else None,
        )

    def editor(
        ctx: Ctx,
        tag: Tag | None,
        *,
        name: str = "",
        description: str = "",
        schedule: str = "",
        text: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        size: int | None = None,
        status: int = 200,
    ) -> Response:
        return console.render(
            ctx,
            "tag_form.html",
            status,
            tag=tag,
            name=tag.name if tag else name,
            description=description or (tag.description if tag else ""),
            schedule=schedule
            or (str(tag.schedule_minutes) if tag and tag.schedule_minutes else ""),
            text=tag_rule_text(tag) if text is None else text,
            errors=ctx.field_errors(errors or []),
            preview_size=size,
        )

    @console.router.get("/tags/new")
    def tag_new(request: Request) -> Response:
        """The rule editor for a new tag."""
        ctx = console.context(request, "segments")
        if ctx.project is None:
            return redirect("/tags")
        return editor(ctx, None)

    @console.router.get("/tags/{tag_id:int}/edit")
    def tag_edit(request: Request, tag_id: int) -> Response:
        """The rule editor for an existing tag (its name is its scope: fixed)."""
        ctx = console.context(request, "segments")
        if ctx.project is None:
            return redirect("/tags")
        try:
            tag = get_tag(runtime.state, ctx.project.id, tag_id)
        except NotFound:
            return missing(ctx)
        return editor(ctx, tag)

    @console.router.post("/tags/save")
    async def tag_save(request: Request) -> Response:
        """Preview the size of the rule, or save (create or update) and compute the tag."""
        ctx = console.context(request, "segments")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/tags")
        project = ctx.project
        tid = str(form.get("tag_id") or "")
        try:
            tag = get_tag(runtime.state, project.id, int(tid)) if tid.isdigit() else None
        except NotFound:
            return redirect("/tags")
        keep: dict[str, Any] = rule_form(form)
        name, description, schedule, text = (
            keep[k] for k in ("name", "description", "schedule", "text")
        )
        errors: list[dict[str, Any]] = []
        minutes: int | None = None
        if schedule:
            if schedule.isascii() and schedule.isdigit():
                minutes = int(schedule)
            else:
                errors.append({"field": "schedule_minutes",
                               "message": M_("Enter whole minutes.")})  # fmt: skip
        try:
            rules = parse_rule_text(text)
        except InvalidSegment as exc:
            errors.extend(exc.errors)
            rules = None
        if errors:
            return editor(ctx, tag, errors=errors, status=400, **keep)
        try:
            if form.get("action") == "preview":
                size = int(preview(runtime, project, rules)["size"])
                return editor(ctx, tag, size=size, **keep)
            if tag is None:
                tag = create_tag(
                    runtime.state, project, name, rules, description, schedule_minutes=minutes
                )
            else:
                changes = {"description": description, "rules": rules, "schedule_minutes": minutes}
                tag = update_tag(runtime.state, project, tag.id, changes)
        except YunyingError as exc:
            return editor(ctx, tag, errors=save_problems(exc), status=400, **keep)
        # a failure is stored as the tag's last_error, which its page shows
        with contextlib.suppress(Exception):
            compute_tag(runtime, project, tag.id)
        return redirect(f"/tags/{tag.id}")

    @console.router.post("/tags/{tag_id:int}/recompute")
    async def tag_recompute(request: Request, tag_id: int) -> Response:
        """Compute the tag now."""
        ctx = console.context(request, "segments")
        console.check_csrf(ctx, await request.form())
        if ctx.project is None:
            return redirect("/tags")
        try:
            compute_tag(runtime, ctx.project, tag_id)
        except NotFound:
            return redirect("/tags")
        except Exception:  # noqa: BLE001 - recorded in last_error and shown on the page
            pass
        return redirect(f"/tags/{tag_id}")
