"""The CLI as a user drives it: init, projects, read-only SQL, and commands against a live server."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import free_port
from yunying.cli.main import app

runner = CliRunner()


def cli(data_dir: Path, *args: str) -> Any:
    return runner.invoke(app, [*args, "--data-dir", str(data_dir)])


def test_init_then_project_create_prints_keys_once(tmp_path: Path) -> None:
    d = tmp_path / "d"
    assert cli(d, "init").exit_code == 0
    assert (d / "events.duckdb").exists() and (d / "state.sqlite").exists()
    assert oct((d / ".admin_token").stat().st_mode & 0o777) == "0o600"
    out = orjson.loads(cli(d, "project", "create", "剪辑App", "--json").stdout)
    assert set(out) == {"id", "name", "write_key", "secret_key"}
    listed = orjson.loads(cli(d, "project", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["剪辑App"]
    assert out["secret_key"] not in str(listed)
    dup = cli(d, "project", "create", "剪辑App")
    assert dup.exit_code == 1 and "already exists" in dup.output


def test_project_update_renames_and_changes_the_time_zone(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cli(d, "project", "create", "a")
    cli(d, "project", "create", "b")
    out = cli(
        d, "project", "update", "a", "--rename", "剪辑", "--timezone", "Europe/Berlin", "--json"
    )
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.stdout)["timezone"] == "Europe/Berlin"
    listed = {p["name"]: p for p in orjson.loads(cli(d, "project", "list", "--json").stdout)}
    assert set(listed) == {"剪辑", "b"} and listed["剪辑"]["timezone"] == "Europe/Berlin"
    for args, fragment in [
        (["--rename", "b"], "already exists"),
        (["--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--rename", "  "], "1 to 200"),
    ]:
        bad = cli(d, "project", "update", "剪辑", *args)
        assert bad.exit_code == 1 and fragment in bad.output, (args, bad.output)
    assert cli(d, "project", "update", "nope", "--timezone", "UTC").exit_code == 1


def test_data_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YUNYING_DATA_DIR", str(tmp_path / "env-dir"))
    assert runner.invoke(app, ["project", "create", "p"]).exit_code == 0
    assert (tmp_path / "env-dir" / "state.sqlite").exists()


def test_sql_reads_and_refuses_writes(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cli(d, "project", "create", "a")
    ok = cli(d, "sql", "SELECT count(*) AS n FROM events", "--json")
    assert ok.exit_code == 0 and orjson.loads(ok.stdout) == {"columns": ["n"], "rows": [[0]]}
    for query, fragment in [
        ("DELETE FROM events", "only queries"),
        ("SELECT * FROM raw_events", "unknown table"),
        ("SELECT * FROM read_parquet('x.parquet')", "not available"),
        ("SELECT 1; DROP TABLE events", "exactly one"),
        ("SELECT nope FROM events", "nope"),
    ]:
        result = cli(d, "sql", query)
        assert result.exit_code == 1, query
        assert fragment in result.output, (query, result.output)


def test_sql_needs_project_when_there_are_several(tmp_path: Path) -> None:
    d = tmp_path / "d"
    cli(d, "project", "create", "a")
    cli(d, "project", "create", "b")
    result = cli(d, "sql", "SELECT 1")
    assert result.exit_code == 1 and "--project" in result.output
    assert cli(d, "sql", "SELECT 1", "--project", "b").exit_code == 0


def test_compact_puts_events_in_person_order_and_keeps_them(tmp_path: Path) -> None:
    d = tmp_path / "d"
    key = orjson.loads(cli(d, "project", "create", "a", "--json").stdout)["write_key"]
    from yunying.config import load_settings
    from yunying.ingest.model import validate_batch
    from yunying.runtime import Runtime

    rt = Runtime.open(load_settings(data_dir=d))
    raws = [
        {
            "event": "edit_video",
            "distinct_id": f"u{i % 3}",
            "timestamp": f"2024-03-0{1 + i}T10:00:00Z",
        }
        for i in range(6)
    ]
    rt.writer.write(1, validate_batch(raws).events)
    rt.close()
    assert key
    before = cli(d, "sql", "SELECT distinct_id, timestamp FROM events", "--json")
    out = cli(d, "compact", "--json")
    assert out.exit_code == 0, out.output
    report = orjson.loads(out.stdout)
    assert report["compacted"] is True and report["rows"] == 6
    assert 0 <= report["writers_waited_seconds"] <= report["seconds"]
    after = cli(d, "sql", "SELECT distinct_id, timestamp FROM events", "--json")
    rows = orjson.loads(after.stdout)["rows"]
    assert sorted(rows) == sorted(orjson.loads(before.stdout)["rows"])

    def runs(rows: list[list[Any]]) -> int:
        return len([who for who, _ in itertools.groupby(r[0] for r in rows)])

    assert runs(orjson.loads(before.stdout)["rows"]) == 6  # as written: in time order
    assert runs(rows) == 3  # each person's events together
    plain = cli(d, "compact")
    assert plain.exit_code == 0 and "compacted 6 events" in plain.output
    status = orjson.loads(cli(d, "compact", "--status", "--json").stdout)
    assert status == {
        "projects": [{"project_id": 1, "events": 6, "ordered_events": 6, "person_ordered": True}]
    }
    assert "yes" in cli(d, "compact", "--status").output


def _yunying(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yunying", *args], capture_output=True, text=True, timeout=120, **kw
    )


@pytest.mark.slow
def test_commands_go_through_a_running_server(tmp_path: Path) -> None:
    """DuckDB allows one writer process: with `serve` running, sql and import use its API."""
    d = str(tmp_path / "d")
    project = orjson.loads(_yunying("project", "create", "app", "--json", "--data-dir", d).stdout)
    key = project["write_key"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "yunying", "serve", "--port", str(port), "--data-dir", d],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # the server compacts by itself: checks every half second, projects of 5 events up
        env={**os.environ, "YUNYING_COMPACT_SECONDS": "0.5", "YUNYING_COMPACT_MIN_EVENTS": "5"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/events",
            headers={"Authorization": f"Bearer {key}"},
            json={"event": "app_open", "distinct_id": "d1"},
        )
        assert r.status_code == 200
        events = tmp_path / "more.jsonl"
        events.write_text(
            "\n".join(
                orjson.dumps({"event": "edit_video", "distinct_id": f"d{i}"}).decode()
                for i in range(1, 11)
            )
        )
        imported = _yunying("import", str(events), "--json", "--data-dir", d)
        assert imported.returncode == 0, imported.stderr
        assert orjson.loads(imported.stdout)["stored"] == 10
        out = _yunying(
            "sql",
            "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 1",
            "--json",
            "--data-dir",
            d,
        )
        assert out.returncode == 0, out.stderr
        assert orjson.loads(out.stdout)["rows"] == [["app_open", 1], ["edit_video", 10]]
        deadline = time.monotonic() + 30
        while True:  # 11 events since none were in order: the server compacts them
            layout = orjson.loads(_yunying("compact", "--status", "--json", "--data-dir", d).stdout)
            if layout["projects"][0]["person_ordered"]:
                break
            assert time.monotonic() < deadline, layout
            time.sleep(0.2)
        assert layout["projects"][0]["ordered_events"] == 11
        compacted = _yunying("compact", "--json", "--data-dir", d)  # through the server too
        assert compacted.returncode == 0, compacted.stderr
        assert orjson.loads(compacted.stdout)["rows"] == 11
        secret = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/admin/compact",
            headers={"Authorization": f"Bearer {project['secret_key']}"},
        )
        assert secret.status_code == 403 and "admin token" in secret.text
        second = _yunying("serve", "--port", str(free_port()), "--data-dir", d)
        assert second.returncode == 1 and "already runs" in second.stderr
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "serving" in err and f"http://127.0.0.1:{port}" in err
    assert not (Path(d) / "server.json").exists(), "server.json is withdrawn on shutdown"
    # after shutdown the CLI opens the files itself and sees the same data
    out = _yunying("sql", "SELECT count(*) FROM events", "--json", "--data-dir", d)
    assert orjson.loads(out.stdout)["rows"] == [[11]]
