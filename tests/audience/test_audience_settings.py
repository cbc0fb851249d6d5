"""Audience settings stored in the state database: SQLite and PostgreSQL, defaults, changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from yunying.audience.settings import (
    AudienceSettings,
    InvalidSettings,
    get_settings,
    put_settings,
    with_changes,
)
from yunying.state import create_project, open_state


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"])
def test_round_trip(engine_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if engine_kind == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = open_state(url)
    try:
        a = create_project(engine, "a").project.id
        b = create_project(engine, "b").project.id
        assert get_settings(engine, a) == AudienceSettings()
        stored = put_settings(engine, a, {"lifecycle": {"churned_days": 60}})
        assert get_settings(engine, a) == stored
        assert stored.lifecycle.churned_days == 60 and stored.lifecycle.silent_days == 7
        assert get_settings(engine, b) == AudienceSettings()  # per project
        again = put_settings(engine, a, {"rfm": {"window_days": 90}})  # replaces the document
        assert get_settings(engine, a) == again and again.lifecycle.churned_days == 30
    finally:
        engine.dispose()


def test_dotted_changes() -> None:
    s = with_changes(AudienceSettings(), {"lifecycle.silent_days": 3, "rfm.high_scores.m": 5})
    assert s.lifecycle.silent_days == 3 and s.rfm.high_scores.m == 5
    with pytest.raises(InvalidSettings, match="unknown setting 'lifecycle.nap'"):
        with_changes(AudienceSettings(), {"lifecycle.nap": 3})
    with pytest.raises(InvalidSettings, match="unknown setting 'sleep'"):
        with_changes(AudienceSettings(), {"sleep.days": 3})
    with pytest.raises(InvalidSettings) as err:
        with_changes(AudienceSettings(), {"lifecycle.new_days": "soon"})
    assert err.value.field == "lifecycle.new_days"
