"""Projects and the state schema behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from yunying.errors import Conflict, NotFound
from yunying.state import (
    InvalidProject,
    create_project,
    get_project,
    list_projects,
    open_state,
    project_by_secret_key,
    project_by_write_key,
)
from yunying.state.projects import hash_secret


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = open_state(url)
    yield engine
    engine.dispose()


def test_migrations_create_the_schema_and_record_the_revision(state: Engine) -> None:
    from alembic.script import ScriptDirectory

    from yunying.state.db import alembic_config

    inspector = sa.inspect(state)
    assert "projects" in inspector.get_table_names()
    heads = ScriptDirectory.from_config(alembic_config(state)).get_heads()
    assert len(heads) == 1, f"migration branches need a merge revision: {heads}"
    with state.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == heads[0]


def test_migrations_build_exactly_the_tables_the_code_declares(state: Engine) -> None:
    """Every capability's table definitions equal what the migrations built (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from yunying.state.models import all_tables

    with state.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), all_tables())
    assert diff == []


def test_migrating_twice_changes_nothing(state: Engine) -> None:
    from yunying.state import upgrade

    create_project(state, "a")
    upgrade(state)
    assert [p.name for p in list_projects(state)] == ["a"]


def test_create_project_returns_keys_once_and_stores_only_a_hash(state: Engine) -> None:
    new = create_project(state, "短视频剪辑", "Asia/Shanghai")
    assert new.secret_key.startswith("ysk_") and new.project.write_key.startswith("ywk_")
    with state.connect() as conn:
        stored = conn.exec_driver_sql("SELECT * FROM projects").mappings().one()
    assert new.secret_key not in {str(v) for v in stored.values()}
    assert stored["secret_key_hash"] == hash_secret(new.secret_key)
    assert project_by_secret_key(state, new.secret_key) == new.project
    assert project_by_secret_key(state, new.secret_key + "x") is None
    assert project_by_write_key(state, new.project.write_key) == new.project


def test_several_projects_have_distinct_keys(state: Engine) -> None:
    a, b = create_project(state, "a"), create_project(state, "b")
    assert a.project.write_key != b.project.write_key
    assert a.secret_key != b.secret_key
    assert [p.name for p in list_projects(state)] == ["a", "b"]


def test_duplicate_name_is_a_conflict(state: Engine) -> None:
    create_project(state, "a")
    with pytest.raises(Conflict, match="already exists"):
        create_project(state, "a")


@pytest.mark.parametrize(
    ("name", "tz", "message"), [("", "UTC", "1 to 200"), ("x", "Mars/Base", "time zone")]
)
def test_invalid_project_settings_are_refused(
    state: Engine, name: str, tz: str, message: str
) -> None:
    with pytest.raises(InvalidProject, match=message):
        create_project(state, name, tz)


def test_get_project_needs_a_name_only_when_there_are_several(state: Engine) -> None:
    with pytest.raises(NotFound, match="no project yet"):
        get_project(state)
    create_project(state, "a")
    assert get_project(state).name == "a"
    create_project(state, "b")
    with pytest.raises(NotFound, match="--project"):
        get_project(state)
    assert get_project(state, "b").name == "b"
    with pytest.raises(NotFound, match="no project named"):
        get_project(state, "c")


def test_a_database_from_the_first_risk_build_gains_its_reason_codes(state: Engine) -> None:
    """0005 gained ``reason_codes`` in place; databases made before that get it from 0009."""
    from alembic import command

    from yunying.state import upgrade
    from yunying.state.db import alembic_config

    command.downgrade(alembic_config(state), "0008")  # 0009 undoes nothing
    with state.begin() as conn:
        for table in ("risk_claims", "risk_reviews"):
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN reason_codes")
    upgrade(state)
    inspector = sa.inspect(state)
    for table in ("risk_claims", "risk_reviews"):
        assert "reason_codes" in {c["name"] for c in inspector.get_columns(table)}
