"""RFM scores and classes against a plain-Python reference, on DuckDB and ClickHouse."""

from __future__ import annotations

import random
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
    ref_rfm,
)
from tests.conftest import chdb_url, rows
from yunying.audience.rfm import CLASS_CODES, CLASSES, person_rfm, rfm_report, store_rfm
from yunying.audience.settings import (
    AudienceSettings,
    InvalidSettings,
    parse_settings,
    put_settings,
)
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
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
    ds = make_dataset(tmp_path_factory.mktemp("j"), ch, lifecycle_journeys(23, persons=200))
    yield ds
    ds.runtime.close()


AS_OF = START + timedelta(days=125)

CONFIGS = {
    "quintile-mean": {},
    "fixed-fixed": {
        "rfm": {"scoring": "fixed", "high": "fixed", "window_days": 90,
                "recency_thresholds": [3, 10, 30, 60], "frequency_thresholds": [2, 3, 4, 6],
                "monetary_thresholds": [20, 60, 100, 200], "high_scores": {"r": 4, "f": 2, "m": 3}},
    },
    "quintile-fixed-property": {
        "revenue": {"events": ["purchase_membership"], "amount_property": "price"},
        "rfm": {"high": "fixed", "window_days": 60},
    },
    "fixed-mean": {"rfm": {"scoring": "fixed", "events": ["purchase_membership"]}},
}  # fmt: skip


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scores_and_classes_match_reference(journeys: Dataset, name: str) -> None:
    s = parse_settings(CONFIGS[name])
    want = ref_rfm(journeys.events, s, AS_OF)
    assert len(want) > 20
    for store, pid in journeys.both():
        got = {r.pop("person_id"): r for r in person_rfm(store, pid, s, AS_OF, TZ)}
        if store is journeys.chdb:  # person ids differ between the projects: map via distinct ids
            duck, chm = person_ids(journeys.duck, journeys.project_id), person_ids(store, pid)
            back = {chm[d]: duck[d] for d in chm}
            got = {back[k]: v for k, v in got.items()}
        assert got.keys() == want.keys(), (name, store.dialect)
        for k, x in want.items():
            g = got[k]
            assert (g["recency"], g["frequency"], g["r"], g["f"], g["m"], g["class"]) == (
                x["recency"], x["frequency"], x["r"], x["f"], x["m"], x["class"]
            ), (name, store.dialect, k)  # fmt: skip
            assert g["monetary"] == pytest.approx(x["monetary"])


def test_report_distribution_and_revenue_share(journeys: Dataset) -> None:
    s = AudienceSettings()
    want = ref_rfm(journeys.events, s, AS_OF)
    total = sum(x["monetary"] for x in want.values())
    for store, pid in journeys.both():
        report = rfm_report(store, pid, s, AS_OF, TZ)
        assert report["persons"] == len(want)
        assert report["revenue"] == pytest.approx(total)
        assert [c["class"] for c in report["classes"]] == list(CLASS_CODES)
        for c in report["classes"]:
            members = [x for x in want.values() if x["class"] == c["class"]]
            rev = sum(x["monetary"] for x in members)
            assert c["persons"] == len(members)
            assert c["revenue"] == pytest.approx(rev)
            assert c["revenue_share"] == pytest.approx(rev / total)
            assert (c["r_high"], c["f_high"], c["m_high"]) in CLASSES
        assert sum(c["share"] for c in report["classes"]) == pytest.approx(1.0)
        assert report["means"]["r"] == pytest.approx(sum(x["r"] for x in want.values()) / len(want))
    assert {x["class"] for x in want.values()} == set(CLASS_CODES)  # every class occurs


def test_boundaries_ties_and_refunds(tmp_path: Path, ch: Runtime) -> None:
    """Ties share the lower quintile; a purchase exactly window_days - 1 days back counts, one
    day earlier does not; refunds and zero amounts are not purchases; local days decide."""
    rng = random.Random(1)
    d = date(2024, 6, 30)

    def on(days_before: int, secs: int = 43200) -> str:
        return at_local(d - timedelta(days=days_before), secs)

    raws = [
        raw("purchase_membership", "in-window", on(364), rng, **{"$amount": 10}),
        raw("purchase_membership", "out-window", on(365, 86399), rng, **{"$amount": 10}),
        raw("purchase_membership", "tie-a", on(3), rng, **{"$amount": 30}),
        raw("purchase_membership", "tie-b", on(3), rng, **{"$amount": 30}),
        raw("purchase_membership", "refund", on(1), rng, **{"$amount": -30}),
        raw("purchase_membership", "zero", on(1), rng, **{"$amount": 0}),
        raw("purchase_membership", "big", on(0, 0), rng, **{"$amount": 500}),
        raw("purchase_membership", "big", on(40), rng, **{"$amount": 500}),
        raw("edit_video", "nobuy", on(0), rng),
    ]
    ds = make_dataset(tmp_path / "d", ch, raws)
    try:
        s = AudienceSettings()
        want = ref_rfm(ds.events, s, d)
        for store, pid in ds.both():
            ids = person_ids(store, pid)
            name = {v: k for k, v in ids.items()}
            got = {name[r["person_id"]]: r for r in person_rfm(store, pid, s, d, TZ)}
            assert set(got) == {"in-window", "tie-a", "tie-b", "big"}, store.dialect
            assert got["in-window"]["recency"] == 364
            # recency: in-window worst (r=1), ties share 1 + floor(5*1/4) = 2, big best (r=4)
            assert [got[k]["r"] for k in ("in-window", "tie-a", "tie-b", "big")] == [1, 2, 2, 4]
            assert [got[k]["f"] for k in ("in-window", "tie-a", "tie-b", "big")] == [1, 1, 1, 4]
            assert got["big"]["monetary"] == 1000
            duck_ids = person_ids(ds.duck, ds.project_id)
            assert {k: (v["r"], v["f"], v["m"], v["class"]) for k, v in got.items()} == {
                name_: (want[duck_ids[name_]]["r"], want[duck_ids[name_]]["f"],
                        want[duck_ids[name_]]["m"], want[duck_ids[name_]]["class"])
                for name_ in got
            }  # fmt: skip
    finally:
        ds.runtime.close()


def test_settings_validation_names_the_field() -> None:
    with pytest.raises(InvalidSettings) as err:
        parse_settings({"rfm": {"recency_thresholds": [1, 2, 2, 3]}})
    assert err.value.field == "rfm"
    assert "strictly ascending" in str(err.value)
    with pytest.raises(InvalidSettings) as err:
        parse_settings({"lifecycle": {"silent_days": 0}})
    assert err.value.field == "lifecycle.silent_days"
    with pytest.raises(InvalidSettings) as err:
        parse_settings({"lifecycle": {"silent_days": 30, "churned_days": 30}})
    assert "smaller than churned_days" in str(err.value)
    with pytest.raises(InvalidSettings) as err:
        parse_settings({"rfm": {"scoring": "deciles"}})
    assert err.value.field == "rfm.scoring"
    with pytest.raises(InvalidSettings):
        parse_settings({"unknown": 1})


def test_store_rfm_writes_class_and_scores(runtime: Runtime, project: Any) -> None:
    rng = random.Random(2)
    d = date(2024, 6, 30)
    raws = [
        raw("purchase_membership", "a", at_local(d, 100), rng, **{"$amount": 300}),
        raw("purchase_membership", "a", at_local(d - timedelta(days=2), 100), rng, **{"$amount": 9}),
        raw("purchase_membership", "b", at_local(d - timedelta(days=200), 100), rng, **{"$amount": 5}),
    ]  # fmt: skip
    runtime.writer.write(project.project.id, validate_batch(raws, now=datetime(2030, 1, 1)).events)
    put_settings(runtime.state, project.project.id, {"rfm": {"scoring": "fixed"}})
    p = get_project(runtime.state, project.project.name)
    assert store_rfm(runtime, p, d) == 2
    got = sorted(
        (r[0], r[1])
        for r in rows(runtime, p.id, "SELECT label, value FROM person_values WHERE scope = 'rfm'")
    )
    # a: recency 0 → R5, 2 purchases → F2, 309 → M4; b: recency 200 → R1, F1, M1
    assert got == [("general_winback", 111.0), ("important_value", 524.0)]
