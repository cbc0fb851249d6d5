"""Shared fixtures: a fresh installation per test, a live server on loopback, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from yunying.cli.remote import advertise, withdraw
from yunying.config import Settings, load_settings
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project
from yunying.web import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.open(settings)
    yield rt
    rt.close()


@pytest.fixture
def project(runtime: Runtime) -> NewProject:
    return create_project(runtime.state, "短视频剪辑")


@dataclass
class LiveServer:
    """A real uvicorn server on a loopback port, running the app in a thread."""

    url: str
    runtime: Runtime
    server: uvicorn.Server
    thread: threading.Thread

    def post_events(self, write_key: str, body: Any, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {write_key}", **kw.pop("headers", {})}
        if isinstance(body, bytes):
            return httpx.post(f"{self.url}/v1/events", content=body, headers=headers, **kw)
        return httpx.post(f"{self.url}/v1/events", json=body, headers=headers, **kw)

    def sql(self, project: str | None, query: str, token: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/v1/sql",
            json={"project": project, "sql": query},
            headers={"Authorization": f"Bearer {token}"},
        )


def start_server(runtime: Runtime) -> LiveServer:
    port = free_port()
    config = uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", runtime, server, thread)


@pytest.fixture
def live(runtime: Runtime) -> Iterator[LiveServer]:
    """A live server that also advertises itself, so `yunying sql` in tests goes through it."""
    srv = start_server(runtime)
    advertise(runtime.settings, srv.url)
    yield srv
    withdraw(runtime.settings)
    srv.server.should_exit = True
    srv.thread.join(10)


def yunying_sql(live: LiveServer, query: str, project: str | None = None) -> list[list[Any]]:
    """Rows of `yunying sql --json QUERY` run as a user would, against the live server."""
    import orjson
    from typer.testing import CliRunner

    from yunying.cli.main import app

    args = ["sql", query, "--json", "--data-dir", str(live.runtime.settings.data_dir)]
    if project:
        args += ["--project", project]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)["rows"]  # type: ignore[no-any-return]


def rows(runtime: Runtime, project_id: int, query: str) -> list[list[Any]]:
    """Rows of a read-only query over one project (the same path as `yunying sql`)."""
    from yunying.store import run_readonly_sql

    return run_readonly_sql(runtime.store, project_id, query).rows


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database: ``YUNYING_TEST_POSTGRES_URL``, or a throwaway local cluster."""
    url = os.environ.get("YUNYING_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="yunying-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres account
        shutil.chown(root, "postgres")
        shutil.chown(sockdir, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "yunying",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-w",
                "-l",
                str(root / "log"),
                "-o",
                f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"could not start a local PostgreSQL server: {exc} {detail.decode()[-300:]}")
    subprocess.run(
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "yunying", "yunying"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://yunying@127.0.0.1:{port}/yunying"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server for one test."""
    import sqlalchemy as sa

    name = f"t_{os.getpid()}_{time.monotonic_ns()}"
    admin = sa.create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = postgres_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# -- events engines -----------------------------------------------------------------------------


def chdb_url(root: Path) -> str:
    """A ``chdb:///ABSOLUTE/PATH`` events URL for an embedded ClickHouse under ``root``."""
    return f"chdb://{(root / 'clickhouse').absolute()}"


@pytest.fixture(params=["duckdb", "chdb"])
def engine_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A fresh installation on each events engine: the DuckDB file and embedded ClickHouse."""
    events_url = None
    if request.param == "chdb":
        pytest.importorskip("chdb")
        events_url = chdb_url(tmp_path)
    rt = Runtime.open(load_settings(data_dir=tmp_path / "data", events_url=events_url))
    yield rt
    rt.close()
