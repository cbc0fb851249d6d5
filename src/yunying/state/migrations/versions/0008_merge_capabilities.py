"""merge: segments, audience settings, activities, risk, CLV models and console users were built
side by side on top of 0001; this revision joins the branches so there is one head again

Revision ID: 0008
Revises: 0002, 0003, 0004, 0005, 0006, 0007
Create Date: 2026-11-23
"""

revision = "0008"
down_revision = ("0002", "0003", "0004", "0005", "0006", "0007")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the branches touch separate tables."""


def downgrade() -> None:
    """Nothing to change."""
