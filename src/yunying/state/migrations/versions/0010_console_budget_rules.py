"""console budget rules: the money budget up to which an operator may start an activity

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_budget_rules",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("operator_limit_fen", sa.BigInteger, nullable=True),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_budget_rules")
