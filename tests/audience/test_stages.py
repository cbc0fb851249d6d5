"""Lifecycle stages against a day-by-day plain-Python reference, on DuckDB and ClickHouse."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.analytics.conftest import Dataset, make_dataset
from tests.audience.reports_data import (
    START,
    TZ,
    at_local,
    lifecycle_journeys,
    person_ids,
    raw,
    ref_stages,
)
from tests.conftest import chdb_url, rows
from yunying.analytics.common import DateRange, InvalidQuery
from yunying.audience.settings import AudienceSettings, put_settings
from yunying.audience.stages import (
    STAGES,
    person_stages,
    stage_distribution,
    stage_periods,
    stage_transitions,
    stages_and_transitions,
    stages_over_time,
    store_stages,
    transition_members,
)
from yunying.config import load_settings
from yunying.runtime import Runtime
from yunying.state import get_project


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    pytest.importorskip("chdb")
    root = tmp_path_factory.mktemp("ch")
    rt = Runtime.open(load_settings(data_dir=root / "data", events_url=chdb_url(root)))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def journeys(tmp_path_factory: pytest.TempPathFactory, ch: Runtime) -> Iterator[Dataset]:
    ds = make_dataset(tmp_path_factory.mktemp("j"), ch, lifecycle_journeys(11))
    yield ds
    ds.runtime.close()


@pytest.fixture
def small(tmp_path: Path, ch: Runtime) -> Iterator[Any]:
    opened: list[Dataset] = []

    def build(raws: list[dict[str, Any]], timezone: str = TZ) -> Dataset:
        ds = make_dataset(tmp_path / f"d{len(opened)}", ch, raws, timezone)
        opened.append(ds)
        return ds

    yield build
    for ds in opened:
        ds.runtime.close()


SETTINGS = AudienceSettings()
# a second configuration: other thresholds, a listed activity event
OTHER = AudienceSettings.model_validate(
    {
        "activity": {"events": ["edit_video", "export_video", "purchase_membership"]},
        "lifecycle": {"new_days": 3, "silent_days": 5, "churned_days": 20, "returned_days": 10,
                      "active_window_days": 10, "active_min_days": 2},
    }
)  # fmt: skip


@pytest.mark.parametrize("settings", [SETTINGS, OTHER], ids=["default", "other"])
def test_stages_match_reference_on_both_engines(
    journeys: Dataset, settings: AudienceSettings
) -> None:
    for offset in (20, 47, 75, 101, 131):
        as_of = START + timedelta(days=offset)
        want = ref_stages(journeys.events, settings, as_of)
        for store, pid in journeys.both():
            got = person_stages(store, pid, settings, as_of, TZ)
            assert got == want, (store.dialect, as_of)
    # the data exercises every stage
    seen: Counter[str] = Counter()
    for offset in range(0, 135, 3):
        seen.update(ref_stages(journeys.events, SETTINGS, START + timedelta(days=offset)).values())
    assert set(seen) == set(STAGES)


def test_distribution_over_time_and_transitions(journeys: Dataset) -> None:
    rng = DateRange(START + timedelta(days=30), START + timedelta(days=80), TZ)
    for interval in ("day", "week", "month"):
        ps = stage_periods(rng, interval)
        want_over = {s: [0] * len(ps) for s in STAGES}
        want_moves: list[Counter[tuple[str, str]]] = []
        for i, p in enumerate(ps):
            now = ref_stages(journeys.events, SETTINGS, p.as_of)
            before = ref_stages(journeys.events, SETTINGS, p.previous_as_of)
            for stage in now.values():
                want_over[stage][i] += 1
            want_moves.append(Counter((before.get(pid, "none"), s) for pid, s in now.items()))
        for store, pid in journeys.both():
            over = stages_over_time(store, pid, SETTINGS, rng, interval)
            assert over["stages"] == want_over, (store.dialect, interval)
            assert over["as_of"] == [p.as_of.isoformat() for p in ps]
            moves = stage_transitions(store, pid, SETTINGS, rng, interval)
            got = [
                Counter({(t["from"], t["to"]): t["persons"] for t in p["transitions"]})
                for p in moves["periods"]
            ]
            assert got == want_moves, (store.dialect, interval)
            # the user layers page's one query for both, under other settings too
            assert stages_and_transitions(store, pid, SETTINGS, rng, interval) == (over, moves)
            assert stages_and_transitions(store, pid, OTHER, rng, interval) == (
                stages_over_time(store, pid, OTHER, rng, interval),
                stage_transitions(store, pid, OTHER, rng, interval),
            ), (store.dialect, interval)
    # the last week is clipped to date_to; weeks start on Monday
    weeks = stage_periods(rng, "week")
    assert weeks[-1].as_of == rng.date_to
    assert all(date.fromisoformat(p.label).weekday() == 0 for p in weeks)


def test_transition_members_match_reference(journeys: Dataset) -> None:
    rng = DateRange(START + timedelta(days=40), START + timedelta(days=69), TZ)
    checked = 0
    for period in stage_periods(rng, "week")[1:3]:
        now = ref_stages(journeys.events, SETTINGS, period.as_of)
        before = ref_stages(journeys.events, SETTINGS, period.previous_as_of)
        moves = Counter((before.get(p, "none"), s) for p, s in now.items())
        # the biggest moves, and the rarest: each checked on both engines
        common = sorted(moves.items(), key=lambda kv: (-kv[1], kv[0]))
        for (frm, to), n in common[:3] + common[-2:]:
            want = sorted(p for p, s in now.items() if s == to and before.get(p, "none") == frm)
            for store, pid in journeys.both():
                got = transition_members(store, pid, SETTINGS, period, frm, to, TZ, limit=1000)
                assert got["total"] == n and got["persons"] == want, (store.dialect, frm, to)
            checked += 1
    assert checked >= 8
    # paging: limit and offset over the sorted list
    period = stage_periods(rng, "week")[-1]
    full = transition_members(journeys.duck, journeys.project_id, SETTINGS, period, "new",
                              "silent", TZ, limit=1000)["persons"]  # fmt: skip
    page = transition_members(journeys.duck, journeys.project_id, SETTINGS, period, "new",
                              "silent", TZ, limit=2, offset=1)["persons"]  # fmt: skip
    assert page == full[1:3]
    with pytest.raises(InvalidQuery, match="unknown stage"):
        transition_members(journeys.duck, journeys.project_id, SETTINGS, period, "gone", "new", TZ)


def test_boundaries_time_zone_merges_and_platform_only(small: Any) -> None:
    """Exact thresholds, local-midnight boundaries, a merge joining two activity histories, and a
    person with platform events only."""
    rng = random.Random(3)
    d = date(2024, 6, 30)  # the as-of day

    def on(days_before: int, secs: int = 43200) -> str:
        return at_local(d - timedelta(days=days_before), secs)

    raws = [
        # 6 vs 7 days without activity, on the same UTC date (Shanghai is UTC+8)
        raw("edit_video", "tz-late", on(7, 86399), rng),  # 2024-06-23 15:59:59Z: silent
        raw("edit_video", "tz-early", on(6, 0), rng),  # 2024-06-23 16:00:00Z: not silent
        raw("edit_video", "tz-early", on(20), rng),
        raw("edit_video", "churn-30", on(30), rng),
        raw("edit_video", "churn-29", on(29), rng),
        raw("edit_video", "new-6", on(6), rng),
        raw("edit_video", "old-7", on(7), rng),
        raw("edit_video", "old-7", on(2), rng),
        # comeback after a gap of 31 days (churned the day before), 6 days ago: returned
        raw("edit_video", "back-31", on(37), rng),
        raw("edit_video", "back-31", on(6), rng),
        # gap of exactly 30 days: silent, never churned, so not a return
        raw("edit_video", "gap-30", on(32), rng),
        raw("edit_video", "gap-30", on(2), rng),
        # came back 7 days ago: no longer returned
        raw("edit_video", "back-old", on(45), rng),
        raw("edit_video", "back-old", on(7), rng),
        raw("edit_video", "back-old", on(1), rng),
        # 3 active days in the last 7: active; 2: retained
        *[raw("check_in", "freq-3", on(k), rng) for k in (0, 3, 6, 12)],
        *[raw("check_in", "freq-2", on(k), rng) for k in (0, 6, 7, 12)],
        # platform events only: no stage
        raw("$set", "only-set", on(3), rng, **{"$set": {"plan": "vip"}}),
        # a device active 40 days ago and a user active yesterday, merged by $identify today
        raw("edit_video", "anon-dev", on(40), rng),
        raw("edit_video", "merged-user", on(1), rng),
        raw("$identify", "merged-user", on(0), rng, **{"$anon_distinct_id": "anon-dev"}),
    ]
    ds = small(raws)
    ids = person_ids(ds.duck, ds.project_id)
    want = {
        "tz-late": "silent", "tz-early": "retained", "churn-30": "churned",
        "churn-29": "silent", "new-6": "new", "old-7": "retained", "back-31": "returned",
        "gap-30": "retained", "back-old": "retained", "freq-3": "active",
        "freq-2": "retained", "merged-user": "returned",
    }  # fmt: skip
    assert ids["anon-dev"] == ids["merged-user"]
    assert ref_stages(ds.events, SETTINGS, d) == {ids[k]: v for k, v in want.items()}
    for store, pid in ds.both():
        ids = person_ids(store, pid)
        got = person_stages(store, pid, SETTINGS, d, TZ)
        assert got == {ids[k]: v for k, v in want.items()}, store.dialect
        assert ids["only-set"] not in got
        dist = stage_distribution(store, pid, SETTINGS, d, TZ)
        assert dist["total"] == len(want)
        assert {s["stage"]: s["persons"] for s in dist["stages"]} == {
            s: list(want.values()).count(s) for s in STAGES
        }
    # the same instants in UTC: the two tz persons are on the same day, 7 days before
    ids = person_ids(ds.duck, ds.project_id)
    utc = person_stages(ds.duck, ds.project_id, SETTINGS, d, "UTC")
    assert utc[ids["tz-late"]] == utc[ids["tz-early"]] == "silent"


def test_store_stages_writes_scope(runtime: Runtime, project: Any) -> None:
    """store_stages writes scope `stage` with the documented labels, using stored settings."""
    from yunying.ingest.model import validate_batch

    rng = random.Random(5)
    today = date(2024, 6, 30)
    raws = [
        raw("edit_video", "a", at_local(today, 100), rng),
        raw("edit_video", "b", at_local(today - timedelta(days=10), 100), rng),
    ]
    runtime.writer.write(project.project.id, validate_batch(raws, now=datetime(2030, 1, 1)).events)
    put_settings(runtime.state, project.project.id, {"lifecycle": {"silent_days": 11}})
    p = get_project(runtime.state, project.project.name)
    assert store_stages(runtime, p, today) == 2
    got = sorted(
        r[0] for r in rows(runtime, p.id, "SELECT label FROM person_values WHERE scope = 'stage'")
    )
    assert got == ["new", "retained"]  # b: 10 days without activity is not silent at 11
