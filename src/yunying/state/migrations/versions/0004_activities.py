"""activities: specs, budgets, progress, invites, seats, claims, rewards ledger, coupons

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-23

The tables are created from a copy of :mod:`yunying.activities.tables` as it stands at this
revision's creation; later changes to those tables get their own revisions.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def _tables() -> list[sa.Table]:
    from yunying.activities.tables import TABLES
    from yunying.state.models import projects

    meta = sa.MetaData()
    projects.to_metadata(meta)
    return [t.to_metadata(meta) for t in TABLES]


def upgrade() -> None:
    bind = op.get_bind()
    for table in _tables():
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_tables()):
        table.drop(bind)
