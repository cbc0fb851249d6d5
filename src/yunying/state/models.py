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


#: Modules that declare state tables on :data:`metadata`, one per capability.
TABLE_MODULES = (
    "yunying.audience.segment_tables",
    "yunying.audience.settings_tables",
    "yunying.audience.clv_tables",
    "yunying.activities.tables",
    "yunying.risk.tables",
    "yunying.console.tables",
)


def all_tables() -> sa.MetaData:
    """:data:`metadata` with every capability's tables declared (for migrations and checks)."""
    import importlib

    for name in TABLE_MODULES:
        importlib.import_module(name)
    return metadata
