"""The console's web plumbing: per-request context (user, language, project, date range),
login and CSRF checks, rendering with the right catalog, CSV answers, and the page registry
that feature modules extend.

A page module defines ``register(console: ConsoleApp)`` and adds routes to ``console.router``
and entries to the navigation with :meth:`ConsoleApp.nav`; :func:`yunying.console.include_console`
calls every module listed in :data:`yunying.console.PAGE_MODULES`.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from yunying.analytics import DateRange, InvalidQuery
from yunying.console.cache import STAMP_SECONDS, PageCache
from yunying.console.data import (
    Dashboard,
    DataSpan,
    Table,
    dashboard,
    data_span,
    default_range,
    event_names,
)
from yunying.console.i18n import (
    DEFAULT_LOCALE,
    LOCALE_NAMES,
    LOCALES,
    Formatter,
    pick_locale,
    translate,
    translations,
)
from yunying.console.users import Session, session_for
from yunying.errors import M_
from yunying.runtime import Runtime
from yunying.state import Project, list_projects

log = logging.getLogger("yunying.console")

SESSION_COOKIE = "yy_session"
LOGIN_CSRF_COOKIE = "yy_login_csrf"
LANG_COOKIE = "yy_lang"
PROJECT_COOKIE = "yy_project"
TEMPLATES = Path(__file__).parent / "templates"
MAX_RANGE_DAYS = 366
COMPUTE_WAIT_SECONDS = 3.0
#: Headers of every console page: scripts only from this server (no inline script, no eval),
#: inline styles allowed (Plotly sets them), no framing (clickjacking), no MIME sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """No valid session: answered with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Forbidden(Exception):
    """Logged in, but the role does not allow this (or the CSRF token is wrong): 403 page."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass(frozen=True)
class NavItem:
    """An entry of the side navigation (``label`` is an English message id)."""

    key: str
    path: str
    label: str
    section: str
    permission: str = "view"
    order: int = 100


@dataclass
class Ctx:
    """Everything a page needs about the request it answers."""

    request: Request
    session: Session
    locale: str
    projects: list[Project]
    project: Project | None
    fmt: Formatter
    gettext: Callable[[str], str]
    set_cookies: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> Any:
        return self.session.user

    def can(self, permission: str) -> bool:
        return self.session.user.can(permission)

    def tr(self, message: object) -> str:
        """An error or message in the page's language (see :func:`translate`)."""
        return translate(message, self.gettext)

    def field_errors(self, errors: Iterable[Any]) -> list[dict[str, str]]:
        """``{"field", "message"}`` problems with their messages in the page's language."""
        return [{"field": str(e.get("field") or ""), "message": self.tr(e.get("message"))}
                for e in errors]  # fmt: skip

    def param(self, name: str, default: str = "") -> str:
        """A query parameter, stripped."""
        return (self.request.query_params.get(name) or default).strip()

    def params(self, name: str) -> list[str]:
        """All non-empty values of a repeated query parameter."""
        return [v.strip() for v in self.request.query_params.getlist(name) if v.strip()]


class ConsoleApp:
    """The console mounted on one FastAPI app: router, templates, cache and navigation."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.router = APIRouter(include_in_schema=False)
        self.cache = PageCache()
        self._stamps: dict[int, tuple[float, DataSpan]] = {}
        self.navigation: list[NavItem] = []
        self._warming: threading.Thread | None = None
        #: Seconds a data page waits for its analysis before answering with a "computing" page
        #: that reloads itself (None: always wait). Computations run on ``pool``.
        self.compute_wait: float | None = COMPUTE_WAIT_SECONDS
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="yunying-console-page")
        self._pending: dict[Any, Future[Any]] = {}
        self._pending_lock = threading.Lock()
        self.envs = {loc: self._env(loc) for loc in LOCALES}

    # -- templates --------------------------------------------------------------------------------

    def _env(self, locale: str) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(["html"]),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
        env.globals.update(locale=locale, LOCALE_NAMES=LOCALE_NAMES, LOCALES=LOCALES)
        gettext = translations(locale).gettext
        env.filters["tr"] = lambda message: translate(message, gettext)
        env.tests["startswith_path"] = lambda field, name: str(field).startswith(f"{name}.")
        return env

    def add_template_dir(self, path: Path) -> None:
        """Let a feature module ship its own templates (searched after the console's)."""
        for env in self.envs.values():
            loader = env.loader
            assert isinstance(loader, jinja2.FileSystemLoader)
            loader.searchpath.append(str(path))

    def nav(self, item: NavItem) -> None:
        """Add an entry to the side navigation."""
        self.navigation.append(item)
        self.navigation.sort(key=lambda n: (n.order, n.key))

    # -- request context --------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        """The session of the request's cookie, if valid."""
        token = request.cookies.get(SESSION_COOKIE)
        return session_for(self.runtime.state, token) if token else None

    def locale_of(self, request: Request, session: Session | None = None) -> tuple[str, bool]:
        """The page language (query ``lang``, then cookie, then the user's, then zh_CN) and
        whether the query changed it (so the answer sets the cookie)."""
        asked = request.query_params.get("lang")
        if asked:
            return pick_locale(asked), True
        cookie = request.cookies.get(LANG_COOKIE)
        if cookie in LOCALES:
            return cookie, False
        if session is not None and session.user.locale in LOCALES:
            return str(session.user.locale), False
        return DEFAULT_LOCALE, False

    def context(self, request: Request, permission: str = "view") -> Ctx:
        """The logged-in context of ``request`` (redirect to login, or 403 without ``permission``)."""
        session = self.session_of(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target)
        locale, changed = self.locale_of(request, session)
        projects = list_projects(self.runtime.state)
        project = None
        cookie = request.cookies.get(PROJECT_COOKIE)
        asked = request.query_params.get("project") or (unquote(cookie) if cookie else None)
        for p in projects:
            if p.name == asked:
                project = p
        if project is None and projects:
            project = projects[0]
        trans = translations(locale)
        ctx = Ctx(
            request,
            session,
            locale,
            projects,
            project,
            Formatter(locale, project.timezone if project else "Asia/Shanghai"),
            trans.gettext,
        )
        if changed:
            ctx.set_cookies[LANG_COOKIE] = locale
        if request.query_params.get("project") and project is not None:
            ctx.set_cookies[PROJECT_COOKIE] = project.name
        if not session.user.can(permission):
            raise Forbidden(permission)
        return ctx

    def check_csrf(self, ctx: Ctx, form: Any) -> None:
        """Refuse a form without this session's CSRF token (403)."""
        sent = form.get("csrf_token") if form is not None else None
        if not isinstance(sent, str) or not hmac.compare_digest(sent, ctx.session.csrf_token):
            raise Forbidden("csrf")

    # -- data helpers -----------------------------------------------------------------------------

    def span(self, project: Project) -> DataSpan:
        """The project's data span, re-read at most every few seconds."""
        import time

        now = time.monotonic()
        hit = self._stamps.get(project.id)
        if hit is not None and now - hit[0] < STAMP_SECONDS:
            return hit[1]
        span = data_span(self.runtime.store, project)
        self._stamps[project.id] = (now, span)
        return span

    def cached(self, project: Project, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` cached for this project's current data."""
        return self.cache.get((project.id, *key), self.span(project).stamp, compute)

    def dashboard(self, project: Project, dr: DateRange) -> Dashboard:
        """The overview's KPI cards for ``dr`` (cached)."""
        store = self.runtime.store
        board: Dashboard = self.cached(
            project, ("dashboard", dr), lambda: dashboard(store, project, dr)
        )
        return board

    def start(self, key: Any, compute: Callable[[], Any]) -> Future[Any]:
        """The page computation for ``key`` (locale, project, path, query): the one already
        running or finished for an earlier request of the same page, else a new one."""
        with self._pending_lock:
            running = self._pending.get(key)
            if running is None:
                if len(self._pending) > 200:  # pages nobody came back for
                    for k in [k for k, f in self._pending.items() if f.done()]:
                        del self._pending[k]
                running = self._pending[key] = self.pool.submit(compute)
            return running

    def finish(self, key: Any, running: Future[Any]) -> None:
        """Forget a computation once a request has taken its result."""
        if running.done():
            with self._pending_lock:
                if self._pending.get(key) is running:
                    del self._pending[key]

    def warm_up(self) -> None:
        """Compute every project's default dashboard in a background thread, so the first page
        after signing in is already cached (started from the login page; one run at a time)."""
        if self._warming is not None and self._warming.is_alive():
            return

        def run() -> None:
            try:
                for project in list_projects(self.runtime.state):
                    dr = default_range(project, self.span(project))
                    if not self.cache.peek((project.id, "dashboard", dr), self.span(project).stamp):
                        self.dashboard(project, dr)
            except Exception:  # noqa: BLE001 - a warm-up failure only means a slower first page
                log.debug("console warm-up failed", exc_info=True)

        self._warming = threading.Thread(target=run, name="yunying-console-warm", daemon=True)
        self._warming.start()

    def events(self, project: Project) -> list[str]:
        """Event names of the project, for pickers."""
        return list(
            self.cached(project, ("event_names",), lambda: event_names(self.runtime.store, project))
        )

    def date_range(self, ctx: Ctx, default_days: int = 30) -> tuple[DateRange, str | None]:
        """The page's range from ``from``/``to`` or ``days``, else the last ``default_days`` days
        of data; with an error message when the parameters were unusable."""
        assert ctx.project is not None
        span = self.span(ctx.project)
        tz = ctx.project.timezone
        fallback = default_range(ctx.project, span, default_days)
        days = ctx.param("days")
        if days:
            try:
                n = int(days)
                if not 1 <= n <= MAX_RANGE_DAYS:
                    raise ValueError
            except ValueError:
                return fallback, ctx.gettext("Days must be a number from 1 to 366.")
            return default_range(ctx.project, span, n), None
        start, end = ctx.param("from"), ctx.param("to")
        if not start and not end:
            return fallback, None
        try:
            d_to = date.fromisoformat(end) if end else fallback.date_to
            d_from = date.fromisoformat(start) if start else d_to - timedelta(days=default_days - 1)
            if (d_to - d_from).days + 1 > MAX_RANGE_DAYS:
                return fallback, ctx.gettext("A date range covers at most 366 days.")
            return DateRange(d_from, d_to, tz), None
        except InvalidQuery as exc:  # e.g. the range ends before it starts
            return fallback, ctx.tr(
                M_("{problem}; showing the default range instead.", problem=exc.message)
            )
        except ValueError:
            return fallback, ctx.gettext(
                "The dates were not understood; showing the default range instead."
            )

    # -- answers ----------------------------------------------------------------------------------

    def render(self, ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        """A page in the context's language, with the navigation the user's role allows."""
        env = self.envs[ctx.locale]
        nav = [n for n in self.navigation if ctx.can(n.permission)]
        html = env.get_template(template).render(
            ctx=ctx,
            fmt=ctx.fmt,
            nav=nav,
            csrf_token=ctx.session.csrf_token,
            path=ctx.request.url.path,
            query=lambda **kw: self.query_string(ctx, **kw),
            **values,
        )
        response = HTMLResponse(html, status_code=status)
        for name, value in ctx.set_cookies.items():
            set_cookie(ctx.request, response, name, value, http_only=False, days=365)
        response.headers.update(SECURITY_HEADERS)
        return response

    def render_public(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        """A page outside the login (the login page itself, errors)."""
        locale, changed = self.locale_of(request)
        html = (
            self.envs[locale]
            .get_template(template)
            .render(fmt=Formatter(locale), path=request.url.path, **values)
        )
        response = HTMLResponse(html, status_code=status)
        if changed:
            set_cookie(request, response, LANG_COOKIE, locale, http_only=False, days=365)
        response.headers.update(SECURITY_HEADERS)
        return response

    @staticmethod
    def query_string(ctx: Ctx, **changes: Any) -> str:
        """The current query string with ``changes`` applied (None removes a key)."""
        items = [(k, v) for k, v in ctx.request.query_params.multi_items() if k not in changes]
        for k, v in changes.items():
            if v is None:
                continue
            if isinstance(v, list | tuple):
                items.extend((k, str(x)) for x in v)
            else:
                items.append((k, str(v)))
        return "?" + urlencode(items) if items else "?"


def set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    http_only: bool = True,
    days: int | None = None,
) -> None:
    """A cookie with the console's flags: SameSite=Lax, Secure over HTTPS, HttpOnly by default.
    The value is percent-encoded (project names are often Chinese; headers are Latin-1)."""
    response.set_cookie(
        name,
        quote(value, safe=""),
        max_age=None if days is None else days * 86_400,
        httponly=http_only,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def new_login_csrf() -> str:
    """A token for the login form (double-submit: cookie and hidden field must match)."""
    return secrets.token_urlsafe(32)


def csv_response(table: Table, filename: str) -> Response:
    """The table as a UTF-8 CSV download (with a BOM, so spreadsheet apps read Chinese right)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["" if v is None else v for v in row])
    body = "\ufeff" + buf.getvalue()
    return Response(
        body.encode(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            "Cache-Control": "no-store",
        },
    )


def redirect(path: str, status: int = 303) -> RedirectResponse:
    """A redirect after a form (303: the browser follows with GET)."""
    return RedirectResponse(path, status_code=status)


def safe_next(path: str | None) -> str:
    """Only local paths after login (no ``//host`` or ``https://`` open redirects)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def chunks(items: Iterable[Any], n: int) -> list[list[Any]]:
    """``items`` in lists of ``n`` (card grids)."""
    out: list[list[Any]] = []
    for item in items:
        if not out or len(out[-1]) == n:
            out.append([])
        out[-1].append(item)
    return out
