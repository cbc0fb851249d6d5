"""risk: assessed claims, review queue, blocklist and per-key assessment locks

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_claims",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("activity_id", sa.Integer, nullable=False),
        sa.Column("activity_kind", sa.String(40), nullable=False),
        sa.Column("person_id", sa.String(200), nullable=False),
        sa.Column("distinct_id", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(200)),
        sa.Column("ip", sa.String(64)),
        sa.Column("subnet", sa.String(64)),
        sa.Column("role", sa.String(20)),
        sa.Column("counterpart_person_id", sa.String(200)),
        sa.Column("reward_kind", sa.String(40), nullable=False),
        sa.Column("amount", sa.Float, nullable=False, server_default="0"),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("reason_codes", sa.String(1000), nullable=False, server_default=""),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("review_id", sa.Integer),
        sa.Column("flagged", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_risk_claims_device", "risk_claims", ["project_id", "device_id", "at"])
    op.create_index("ix_risk_claims_ip", "risk_claims", ["project_id", "ip", "at"])
    op.create_index("ix_risk_claims_subnet", "risk_claims", ["project_id", "subnet", "at"])
    op.create_index("ix_risk_claims_person", "risk_claims", ["project_id", "person_id", "at"])
    op.create_index(
        "ix_risk_claims_activity", "risk_claims", ["project_id", "activity_id", "flagged"]
    )
    op.create_table(
        "risk_reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("activity_id", sa.Integer, nullable=False),
        sa.Column("activity_kind", sa.String(40), nullable=False),
        sa.Column("claim_id", sa.Integer, nullable=False),
        sa.Column("person_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("claim", sa.JSON, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("reason_codes", sa.String(1000), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("note", sa.Text),
        sa.Column("handler_error", sa.Text),
    )
    op.create_index(
        "ix_risk_reviews_status", "risk_reviews", ["project_id", "status", "created_at"]
    )
    op.create_index(
        "ix_risk_reviews_activity", "risk_reviews", ["project_id", "activity_id", "status"]
    )
    op.create_table(
        "risk_blocklist",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("project_id", "kind", "value", name="uq_risk_blocklist_entry"),
    )
    op.create_table(
        "risk_locks",
        sa.Column("project_id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("risk_locks")
    op.drop_table("risk_blocklist")
    op.drop_index("ix_risk_reviews_activity", "risk_reviews")
    op.drop_index("ix_risk_reviews_status", "risk_reviews")
    op.drop_table("risk_reviews")
    for name in ("activity", "person", "subnet", "ip", "device"):
        op.drop_index(f"ix_risk_claims_{name}", "risk_claims")
    op.drop_table("risk_claims")
