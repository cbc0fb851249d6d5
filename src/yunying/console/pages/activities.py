"""Activity pages (活动): the list with state and goal progress, create from one of the six
templates (a YAML spec prefilled from docs/activities.md), the live monitor with state buttons
and the kill switch, the post-mortem (复盘), and the anti-fraud review queue.

Reading needs ``view``; creating, changing state and deciding reviews need ``activities``.
Everything calls :mod:`yunying.activities` and :mod:`yunying.risk` as plain functions.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from yunying.activities.report import activity_report, live_numbers
from yunying.activities.service import (
    TRANSITIONS,
    Activity,
    InvalidTransition,
    create_activity,
    get_activity,
    list_activities,
    list_claims,
    transition,
    validate_risk,
)
from yunying.activities.spec import TEMPLATES, SpecError, parse_spec
from yunying.console.budget import COMMITTING, OverBudgetRule, budget_rule, check_commit
from yunying.console.data import N_, Table
from yunying.console.pages.audience import csv_denied
from yunying.console.reasons import reason_text
from yunying.console.web import ConsoleApp, Ctx, NavItem, csv_response, redirect
from yunying.errors import NotFound, YunyingError
from yunying.risk.blocklist import (
    BLOCK_KINDS,
    InvalidBlockEntry,
    add_block,
    list_blocks,
    remove_block,
)
from yunying.risk.review import ReviewAlreadyDecided, ReviewHandlerFailed, decide, list_reviews

TEMPLATE_LABELS = {
    "checkin": N_("Check-in"),
    "referral": N_("Referral"),
    "task": N_("Task challenge"),
    "signup": N_("Limited-seat sign-up"),
    "gift": N_("New-user gift"),
    "promotion": N_("Promotion (member day)"),
}
STATE_LABELS = {
    "draft": N_("Draft"),
    "scheduled": N_("Scheduled"),
    "running": N_("Running"),
    "paused": N_("Paused"),
    "ended": N_("Ended"),
}
ACTION_LABELS = {
    "start": N_("Start"),
    "pause": N_("Pause"),
    "resume": N_("Resume"),
    "end": N_("End"),
    "kill": N_("Kill switch"),
}
GOAL_LABELS = {
    "participants": N_("participants"),
    "completions": N_("completions"),
    "new_users": N_("new users"),
    "rewards": N_("rewards"),
    "cost_fen": N_("cost"),
}
#: Prefilled specs per template (the examples of docs/activities.md, with a goal and budget).
EXAMPLES = {
    "checkin": """template: checkin
name: 连续签到 7 天送 1 个月会员
event: check_in
on_break: grace
grace_days: 1
repeat: false
milestones:
  - {days: 3, reward: {kind: points, amount: 50}}
  - {days: 7, reward: {kind: membership_days, amount: 30}}
budget: {per_user_count: 2}
goal: {metric: participants, target: 500}
""",
    "referral": """template: referral
name: 邀请好友导出视频，得 30 元红包
accept_event: invite_accepted
code_property: invite_code
activation_event: export_video
activation_days: 30
inviter_reward: {kind: cash, amount: 3000}
invitee_reward: {kind: membership_days, amount: 7}
max_invites_per_inviter: 10
budget: {total_fen: 3000000}
goal: {metric: new_users, target: 200}
""",
    "task": """template: task
name: 剪 10 个视频送 100 元券
sequential: true
stages:
  - name: edit
    event: edit_video
    count: 10
    reward: {kind: coupon, threshold_fen: 20000, discount_fen: 10000, valid_days: 30}
  - name: export
    event: export_video
    count: 2
    reward: {kind: badge, badge: 剪辑达人}
goal: {metric: completions, target: 100}
""",
    "signup": """template: signup
name: 线下剪辑训练营报名
seats: 500
waitlist: true
goal: {metric: participants, target: 500}
""",
    "gift": """template: gift
name: 新人礼：注册送 15 天会员
event: sign_up
reward: {kind: membership_days, amount: 15}
new_users_within_days: 7
goal: {metric: rewards, target: 1000}
""",
    "promotion": """template: promotion
name: 会员日满 200 减 50
event: open_app
reward: {kind: coupon, threshold_fen: 20000, discount_fen: 5000}
claim_limit: 1
budget: {total_fen: 5000000}
goal: {metric: rewards, target: 1000}
""",
}


def actor(ctx: Ctx) -> str:
    """Who the audit log names for a console change."""
    return f"console:{ctx.user.name}"


def actions_for(act: Activity) -> list[str]:
    """The state buttons that apply now (kill last; not once killed)."""
    out = [a for a, (allowed, _t) in TRANSITIONS.items() if a in ACTION_LABELS and a != "kill"
           and act.state in allowed]  # fmt: skip
    if not act.killed:
        out.append("kill")
    return out


def yuan(fen: int | float | None) -> float | None:
    """Fen → yuan for :meth:`Formatter.money`."""
    return None if fen is None else fen / 100


def register(console: ConsoleApp) -> None:
    """Add the activity pages and the review queue."""
    runtime = console.runtime
    state = runtime.state
    console.nav(
        NavItem("activities", "/activities", N_("Activities"), N_("Activities"), "view", 300)
    )
    console.nav(NavItem("reviews", "/reviews", N_("Review queue"), N_("Activities"), "view", 310))
    console.nav(NavItem("blocklist", "/blocklist", N_("Blocklist"), N_("Activities"), "view", 320))

    @console.router.get("/activities")
    def activities_page(request: Request) -> Response:
        """Every activity with its state, budget use and progress toward its goal."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return console.render(ctx, "activities.html", no_project=True, rows=[])
        rows: list[dict[str, Any]] = [
            {"act": a, "live": live_numbers(runtime, a)}
            for a in list_activities(state, ctx.project.id)
        ]
        if ctx.param("format") == "csv" and ctx.can("export"):
            table = Table(
                ("id", "name", "template", "state", "killed", "participants", "granted", "held",
                 "cost_fen", "goal_metric", "goal_target", "goal_value"),
                tuple(
                    (r["act"].id, r["act"].name, r["act"].template, r["act"].state,
                     r["act"].killed, r["live"]["participants"], r["live"]["claims"]["granted"],
                     r["live"]["claims"]["held"], r["live"]["cost_fen"],
                     *((g["metric"], g["target"], g["value"]) if (g := r["live"].get("goal"))
                       else ("", "", "")))
                    for r in rows
                ),
            )  # fmt: skip
            return csv_response(table, "activities.csv")
        return console.render(
            ctx,
            "activities.html",
            rows=rows,
            state_labels=STATE_LABELS,
            template_labels=TEMPLATE_LABELS,
            goal_labels=GOAL_LABELS,
            yuan=yuan,
        )

    def new_form(
        ctx: Ctx,
        template: str,
        text: str,
        errors: list[dict[str, str]],
        status: int = 200,
        valid: bool = False,
    ) -> Response:
        return console.render(
            ctx,
            "activity_new.html",
            status,
            templates=TEMPLATES,
            template_labels=TEMPLATE_LABELS,
            chosen=template,
            text=text,
            errors=ctx.field_errors(errors),
            valid=valid,
        )

    @console.router.get("/activities/new")
    def activity_new(request: Request) -> Response:
        """Choose a template; its example spec is prefilled."""
        ctx = console.context(request, "activities")
        template = ctx.param("template", "checkin")
        if template not in TEMPLATES:
            template = "checkin"
        return new_form(ctx, template, EXAMPLES[template], [])

    @console.router.post("/activities/new")
    async def activity_create(request: Request) -> Response:
        """Validate the spec and store it as a draft (and start it when asked)."""
        ctx = console.context(request, "activities")
        form = await request.form()
        console.check_csrf(ctx, form)
        template = str(form.get("template") or "checkin")
        text = str(form.get("spec") or "")
        if ctx.project is None:
            return redirect("/activities")
        try:
            if form.get("action") == "validate":
                validate_risk(parse_spec(text))
                return new_form(ctx, template, text, [], valid=True)
            if form.get("action") == "start":  # refused before anything is saved
                check_commit(
                    budget_rule(state, ctx.project.id), parse_spec(text), ctx.can("budgets")
                )
            act = create_activity(state, ctx.project.id, text, actor(ctx))
            if form.get("action") == "start":
                act = transition(state, ctx.project.id, act.id, "start", actor(ctx))
        except OverBudgetRule as exc:
            field = {"field": "budget.total_fen", "message": exc.message}
            return new_form(ctx, template, text, [field], 403)
        except SpecError as exc:
            return new_form(ctx, template, text, exc.errors, 400)
        except YunyingError as exc:
            return new_form(ctx, template, text, [{"field": "", "message": exc.message}], 400)
        return redirect(f"/activities/{act.id}")

    def load(ctx: Ctx, activity_id: int) -> Activity | None:
        assert ctx.project is not None
        try:
            return get_activity(state, ctx.project.id, activity_id)
        except NotFound:
            return None

    def missing(ctx: Ctx) -> Response:
        return console.render(
            ctx, "message.html", 404, message=ctx.gettext("No such activity."), back="/activities"
        )

    @console.router.get("/activities/{activity_id:int}")
    def activity_monitor(request: Request, activity_id: int) -> Response:
        """Live numbers: participants, grants, cost against budget, held and denied claims."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        act = load(ctx, activity_id)
        if act is None:
            return missing(ctx)
        live = live_numbers(runtime, act)
        recent = list_claims(state, act.project_id, act.id, limit=50)
        if ctx.param("format") == "csv" and ctx.can("export"):
            table = Table(
                ("claim_id", "user_id", "status", "review_id", "reasons", "created_at"),
                tuple(
                    (c["claim_id"], c["user_id"], c["status"], c["review_id"],
                     ";".join(str(r.get("code")) for r in c["reasons"]), c["created_at"])
                    for c in recent
                ),
            )  # fmt: skip
            return csv_response(table, f"activity-{act.id}-claims.csv")
        return console.render(
            ctx,
            "activity_monitor.html",
            act=act,
            live=live,
            claims=recent,
            actions=actions_for(act),
            action_labels=ACTION_LABELS,
            state_labels=STATE_LABELS,
            template_labels=TEMPLATE_LABELS,
            goal_labels=GOAL_LABELS,
            yuan=yuan,
            error=ctx.param("error"),
            live_refresh=ctx.param("live") == "1" and act.state == "running",
            budget_rule=budget_rule(state, act.project_id),
            reason_text=lambda r: reason_text(ctx, r),
        )

    @console.router.post("/activities/{activity_id:int}/state")
    async def activity_state(request: Request, activity_id: int) -> Response:
        """Start, pause, resume, end, or kill (the form asks for the word KILL)."""
        ctx = console.context(request, "activities")
        form = await request.form()
        console.check_csrf(ctx, form)
        act = load(ctx, activity_id)
        if act is None:
            return missing(ctx)
        action = str(form.get("action") or "")
        if action not in ACTION_LABELS:
            return redirect(f"/activities/{act.id}?error=action")
        if action == "kill" and str(form.get("confirm") or "").strip().upper() != "KILL":
            return redirect(f"/activities/{act.id}?error=confirm")
        if action in COMMITTING:
            try:
                check_commit(budget_rule(state, act.project_id), act.spec, ctx.can("budgets"))
            except OverBudgetRule:
                return redirect(f"/activities/{act.id}?error=budget")
        try:
            transition(state, act.project_id, act.id, action, actor(ctx))
        except InvalidTransition:
            return redirect(f"/activities/{act.id}?error=transition")
        return redirect(f"/activities/{act.id}")

    @console.router.get("/activities/{activity_id:int}/report")
    def activity_postmortem(request: Request, activity_id: int) -> Response:
        """复盘: participants, conversion against a comparable group, revenue, ROI, cost."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        act = load(ctx, activity_id)
        if act is None:
            return missing(ctx)
        assert ctx.project is not None
        try:
            rep = console.cached(
                ctx.project, ("activity-report", act.id, act.updated_at, str(live_numbers(
                    runtime, act)["claims"])), lambda: activity_report(runtime, act)
            )  # fmt: skip
        except YunyingError as exc:
            return console.render(ctx, "activity_report.html", act=act, rep=None, error=ctx.tr(exc))
        rows = report_rows(rep)
        if ctx.param("format") == "csv" and ctx.can("export"):
            return csv_response(Table(("metric", "value"), tuple(rows)), f"activity-{act.id}.csv")
        return console.render(
            ctx,
            "activity_report.html",
            act=act,
            rep=rep,
            error=None,
            yuan=yuan,
            template_labels=TEMPLATE_LABELS,
            goal_labels=GOAL_LABELS,
        )

    @console.router.get("/reviews")
    def reviews_page(request: Request) -> Response:
        """Held claims waiting for a reviewer, with the reasons anti-fraud gave."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return console.render(ctx, "reviews.html", no_project=True, items=[], names={})
        status = ctx.param("status", "pending")
        if status not in ("pending", "approved", "denied", "all"):
            status = "pending"
        items = list_reviews(
            state, ctx.project.id, status=None if status == "all" else status, limit=200
        )
        names = {a.id: a.name for a in list_activities(state, ctx.project.id)}
        if ctx.param("format") == "csv" and ctx.can("export"):
            table = Table(
                ("review_id", "activity_id", "person_id", "status", "reasons", "created_at",
                 "reviewer"),
                tuple(
                    (r.id, r.activity_id, r.person_id, r.status,
                     ";".join(x.code for x in r.reasons), r.created_at.isoformat(),
                     r.reviewer or "")
                    for r in items
                ),
            )  # fmt: skip
            return csv_response(table, "reviews.csv")
        return console.render(
            ctx,
            "reviews.html",
            items=items,
            names=names,
            filter_status=status,
            error=ctx.param("error"),
            reason_text=lambda r: reason_text(ctx, r),
        )

    @console.router.post("/reviews/{review_id:int}")
    async def review_decide(request: Request, review_id: int) -> Response:
        """Approve (the reward is granted) or deny a held claim."""
        ctx = console.context(request, "activities")
        form = await request.form()
        console.check_csrf(ctx, form)
        assert ctx.project is not None
        decision = str(form.get("decision") or "")
        if decision not in ("approve", "deny"):
            return redirect("/reviews?error=decision")
        note = str(form.get("note") or "").strip() or None
        try:
            decide(
                runtime,
                ctx.project.id,
                review_id,
                approved=decision == "approve",
                reviewer=ctx.user.name,
                note=note,
            )
        except ReviewAlreadyDecided:
            return redirect("/reviews?error=decided")
        except ReviewHandlerFailed:
            return redirect("/reviews?error=handler")
        except NotFound:
            return redirect("/reviews?error=missing")
        return redirect("/reviews")

    def blocklist_view(
        ctx: Ctx,
        errors: list[dict[str, Any]] | None = None,
        status: int = 200,
        form: Any = None,
    ) -> Response:
        assert ctx.project is not None
        entries = list_blocks(state, ctx.project.id)
        if ctx.param("format") == "csv" and ctx.can("export"):
            table = Table(
                ("id", "kind", "value", "reason", "created_by", "created_at", "expires_at"),
                tuple(
                    (e.id, e.kind, e.value, e.reason, e.created_by, e.created_at.isoformat(),
                     e.expires_at.isoformat() if e.expires_at else "")
                    for e in entries
                ),
            )  # fmt: skip
            return csv_response(table, "blocklist.csv")
        return console.render(
            ctx,
            "blocklist.html",
            status,
            entries=entries,
            kinds=BLOCK_KINDS,
            errors=ctx.field_errors(errors or []),
            form=form or {},
        )

    @console.router.get("/blocklist")
    def blocklist_page(request: Request) -> Response:
        """Blocked persons, distinct ids, devices, IPs and subnets (claims from them are denied)."""
        ctx = console.context(request, "view")
        if (denied := csv_denied(console, ctx)) is not None:
            return denied
        if ctx.project is None:
            return redirect("/")
        return blocklist_view(ctx)

    @console.router.post("/blocklist")
    async def blocklist_change(request: Request) -> Response:
        """Add (or refresh) an entry, or remove one."""
        ctx = console.context(request, "activities")
        form = await request.form()
        console.check_csrf(ctx, form)
        if ctx.project is None:
            return redirect("/")
        try:
            if form.get("action") == "remove":
                remove_block(state, ctx.project.id, int(str(form.get("entry_id") or "0")))
            else:
                add_block(
                    state,
                    ctx.project.id,
                    str(form.get("kind") or ""),
                    str(form.get("value") or "").strip(),
                    str(form.get("reason") or "").strip(),
                    created_by=actor(ctx),
                )
        except InvalidBlockEntry as exc:
            return blocklist_view(ctx, [{"field": exc.field, "message": exc.message}], 400, form)
        except (NotFound, ValueError):
            errs = [{"field": "", "message": ctx.gettext("That entry no longer exists.")}]
            return blocklist_view(ctx, errs, 400)
        return redirect("/blocklist")


def report_rows(rep: dict[str, Any]) -> list[tuple[str, Any]]:
    """The post-mortem as (metric, value) rows for the CSV download."""
    rows: list[tuple[str, Any]] = [
        ("participants", rep.get("participants")),
        ("completions", rep.get("completions")),
        ("new_users", rep.get("new_users")),
        ("cost_fen", rep.get("cost_fen")),
        ("cost_per_participant_fen", rep.get("cost_per_participant_fen")),
        ("roi", rep.get("roi")),
    ]
    rows += [(f"claims.{k}", v) for k, v in rep.get("claims", {}).items()]
    rows += [(f"conversion.{k}", v) for k, v in rep.get("conversion", {}).items()]
    rows += [(f"revenue.{k}", v) for k, v in rep.get("revenue", {}).items()]
    for asset, r in rep.get("rewards", {}).items():
        rows += [(f"rewards.{asset}.{k}", v) for k, v in r.items()]
    rows += [(f"referral.{k}", v) for k, v in rep.get("referral", {}).items()]
    return rows
