"""Activities and the rewards ledger from the command line.

``yunying activity create --file F | list | show | start | pause | resume | end | kill | report |
audit ID``, ``yunying ledger balance | entries | reverse``, ``yunying user-token USER``. Each
command calls the management API of the server serving the data dir when one runs (DuckDB allows
one process), else the same functions locally; ``--json`` prints the API's answer either way.
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from yunying.runtime import Runtime

activity_app = typer.Typer(
    help="Activities (活动): create from a spec, run, stop, report.", no_args_is_help=True
)
ledger_app = typer.Typer(help="Rewards ledger: balances, entries, reversals.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``activity``, ``ledger`` and ``user-token`` to the ``yunying`` app."""
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

    app.add_typer(activity_app, name="activity", rich_help_panel="Operations")
    app.add_typer(ledger_app, name="ledger", rich_help_panel="Operations")

    def show(result: Any, json_out: bool, text: str | None = None) -> None:
        if json_out:
            print_json(result)
        elif text is not None:
            console.print(text)
        else:
            print_json(result)

    def summary(a: dict[str, Any]) -> str:
        live = a.get("live") or {}
        claims = live.get("claims", {})
        return (
            f"[bold]#{a['id']}[/] {a['name']} ({a['template']}) — [cyan]{a['state']}[/]"
            + (" [red]KILLED[/]" if a.get("killed") else "")
            + (
                f"\n  participants {live.get('participants', 0)}, completions {live.get('completions', 0)}, "
                f"granted {claims.get('granted', 0)}, held {claims.get('held', 0)}, denied {claims.get('denied', 0)}, "
                f"cost {live.get('cost_fen', 0) / 100:.2f} 元"
                if live
                else ""
            )
        )

    @activity_app.command("create")
    def create(
        file: Annotated[Path, typer.Option("--file", "-f", help="Spec file, YAML or JSON.")],
        start: Annotated[bool, typer.Option("--start", help="Start it right away.")] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Create an activity (a draft) from a spec file; see docs/activities.md."""
        import yaml

        from yunying.activities import report, service

        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            fail(f"cannot read {file}: {exc}")

        def local(rt: "Runtime", p: Any) -> Any:
            act = service.create_activity(rt.state, p.id, data, "cli")
            return report.activity_detail(rt, act)

        a = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST", "/api/v1/activities",
            local, json=data,
        )  # fmt: skip
        if start:
            a = transition_cmd("start", a["id"], project, data_dir, events_url, state_url)
        show(a, json_out, summary(a))

    def transition_cmd(
        action: str, activity_id: int, project: Any, data_dir: Any, events_url: Any, state_url: Any
    ) -> Any:
        from yunying.activities import report, service

        def local(rt: "Runtime", p: Any) -> Any:
            return report.activity_detail(
                rt, service.transition(rt.state, p.id, activity_id, action, "cli")
            )

        return call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST",
            f"/api/v1/activities/{activity_id}/{action}", local,
        )  # fmt: skip

    def make_transition(action: str, doc: str) -> None:
        def command(
            activity_id: Annotated[int, typer.Argument(help="Activity id.")],
            project: ProjectName = None,
            json_out: JSONOut = False,
            data_dir: DataDir = None,
            events_url: EventsURL = None,
            state_url: StateURL = None,
        ) -> None:
            a = transition_cmd(action, activity_id, project, data_dir, events_url, state_url)
            show(a, json_out, summary(a))

        command.__doc__ = doc
        activity_app.command(action)(command)

    for action, doc in (
        ("start", "Start (or schedule, when its start is later)."),
        ("pause", "Pause: events stop counting, nothing is granted."),
        ("resume", "Resume a paused activity."),
        ("end", "End the activity."),
        ("kill", "Kill switch: end now and freeze the budget; no grant passes after it."),
    ):
        make_transition(action, doc)

    @activity_app.command("schema")
    def schema_cmd() -> None:
        """Print the JSON Schema of activity specs (every template)."""
        from yunying.activities.spec import json_schema

        print_json(json_schema())

    @activity_app.command("list")
    def list_cmd(
        state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Activities of the project, newest first."""
        from yunying.activities import service

        def local(rt: "Runtime", p: Any) -> Any:
            return {
                "activities": [a.as_dict() for a in service.list_activities(rt.state, p.id, state)]
            }

        res = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/activities",
            local, params={"state": state},
        )  # fmt: skip
        text = "\n".join(summary(a) for a in res["activities"]) or "no activities yet"
        show(res, json_out, text)

    @activity_app.command("show")
    def show_cmd(
        activity_id: Annotated[int, typer.Argument(help="Activity id.")],
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """An activity's spec, state and live numbers."""
        from yunying.activities import report, service

        def local(rt: "Runtime", p: Any) -> Any:
            return report.activity_detail(rt, service.get_activity(rt.state, p.id, activity_id))

        a = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            f"/api/v1/activities/{activity_id}", local,
        )  # fmt: skip
        show(a, json_out, summary(a))

    @activity_app.command("audit")
    def audit_cmd(
        activity_id: Annotated[int, typer.Argument(help="Activity id.")],
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Who changed what, with before/after."""
        from yunying.activities import service

        def local(rt: "Runtime", p: Any) -> Any:
            service.get_activity(rt.state, p.id, activity_id)
            return {"audit": service.audit_log(rt.state, p.id, activity_id)}

        res = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            f"/api/v1/activities/{activity_id}/audit", local,
        )  # fmt: skip
        text = "\n".join(
            f"{a['at']}  {a['actor']:<16} {a['action']:<8} {a['before']} → {a['after']}"
            for a in res["audit"]
        )
        show(res, json_out, text)

    @activity_app.command("report")
    def report_cmd(
        activity_id: Annotated[int, typer.Argument(help="Activity id.")],
        conversion_event: Annotated[
            str, typer.Option(help="Event that counts as conversion.")
        ] = "purchase_membership",
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Post-mortem (复盘): participants, completions, rewards and cost, risk, conversion, ROI."""
        from yunying.activities import report, service

        def local(rt: "Runtime", p: Any) -> Any:
            return report.activity_report(
                rt, service.get_activity(rt.state, p.id, activity_id), conversion_event
            )

        r = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            f"/api/v1/activities/{activity_id}/report", local,
            params={"conversion_event": conversion_event},
        )  # fmt: skip
        conv = r["conversion"]

        def pct(v: Any) -> str:
            return "—" if v is None else f"{v * 100:.1f}%"

        lines = [
            f"[bold]{r['activity']['name']}[/] ({r['activity']['template']}, {r['activity']['state']})",
            f"participants {r['participants']}  completions {r['completions']}  new users {r['new_users']}",
            "claims " + ", ".join(f"{k} {v}" for k, v in r["claims"].items()),
            f"cost {r['cost_fen'] / 100:.2f} 元"
            + (
                f"  per participant {r['cost_per_participant_fen'] / 100:.2f} 元"
                if r["cost_per_participant_fen"]
                else ""
            ),
            f"conversion ({conv['event']}): participants {pct(conv['matched_participant_rate'])} vs comparable "
            f"{pct(conv['comparable_rate'])} (lift {pct(conv['lift'])})",
            f"ROI {pct(r['roi'])}",
        ]
        if "referral" in r:
            k = r["referral"]["k_factor"]
            lines.append(
                f"K-factor {'—' if k is None else f'{k:.2f}'}  invites {r['referral']['invites']}"
            )
        if "goal" in r:
            g = r["goal"]
            lines.append(f"goal {g['metric']}: {g['value']} / {g['target']} ({pct(g['progress'])})")
        show(r, json_out, "\n".join(lines))

    @ledger_app.command("balance")
    def balance_cmd(
        user: Annotated[
            str | None, typer.Option("--user", help="The app's user id (distinct id).")
        ] = None,
        account: Annotated[
            str | None, typer.Option(help="A ledger account, e.g. activity:3.")
        ] = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """A user's wallet (points, cash, membership, badges, coupons) or an account's balance."""
        from yunying.activities import ledger

        if not user and not account:
            fail("give --user USER or --account ACCOUNT")

        def local(rt: "Runtime", p: Any) -> Any:
            if user:
                return ledger.wallet(rt.state, p.id, user)
            return {
                "account": account,
                "balance": ledger.account_balance(rt.state, p.id, str(account)),
            }

        res = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/ledger/balance",
            local, params={"user_id": user, "account": account},
        )  # fmt: skip
        if user:
            text = (
                f"{user}: {res['points']} points, {res['cash_fen'] / 100:.2f} 元, membership until "
                f"{res['membership_until'] or '—'}, badges {', '.join(res['badges']) or '—'}, "
                f"{sum(1 for c in res['coupons'] if c['status'] == 'issued')} coupon(s) to use"
            )
        else:
            text = f"{account}: " + ", ".join(f"{k} {v}" for k, v in res["balance"].items())
        show(res, json_out, text)

    @ledger_app.command("entries")
    def entries_cmd(
        user: Annotated[str | None, typer.Option("--user", help="Only this user.")] = None,
        activity: Annotated[
            int | None, typer.Option("--activity", help="Only this activity.")
        ] = None,
        limit: Annotated[int, typer.Option(help="Most recent N transactions.")] = 50,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Ledger transactions with their balancing entries, newest first."""
        from yunying.activities import ledger

        def local(rt: "Runtime", p: Any) -> Any:
            return {
                "transactions": ledger.entries(
                    rt.state, p.id, user_id=user, activity_id=activity, limit=limit
                )
            }

        res = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/ledger/entries",
            local, params={"user_id": user, "activity_id": activity, "limit": limit},
        )  # fmt: skip
        text = "\n".join(
            f"#{t['id']} {t['created_at'][:19]} {t['kind']:<8} {t['asset']:<15} {t['amount']:>8}  "
            + "  ".join(f"{e['account']} {e['amount']:+d}" for e in t["entries"])
            for t in res["transactions"]
        )
        show(res, json_out, text or "no entries")

    @ledger_app.command("reverse")
    def reverse_cmd(
        transaction_id: Annotated[int, typer.Argument(help="The grant's transaction id.")],
        reason: Annotated[str, typer.Option(help="Why (kept with the reversal).")] = "reversed",
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Reverse a grant with opposite entries (refund fraud); nothing is deleted."""
        from yunying.activities import ledger

        def local(rt: "Runtime", p: Any) -> Any:
            return {
                "reversal_id": ledger.reverse(rt.state, p.id, transaction_id, reason, "cli"),
                "reverses": transaction_id,
            }

        res = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST", "/api/v1/ledger/reverse",
            local, json={"transaction_id": transaction_id, "reason": reason},
        )  # fmt: skip
        show(res, json_out, f"reversed #{transaction_id} with #{res['reversal_id']}")

    @app.command("user-token", rich_help_panel="Operations")
    def user_token(
        user: Annotated[str, typer.Argument(help="The app's user id (distinct id).")],
        ttl: Annotated[int, typer.Option(help="Seconds the token is valid.")] = 3600,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Print a signed per-user token for the app-facing API (what the app's backend makes)."""
        from yunying.activities import tokens

        def local(rt: "Runtime", p: Any) -> Any:
            secret = tokens.signing_secret(rt.state, p.id)
            return {
                "user_id": user,
                "token": tokens.sign_user_token(secret, p.id, user, ttl),
                "ttl": ttl,
            }

        res = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST",
            "/api/v1/activities/user-token", local, json={"user_id": user, "ttl": ttl},
        )  # fmt: skip
        show(res, json_out, res["token"])
