"""The ``yunying`` command line (Typer + Rich).

Every command takes ``--data-dir`` (or ``YUNYING_DATA_DIR``) and the engine URLs; commands that
touch events use a running server for this data dir when there is one (see :mod:`.remote`).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table

from yunying import __version__
from yunying.config import Settings, load_settings
from yunying.errors import YunyingError

app = typer.Typer(
    name="yunying",
    help="Yunying (运营): self-hosted growth operations platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
project_app = typer.Typer(
    help="Create and list projects (one per app you operate).", no_args_is_help=True
)
app.add_typer(project_app, name="project")

console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="YUNYING_DATA_DIR", help="Where Yunying keeps its data."),
]
EventsURL = Annotated[
    str | None,
    typer.Option(
        "--events-url",
        envvar="YUNYING_EVENTS_URL",
        help="Events engine: duckdb:///PATH, chdb:///PATH or clickhouse://…",
    ),
]
StateURL = Annotated[
    str | None,
    typer.Option(
        "--state-url",
        envvar="YUNYING_STATE_URL",
        help="State engine (sqlite:///PATH, postgresql://...).",
    ),
]
JSONOut = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ProjectName = Annotated[
    str | None, typer.Option("--project", help="Project name (needed when there are several).")
]


def settings_of(data_dir: Path | None, events_url: str | None, state_url: str | None) -> Settings:
    try:
        return load_settings(data_dir, events_url, state_url)
    except YunyingError as exc:
        fail(str(exc))


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, default=str).decode() + "\n")


def open_runtime(settings: Settings) -> Any:
    """Open the installation locally, explaining a lock held by another process."""
    import duckdb

    from yunying.runtime import Runtime

    try:
        return Runtime.open(settings)
    except duckdb.IOException as exc:
        fail(
            f"the events database is in use by another process ({exc}). "
            "Stop it, or start `yunying serve` so commands go through it."
        )
    except YunyingError as exc:
        fail(str(exc))


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def init(
    data_dir: DataDir = None, events_url: EventsURL = None, state_url: StateURL = None
) -> None:
    """Create the data directory and bring both databases to the newest schema."""
    settings = settings_of(data_dir, events_url, state_url)
    from yunying.runtime import ensure_admin_token

    rt = open_runtime(settings)
    ensure_admin_token(settings.admin_token_file)
    rt.close()
    console.print(f"[green]ready[/]: data in {settings.data_dir}")
    console.print(f"  events: {settings.events_url}\n  state:  {settings.state_url}")
    console.print("next: `yunying project create NAME` or `yunying demo`")


@project_app.command("create")
def project_create(
    name: str,
    timezone: Annotated[str, typer.Option(help="IANA time zone of the project.")] = "Asia/Shanghai",
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Create a project and print its keys (the secret key is shown only now)."""
    from yunying.state import create_project, open_state

    settings = settings_of(data_dir, events_url, state_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        new = create_project(open_state(settings.state_url), name, timezone)
    except YunyingError as exc:
        fail(str(exc))
    p = new.project
    if json_out:
        print_json(
            {"id": p.id, "name": p.name, "write_key": p.write_key, "secret_key": new.secret_key}
        )
        return
    console.print(f"[green]created[/] project {p.name!r} (id {p.id}, time zone {p.timezone})")
    console.print(f"  write key (public, for SDKs):   {p.write_key}")
    console.print(f"  secret key (management API):    {new.secret_key}")
    console.print("  [yellow]the secret key is shown only once: store it now[/]")


@project_app.command("update")
def project_update(
    name: str,
    rename: Annotated[str | None, typer.Option(help="A new name for the project.")] = None,
    timezone: Annotated[
        str | None, typer.Option(help="A new IANA time zone (days of every analysis from now).")
    ] = None,
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Rename a project or change its time zone."""
    from yunying.state import get_project, open_state, update_project

    settings = settings_of(data_dir, events_url, state_url)
    try:
        engine = open_state(settings.state_url)
        p = update_project(engine, get_project(engine, name).id, name=rename, timezone=timezone)
    except YunyingError as exc:
        fail(str(exc))
    if json_out:
        print_json({"id": p.id, "name": p.name, "timezone": p.timezone})
        return
    console.print(f"[green]updated[/] project {p.name!r} (id {p.id}, time zone {p.timezone})")


@project_app.command("list")
def project_list(
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """List projects with their write keys."""
    from yunying.state import list_projects, open_state

    settings = settings_of(data_dir, events_url, state_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    projects = list_projects(open_state(settings.state_url))
    if json_out:
        print_json(
            [
                {
                    "id": p.id,
                    "name": p.name,
                    "write_key": p.write_key,
                    "timezone": p.timezone,
                    "secret_key_prefix": p.secret_key_prefix,
                    "created_at": p.created_at.isoformat(),
                }
                for p in projects
            ]
        )
        return
    table = Table("id", "name", "write key", "secret key", "time zone", "created")
    for p in projects:
        table.add_row(
            str(p.id),
            p.name,
            p.write_key,
            p.secret_key_prefix + "…",
            p.timezone,
            p.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help="One SELECT over events, persons, person_distinct_ids.")
    ],
    project: ProjectName = None,
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Read-only SQL over one project's events, persons and person_distinct_ids (DuckDB dialect)."""
    from yunying.cli.remote import find_server

    settings = settings_of(data_dir, events_url, state_url)
    server = find_server(settings)
    try:
        if server is not None:
            result = server.sql(project, query)
            columns, rows = result["columns"], result["rows"]
        else:
            from yunying.state import get_project
            from yunying.store import run_readonly_sql

            rt = open_runtime(settings)
            try:
                out = run_readonly_sql(rt.store, get_project(rt.state, project).id, query)
            finally:
                rt.close()
            columns, rows = out.columns, out.rows
    except YunyingError as exc:
        fail(str(exc))
    except Exception as exc:  # engine errors: unknown column, bad syntax for the engine
        fail(f"query failed: {exc}")
    if json_out:
        print_json({"columns": columns, "rows": rows})
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    err.print(f"{len(rows)} row(s)")


@app.command()
def compact(
    status: Annotated[
        bool, typer.Option("--status", help="Only show each project's order; change nothing.")
    ] = False,
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Rewrite the stored events in person order, so funnels and paths read each person's
    events as one run instead of grouping them (DuckDB; `yunying serve` does it by itself once a
    tenth of a project's events arrived since)."""
    from yunying.cli.remote import find_server

    settings = settings_of(data_dir, events_url, state_url)
    server = find_server(settings)
    try:
        if server is not None:
            out = server.call("GET" if status else "POST", "/api/v1/admin/compact")
        else:
            from yunying.store import compact_events, event_layout

            rt = open_runtime(settings)
            try:
                out = {"projects": event_layout(rt.store)} if status else compact_events(rt.store)
            finally:
                rt.close()
    except YunyingError as exc:
        fail(str(exc))
    if json_out:
        print_json(out)
    elif status:
        table = Table("project", "events", "in person order at compaction", "in person order")
        for p in out["projects"]:
            table.add_row(
                str(p["project_id"]),
                f"{p['events']:,}",
                f"{p['ordered_events']:,}",
                "yes" if p["person_ordered"] else "no",
            )
        console.print(table)
    elif out["compacted"]:
        console.print(f"compacted {out['rows']:,} events in {out['seconds']:.1f} s")
    else:
        console.print(f"nothing to do: {out['reason']}")


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV or Parquet file.")
    ],
    project: ProjectName = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet.")] = None,
    batch_size: Annotated[int, typer.Option(help="Events per write.")] = 5000,
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Import events from a file with the API's validation and dedupe."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from yunying.cli.remote import find_server
    from yunying.ingest.importer import detect_format, import_rows, read_rows
    from yunying.state import get_project, open_state

    settings = settings_of(data_dir, events_url, state_url)
    try:
        fmt_name = detect_format(file, fmt)
        server = find_server(settings)
        rt = None
        if server is not None:
            import httpx

            proj = get_project(open_state(settings.state_url), project)
            client = httpx.Client()

            def submit(raws: list[Any]) -> tuple[int, int, list[dict[str, Any]]]:
                out = server.send_events(client, proj.write_key, raws)
                stored = out["accepted"] - out["duplicates"]
                return stored, out["duplicates"], out.get("errors", [])
        else:
            from yunying.ingest.model import validate_batch

            rt = open_runtime(settings)
            proj = get_project(rt.state, project)

            def submit(raws: list[Any]) -> tuple[int, int, list[dict[str, Any]]]:
                batch = validate_batch(raws)
                res = rt.writer.write(proj.id, batch.events)
                return res.stored, res.duplicates, [e.as_dict() for e in batch.errors]

        with Progress(
            TextColumn(f"importing {file.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeElapsedColumn(),
            console=err,
            disable=json_out,
        ) as bar:
            task = bar.add_task("import", total=None)
            report = import_rows(
                read_rows(file, fmt_name), submit, batch_size, lambda n: bar.advance(task, n)
            )
        if rt is not None:
            rt.close()
    except YunyingError as exc:
        fail(str(exc))
    if json_out:
        print_json(report.as_dict())
    else:
        console.print(
            f"read {report.read}, stored [green]{report.stored}[/], duplicates {report.duplicates}, "
            f"rejected [red]{report.rejected}[/] into project {proj.name!r}"
        )
        for e in report.errors[:20]:
            where = f"line {e['line']}" + (f", {e['field']}" if e["field"] else "")
            err.print(f"  {where}: {e['message']}")
        if len(report.errors) > 20:
            err.print(f"  … and {len(report.errors) - 20} more (use --json for all)")
    if report.rejected:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Serve the ingestion and management API (and the console) over HTTP."""
    settings = settings_of(data_dir, events_url, state_url)
    run_server(settings, host, port, log_level)


def run_server(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    """Open the installation, advertise it to the CLI, and serve until interrupted."""
    import uvicorn

    from yunying.cli.remote import advertise, find_server, withdraw
    from yunying.logs import configure_logging
    from yunying.web import create_app

    running = find_server(settings)
    if running is not None:
        fail(f"a server for {settings.data_dir} already runs at {running.url} (pid {running.pid})")
    rt = open_runtime(settings)
    application = create_app(rt)
    # every project's dashboard computes in the background now, not on the first visit
    application.state.console.warm_up()
    url = f"http://{host}:{port}"
    config = uvicorn.Config(application, host=host, port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    configure_logging(log_level)
    advertise(settings, url)
    err.print(
        f"[bold green]Yunying {__version__}[/] serving [bold]{url}[/]  "
        f"(API {url}/v1/events, docs {url}/docs, data {settings.data_dir})"
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; exit normally instead so
    # the clean-up below runs (withdraw server.json, close the engines).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        withdraw(settings)
        rt.close()


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Number of users to simulate.")] = 20_000,
    days: Annotated[int, typer.Option(help="Days of history, ending today.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 7,
    end: Annotated[
        str | None,
        typer.Option(
            help="Last day (YYYY-MM-DD) instead of today: fully reproducible, nothing cut at now."
        ),
    ] = None,
    project: Annotated[str, typer.Option("--project", help="Project to fill.")] = "demo",
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Generate only; do not serve.")
    ] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    json_out: JSONOut = False,
    data_dir: DataDir = None,
    events_url: EventsURL = None,
    state_url: StateURL = None,
) -> None:
    """Fill a project with the short-video editing app's demo data (replacing it), then serve."""
    from datetime import date

    from yunying.cli.remote import find_server
    from yunying.demo import generate_demo, print_summary

    try:
        last_day = None if end is None else date.fromisoformat(end)
    except ValueError:
        fail(f"--end must be a date like 2026-10-31, not {end!r}")
    settings = settings_of(data_dir, events_url, state_url)
    running = find_server(settings)
    if running is not None:
        fail(
            f"a server for {settings.data_dir} runs at {running.url} (pid {running.pid}); "
            "stop it first: the demo rewrites the project's events"
        )
    rt = open_runtime(settings)
    try:
        summary = generate_demo(
            rt,
            project,
            users=users,
            days=days,
            seed=seed,
            console=None if json_out else err,
            end=last_day,
        )
        from yunying.cli.users import ensure_demo_user  # the console's admin, printed below

        summary["console_user"], summary["console_password"] = ensure_demo_user(rt.state)
    except YunyingError as exc:
        fail(str(exc))
    finally:
        rt.close()
    url = None if no_serve else f"http://{host}:{port}"
    if json_out:
        print_json({**summary, "data_dir": str(settings.data_dir), "url": url})
    else:
        print_summary(console, summary, settings.data_dir, url)
        console.print(
            f"console: {url or 'yunying serve'} → sign in as [bold]{summary['console_user']}[/] "
            f"with password [bold]{summary['console_password']}[/] (a new one on every demo run)"
        )
    if not no_serve:
        run_server(settings, host, port)


def main() -> None:  # pragma: no cover - console entry point
    from yunying.analytics.memory import keep_freed_memory

    keep_freed_memory()  # big analysis arrays stay mapped between queries
    app()


# Capability modules add their commands; they take the options defined above.
from yunying.cli import activities, analytics, audience, clv, risk, segments, users  # noqa: E402

for _module in (analytics, segments, audience, clv, activities, risk, users):
    _module.register(app)
