"""Reaching a running server from the CLI.

DuckDB lets one process write a database file, so while ``yunying serve`` runs, commands that
read or write events (``sql``, ``import``) go through its HTTP API instead: the server
advertises its address in ``server.json`` in the data dir, and the local admin token there lets
this machine's user ask it for any project.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
import orjson

from yunying.config import Settings
from yunying.errors import YunyingError

if TYPE_CHECKING:
    from yunying.runtime import Runtime
    from yunying.state import Project

T = TypeVar("T")


class ServerError(YunyingError):
    """The running server refused a request; the message is the server's own."""


@dataclass(frozen=True)
class RunningServer:
    """Address of a live server for this data dir, with the local admin token."""

    url: str
    pid: int
    admin_token: str

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON answer of a management endpoint (``ServerError`` for any non-2xx)."""
        resp = httpx.request(
            method,
            f"{self.url}{path}",
            json=json,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=600,
        )
        if not 200 <= resp.status_code < 300:
            raise ServerError(_message(resp))
        return resp.json() if resp.content else None

    def sql(self, project: str | None, sql: str) -> dict[str, Any]:
        return dict(self.call("POST", "/api/v1/sql", json={"project": project, "sql": sql}))

    def send_events(
        self, client: httpx.Client, write_key: str, events: list[Any]
    ) -> dict[str, Any]:
        body = gzip.compress(orjson.dumps({"batch": events}), compresslevel=1)
        resp = client.post(
            f"{self.url}/v1/events",
            content=body,
            headers={
                "Authorization": f"Bearer {write_key}",
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
            },
            timeout=600,
        )
        if resp.status_code not in (200, 400) or "accepted" not in resp.json():
            raise ServerError(_message(resp))
        return resp.json()


def call_api(
    settings: Settings,
    method: str,
    path: str,
    local: Callable[[Runtime], T],
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
) -> T | Any:
    """Answer a CLI command: through the running server's management API ``method path`` when
    one serves this data dir (it holds the DuckDB lock), else ``local(runtime)`` in this process.

    ``local`` must return what the endpoint answers, so ``--json`` output is the same either way.
    """
    server = find_server(settings)
    if server is not None:
        return server.call(method, path, json=json, params=params)
    from yunying.cli.main import open_runtime  # explains a DuckDB lock held elsewhere

    rt = open_runtime(settings)
    try:
        return local(rt)
    finally:
        rt.close()


def call_project_api(
    settings: Settings,
    project: str | None,
    method: str,
    path: str,
    local: Callable[[Runtime, Project], T],
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    project_in: Literal["query", "body", "both"] = "query",
) -> T | Any:
    """:func:`call_api` for an endpoint about one project (``--project``; None: the default one),
    as a command answers it: a refusal (the server's, an unknown project, a body that does not
    validate) ends the command with its message and exit code 1.

    The project's name goes in the query string, in the JSON body (when there is one), or in
    both, as ``project_in`` says; ``local`` gets the runtime and the project, resolved here.
    """
    from yunying.state import get_project

    if project_in != "body":
        params = {"project": project, **(params or {})}
    if project_in != "query" and json is not None:
        json = {**json, "project": project}

    def here(rt: Runtime) -> T:
        return local(rt, get_project(rt.state, project))

    with refusals_fail():
        return call_api(settings, method, path, here, json=json, params=params)


@contextmanager
def refusals_fail() -> Iterator[None]:
    """End the command with a refusal's message and exit code 1: the server's, an unknown
    project's, a body's that does not validate (:class:`~yunying.web.http.HTTPProblem`)."""
    from yunying.cli.main import fail
    from yunying.web.http import HTTPProblem  # the web stack loads only when a command runs

    try:
        yield
    except HTTPProblem as exc:
        fail(str(exc.body["error"]))
    except YunyingError as exc:
        fail(str(exc))


def _message(resp: httpx.Response) -> str:
    try:
        return f"server answered {resp.status_code}: {resp.json().get('error', resp.text)}"
    except ValueError:
        return f"server answered {resp.status_code}: {resp.text[:200]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_server(settings: Settings) -> RunningServer | None:
    """The server serving this data dir, if one is running and answers."""
    path = settings.server_file
    if not path.exists():
        return None
    try:
        info = orjson.loads(path.read_bytes())
        url, pid = str(info["url"]), int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    try:
        if httpx.get(f"{url}/health", timeout=5).status_code not in (200, 503):
            return None
    except httpx.HTTPError:
        return None
    token = settings.admin_token_file.read_text().strip()
    return RunningServer(url, pid, token)


def advertise(settings: Settings, url: str) -> None:
    """Write ``server.json`` so CLI commands find this server."""
    settings.server_file.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))


def withdraw(settings: Settings) -> None:
    """Remove ``server.json`` if it is this process's."""
    try:
        info = orjson.loads(settings.server_file.read_bytes())
        if info.get("pid") == os.getpid():
            settings.server_file.unlink()
    except (OSError, ValueError):
        pass
