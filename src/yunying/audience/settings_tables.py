"""The ``audience_settings`` table (state DB): one JSON document of settings per project.

Mirrored by migration ``0003_audience_settings``; defined on the shared metadata so that
``alembic`` autogenerate and tests see it next to ``projects``.
"""

from __future__ import annotations

import sqlalchemy as sa

from yunying.state.models import metadata

audience_settings = sa.Table(
    "audience_settings",
    metadata,
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
