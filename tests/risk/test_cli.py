"""`yunying review` and `yunying blocklist`, locally and through a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from yunying.cli.main import app
from yunying.config import load_settings
from yunying.risk import RiskPolicy, assess
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project

from ..conftest import LiveServer
from .helpers import make_claim

POLICY = RiskPolicy.from_spec(
    {r: {"enabled": False} for r in ("network", "velocity", "account_age", "invites")}
)


def cli(data_dir: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)])
    return result


def hold_two(rt: Runtime, pid: int) -> list[int]:
    ids = []
    for i in range(5):
        d = assess(rt, POLICY, make_claim(pid, f"c{i}", device="d", kind="cli-test"))
        if d.review_id:
            ids.append(d.review_id)
    return ids


def test_cli_locally(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = Runtime.open(load_settings(data_dir=data))
    pid = create_project(rt.state, "本地").project.id
    ids = hold_two(rt, pid)
    rt.close()

    r = cli(data, "review", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [x["id"] for x in orjson.loads(r.stdout)["reviews"]] == ids
    r = cli(data, "review", "list")
    assert r.exit_code == 0 and "pending" in r.stdout  # a table (wrapped to the test width)
    r = cli(data, "review", "show", str(ids[0]))
    assert r.exit_code == 0 and "device" in r.stdout and f"{ids[0]} (pending)" in r.stdout
    r = cli(data, "review", "approve", str(ids[0]), "--reviewer", "alice", "--note", "ok", "--json")
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["status"] == "approved"
    r = cli(data, "review", "deny", str(ids[0]))
    assert r.exit_code == 1 and "already approved by alice" in r.output
    r = cli(data, "review", "list", "--status", "bogus")
    assert r.exit_code == 1 and "status" in r.output

    r = cli(
        data, "blocklist", "add", "subnet", "203.0.113.5/24", "--reason", "farm", "--expires", "7d"
    )
    assert r.exit_code == 0, r.output
    assert "203.0.113.0/24" in r.stdout
    r = cli(data, "blocklist", "add", "ip", "not-an-ip", "--reason", "x")
    assert r.exit_code == 1 and "value" in r.output
    r = cli(data, "blocklist", "add", "device", "d", "--reason", "x", "--expires", "soon")
    assert r.exit_code == 1 and "--expires" in r.output
    r = cli(data, "blocklist", "list", "--json")
    entries = orjson.loads(r.stdout)["entries"]
    assert [e["kind"] for e in entries] == ["subnet"] and entries[0]["expires_at"]
    r = cli(data, "blocklist", "remove", str(entries[0]["id"]))
    assert r.exit_code == 0 and "removed subnet" in r.stdout
    r = cli(data, "blocklist", "remove", str(entries[0]["id"]))
    assert r.exit_code == 1 and "no blocklist entry" in r.output


def test_cli_through_server(live: LiveServer, project: NewProject) -> None:
    data = live.runtime.settings.data_dir
    ids = hold_two(live.runtime, project.project.id)
    r = cli(data, "review", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [x["id"] for x in orjson.loads(r.stdout)["reviews"]] == ids
    r = cli(data, "review", "deny", str(ids[1]), "--reviewer", "bob", "--json")
    assert r.exit_code == 0 and orjson.loads(r.stdout)["reviewer"] == "bob"
    r = cli(data, "review", "approve", str(ids[1]))
    assert r.exit_code == 1 and "409" in r.output and "already denied" in r.output
    r = cli(data, "blocklist", "add", "device", "emu-7", "--reason", "emulator", "--json")
    assert r.exit_code == 0, r.output
    r = cli(data, "blocklist", "list", "--kind", "device", "--json")
    assert orjson.loads(r.stdout)["entries"][0]["value"] == "emu-7"
