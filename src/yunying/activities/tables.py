"""State tables of activities, the rewards ledger and live-rule progress (SQLAlchemy Core).

Mirrored by migration 0004. Exactly-once guarantees live in constraints, not in code paths:
``ledger_transactions`` is UNIQUE on (project, idempotency key), ``activity_claims`` likewise,
``activity_seen_events`` on (activity, event uuid), seats and budgets move only through
conditional UPDATEs (``... WHERE remaining >= cost``).
"""

from __future__ import annotations

import sqlalchemy as sa

from yunying.state.models import metadata

_TS = sa.DateTime(timezone=True)


def _fk_project() -> sa.ForeignKey:
    return sa.ForeignKey("projects.id", ondelete="CASCADE")


def _fk_activity() -> sa.ForeignKey:
    return sa.ForeignKey("activities.id", ondelete="CASCADE")


activities = sa.Table(
    "activities",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("template", sa.String(20), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("killed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)

#: Budget left and seats taken; only conditional UPDATEs change these rows.
activity_budgets = sa.Table(
    "activity_budgets",
    metadata,
    sa.Column("activity_id", sa.Integer, _fk_activity(), primary_key=True),
    sa.Column("remaining_fen", sa.BigInteger, nullable=True),
    sa.Column("remaining_count", sa.BigInteger, nullable=True),
    sa.Column("spent_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("granted_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("seats", sa.Integer, nullable=True),
    sa.Column("seats_taken", sa.Integer, nullable=False, server_default="0"),
    #: Set by the kill switch in the same transaction: no grant passes a frozen budget.
    sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
)

activity_user_budgets = sa.Table(
    "activity_user_budgets",
    metadata,
    sa.Column("activity_id", sa.Integer, _fk_activity(), primary_key=True),
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("used_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("used_count", sa.BigInteger, nullable=False, server_default="0"),
)

activity_audit = sa.Table(
    "activity_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("activity_id", sa.Integer, _fk_activity(), nullable=False, index=True),
    sa.Column("at", _TS, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=True),
)

#: One row per participant (user id = the app's distinct id): streak, counters, completion.
activity_progress = sa.Table(
    "activity_progress",
    metadata,
    sa.Column("activity_id", sa.Integer, _fk_activity(), primary_key=True),
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("person_id", sa.String(64), nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("completed_at", _TS, nullable=True),
    sa.Column("joined_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)

#: Events already applied to an activity: the live rules' per-uuid idempotency.
activity_seen_events = sa.Table(
    "activity_seen_events",
    metadata,
    sa.Column("activity_id", sa.Integer, _fk_activity(), primary_key=True),
    sa.Column("event_uuid", sa.String(300), primary_key=True),
)

#: Rewards due from progress already committed, granted (through risk) right after; a restart
#: finishes whatever is left, and the claim key makes a second attempt a no-op.
activity_outbox = sa.Table(
    "activity_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("activity_id", sa.Integer, _fk_activity(), nullable=False),
    sa.Column("key", sa.String(300), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false(), index=True),
    sa.UniqueConstraint("project_id", "key", name="uq_outbox_key"),
)

#: Per project: events received up to here are processed (catch-up restarts a little before).
activity_watermarks = sa.Table(
    "activity_watermarks",
    metadata,
    sa.Column("project_id", sa.Integer, _fk_project(), primary_key=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
)

invite_codes = sa.Table(
    "invite_codes",
    metadata,
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("activity_id", sa.Integer, _fk_activity(), primary_key=True),
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("person_id", sa.String(64), nullable=True),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("project_id", "code", name="uq_invite_code"),
)

invites = sa.Table(
    "invites",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False, index=True),
    sa.Column("activity_id", sa.Integer, _fk_activity(), nullable=False),
    sa.Column("inviter_id", sa.String(200), nullable=False),
    sa.Column("inviter_person_id", sa.String(64), nullable=True),
    sa.Column("invitee_id", sa.String(200), nullable=False),
    sa.Column("invitee_person_id", sa.String(64), nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("activated_at", _TS, nullable=True),
    sa.UniqueConstraint("activity_id", "invitee_id", name="uq_invitee"),
)

signups = sa.Table(
    "activity_signups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("activity_id", sa.Integer, _fk_activity(), nullable=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # seated, waitlisted, cancelled
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.UniqueConstraint("activity_id", "user_id", name="uq_signup"),
)

#: Every attempt to receive a reward and its risk outcome (granted, held, denied).
claims = sa.Table(
    "activity_claims",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("activity_id", sa.Integer, _fk_activity(), nullable=False, index=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("person_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(12), nullable=False),  # granted, held, denied, rejected
    sa.Column("reward", sa.JSON, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("review_id", sa.Integer, nullable=True, index=True),
    sa.Column("transaction_id", sa.Integer, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.UniqueConstraint("project_id", "idempotency_key", name="uq_claim_key"),
)

#: A ledger transaction: one grant, reversal, redemption or expiry; entries balance to zero.
ledger_transactions = sa.Table(
    "ledger_transactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("idempotency_key", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),  # grant, reversal, redeem
    sa.Column("activity_id", sa.Integer, nullable=True, index=True),
    sa.Column("user_id", sa.String(200), nullable=False, index=True),
    sa.Column("asset", sa.String(20), nullable=False),  # reward kind
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("cost_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("expires_at", _TS, nullable=True),
    sa.Column("reverses_id", sa.Integer, nullable=True, unique=True),
    sa.Column("memo", sa.JSON, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("project_id", "idempotency_key", name="uq_ledger_key"),
)

#: Double entry: each transaction posts +amount to one account and -amount to another.
ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "transaction_id",
        sa.Integer,
        sa.ForeignKey("ledger_transactions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("account", sa.String(250), nullable=False, index=True),
    sa.Column("asset", sa.String(20), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("expires_at", _TS, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
)

coupons = sa.Table(
    "coupons",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, _fk_project(), nullable=False),
    sa.Column("transaction_id", sa.Integer, nullable=False),
    sa.Column("activity_id", sa.Integer, nullable=True),
    sa.Column("user_id", sa.String(200), nullable=False, index=True),
    sa.Column("code", sa.String(32), nullable=False, unique=True),
    sa.Column("threshold_fen", sa.BigInteger, nullable=False),
    sa.Column("discount_fen", sa.BigInteger, nullable=False),
    sa.Column("valid_from", _TS, nullable=False),
    sa.Column("valid_to", _TS, nullable=True),
    sa.Column("status", sa.String(12), nullable=False),  # issued, redeemed, reversed
    sa.Column("redeemed_at", _TS, nullable=True),
    sa.Column("order_ref", sa.String(200), nullable=True),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("project_id", sa.Integer, _fk_project(), primary_key=True),
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("expires_at", _TS, nullable=False),
)

#: Per-project HMAC secret the app's backend signs short-lived user tokens with.
signing_keys = sa.Table(
    "activity_signing_keys",
    metadata,
    sa.Column("project_id", sa.Integer, _fk_project(), primary_key=True),
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

TABLES = (
    activities,
    activity_budgets,
    activity_user_budgets,
    activity_audit,
    activity_progress,
    activity_seen_events,
    activity_outbox,
    activity_watermarks,
    invite_codes,
    invites,
    signups,
    claims,
    ledger_transactions,
    ledger_entries,
    coupons,
    memberships,
    signing_keys,
)
