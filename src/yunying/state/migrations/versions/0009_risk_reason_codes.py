"""risk reason codes on databases made by the first build of 0005, which lacked the column
(0005 gained it in place before any release); a no-op where 0005 already created it

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("risk_claims", "risk_reviews")


def upgrade() -> None:
    """Add ``reason_codes`` where it is missing (old rows get ``''``: no codes recorded)."""
    inspector = sa.inspect(op.get_bind())
    for table in TABLES:
        if "reason_codes" not in {c["name"] for c in inspector.get_columns(table)}:
            with op.batch_alter_table(table) as batch:
                batch.add_column(
                    sa.Column("reason_codes", sa.String(1000), nullable=False, server_default="")
                )


def downgrade() -> None:
    """Nothing to undo: 0005 owns the column."""
