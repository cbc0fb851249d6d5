"""`yunying user ...` and the console login that `yunying demo` prints, run as a user would."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from yunying.cli.main import app
from yunying.config import load_settings
from yunying.console.users import authenticate, get_user
from yunying.state import open_state


def run(*args: str, data_dir: Path, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], input=stdin)
    return result.exit_code, result.output


def test_user_commands(tmp_path: Path) -> None:
    code, out = run("user", "create", "lin", "--role", "director", "--json", data_dir=tmp_path)
    assert code == 0, out
    created = orjson.loads(out)
    assert created["role"] == "admin" and len(created["password"]) >= 12
    state = open_state(load_settings(data_dir=tmp_path).state_url)
    assert authenticate(state, "lin", created["password"]) is not None
    code, out = run(
        "user", "create", "wu", "--role", "analyst", "--password-stdin", data_dir=tmp_path,
        stdin="a-long-password\n",
    )  # fmt: skip
    assert code == 0 and "password:" not in out
    assert authenticate(state, "wu", "a-long-password") is not None
    code, out = run("user", "create", "wu", data_dir=tmp_path)
    assert code == 1 and "already exists" in out
    code, out = run("user", "create", "x", "--role", "boss", data_dir=tmp_path)
    assert code == 1 and "unknown role" in out
    assert run("user", "set-role", "wu", "operator", data_dir=tmp_path)[0] == 0
    assert get_user(state, "wu").role == "operator"
    code, out = run("user", "set-password", "wu", data_dir=tmp_path)
    assert code == 0 and authenticate(state, "wu", "a-long-password") is None
    assert run("user", "deactivate", "wu", data_dir=tmp_path)[0] == 0
    code, out = run("user", "list", "--json", data_dir=tmp_path)
    listed = {u["name"]: u for u in orjson.loads(out)}
    assert listed["wu"]["active"] is False and listed["lin"]["role"] == "admin"
    state.dispose()


def test_demo_prints_a_console_login(tmp_path: Path) -> None:
    args = ("demo", "--users", "40", "--days", "5", "--no-serve", "--json")
    code, out = run(*args, data_dir=tmp_path)
    assert code == 0, out
    first = orjson.loads(out)
    assert first["console_user"] == "admin"
    state = open_state(load_settings(data_dir=tmp_path).state_url)
    assert authenticate(state, "admin", first["console_password"]) is not None
    code, out = run("demo", "--users", "40", "--days", "5", "--no-serve", data_dir=tmp_path)
    assert code == 0 and "sign in as admin with password" in out
    # every run gives the admin a new password, printed there; the old one stops working
    assert authenticate(state, "admin", first["console_password"]) is None
    state.dispose()
