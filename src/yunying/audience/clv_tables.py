"""State-DB table of fitted CLV models (SQLAlchemy Core), mirrored by migration 0006.

One row per ``yunying clv fit``: the BG/NBD and Gamma-Gamma parameters with everything needed to
explain the fit (see :mod:`yunying.audience.clv`). Predictions themselves live per person in the
events engine (``person_values``), where segments and analytics can join them.
"""

from __future__ import annotations

import sqlalchemy as sa

from yunying.state.models import metadata

clv_models = sa.Table(
    "clv_models",
    metadata,
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
    # {"bgnbd": {...}, "gamma_gamma": {...} | null, "counts": {...}, "predictions": {...}, ...}
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("log_likelihood", sa.Float, nullable=False),
    sa.Column("n_customers", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_clv_models_project_id_id", "project_id", "id"),
)
