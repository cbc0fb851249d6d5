"""Anti-fraud review queue and blocklist: `yunying review ...`, `yunying blocklist ...`.

Each command is a call of ``/api/v1/risk`` (see :mod:`yunying.web.risk_api`): through the running
server when one serves the data dir, else the same functions locally, so ``--json`` prints the
API's answer either way.
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

import getpass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from yunying.runtime import Runtime

HOURS = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1, "day": 24, "week": 168}


class UsageError(Exception):
    """An option value the command cannot turn into a request."""


def parse_expiry(text: str | None) -> dict[str, Any]:
    """``7d`` / ``24h`` / ``2w`` → ``expires_in_hours``; an ISO date-time → ``expires_at``."""
    if text is None:
        return {}
    from yunying.cli.analytics import UsageError as WindowError
    from yunying.cli.analytics import parse_window

    try:
        count, unit = parse_window(text)
        return {"expires_in_hours": count * HOURS[unit]}
    except WindowError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--expires must be a duration like 7d, 24h, 2w or a date-time, not {text!r}"
        ) from None
    return {"expires_at": (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()}


def reasons_text(reasons: list[dict[str, Any]]) -> str:
    return "; ".join(r["code"] for r in reasons)


def reviews_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "status", "activity", "person", "reward", "reasons", "created", "reviewer")
    for r in items:
        c = r["claim"]
        table.add_row(
            str(r["id"]),
            r["status"],
            f"{r['activity_id']} ({escape(r['activity_kind'])})",
            escape(r["person_id"]),
            f"{c['reward_kind']} {c['amount']:g}",
            escape(reasons_text(r["reasons"])),
            r["created_at"][:19],
            escape(r["reviewer"] or ""),
        )
    return table


def review_detail(r: dict[str, Any]) -> Table:
    table = Table("field", "value", show_header=False)
    c = r["claim"]
    rows = [
        ("review", f"{r['id']} ({r['status']})"),
        ("activity", f"{r['activity_id']} ({r['activity_kind']})"),
        ("person", f"{c['person_id']} (distinct id {c['distinct_id']})"),
        ("claim time", c["at"]),
        ("reward", f"{c['reward_kind']} {c['amount']:g}"),
        ("device / ip", f"{c.get('device_id') or '-'} / {c.get('ip') or '-'}"),
    ]
    if c.get("role"):
        rows.append(("role", f"{c['role']} (other side {c.get('counterpart_person_id')})"))
    for reason in r["reasons"]:
        rows.append((reason["code"], reason["message"]))
    if r["decided_at"]:
        rows.append(("decided", f"{r['decided_at']} by {r['reviewer']}: {r['note'] or ''}"))
    if r["handler_error"]:
        rows.append(("handler error", r["handler_error"]))
    for k, v in rows:
        table.add_row(escape(k), escape(str(v)))
    return table


def blocks_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "kind", "value", "reason", "by", "created", "expires")
    for e in items:
        table.add_row(
            str(e["id"]),
            e["kind"],
            escape(e["value"]),
            escape(e["reason"]),
            escape(e["created_by"]),
            e["created_at"][:19],
            (e["expires_at"] or "never")[:19],
        )
    return table


def register(app: typer.Typer) -> None:
    """Add ``review`` and ``blocklist`` command groups to the ``yunying`` app."""
    from yunying.cli.main import (
        DataDir,
        EventsURL,
        JSONOut,
        ProjectName,
        StateURL,
        console,
        fail,
        print_json,
        settings_of,
    )
    from yunying.cli.remote import call_project_api

    review_app = typer.Typer(
        help="Anti-fraud review queue: held claims to approve or deny.", no_args_is_help=True
    )
    block_app = typer.Typer(
        help="Anti-fraud blocklist: persons, devices, IPs, subnets.", no_args_is_help=True
    )
    app.add_typer(review_app, name="review", rich_help_panel="Operations")
    app.add_typer(block_app, name="blocklist", rich_help_panel="Operations")

    Reviewer = Annotated[str | None, typer.Option(help="Who decides (default: your user name).")]
    Note = Annotated[str | None, typer.Option(help="Why, kept with the decision.")]

    @review_app.command("list")
    def review_list(
        status: Annotated[str, typer.Option(help="pending, approved, denied or all.")] = "pending",
        activity: Annotated[int | None, typer.Option(help="Only this activity id.")] = None,
        person: Annotated[str | None, typer.Option(help="Only this person id.")] = None,
        reason: Annotated[str | None, typer.Option(help="Only with this reason code.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
        offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Review-queue items (pending ones oldest first)."""
        from yunying.risk import list_reviews

        def local(rt: "Runtime", p: Any) -> Any:
            items = list_reviews(
                rt.state,
                p.id,
                status=None if status == "all" else status,
                activity_id=activity,
                person_id=person,
                reason=reason,
                limit=limit,
                offset=offset,
            )
            return {"reviews": [r.as_dict() for r in items]}

        params = {
            "status": status,
            "activity_id": activity,
            "person_id": person,
            "reason": reason,
            "limit": limit,
            "offset": offset,
        }
        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/risk/reviews",
            local, params=params,
        )  # fmt: skip
        if json_out:
            print_json(result)
        elif not result["reviews"]:
            console.print(f"no {status if status != 'all' else ''} reviews".replace("  ", " "))
        else:
            console.print(reviews_table(result["reviews"]))

    @review_app.command("show")
    def review_show(
        review_id: Annotated[int, typer.Argument(help="Review id.")],
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """One review with its claim and reasons."""
        from yunying.risk import get_review

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            f"/api/v1/risk/reviews/{review_id}",
            lambda rt, p: get_review(rt.state, p.id, review_id).as_dict(),
        )  # fmt: skip
        if json_out:
            print_json(result)
        else:
            console.print(review_detail(result))

    def decision(
        review_id: int,
        approved: bool,
        reviewer: str | None,
        note: str | None,
        project: str | None,
        json_out: bool,
        data_dir: Any,
        events_url: str | None,
        state_url: str | None,
    ) -> None:
        from yunying.risk import decide, get_review

        who = reviewer or getpass.getuser()

        def local(rt: "Runtime", p: Any) -> Any:
            decide(rt, p.id, review_id, approved=approved, reviewer=who, note=note)
            return get_review(rt.state, p.id, review_id).as_dict()

        action = "approve" if approved else "deny"
        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST",
            f"/api/v1/risk/reviews/{review_id}/{action}", local,
            json={"reviewer": who, "note": note}, project_in="body",
        )  # fmt: skip
        if json_out:
            print_json(result)
        else:
            console.print(f"review {review_id} [bold]{result['status']}[/] by {escape(who)}")

    @review_app.command("approve")
    def review_approve(
        review_id: Annotated[int, typer.Argument(help="Review id.")],
        reviewer: Reviewer = None,
        note: Note = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Approve a held claim: its activity grants the reward."""
        decision(
            review_id, True, reviewer, note, project, json_out, data_dir, events_url, state_url
        )

    @review_app.command("deny")
    def review_deny(
        review_id: Annotated[int, typer.Argument(help="Review id.")],
        reviewer: Reviewer = None,
        note: Note = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Deny a held claim: its activity records the denial."""
        decision(
            review_id, False, reviewer, note, project, json_out, data_dir, events_url, state_url
        )

    @block_app.command("add")
    def block_add(
        kind: Annotated[str, typer.Argument(help="person, distinct_id, device, ip or subnet.")],
        value: Annotated[str, typer.Argument(help="The id, address or CIDR subnet.")],
        reason: Annotated[str, typer.Option(help="Why (shown to reviewers).")],
        expires: Annotated[
            str | None,
            typer.Option(help="Duration (7d, 24h, 2w) or ISO date-time; default: never."),
        ] = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Block claims from a person, device, IP or subnet (re-adding refreshes it)."""
        from yunying.risk import add_block
        from yunying.web.risk_api import expiry, parse_block

        try:
            extra = parse_expiry(expires)
        except UsageError as exc:
            fail(str(exc))
        by = getpass.getuser()
        body = {
            "kind": kind,
            "value": value,
            "reason": reason,
            "created_by": by,
            **extra,
        }

        def local(rt: "Runtime", p: Any) -> Any:
            parsed = parse_block(body)
            return add_block(
                rt.state,
                p.id,
                parsed.kind,
                parsed.value,
                parsed.reason,
                created_by=by,
                expires_at=expiry(parsed),
            ).as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST", "/api/v1/risk/blocklist",
            local, json=body, project_in="body",
        )  # fmt: skip
        if json_out:
            print_json(result)
        else:
            until = result["expires_at"] or "never expires"
            console.print(
                f"blocked {result['kind']} {escape(result['value'])} (entry {result['id']}, "
                f"{until})"
            )

    @block_app.command("remove")
    def block_remove(
        entry_id: Annotated[int, typer.Argument(help="Entry id (see `yunying blocklist list`).")],
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Remove a blocklist entry."""
        from yunying.risk import remove_block

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "DELETE",
            f"/api/v1/risk/blocklist/{entry_id}",
            lambda rt, p: remove_block(rt.state, p.id, entry_id).as_dict(),
        )  # fmt: skip
        if json_out:
            print_json(result)
        else:
            console.print(f"removed {result['kind']} {escape(result['value'])}")

    @block_app.command("list")
    def block_list(
        kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
        include_expired: Annotated[
            bool, typer.Option("--all", help="Include expired entries.")
        ] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Blocklist entries, newest first."""
        from yunying.risk import list_blocks

        def local(rt: "Runtime", p: Any) -> Any:
            items = list_blocks(rt.state, p.id, kind, include_expired=include_expired)
            return {"entries": [e.as_dict() for e in items]}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/risk/blocklist",
            local, params={"kind": kind, "include_expired": include_expired},
        )  # fmt: skip
        if json_out:
            print_json(result)
        elif not result["entries"]:
            console.print("the blocklist is empty")
        else:
            console.print(blocks_table(result["entries"]))
