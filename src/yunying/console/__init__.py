"""The web console: server-rendered pages (Jinja2) on the same FastAPI app as the API.

``include_console(app, runtime)`` mounts the login, the pages of every module in
:data:`PAGE_MODULES` and the static assets (our CSS and JS, and the plotly.js that the ``plotly``
Python package ships, so charts work with no internet). See docs/console.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

from yunying.console.users import authenticate, count_users, end_session, start_session
from yunying.console.web import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    ConsoleApp,
    Forbidden,
    LoginRequired,
    new_login_csrf,
    redirect,
    safe_next,
    set_cookie,
)
from yunying.runtime import Runtime

#: Modules defining ``register(console)``: add yours here (segments, activities...).
PAGE_MODULES: tuple[str, ...] = (
    "yunying.console.pages.analytics",
    "yunying.console.pages.audience",
    "yunying.console.pages.tags",
    "yunying.console.pages.clv",
    "yunying.console.pages.activities",
    "yunying.console.pages.settings",
)

STATIC = Path(__file__).parent / "static"


def plotly_js() -> Path:
    """plotly.js as bundled by the ``plotly`` Python package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def include_console(app: FastAPI, runtime: Runtime) -> ConsoleApp:
    """Mount the console on ``app`` (pages under ``/``, assets under ``/static/console/``)."""
    console = ConsoleApp(runtime)
    app.state.console = console
    assets = {
        "console.css": (STATIC / "console.css", "text/css"),
        "console.js": (STATIC / "console.js", "text/javascript"),
        "plotly.min.js": (plotly_js(), "text/javascript"),
    }

    @console.router.get("/static/console/{name}")
    def static(name: str) -> Response:
        """Our assets, cacheable for a day."""
        if name not in assets:
            return Response("not found", status_code=404, media_type="text/plain")
        path, media = assets[name]
        return FileResponse(
            path, media_type=media, headers={"Cache-Control": "public, max-age=86400"}
        )

    @console.router.get("/login")
    def login_page(request: Request) -> Response:
        """The sign-in form (with a double-submit CSRF token)."""
        if console.session_of(request) is not None:
            return redirect(safe_next(request.query_params.get("next")))
        console.warm_up()  # the dashboard computes while the user types the password
        token = new_login_csrf()
        response = console.render_public(
            request,
            "login.html",
            csrf_token=token,
            next=safe_next(request.query_params.get("next")),
            error=None,
            no_users=count_users(runtime.state) == 0,
        )
        set_cookie(request, response, LOGIN_CSRF_COOKIE, token)
        return response

    @console.router.post("/login")
    async def login(request: Request) -> Response:
        """Check the CSRF token and the password; start a session."""
        form = await request.form()
        sent, cookie = form.get("csrf_token"), request.cookies.get(LOGIN_CSRF_COOKIE)
        if not isinstance(sent, str) or not cookie or sent != cookie:
            return console.render_public(request, "error.html", 403, reason="csrf")
        name, password = str(form.get("username") or ""), str(form.get("password") or "")
        next_path = safe_next(str(form.get("next") or "/"))
        import asyncio

        user = await asyncio.to_thread(authenticate, runtime.state, name, password)
        if user is None:
            token = new_login_csrf()
            response = console.render_public(
                request,
                "login.html",
                401,
                csrf_token=token,
                next=next_path,
                error="bad_login",
                username=name,
                no_users=False,
            )
            set_cookie(request, response, LOGIN_CSRF_COOKIE, token)
            return response
        cookie_value, _session = start_session(runtime.state, user)
        done = redirect(next_path)
        set_cookie(request, done, SESSION_COOKIE, cookie_value, days=14)
        done.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return done

    @console.router.post("/logout")
    async def logout(request: Request) -> Response:
        """End the session (the form carries the CSRF token)."""
        ctx = console.context(request)
        console.check_csrf(ctx, await request.form())
        end_session(runtime.state, ctx.session.token_hash)
        response = redirect("/login")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if request.method != "GET":
            return Response("login required", status_code=401, media_type="text/plain")
        from urllib.parse import quote

        return redirect(f"/login?next={quote(exc.next_path, safe='')}", 303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return console.render_public(request, "error.html", 403, reason=exc.reason)

    for name in PAGE_MODULES:
        importlib.import_module(name).register(console)
    app.include_router(console.router)
    return console
