"""A segment's persona is taken with each computation of the segment and stored with it: the
persona of the same members, over the 30 local days up to the computation, read back by the
segment's page instead of scanning the events again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.audience.conftest import NOW, TZ, fresh, load_world, make_world
from yunying.analytics import DateRange
from yunying.audience import segments as S
from yunying.audience.persona import PersonaQuery, persona
from yunying.audience.segment_persona import persona_range, segment_persona, stored_persona
from yunying.audience.segment_tables import segment_personas
from yunying.audience.settings import get_settings
from yunying.ingest.model import Event
from yunying.state import get_project

EDITORS = {"type": "event", "event": "edit_video", "times": 1, "window": {"last_days": 30}}


def _stored_rows(rt: Any) -> list[Any]:
    with rt.state.connect() as conn:
        return list(conn.execute(sa.select(segment_personas)))


def _persons(report: dict[str, Any]) -> tuple[int, int]:
    return report["group"]["persons"], report["population"]["persons"]


def test_window_is_the_thirty_local_days_up_to_the_computation() -> None:
    project = type("P", (), {"timezone": TZ})()
    # 2024-03-24 17:00 UTC is already 2024-03-25 in Shanghai
    got = persona_range(project, datetime(2024, 3, 24, 17, 0, tzinfo=UTC))  # type: ignore[arg-type]
    assert (got.date_from, got.date_to, got.timezone) == (date(2024, 2, 25), date(2024, 3, 25), TZ)
    assert got.days == 30


def test_computing_a_segment_stores_its_persona(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    load_world(rt, pid, make_world(5, persons=120))
    project = get_project(rt.state)
    seg = S.create_segment(rt, project, "editors", rules=EDITORS)
    seg = S.compute_segment(rt, project, seg.id, NOW)
    assert seg.last_computed_at is not None and seg.size

    rows = _stored_rows(rt)
    assert [r.segment_id for r in rows] == [seg.id]
    assert rows[0].seconds > 0
    stored = stored_persona(rt.state, seg.id, seg.last_computed_at)
    assert stored is not None
    # the group is the members just stored; the window ends on the computation's local day
    assert stored["group"]["persons"] == seg.size
    assert stored["date_to"] == persona_range(project, seg.last_computed_at).date_to.isoformat()
    # and it is what the persona of that window reports (JSON round trip included)
    q = PersonaQuery(
        "segment",
        DateRange(
            date.fromisoformat(stored["date_from"]), date.fromisoformat(stored["date_to"]), TZ
        ),
        str(seg.id),
    )
    assert stored == persona(rt.store, pid, q, get_settings(rt.state, pid))
    rt.close()


def test_the_stored_persona_stays_with_its_computation(tmp_path: Path) -> None:
    """New persons arriving after a computation change neither the members nor the stored
    persona; the next computation replaces both."""
    rt, pid = fresh(tmp_path)
    load_world(rt, pid, make_world(6, persons=80))
    project = get_project(rt.state)
    seg = S.compute_segment(rt, project, S.create_segment(rt, project, "editors", rules=EDITORS).id)
    first = seg.last_computed_at
    assert first is not None
    before = segment_persona(rt, project, seg.id, first)
    group, population = _persons(before)

    at = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    late = [
        Event(uuid=f"00000000-0000-4000-8000-{i:012d}", event="edit_video",
              distinct_id=f"late-{i}", timestamp=at, properties={})
        for i in range(7)
    ]  # fmt: skip
    assert rt.writer.write(pid, late, timeout=30).stored == 7
    assert segment_persona(rt, project, seg.id, first) == before

    seg = S.compute_segment(rt, project, seg.id)
    assert seg.last_computed_at is not None and seg.last_computed_at != first
    assert stored_persona(rt.state, seg.id, first) is None  # an earlier computation's: stale
    after = segment_persona(rt, project, seg.id, seg.last_computed_at)
    assert _persons(after) == (group + 7, population + 7)
    assert len(_stored_rows(rt)) == 1
    rt.close()


def test_a_batch_recompute_stores_each_persona_and_deleting_drops_it(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    load_world(rt, pid, make_world(7, persons=80))
    project = get_project(rt.state)
    a = S.create_segment(rt, project, "editors", rules=EDITORS)
    b = S.create_segment(
        rt, project, "others", rules={"type": "not", "rule": {"type": "segment", "id": a.id}}
    )
    report = S.recompute_all(rt, project, NOW, derived=False)
    assert not report.failed and report.query_seconds is not None  # the one-query path
    assert report.persona_seconds is not None  # both personas together
    sizes = {}
    for seg in (S.get_segment(rt.state, pid, a.id), S.get_segment(rt.state, pid, b.id)):
        assert seg.last_computed_at is not None
        stored = stored_persona(rt.state, seg.id, seg.last_computed_at)
        assert stored is not None
        sizes[seg.id] = _persons(stored)
    # the two are complements: together they are everyone
    assert sizes[a.id][0] + sizes[b.id][0] == sizes[a.id][1] == sizes[b.id][1]

    S.delete_segment(rt, project, b.id)
    assert [r.segment_id for r in _stored_rows(rt)] == [a.id]
    rt.close()


def test_a_computation_without_a_stored_persona_gets_one_on_first_use(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    load_world(rt, pid, make_world(8, persons=60))
    project = get_project(rt.state)
    seg = S.compute_segment(rt, project, S.create_segment(rt, project, "editors", rules=EDITORS).id)
    assert seg.last_computed_at is not None
    with rt.state.begin() as conn:  # as after an upgrade: computed before personas were stored
        conn.execute(segment_personas.delete())
    assert stored_persona(rt.state, seg.id, seg.last_computed_at) is None
    got = segment_persona(rt, project, seg.id, seg.last_computed_at)
    assert got["group"]["persons"] == seg.size
    assert stored_persona(rt.state, seg.id, seg.last_computed_at) == got
    rt.close()
