"""error messages: a failed segment or tag computation keeps its message's template and
parameters beside the English text, so the console shows it in the reader's language

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("segments", "tags"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_error_message", sa.JSON, nullable=True))


def downgrade() -> None:
    for table in ("segments", "tags"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("last_error_message")
