"""Table definitions of the operational state (SQLAlchemy Core), mirrored by the migrations."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("write_key", sa.String(64), nullable=False, unique=True),
    sa.Column("secret_key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("secret_key_prefix", sa.String(16), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Shanghai"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
