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
from yunying.runtime import Runtime
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


def test_stored_scopes_on_both_engines(engine_runtime: Runtime) -> None:
    """store_stages / store_rfm write the scopes segment rules read, on DuckDB and ClickHouse,
    and replace them on the next run."""
    from datetime import date, datetime

    from sqlglot import exp

    from yunying.analytics.common import Sql, run
    from yunying.audience.rfm import store_rfm
    from yunying.audience.stages import store_stages
    from yunying.ingest.model import validate_batch

    rt = engine_runtime
    p = create_project(rt.state, "剪辑").project
    day = date(2024, 6, 30)
    raws = [
        {"event": "edit_video", "distinct_id": "a", "timestamp": "2024-06-30T01:00:00Z"},
        {"event": "purchase_membership", "distinct_id": "a", "timestamp": "2024-06-29T01:00:00Z",
         "properties": {"$amount": 30}},
        {"event": "edit_video", "distinct_id": "b", "timestamp": "2024-05-01T01:00:00Z"},
    ]  # fmt: skip
    rt.writer.write(p.id, validate_batch(raws, now=datetime(2030, 1, 1)).events)

    def scope(name: str) -> list[tuple[str, float | None]]:
        store = rt.store
        tree = (
            exp.select("label", "value")
            .from_(store.scoped("person_values", p.id).subquery("v"))
            .where(exp.column("scope").eq(exp.Literal.string(name)))
            .order_by("label")
        )
        assert Sql(store.dialect)
        return [(str(label), value) for label, value in run(store, tree)]

    assert store_stages(rt, p, day) == 2
    assert scope("stage") == [("churned", None), ("new", None)]
    assert store_rfm(rt, p, day) == 1
    # the only buyer: nobody is worse, so 1 + floor(5 * 0 / 1) = 1 on each score, which is the mean
    assert scope("rfm") == [("important_value", 111.0)]
    assert store_stages(rt, p, date(2024, 7, 10)) == 2  # replaced, not appended
    assert scope("stage") == [("churned", None), ("silent", None)]
