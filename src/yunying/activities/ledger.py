"""Rewards ledger: points, coupons, membership days, cash red packets (fen), badges.

Every movement is a ledger transaction with two balancing entries (double entry): a grant moves
``amount`` from the activity's account (``activity:ID``) to the user's wallet (``user:ID``), a
coupon redemption from the wallet to ``redeemed``, a reversal posts the opposite entries and
points at the transaction it undoes. Nothing is updated or deleted in place.

Exactly-once: each transaction carries an idempotency key, UNIQUE per project; a second grant with
the same key fails at INSERT and its transaction rolls back, whatever the timing. Budgets move
only through a conditional ``UPDATE ... WHERE remaining >= cost`` inside the same transaction,
which both SQLite (one writer at a time) and PostgreSQL (row lock, the WHERE re-checked after the
lock) make safe under concurrency, so a budget never goes below zero.

Functions that take a ``conn`` run inside the caller's transaction; the others open their own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from yunying.activities.spec import Reward
from yunying.activities.tables import (
    activity_budgets,
    activity_user_budgets,
    coupons,
    ledger_entries,
    ledger_transactions,
    memberships,
)
from yunying.errors import Conflict, NotFound, YunyingError


class BudgetExhausted(YunyingError):
    """The activity's budget (money or count), or the user's cap, cannot cover this grant."""

    def __init__(self, message: str, scope: str = "activity") -> None:
        super().__init__(message)
        self.scope = scope


class CouponError(YunyingError):
    """A coupon cannot be redeemed (unknown, someone else's, used, expired, below threshold)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """Timestamps read back from SQLite are naive UTC; make every one aware."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso(dt: datetime | None) -> str | None:
    """ISO text of a (possibly naive UTC) timestamp, None stays None."""
    a = aware(dt)
    return a.isoformat() if a is not None else None


def insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> int:
    """INSERT that does nothing when the row's key exists; returns rows inserted (0 or 1)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    return int(conn.execute(stmt).rowcount or 0)


def insert_ignore_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """:func:`insert_ignore` for many rows in one statement execution."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing()
    conn.execute(stmt, rows)


# -- budgets ------------------------------------------------------------------------------------


def reserve_budget(
    conn: Connection,
    activity_id: int,
    user_id: str,
    cost_fen: int,
    *,
    per_user_fen: int | None = None,
    per_user_count: int | None = None,
    cap_key: str | None = None,
) -> None:
    """Take one grant and ``cost_fen`` from the activity's and the user's budget, or raise.

    ``cap_key`` names the per-user counter (default: the user id; referral caps use
    ``invites:USER``). Both updates are conditional, so concurrent grants cannot overdraw.
    """
    b = activity_budgets.c
    done = conn.execute(
        activity_budgets.update()
        .where(
            b.activity_id == activity_id,
            b.frozen == sa.false(),
            sa.or_(b.remaining_count.is_(None), b.remaining_count >= 1),
            sa.or_(b.remaining_fen.is_(None), b.remaining_fen >= cost_fen),
        )
        .values(
            remaining_count=b.remaining_count - 1,
            remaining_fen=b.remaining_fen - cost_fen,
            spent_fen=b.spent_fen + cost_fen,
            granted_count=b.granted_count + 1,
        )
    ).rowcount
    if not done:
        raise BudgetExhausted("the activity's budget is used up (or the activity was stopped)")
    if per_user_fen is None and per_user_count is None:
        return
    key = cap_key or user_id
    u = activity_user_budgets.c
    insert_ignore(conn, activity_user_budgets, {"activity_id": activity_id, "user_id": key})
    conds = [u.activity_id == activity_id, u.user_id == key]
    if per_user_count is not None:
        conds.append(u.used_count + 1 <= per_user_count)
    if per_user_fen is not None:
        conds.append(u.used_fen + cost_fen <= per_user_fen)
    done = conn.execute(
        activity_user_budgets.update()
        .where(*conds)
        .values(used_count=u.used_count + 1, used_fen=u.used_fen + cost_fen)
    ).rowcount
    if not done:
        raise BudgetExhausted("this user has reached the activity's per-user limit", "user")


def refund_budget(conn: Connection, activity_id: int, user_id: str, cost_fen: int) -> None:
    """Give a reversed grant back to the budgets it came from."""
    b = activity_budgets.c
    conn.execute(
        activity_budgets.update()
        .where(b.activity_id == activity_id)
        .values(
            remaining_count=b.remaining_count + 1,
            remaining_fen=b.remaining_fen + cost_fen,
            spent_fen=b.spent_fen - cost_fen,
            granted_count=b.granted_count - 1,
        )
    )
    u = activity_user_budgets.c
    conn.execute(
        activity_user_budgets.update()
        .where(u.activity_id == activity_id, u.user_id == user_id)
        .values(used_count=u.used_count - 1, used_fen=u.used_fen - cost_fen)
    )


# -- posting ------------------------------------------------------------------------------------


def _post(
    conn: Connection,
    *,
    project_id: int,
    key: str,
    kind: str,
    activity_id: int | None,
    user_id: str,
    asset: str,
    amount: int,
    debit: str,
    credit: str,
    now: datetime,
    cost_fen: int = 0,
    expires_at: datetime | None = None,
    reverses_id: int | None = None,
    memo: dict[str, Any] | None = None,
) -> int:
    """One transaction with its two entries: ``-amount`` on ``debit``, ``+amount`` on ``credit``."""
    txn_id = conn.execute(
        ledger_transactions.insert().values(
            project_id=project_id,
            idempotency_key=key,
            kind=kind,
            activity_id=activity_id,
            user_id=user_id,
            asset=asset,
            amount=amount,
            cost_fen=cost_fen,
            expires_at=expires_at,
            reverses_id=reverses_id,
            memo=memo or {},
            created_at=now,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    common = {
        "transaction_id": txn_id,
        "project_id": project_id,
        "asset": asset,
        "expires_at": expires_at,
        "created_at": now,
    }
    conn.execute(
        ledger_entries.insert(),
        [
            {**common, "account": debit, "amount": -amount},
            {**common, "account": credit, "amount": amount},
        ],
    )
    return int(txn_id)


def _extend_membership(
    conn: Connection, project_id: int, user_id: str, days: int, now: datetime
) -> datetime:
    m = memberships.c
    insert_ignore(
        conn, memberships, {"project_id": project_id, "user_id": user_id, "expires_at": now}
    )
    current = conn.execute(
        sa.select(m.expires_at)
        .where(m.project_id == project_id, m.user_id == user_id)
        .with_for_update()
    ).scalar_one()
    current = aware(current) or now
    new = max(current, now) + timedelta(days=days)
    conn.execute(
        memberships.update()
        .where(m.project_id == project_id, m.user_id == user_id)
        .values(expires_at=new)
    )
    return new


def post_grant(
    conn: Connection,
    *,
    project_id: int,
    activity_id: int | None,
    user_id: str,
    reward: Reward,
    key: str,
    now: datetime | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    memo: dict[str, Any] | None = None,
) -> int:
    """Post a reward to the user's wallet (caller's transaction); the transaction id.

    Raises ``sqlalchemy.exc.IntegrityError`` when ``key`` was used before: the caller's
    transaction must then roll back (nothing of this grant is kept).
    """
    now = now or utcnow()
    expires = now + timedelta(days=reward.valid_days) if reward.valid_days else None
    if reward.kind == "coupon":
        expires = valid_to or expires
    source = f"activity:{activity_id}" if activity_id is not None else "platform"
    txn = _post(
        conn,
        project_id=project_id,
        key=key,
        kind="grant",
        activity_id=activity_id,
        user_id=user_id,
        asset=reward.kind,
        amount=reward.amount,
        debit=source,
        credit=f"user:{user_id}",
        now=now,
        cost_fen=reward.cost(),
        expires_at=expires,
        memo={**(memo or {}), "badge": reward.badge} if reward.badge else memo,
    )
    if reward.kind == "coupon":
        conn.execute(
            coupons.insert(),
            [
                {
                    "project_id": project_id,
                    "transaction_id": txn,
                    "activity_id": activity_id,
                    "user_id": user_id,
                    "code": "C" + secrets.token_hex(8).upper(),
                    "threshold_fen": reward.threshold_fen,
                    "discount_fen": reward.discount_fen or 0,
                    "valid_from": valid_from or now,
                    "valid_to": expires,
                    "status": "issued",
                }
                for _ in range(reward.amount)
            ],
        )
    elif reward.kind == "membership_days":
        _extend_membership(conn, project_id, user_id, reward.amount, now)
    return txn


def transaction_by_key(engine: Engine | Connection, project_id: int, key: str) -> int | None:
    t = ledger_transactions.c
    stmt = sa.select(t.id).where(t.project_id == project_id, t.idempotency_key == key)
    if isinstance(engine, Connection):
        return engine.execute(stmt).scalar()
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def reverse(
    engine: Engine, project_id: int, transaction_id: int, reason: str, actor: str = "system"
) -> int:
    """Undo a grant with opposite entries (refund fraud); reverses a transaction at most once.

    The budget gets the cost back; issued coupons of the grant become ``reversed``; membership
    loses the granted days. Returns the reversal's transaction id (the same on a repeat call).
    """
    t = ledger_transactions.c
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(ledger_transactions).where(t.id == transaction_id, t.project_id == project_id)
        ).first()
        if row is None:
            raise NotFound(f"no ledger transaction {transaction_id} in this project")
        if row.kind != "grant":
            raise Conflict(f"transaction {transaction_id} is a {row.kind}, only grants reverse")
        done = conn.execute(sa.select(t.id).where(t.reverses_id == transaction_id)).scalar()
        if done is not None:
            return int(done)
        source = f"activity:{row.activity_id}" if row.activity_id is not None else "platform"
        rid = _post(
            conn,
            project_id=project_id,
            key=f"reversal:{transaction_id}",
            kind="reversal",
            activity_id=row.activity_id,
            user_id=row.user_id,
            asset=row.asset,
            amount=row.amount,
            debit=f"user:{row.user_id}",
            credit=source,
            now=now,
            cost_fen=-row.cost_fen,
            expires_at=aware(row.expires_at),
            reverses_id=transaction_id,
            memo={"reason": reason, "actor": actor},
        )
        if row.activity_id is not None:
            refund_budget(conn, row.activity_id, row.user_id, row.cost_fen)
        if row.asset == "coupon":
            conn.execute(
                coupons.update()
                .where(coupons.c.transaction_id == transaction_id, coupons.c.status == "issued")
                .values(status="reversed")
            )
        if row.asset == "membership_days":
            m = memberships.c
            cur = conn.execute(
                sa.select(m.expires_at)
                .where(m.project_id == project_id, m.user_id == row.user_id)
                .with_for_update()
            ).scalar()
            if cur is not None:
                conn.execute(
                    memberships.update()
                    .where(m.project_id == project_id, m.user_id == row.user_id)
                    .values(expires_at=aware(cur) - timedelta(days=row.amount))  # type: ignore[operator]
                )
    return rid


# -- coupons ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redemption:
    code: str
    discount_fen: int
    pay_fen: int
    transaction_id: int


def redeem_coupon(
    engine: Engine,
    project_id: int,
    user_id: str,
    code: str,
    order_fen: int,
    order_ref: str | None = None,
    key: str | None = None,
) -> Redemption:
    """Use a coupon once on an order of ``order_fen``: the threshold and validity must hold.

    The status flips ``issued → redeemed`` with a conditional UPDATE, so two concurrent
    redemptions of one coupon cannot both succeed.
    """
    now = utcnow()
    c = coupons.c
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(coupons).where(c.project_id == project_id, c.code == code)
        ).first()
        if row is None or row.user_id != user_id:
            raise CouponError(f"no coupon {code!r} for this user")
        if row.status != "issued":
            raise CouponError(f"coupon {code} is {row.status}")
        if aware(row.valid_from) > now:  # type: ignore[operator]
            raise CouponError(f"coupon {code} is valid from {aware(row.valid_from)}")
        if row.valid_to is not None and aware(row.valid_to) <= now:  # type: ignore[operator]
            raise CouponError(f"coupon {code} expired at {aware(row.valid_to)}")
        if order_fen < row.threshold_fen:
            raise CouponError(
                f"coupon {code} needs an order of at least {row.threshold_fen} fen, "
                f"this one is {order_fen}"
            )
        done = conn.execute(
            coupons.update()
            .where(c.id == row.id, c.status == "issued")
            .values(status="redeemed", redeemed_at=now, order_ref=order_ref)
        ).rowcount
        if not done:
            raise CouponError(f"coupon {code} was just used")
        txn = _post(
            conn,
            project_id=project_id,
            key=key or f"redeem:{code}",
            kind="redeem",
            activity_id=row.activity_id,
            user_id=user_id,
            asset="coupon",
            amount=1,
            debit=f"user:{user_id}",
            credit="redeemed",
            now=now,
            memo={"code": code, "order_fen": order_fen, "order_ref": order_ref},
        )
    discount = min(int(row.discount_fen), order_fen)
    return Redemption(code, discount, order_fen - discount, txn)


# -- reading ------------------------------------------------------------------------------------


def wallet(engine: Engine, project_id: int, user_id: str) -> dict[str, Any]:
    """A user's balances: points (unexpired), cash fen, membership end, badges, coupons."""
    now = utcnow()
    e = ledger_entries.c
    account = f"user:{user_id}"
    with engine.connect() as conn:
        sums = conn.execute(
            sa.select(e.asset, sa.func.sum(e.amount))
            .where(
                e.project_id == project_id,
                e.account == account,
                sa.or_(e.expires_at.is_(None), e.expires_at > now, e.asset == "coupon"),
            )
            .group_by(e.asset)
        ).all()
        expired = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(e.amount), 0)).where(
                e.project_id == project_id,
                e.account == account,
                e.asset == "points",
                e.expires_at <= now,
            )
        ).scalar_one()
        t = ledger_transactions.c
        badge_rows = conn.execute(
            sa.select(t.id, t.memo).where(
                t.project_id == project_id,
                t.user_id == user_id,
                t.asset == "badge",
                t.kind == "grant",
                ~sa.exists().where(
                    ledger_transactions.alias("r").c.reverses_id == t.id,
                ),
            )
        ).all()
        member = conn.execute(
            sa.select(memberships.c.expires_at).where(
                memberships.c.project_id == project_id, memberships.c.user_id == user_id
            )
        ).scalar()
        coupon_rows = conn.execute(
            sa.select(coupons)
            .where(coupons.c.project_id == project_id, coupons.c.user_id == user_id)
            .order_by(coupons.c.id)
        ).all()
    by_asset = {a: int(v or 0) for a, v in sums}
    member_end = aware(member)
    return {
        "user_id": user_id,
        "points": by_asset.get("points", 0),
        "points_expired": int(expired or 0),
        "cash_fen": by_asset.get("cash", 0),
        "membership_until": member_end.isoformat() if member_end and member_end > now else None,
        "membership_days_granted": by_asset.get("membership_days", 0),
        "badges": sorted({(r.memo or {}).get("badge") or "badge" for r in badge_rows}),
        "coupons": [coupon_dict(r) for r in coupon_rows],
    }


def coupon_dict(r: Any) -> dict[str, Any]:
    now = utcnow()
    valid_to = aware(r.valid_to)
    status = r.status
    if status == "issued" and valid_to is not None and valid_to <= now:
        status = "expired"
    return {
        "code": r.code,
        "activity_id": r.activity_id,
        "threshold_fen": int(r.threshold_fen),
        "discount_fen": int(r.discount_fen),
        "valid_from": aware(r.valid_from).isoformat(),  # type: ignore[union-attr]
        "valid_to": valid_to.isoformat() if valid_to else None,
        "status": status,
        "redeemed_at": iso(r.redeemed_at),
    }


def entries(
    engine: Engine,
    project_id: int,
    *,
    user_id: str | None = None,
    activity_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Ledger transactions (newest first) with their entries."""
    t = ledger_transactions.c
    q = sa.select(ledger_transactions).where(t.project_id == project_id)
    if user_id is not None:
        q = q.where(t.user_id == user_id)
    if activity_id is not None:
        q = q.where(t.activity_id == activity_id)
    q = q.order_by(t.id.desc()).limit(limit)
    with engine.connect() as conn:
        txns = conn.execute(q).all()
        ids = [r.id for r in txns]
        legs: dict[int, list[dict[str, Any]]] = {}
        if ids:
            for e in conn.execute(
                sa.select(ledger_entries)
                .where(ledger_entries.c.transaction_id.in_(ids))
                .order_by(ledger_entries.c.id)
            ):
                legs.setdefault(e.transaction_id, []).append(
                    {"account": e.account, "asset": e.asset, "amount": int(e.amount)}
                )
    return [
        {
            "id": r.id,
            "key": r.idempotency_key,
            "kind": r.kind,
            "activity_id": r.activity_id,
            "user_id": r.user_id,
            "asset": r.asset,
            "amount": int(r.amount),
            "cost_fen": int(r.cost_fen),
            "expires_at": iso(r.expires_at),
            "reverses": r.reverses_id,
            "memo": r.memo,
            "created_at": aware(r.created_at).isoformat(),  # type: ignore[union-attr]
            "entries": legs.get(r.id, []),
        }
        for r in txns
    ]


def account_balance(engine: Engine, project_id: int, account: str) -> dict[str, int]:
    """Sum of an account's entries per asset (e.g. ``activity:3`` is minus what it paid out)."""
    e = ledger_entries.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.asset, sa.func.sum(e.amount))
            .where(e.project_id == project_id, e.account == account)
            .group_by(e.asset)
        ).all()
    return {a: int(v or 0) for a, v in rows}
