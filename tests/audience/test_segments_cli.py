"""`yunying segment ...` and `yunying tag ...`: locally, and through a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tests.audience.conftest import load_world, make_world
from tests.conftest import LiveServer
from yunying.cli.main import app
from yunying.runtime import Runtime
from yunying.state import NewProject

RULES_YAML = """\
name: 重度剪辑用户
description: edited at least 3 videos
schedule_minutes: 60
rules:
  type: and
  rules:
    - type: event
      event: edit_video
      count: at_least
      times: 3
    - type: not
      rule: {type: property, name: city, op: eq, value: 上海}
"""


def cli(data_dir: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    return orjson.loads(text) if "--json" in args else text


def cli_fails(data_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)])
    assert result.exit_code != 0, result.output
    return result.output


def _exercise(data_dir: Path, tmp: Path) -> None:
    rules = tmp / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    made = cli(data_dir, "segment", "create", "--file", str(rules), "--json")
    assert made["name"] == "重度剪辑用户" and made["schedule_minutes"] == 60
    assert made["size"] > 0
    sid = str(made["id"])
    assert [s["id"] for s in cli(data_dir, "segment", "list", "--json")["segments"]] == [made["id"]]
    shown = cli(data_dir, "segment", "show", "重度剪辑用户", "--json")
    assert shown["sizes"][0]["size"] == made["size"]
    page = cli(data_dir, "segment", "members", sid, "--limit", "2", "--json")
    assert page["total"] == made["size"] and len(page["persons"]) == 2
    csv_text = cli(data_dir, "segment", "export", sid)
    assert csv_text.splitlines()[0] == "person_id,distinct_id"
    assert "重度剪辑用户" in cli(data_dir, "segment", "list")  # a table

    tag_file = tmp / "tag.json"
    tag_file.write_text(orjson.dumps({"type": "event", "event": "purchase_membership"}).decode())
    tag = cli(data_dir, "tag", "create", "--file", str(tag_file), "--name", "buyer", "--json")
    assert tag["scope"] == "tag:buyer" and tag["size"] > 0
    assert cli(data_dir, "tag", "list", "--json")["tags"][0]["name"] == "buyer"
    again = cli(data_dir, "tag", "recompute", "buyer", "--json")
    assert again["size"] == tag["size"]

    report = cli(data_dir, "segment", "recompute", "--all", "--json")
    assert [c["kind"] for c in report["computed"]] == ["tag", "segment"]
    one = cli(data_dir, "segment", "recompute", sid, "--now", "2024-03-25T09:30:00+00:00", "--json")
    assert one["id"] == made["id"]

    snap = cli(data_dir, "segment", "snapshot", sid, "--name", "frozen", "--json")
    assert snap["kind"] == "static"
    static = cli(data_dir, "segment", "create", "--static", "--name", "list", "--json")
    upload = tmp / "ids.csv"
    upload.write_text(csv_text + "\n", encoding="utf-8")
    up = cli(data_dir, "segment", "upload", str(static["id"]), "--file", str(upload), "--json")
    assert up["id_type"] == "person_id" and up["segment"]["size"] == made["size"]

    assert "no segment" in cli_fails(data_dir, "segment", "show", "nope")
    bad = tmp / "bad.yaml"
    bad.write_text("type: event\nevent: x\nwindow: {last_days: 0}\n")
    out = cli_fails(data_dir, "segment", "create", "--file", str(bad), "--name", "bad")
    assert "rules.window.last_days" in out
    cli(data_dir, "segment", "delete", "list", "--json")
    cli(data_dir, "segment", "delete", "frozen")


def test_cli_locally(runtime: Runtime, project: NewProject, tmp_path: Path) -> None:
    load_world(runtime, project.project.id, make_world(9, persons=60))
    data_dir = runtime.settings.data_dir
    runtime.close()  # the CLI opens the installation itself (DuckDB allows one process)
    _exercise(data_dir, tmp_path)


@pytest.mark.slow
def test_cli_through_the_server(live: LiveServer, project: NewProject, tmp_path: Path) -> None:
    load_world(live.runtime, project.project.id, make_world(9, persons=60))
    _exercise(live.runtime.settings.data_dir, tmp_path)
