"""State tables of segments and tags (SQLAlchemy Core on the shared metadata), mirrored by
migration ``0002_segments``.

Membership itself lives in the events engine's ``person_values`` (scopes ``segment:ID`` and
``tag:NAME``) so analyses can join it; the state database keeps definitions, the size history,
and the members of static segments (their source of truth: uploads and snapshots).
"""

from __future__ import annotations

import sqlalchemy as sa

from yunying.state.models import metadata

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("kind", sa.String(16), nullable=False),  # dynamic | static
    sa.Column("rules", sa.JSON, nullable=True),  # the rule tree of a dynamic segment
    sa.Column("schedule_minutes", sa.Integer, nullable=True),  # None: on demand only
    sa.Column("source", sa.String(200), nullable=True),  # static: "upload" | "snapshot:ID"
    sa.Column("last_computed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("size", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_error_message", sa.JSON, nullable=True),  # its template, for translation
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_segments_project_name"),
)

segment_sizes = sa.Table(
    "segment_sizes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Index("ix_segment_sizes_segment", "segment_id", "computed_at"),
)

#: The persona of a segment's latest computation (``audience.segment_persona``): written with
#: each computation, so the segment's page shows it without reading every event again.
segment_personas = sa.Table(
    "segment_personas",
    metadata,
    sa.Column(
        "segment_id",
        sa.Integer,
        sa.ForeignKey("segments.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("computed_for", sa.DateTime(timezone=True), nullable=False),  # the computation
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),  # its queries (shared within a batch)
)

segment_members = sa.Table(
    "segment_members",
    metadata,
    sa.Column(
        "segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("person_id", sa.String(36), nullable=False),
    sa.PrimaryKeyConstraint("segment_id", "person_id", name="pk_segment_members"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("schedule_minutes", sa.Integer, nullable=True),
    sa.Column("last_computed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("size", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_error_message", sa.JSON, nullable=True),  # its template, for translation
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_tags_project_name"),
)
