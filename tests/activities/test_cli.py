"""`yunying activity ...`, `yunying ledger ...`, `yunying user-token` locally and via the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from tests.activities.conftest import App
from tests.conftest import LiveServer
from yunying.activities.tokens import signing_secret, verify_user_token
from yunying.cli.main import app as cli

SPEC = """
template: promotion
name: 会员日
event: view_content
reward: {kind: coupon, threshold_fen: 10000, discount_fen: 3000}
budget: {total_count: 100}
risk: {mode: "off"}
"""


def run(data_dir: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_cli_locally(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "project", "create", "cli")
    spec = tmp_path / "promo.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    a = run(data, "activity", "create", "--file", str(spec), "--start")
    assert a["state"] == "running" and a["template"] == "promotion"
    assert [x["id"] for x in run(data, "activity", "list")["activities"]] == [a["id"]]
    assert run(data, "activity", "pause", str(a["id"]))["state"] == "paused"
    assert run(data, "activity", "resume", str(a["id"]))["state"] == "running"
    assert [x["action"] for x in run(data, "activity", "audit", str(a["id"]))["audit"]] == [
        "create", "start", "pause", "resume",
    ]  # fmt: skip
    rep = run(data, "activity", "report", str(a["id"]))
    assert rep["participants"] == 0 and rep["claims"]["granted"] == 0
    tok = run(data, "user-token", "u1")
    assert tok["token"].startswith("yut_")
    bad = CliRunner().invoke(cli, ["activity", "show", "999", "--data-dir", str(data)])
    assert bad.exit_code == 1 and "no activity 999" in bad.output


def test_cli_through_the_server(app: App, live: LiveServer, tmp_path: Path) -> None:
    data = live.runtime.settings.data_dir
    spec = tmp_path / "promo.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    a = run(data, "activity", "create", "--file", str(spec), "--start")
    app.events([app.event("buyer", "view_content")])
    wallet = run(data, "ledger", "balance", "--user", "buyer")
    assert len(wallet["coupons"]) == 1
    entries = run(data, "ledger", "entries", "--activity", str(a["id"]))["transactions"]
    assert [e["amount"] for e in entries[0]["entries"]] == [-1, 1]
    rev = run(data, "ledger", "reverse", str(entries[0]["id"]), "--reason", "fraud")
    assert rev["reverses"] == entries[0]["id"]
    assert run(data, "ledger", "balance", "--user", "buyer")["coupons"][0]["status"] == "reversed"
    assert run(data, "activity", "kill", str(a["id"]))["killed"] is True
    token = run(data, "user-token", "buyer", "--ttl", "60")["token"]
    secret = signing_secret(live.runtime.state, app.project.project.id)
    assert verify_user_token(secret, token)[1] == "buyer"
