"""Console tables in the state database: team members and their login sessions.

Defined on the shared :data:`yunying.state.models.metadata` and created by migration 0007.
Passwords are stored as argon2id hashes; session tokens and CSRF tokens only as SHA-256 digests
of 256-bit random values (a fast hash is right for high-entropy tokens).
"""

from __future__ import annotations

import sqlalchemy as sa

from yunying.state.models import metadata

console_users = sa.Table(
    "console_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("locale", sa.String(10), nullable=True),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("console_users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

#: Budget rules per project: the largest total money budget (in fen) an operator may start an
#: activity with; above it, or with no money cap at all, an admin must start it. No row, or a
#: NULL limit, means no rule. Created by migration 0010.
console_budget_rules = sa.Table(
    "console_budget_rules",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("operator_limit_fen", sa.BigInteger, nullable=True),
    sa.Column("updated_by", sa.String(100), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
