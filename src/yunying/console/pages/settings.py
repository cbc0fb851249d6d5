"""Settings pages: the project (keys, time zone, SDK snippets) and the team (users and roles).

Both need admin rights ("keys", "users"): the write key is public, but the page also shows who
may do what, and only the director's role manages keys and people.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from fastapi import Request
from fastapi.responses import Response

from yunying.console.budget import InvalidLimit, budget_rule, parse_limit, set_budget_rule
from yunying.console.data import N_
from yunying.console.snippets import snippets
from yunying.console.users import (
    ROLES,
    InvalidUser,
    create_user,
    generate_password,
    list_users,
    update_user,
)
from yunying.console.web import PROJECT_COOKIE, ConsoleApp, Ctx, NavItem, redirect, set_cookie
from yunying.errors import Conflict, NotFound
from yunying.state import InvalidProject, update_project


@lru_cache(maxsize=1)
def _zones() -> list[str]:
    """The IANA time zone names, for the project form's list (read once: about 600)."""
    return sorted(available_timezones())


def register(console: ConsoleApp) -> None:
    """Add the project and team pages."""
    state = console.runtime.state
    console.nav(
        NavItem("project", "/settings/project", N_("Project & SDKs"), N_("Settings"), "keys", 900)
    )
    console.nav(NavItem("team", "/settings/team", N_("Team"), N_("Settings"), "users", 910))

    def project_view(
        request: Request,
        ctx: Ctx,
        errors: list[dict[str, Any]] | None = None,
        status: int = 200,
        form: Any = None,
    ) -> Response:
        base = str(request.base_url).rstrip("/")
        items = snippets(base, ctx.project.write_key, ctx.project.name) if ctx.project else []
        zones = _zones() if ctx.can("keys") else []
        span = console.span(ctx.project) if ctx.project else None
        rule = budget_rule(state, ctx.project.id) if ctx.project else None
        return console.render(
            ctx,
            "settings_project.html",
            status,
            snippets=items,
            base_url=base,
            span=span,
            rule=rule,
            errors=ctx.field_errors(errors or []),
            form=form or {},
            zones=zones,
        )

    @console.router.get("/settings/project")
    def project_settings(request: Request) -> Response:
        """Keys, time zone, budget rules and set-up code for every supported SDK."""
        return project_view(request, console.context(request, "keys"))

    @console.router.post("/settings/project")
    async def project_change(request: Request) -> Response:
        """Rename the project or change its time zone (admins: the "keys" permission)."""
        ctx = console.context(request, "keys")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/settings/project")
        name, timezone = str(form.get("name") or ""), str(form.get("timezone") or "")
        try:
            changed = update_project(state, ctx.project.id, name=name, timezone=timezone)
        except InvalidProject as exc:
            problem = {"field": exc.field, "message": exc.message}
            return project_view(request, ctx, [problem], 400, {"name": name, "timezone": timezone})
        except Conflict as exc:
            problem = {"field": "name", "message": exc.message}
            return project_view(request, ctx, [problem], 400, {"name": name, "timezone": timezone})
        response = redirect("/settings/project")
        # the project is chosen by name: keep choosing it under its new name
        set_cookie(request, response, PROJECT_COOKIE, changed.name, http_only=False, days=365)
        return response

    @console.router.post("/settings/project/budget")
    async def budget_change(request: Request) -> Response:
        """Set or lift the money budget up to which operators may start activities."""
        ctx = console.context(request, "budgets")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/settings/project")
        text = str(form.get("operator_limit") or "")
        try:
            set_budget_rule(state, ctx.project.id, parse_limit(text), ctx.user.name)
        except InvalidLimit as exc:
            problem = {"field": "operator_limit", "message": exc.message}
            return project_view(request, ctx, [problem], 400, {"operator_limit": text})
        return redirect("/settings/project#budget")

    @console.router.get("/settings/team")
    def team(request: Request) -> Response:
        """Who can sign in, with which role."""
        ctx = console.context(request, "users")
        return console.render(
            ctx,
            "settings_team.html",
            users=list_users(state),
            roles=ROLES,
            created=None,
            errors=[],
            form={},
        )

    @console.router.post("/settings/team")
    async def team_change(request: Request) -> Response:
        """Create a user (with a generated password shown once), change a role, (de)activate."""
        ctx = console.context(request, "users")
        form = await request.form()
        console.check_csrf(ctx, form)
        action = str(form.get("action") or "")
        name = str(form.get("username") or "").strip()
        created = None
        errors: list[dict[str, object]] = []
        try:
            if action == "create":
                password = generate_password()
                create_user(state, name, password, str(form.get("role") or "viewer"))
                created = (name, password)
            elif action == "role":
                if name == ctx.user.name:
                    raise InvalidUser(ctx.gettext("You cannot change your own role."))
                update_user(state, name, role=str(form.get("role") or ""))
                return redirect("/settings/team")
            elif action in ("deactivate", "activate"):
                if name == ctx.user.name:
                    raise InvalidUser(ctx.gettext("You cannot deactivate yourself."))
                update_user(state, name, active=action == "activate")
                return redirect("/settings/team")
            else:
                errors = [{"field": "", "message": ctx.gettext("Unknown action.")}]
        except InvalidUser as exc:
            errors = [{"field": exc.field, "message": exc.message}]
        except Conflict as exc:  # the name is taken
            errors = [{"field": "username", "message": exc.message}]
        except NotFound as exc:
            errors = [{"field": "", "message": exc.message}]
        return console.render(
            ctx,
            "settings_team.html",
            400 if errors else 200,
            users=list_users(state),
            roles=ROLES,
            created=created,
            errors=ctx.field_errors(errors),
            form=form if errors and action == "create" else {},
        )
