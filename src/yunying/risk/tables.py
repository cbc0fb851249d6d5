"""State tables of anti-fraud (SQLAlchemy Core), mirrored by migration 0005.

``risk_claims`` is the history every velocity and account-cap check reads, so it is indexed by
each key a rule looks up (device, ip, subnet, person) together with the claim time: every lookup
is a bounded range scan. ``risk_locks`` holds one row per key being assessed, so concurrent
assessments of the same device, network or person run one after another (see
:mod:`yunying.risk.engine`).
"""

from __future__ import annotations

import sqlalchemy as sa

from yunying.state.models import metadata


def codes_text(codes: list[str] | tuple[str, ...]) -> str:
    """The ``reason_codes`` value: ``,a,b,`` (``''`` for none), so ``LIKE '%,a,%'`` finds ``a``."""
    return f",{','.join(codes)}," if codes else ""


risk_claims = sa.Table(
    "risk_claims",
    metadata,
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
    #: ``,code,code,`` of the reasons ('' when none), for filtering in SQL.
    sa.Column("reason_codes", sa.String(1000), nullable=False, server_default=""),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("review_id", sa.Integer),
    sa.Column("flagged", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_risk_claims_device", "project_id", "device_id", "at"),
    sa.Index("ix_risk_claims_ip", "project_id", "ip", "at"),
    sa.Index("ix_risk_claims_subnet", "project_id", "subnet", "at"),
    sa.Index("ix_risk_claims_person", "project_id", "person_id", "at"),
    sa.Index("ix_risk_claims_activity", "project_id", "activity_id", "flagged"),
)

risk_reviews = sa.Table(
    "risk_reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("activity_id", sa.Integer, nullable=False),
    sa.Column("activity_kind", sa.String(40), nullable=False),
    sa.Column("claim_id", sa.Integer, nullable=False),
    sa.Column("person_id", sa.String(200), nullable=False),
    #: pending, approved, denied
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("claim", sa.JSON, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("reason_codes", sa.String(1000), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("reviewer", sa.String(200)),
    sa.Column("note", sa.Text),
    #: What the activity's decision handler raised, if it failed after the decision was stored.
    sa.Column("handler_error", sa.Text),
    sa.Index("ix_risk_reviews_status", "project_id", "status", "created_at"),
    sa.Index("ix_risk_reviews_activity", "project_id", "activity_id", "status"),
)

risk_blocklist = sa.Table(
    "risk_blocklist",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    #: person, distinct_id, device, ip, subnet
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("value", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("project_id", "kind", "value", name="uq_risk_blocklist_entry"),
)

risk_locks = sa.Table(
    "risk_locks",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
)
