"""Migration 0005 creates exactly what yunying.risk.tables declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import yunying.risk.tables  # noqa: F401  (declares the risk tables on the shared metadata)
from yunying.state import open_state
from yunying.state.models import metadata


def risk_diffs(url: str) -> list[object]:
    engine = open_state(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()

    def about_risk(d: object) -> bool:
        text = repr(d)
        return "risk_" in text

    return [d for d in diffs if about_risk(d)]


def test_migration_matches_tables_sqlite(tmp_path: object) -> None:
    assert risk_diffs(f"sqlite:///{tmp_path}/state.sqlite") == []


@pytest.mark.postgres
def test_migration_matches_tables_postgres(fresh_postgres_url: str) -> None:
    assert risk_diffs(fresh_postgres_url) == []
