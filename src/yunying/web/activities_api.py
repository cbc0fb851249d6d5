"""Activities over HTTP: the management API and the app-facing API.

Management (``/api/v1/activities``, ``/api/v1/ledger``), authenticated like every management
endpoint (:class:`~yunying.web.auth.ManagementAuth`: a project's secret key, or the local admin
token with ``?project=NAME`` when there are several projects):

- ``POST /api/v1/activities`` (body: the spec, JSON or YAML), ``GET`` list, ``GET/PUT /{id}``;
- ``POST /{id}/{schedule|start|pause|resume|end|kill}``, ``GET /{id}/audit``, ``/{id}/claims``,
  ``/{id}/report``, ``GET /api/v1/activities/schema``;
- ``GET /api/v1/ledger/entries``, ``/api/v1/ledger/balance``, ``POST /api/v1/ledger/reverse``;
- ``GET /api/v1/activities/signing-key`` and ``POST /api/v1/activities/user-token``.

App-facing (``/v1/activities/...``, ``/v1/rewards``, ``/v1/coupons/...``): either server to
server with ``Authorization: Bearer <secret_key>`` plus ``user_id`` (query), or from the app with
``Authorization: Bearer yut_...``, a short-lived token the app's backend signs
(:mod:`yunying.activities.tokens`). The public write key is refused: it is in every app binary.
Calls that grant or spend need an ``Idempotency-Key`` header; repeating one returns the first
outcome (``"duplicate": true``) and grants nothing more.

Errors: ``{"error": message, "field": ...}`` with 400/422 naming the field, 401/403 for keys,
404 unknown activity, 409 for a state that does not allow the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError

from yunying.activities import engine as live
from yunying.activities import ledger, report, service, tokens
from yunying.activities.spec import SpecError, json_schema
from yunying.errors import Conflict, NotFound, YunyingError
from yunying.runtime import Runtime
from yunying.state import Project, list_projects, project_by_secret_key
from yunying.web.auth import ManagementAuth
from yunying.web.http import HTTPProblem, bearer, client_ip, json_response, read_body

BODY_LIMIT = 1_000_000
T = TypeVar("T")


def problem(exc: Exception) -> HTTPProblem:
    """The HTTP answer for a domain error."""
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, SpecError):
        return HTTPProblem(422, str(exc), field=exc.field, errors=exc.errors)
    if isinstance(exc, NotFound):
        return HTTPProblem(404, str(exc))
    if isinstance(exc, service.AlreadyDone):
        return HTTPProblem(409, str(exc), field="Idempotency-Key")
    if isinstance(
        exc, Conflict | ledger.CouponError | service.NotEligible | ledger.BudgetExhausted
    ):
        return HTTPProblem(409, str(exc))
    if isinstance(exc, tokens.InvalidToken):
        return HTTPProblem(401, str(exc))
    if isinstance(exc, YunyingError):
        return HTTPProblem(400, str(exc))
    if isinstance(exc, IntegrityError):  # a concurrent call with the same key won the race
        return HTTPProblem(409, "a concurrent call with the same Idempotency-Key is in progress")
    raise exc


async def run(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run blocking domain code off the event loop, mapping its errors to HTTP answers."""
    try:
        return await asyncio.to_thread(fn, *args, **kw)
    except Exception as exc:  # noqa: BLE001 - problem() re-raises what it does not know
        raise problem(exc) from None


async def json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request, BODY_LIMIT)
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, "body must be a JSON object")
    return data


def idem_key(request: Request) -> str:
    key = request.headers.get("idempotency-key", "").strip()
    if not key:
        raise HTTPProblem(
            400,
            "header 'Idempotency-Key' is required for calls that grant or spend",
            field="Idempotency-Key",
        )
    if len(key) > 200:
        raise HTTPProblem(
            400, "header 'Idempotency-Key' is longer than 200 characters", field="Idempotency-Key"
        )
    return key


def int_param(request: Request, name: str, default: int, lo: int = 1, hi: int = 10_000) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(400, f"query parameter '{name}' must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise HTTPProblem(
            400, f"query parameter '{name}' must be between {lo} and {hi}", field=name
        )
    return value


def activities_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation; starts the live rules with the app."""
    from contextlib import asynccontextmanager

    auth = ManagementAuth(runtime)

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        proc = live.live_rules(runtime)
        await asyncio.to_thread(proc.start)
        try:
            yield
        finally:
            await asyncio.to_thread(live.forget, runtime)

    router = APIRouter(lifespan=lifespan)

    def manager(request: Request) -> tuple[Project, str]:
        who = auth.principal(request)
        project = auth.project_for(who, request.query_params.get("project"))
        actor = "admin" if who is None else f"key:{who.secret_key_prefix}"
        return project, request.headers.get("x-yunying-actor", actor)[
            :200
        ] if who is None else actor

    async def activity(project: Project, activity_id: int) -> service.Activity:
        return await run(service.get_activity, runtime.state, project.id, activity_id)

    def detail(act: service.Activity) -> dict[str, Any]:
        return report.activity_detail(runtime, act)

    # -- management ---------------------------------------------------------------------------

    @router.get("/api/v1/activities/schema")
    async def schema() -> Response:
        """JSON Schema of activity specs (every template)."""
        return json_response(json_schema())

    @router.post("/api/v1/activities")
    async def create(request: Request) -> Response:
        """Create a draft activity from a spec (JSON or YAML body)."""
        project, actor = manager(request)
        body = await read_body(request, BODY_LIMIT)
        act = await run(service.create_activity, runtime.state, project.id, body, actor)
        live.live_rules(runtime).invalidate()
        return json_response(await run(detail, act), 201)

    @router.get("/api/v1/activities")
    async def index(request: Request) -> Response:
        project, _ = manager(request)
        state = request.query_params.get("state")
        if state is not None and state not in service.STATES:
            raise HTTPProblem(
                400, f"state must be one of {', '.join(service.STATES)}", field="state"
            )
        acts = await run(service.list_activities, runtime.state, project.id, state)
        return json_response({"activities": [a.as_dict() for a in acts]})

    @router.get("/api/v1/activities/signing-key")
    async def signing_key(request: Request) -> Response:
        """The project's user-token signing secret, for the app's backend."""
        project, _ = manager(request)
        secret = await run(tokens.signing_secret, runtime.state, project.id)
        return json_response({"project": project.name, "signing_secret": secret})

    @router.post("/api/v1/activities/user-token")
    async def user_token(request: Request) -> Response:
        """A signed user token (for tests and scripts; production backends sign their own)."""
        project, _ = manager(request)
        body = await json_body(request)
        user = body.get("user_id")
        if not isinstance(user, str) or not user:
            raise HTTPProblem(
                422, "field 'user_id' is required: the app's user id", field="user_id"
            )
        ttl = body.get("ttl", tokens.DEFAULT_TTL)
        if not isinstance(ttl, int) or not 1 <= ttl <= tokens.MAX_TTL:
            raise HTTPProblem(
                422, f"field 'ttl' must be 1 to {tokens.MAX_TTL} seconds", field="ttl"
            )
        secret = await run(tokens.signing_secret, runtime.state, project.id)
        token = tokens.sign_user_token(secret, project.id, user, ttl)
        return json_response({"user_id": user, "token": token, "ttl": ttl})

    @router.get("/api/v1/activities/{activity_id}")
    async def show(request: Request, activity_id: int) -> Response:
        project, _ = manager(request)
        act = await activity(project, activity_id)
        return json_response(await run(detail, act))

    @router.put("/api/v1/activities/{activity_id}")
    async def update(request: Request, activity_id: int) -> Response:
        project, actor = manager(request)
        body = await read_body(request, BODY_LIMIT)
        act = await run(
            service.update_activity, runtime.state, project.id, activity_id, body, actor
        )
        live.live_rules(runtime).invalidate()
        return json_response(await run(detail, act))

    @router.post("/api/v1/activities/{activity_id}/{action}")
    async def act_on(request: Request, activity_id: int, action: str) -> Response:
        """State machine: schedule, start, pause, resume, end, kill (the kill switch)."""
        project, actor = manager(request)
        if action not in service.TRANSITIONS:
            raise HTTPProblem(
                404, f"unknown action {action!r}: use {', '.join(service.TRANSITIONS)}"
            )
        act = await run(service.transition, runtime.state, project.id, activity_id, action, actor)
        live.live_rules(runtime).invalidate()
        return json_response(await run(detail, act))

    @router.get("/api/v1/activities/{activity_id}/audit")
    async def audit(request: Request, activity_id: int) -> Response:
        project, _ = manager(request)
        await activity(project, activity_id)
        return json_response(
            {"audit": await run(service.audit_log, runtime.state, project.id, activity_id)}
        )

    @router.get("/api/v1/activities/{activity_id}/claims")
    async def claims(request: Request, activity_id: int) -> Response:
        project, _ = manager(request)
        await activity(project, activity_id)
        status = request.query_params.get("status")
        limit = int_param(request, "limit", 200)
        rows = await run(service.list_claims, runtime.state, project.id, activity_id, status, limit)
        return json_response({"claims": rows})

    @router.get("/api/v1/activities/{activity_id}/report")
    async def post_mortem(request: Request, activity_id: int) -> Response:
        project, _ = manager(request)
        act = await activity(project, activity_id)
        event = request.query_params.get("conversion_event") or report.DEFAULT_CONVERSION_EVENT
        return json_response(await run(report.activity_report, runtime, act, event))

    @router.get("/api/v1/ledger/entries")
    async def ledger_entries(request: Request) -> Response:
        project, _ = manager(request)
        aid = request.query_params.get("activity_id")
        rows = await run(
            ledger.entries,
            runtime.state,
            project.id,
            user_id=request.query_params.get("user_id"),
            activity_id=int(aid) if aid and aid.isdigit() else None,
            limit=int_param(request, "limit", 100),
        )
        return json_response({"transactions": rows})

    @router.get("/api/v1/ledger/balance")
    async def ledger_balance(request: Request) -> Response:
        project, _ = manager(request)
        user = request.query_params.get("user_id")
        account = request.query_params.get("account")
        if user:
            return json_response(await run(ledger.wallet, runtime.state, project.id, user))
        if account:
            bal = await run(ledger.account_balance, runtime.state, project.id, account)
            return json_response({"account": account, "balance": bal})
        raise HTTPProblem(
            400, "give 'user_id' (a wallet) or 'account' (e.g. activity:3)", field="user_id"
        )

    @router.post("/api/v1/ledger/reverse")
    async def ledger_reverse(request: Request) -> Response:
        """Reverse a grant (refund fraud): opposite entries, budget refunded, nothing deleted."""
        project, actor = manager(request)
        body = await json_body(request)
        txn = body.get("transaction_id")
        if not isinstance(txn, int):
            raise HTTPProblem(
                422, "field 'transaction_id' must be an integer", field="transaction_id"
            )
        reason = str(body.get("reason") or "reversed")
        rid = await run(ledger.reverse, runtime.state, project.id, txn, reason, actor)
        return json_response({"reversal_id": rid, "reverses": txn})

    # -- app-facing -----------------------------------------------------------------------------

    secrets_cache: dict[int, str] = {}

    def app_user(request: Request) -> tuple[Project, str]:
        token = bearer(request)
        if token is None:
            raise HTTPProblem(401, "send 'Authorization: Bearer <user token or secret key>'")
        if token.startswith(tokens.PREFIX):
            try:
                pid = tokens.token_project(token)
                secret = secrets_cache.get(pid) or tokens.signing_secret(runtime.state, pid)
                secrets_cache[pid] = secret
                pid, user = tokens.verify_user_token(secret, token)
            except tokens.InvalidToken as exc:
                raise HTTPProblem(401, str(exc)) from None
            project = next((p for p in list_projects(runtime.state) if p.id == pid), None)
            if project is None:
                raise HTTPProblem(401, "user token for an unknown project")
            return project, user
        if runtime.project_for_write_key(token) is not None:
            raise HTTPProblem(
                403, "the public write key cannot claim rewards: use a user token or the secret key"
            )
        project = project_by_secret_key(runtime.state, token)
        if project is None:
            raise HTTPProblem(401, "unknown key or token")
        user = request.query_params.get("user_id") or request.headers.get("x-yunying-user") or ""
        if not user:
            raise HTTPProblem(
                400, "query parameter 'user_id' is required with a secret key", field="user_id"
            )
        return project, user

    def device(request: Request) -> dict[str, Any]:
        return {"device_id": request.headers.get("x-device-id"), "ip": client_ip(request)}

    @router.post("/v1/activities/{activity_id}/checkin")
    async def checkin(request: Request, activity_id: int) -> Response:
        """Check in today (project time zone); milestone rewards are claimed at once."""
        project, user = app_user(request)
        key = idem_key(request)
        act = await activity(project, activity_id)
        if act.template != "checkin":
            raise HTTPProblem(409, f"activity {activity_id} is a {act.template}, not a check-in")
        return await _action(act, user, key, request)

    @router.post("/v1/activities/{activity_id}/claim")
    async def claim(request: Request, activity_id: int) -> Response:
        """Claim a promotion coupon or a gift through the app (once per key, within limits)."""
        project, user = app_user(request)
        key = idem_key(request)
        act = await activity(project, activity_id)
        if act.template not in ("promotion", "gift"):
            raise HTTPProblem(
                409, f"activity {activity_id} is a {act.template}: nothing to claim directly"
            )
        return await _action(act, user, key, request)

    async def _action(act: service.Activity, user: str, key: str, request: Request) -> Response:
        dup = False
        try:
            results = await asyncio.to_thread(
                live.act_now, runtime, act, user, f"{user}:{key}", **device(request)
            )
        except service.AlreadyDone:
            results, dup = [], True
        except Exception as exc:  # noqa: BLE001
            raise problem(exc) from None
        progress = await run(service.progress_of, runtime.state, act, user)
        return json_response(
            {"duplicate": dup, **progress, "results": [r.as_dict() for r in results]}
        )

    @router.get("/v1/activities/{activity_id}/progress")
    async def my_progress(request: Request, activity_id: int) -> Response:
        project, user = app_user(request)
        act = await activity(project, activity_id)
        return json_response(await run(service.progress_of, runtime.state, act, user))

    @router.get("/v1/activities/{activity_id}/invite-code")
    async def my_code(request: Request, activity_id: int) -> Response:
        project, user = app_user(request)
        act = await activity(project, activity_id)

        def make() -> str:
            person = live.person_of(runtime, project.id, user)
            code = service.invite_code(runtime.state, act, user, person)
            with runtime.state.begin() as conn:
                service.load_progress(conn, act, user, person)
            return code

        return json_response({"activity_id": act.id, "user_id": user, "code": await run(make)})

    @router.post("/v1/activities/{activity_id}/invite")
    async def redeem_invite(request: Request, activity_id: int) -> Response:
        """The invitee enters an inviter's code; activation later rewards both sides."""
        project, user = app_user(request)
        idem_key(request)
        body = await json_body(request)
        code = body.get("code")
        if not isinstance(code, str) or not code.strip():
            raise HTTPProblem(422, "field 'code' is required: the inviter's code", field="code")
        act = await activity(project, activity_id)
        if act.template != "referral":
            raise HTTPProblem(409, f"activity {activity_id} is a {act.template}, not a referral")

        def accept() -> dict[str, Any]:
            if not act.live_at(ledger.utcnow()):
                raise service.NotEligible(f"activity {act.id} is not running (it is {act.state})")
            person = live.person_of(runtime, project.id, user)
            with runtime.state.begin() as conn:
                out = service.accept_invite(conn, act, user, person, code, ledger.utcnow())
                service.load_progress(conn, act, user, person)
            return out

        out = await run(accept)
        return json_response(
            {"activity_id": act.id, "user_id": user, **out, "duplicate": not out["created"]}
        )

    @router.post("/v1/activities/{activity_id}/signup")
    async def signup(request: Request, activity_id: int) -> Response:
        """Take a seat, or a place on the waitlist when all are taken."""
        project, user = app_user(request)
        idem_key(request)
        act = await activity(project, activity_id)
        out = await run(service.sign_up, runtime.state, act, user)
        if out["status"] == "seated" and act.spec.reward is not None and out.get("created"):
            res = await run(
                service.settle,
                runtime,
                act,
                user_id=user,
                person_id=None,
                reward=act.spec.reward,
                key=f"act:{act.id}:seat:{user}",
                **device(request),
            )
            out["claim"] = res.as_dict()
        return json_response({"activity_id": act.id, "user_id": user, **out})

    @router.post("/v1/activities/{activity_id}/signup/cancel")
    async def cancel(request: Request, activity_id: int) -> Response:
        project, user = app_user(request)
        act = await activity(project, activity_id)
        out = await run(service.cancel_signup, runtime.state, act, user)
        return json_response({"activity_id": act.id, "user_id": user, **out})

    @router.get("/v1/rewards")
    async def my_rewards(request: Request) -> Response:
        """Points, cash, membership, badges and coupons of the calling user."""
        project, user = app_user(request)
        return json_response(await run(ledger.wallet, runtime.state, project.id, user))

    @router.post("/v1/coupons/{code}/redeem")
    async def redeem(request: Request, code: str) -> Response:
        """Use a coupon on an order (``order_fen``): once, within validity, above the threshold."""
        project, user = app_user(request)
        key = idem_key(request)
        body = await json_body(request)
        order = body.get("order_fen")
        if not isinstance(order, int) or order < 0:
            raise HTTPProblem(
                422, "field 'order_fen' must be the order total in fen", field="order_fen"
            )
        ref = body.get("order_ref")
        ledger_key = f"redeem:{user}:{key}"
        existing = await run(ledger.transaction_by_key, runtime.state, project.id, ledger_key)
        if existing is not None:
            return json_response({"code": code, "transaction_id": existing, "duplicate": True})
        r = await run(
            ledger.redeem_coupon, runtime.state, project.id, user, code, order,
            None if ref is None else str(ref), ledger_key,
        )  # fmt: skip
        return json_response(
            {
                "code": r.code,
                "discount_fen": r.discount_fen,
                "pay_fen": r.pay_fen,
                "transaction_id": r.transaction_id,
                "duplicate": False,
            }
        )

    return router
