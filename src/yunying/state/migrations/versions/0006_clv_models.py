"""clv_models: fitted BG/NBD + Gamma-Gamma models per project (yunying.audience.clv_tables)

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clv_models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "project_id",
            sa.Integer,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("calibration_end", sa.Date, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("log_likelihood", sa.Float, nullable=False),
        sa.Column("n_customers", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_clv_models_project_id_id", "clv_models", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_clv_models_project_id_id", table_name="clv_models")
    op.drop_table("clv_models")
