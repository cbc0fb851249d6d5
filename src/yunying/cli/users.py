"""``yunying user create|list|set-password|set-role|deactivate``: console team members.

Users live in the state database, so these commands work whether or not a server runs (the state
engine allows several processes). The first administrator is created here:
``yunying user create admin --role admin`` prints a generated password once.

Registered by :func:`register`, called at the end of :mod:`yunying.cli.main`.
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

from pathlib import Path
from typing import Annotated, Any

import typer

DEMO_USER = "admin"


def ensure_demo_user(state: Any, name: str = DEMO_USER) -> tuple[str, str | None]:
    """Make sure the demo has an administrator: create ``name`` with a fresh password, or give
    the existing one a fresh password (the demo prints it). Returns (name, password)."""
    from yunying.console.users import (
        create_user,
        generate_password,
        get_user,
        set_password,
        update_user,
    )
    from yunying.errors import NotFound

    password = generate_password()
    try:
        user = get_user(state, name)
    except NotFound:
        create_user(state, name, password, "admin")
        return name, password
    set_password(state, name, password)
    if user.role != "admin" or not user.active:
        update_user(state, name, role="admin", active=True)
    return name, password


def register(app: typer.Typer) -> None:
    """Add the ``user`` command group."""
    from yunying.cli.main import DataDir, EventsURL, JSONOut, StateURL, fail, print_json

    user_app = typer.Typer(
        help="Console team members: create, list, change roles and passwords.",
        no_args_is_help=True,
    )
    app.add_typer(user_app, name="user")

    def state_of(data_dir: Path | None, events_url: str | None, state_url: str | None) -> Any:
        from yunying.cli.main import settings_of
        from yunying.state import open_state

        settings = settings_of(data_dir, events_url, state_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return open_state(settings.state_url)

    def read_password(password_stdin: bool) -> str | None:
        if not password_stdin:
            return None
        import sys

        return sys.stdin.readline().rstrip("\n")

    @user_app.command("create")
    def create(
        name: str,
        role: Annotated[
            str, typer.Option(help="admin (director), operator, analyst or viewer.")
        ] = "viewer",
        password_stdin: Annotated[
            bool,
            typer.Option("--password-stdin", help="Read the password from standard input."),
        ] = False,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Create a user; without --password-stdin a password is generated and printed once."""
        from yunying.console.users import create_user, generate_password
        from yunying.errors import YunyingError

        password = read_password(password_stdin)
        generated = password is None
        password = password or generate_password()
        try:
            user = create_user(state_of(data_dir, events_url, state_url), name, password, role)
        except YunyingError as exc:
            fail(str(exc))
        if json_out:
            print_json(
                {"name": user.name, "role": user.role, "password": password if generated else None}
            )
            return
        from yunying.cli.main import console

        console.print(f"[green]created[/] user {user.name!r} with role {user.role}")
        if generated:
            console.print(f"  password: {password}")
            console.print(
                "  [yellow]shown only now: give it to the user, who signs in at /login[/]"
            )

    @user_app.command("list")
    def list_(
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """List users with their roles."""
        from rich.table import Table

        from yunying.cli.main import console
        from yunying.console.users import list_users

        users = list_users(state_of(data_dir, events_url, state_url))
        if json_out:
            print_json(
                [
                    {
                        "name": u.name,
                        "role": u.role,
                        "active": u.active,
                        "created_at": u.created_at.isoformat(),
                        "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
                    }
                    for u in users
                ]
            )
            return
        table = Table("name", "role", "active", "last sign-in")
        for u in users:
            last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "–"
            table.add_row(u.name, u.role, "yes" if u.active else "no", last)
        console.print(table)

    @user_app.command("set-password")
    def set_password_(
        name: str,
        password_stdin: Annotated[
            bool,
            typer.Option("--password-stdin", help="Read the password from standard input."),
        ] = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Give a user a new password (generated and printed unless --password-stdin)."""
        from yunying.cli.main import console
        from yunying.console.users import generate_password, set_password
        from yunying.errors import YunyingError

        password = read_password(password_stdin)
        generated = password is None
        password = password or generate_password()
        try:
            set_password(state_of(data_dir, events_url, state_url), name, password)
        except YunyingError as exc:
            fail(str(exc))
        console.print(f"[green]password changed[/] for {name!r}; their sessions were ended")
        if generated:
            console.print(f"  password: {password}")

    @user_app.command("set-role")
    def set_role(
        name: str,
        role: str,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Change a user's role (admin, operator, analyst, viewer)."""
        from yunying.cli.main import console
        from yunying.console.users import update_user
        from yunying.errors import YunyingError

        try:
            user = update_user(state_of(data_dir, events_url, state_url), name, role=role)
        except YunyingError as exc:
            fail(str(exc))
        console.print(f"{user.name!r} is now {user.role}")

    @user_app.command("deactivate")
    def deactivate(
        name: str,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Stop a user from signing in (their sessions end now)."""
        from yunying.cli.main import console
        from yunying.console.users import update_user
        from yunying.errors import YunyingError

        try:
            update_user(state_of(data_dir, events_url, state_url), name, active=False)
        except YunyingError as exc:
            fail(str(exc))
        console.print(f"{name!r} deactivated")
