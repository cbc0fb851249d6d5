"""Persona report against a plain-Python reference, on DuckDB and ClickHouse."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pytest

from tests.analytics.conftest import Dataset, make_dataset
from tests.analytics.reference import assert_close
from tests.audience.reports_data import (
    START,
    TZ,
    activity_days,
    lifecycle_journeys,
    local_day,
    person_ids,
    ref_rfm,
    ref_stages,
)
from tests.conftest import chdb_url, rows
from yunying.analytics.common import DateRange, InvalidQuery
from yunying.audience.persona import PersonaQuery, persona, personas
from yunying.audience.settings import AudienceSettings
from yunying.config import load_settings
from yunying.runtime import Runtime


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    pytest.importorskip("chdb")
    root = tmp_path_factory.mktemp("ch")
    rt = Runtime.open(load_settings(data_dir=root / "data", events_url=chdb_url(root)))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory, ch: Runtime) -> Iterator[Dataset]:
    data = make_dataset(tmp_path_factory.mktemp("j"), ch, lifecycle_journeys(31, persons=180))
    yield data
    data.runtime.close()


S = AudienceSettings()
RANGE = DateRange(START + timedelta(days=60), START + timedelta(days=89), TZ)


def _props(e: dict[str, Any]) -> dict[str, Any]:
    p = e["properties"]
    return orjson.loads(p) if isinstance(p, str) else p or {}


def reference(ds: Dataset, members: set[str] | None, properties: list[str]) -> dict[str, Any]:
    """The persona numbers from the definitions, over the DuckDB events and persons."""
    persons = {
        str(pid): orjson.loads(props) if isinstance(props, str) else props
        for pid, props in rows(ds.runtime, ds.project_id,
                               "SELECT CAST(id AS VARCHAR), properties FROM persons")
    }  # fmt: skip
    group = set(persons) if members is None else members & set(persons)
    by_person: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in ds.events:
        by_person[str(e["person_id"])].append(e)
    dims: dict[str, dict[str, str]] = {}
    for name, key, first in (("channel", None, True), ("os", "$os", False),
                             ("device", "$device_type", False), ("city", "$city", False)):  # fmt: skip
        dims[name] = {}
        for pid, evs in by_person.items():
            ordered = sorted(evs, key=lambda e: (e["timestamp"], str(e["uuid"])), reverse=not first)
            for e in ordered:
                v = e["channel"] if key is None else _props(e).get(key)
                if v is not None:
                    dims[name][pid] = str(v)
                    break
    for key in properties:
        dims[f"person.{key}"] = {
            pid: str(p[key]) for pid, p in persons.items() if p.get(key) is not None
        }
    start, end = RANGE.utc_bounds()
    window = [e for e in ds.events if start <= e["timestamp"] < end]
    events = Counter(e["event"] for e in window if not e["event"].startswith("$"))
    g_events = Counter(
        e["event"]
        for e in window
        if not e["event"].startswith("$") and str(e["person_id"]) in group
    )
    days = activity_days(window, S)
    spent: dict[str, float] = defaultdict(float)
    for e in window:
        if e["amount"] is not None and e["amount"] > 0:
            spent[str(e["person_id"])] += e["amount"]
    return {
        "pop": len(persons),
        "group": len(group),
        "dims": {
            k: (Counter(v.values()), Counter(x for p, x in v.items() if p in group))
            for k, v in dims.items()
        },
        "events": events,
        "g_events": g_events,
        "days": (
            sum(len(v) for v in days.values()),
            sum(len(v) for p, v in days.items() if p in group),
        ),
        "revenue": (sum(spent.values()), sum(v for p, v in spent.items() if p in group)),
        "payers": (len(spent), len([p for p in spent if p in group])),
    }


def check(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["population"]["persons"] == want["pop"]
    assert got["group"]["persons"] == want["group"]
    for d in got["distributions"]:
        pop, grp = want["dims"][d["field"]]
        for v in d["values"]:
            if v["value"] is None:
                assert v["population"] == want["pop"] - sum(pop.values())
                assert v["group"] == want["group"] - sum(grp.values())
            else:
                assert (v["population"], v["group"]) == (pop[v["value"]], grp[v["value"]])
                if v["population"] and want["group"]:
                    lift = (grp[v["value"]] / want["group"]) / (pop[v["value"]] / want["pop"])
                    assert v["lift"] == pytest.approx(lift)
        listed = {v["value"] for v in d["values"]} - {None}
        assert listed == set(pop)  # fewer values than the limit here
    for e in got["top_events"]:
        assert e["population_events"] == want["events"][e["event"]]
        assert e["group_events"] == want["g_events"][e["event"]]
        if want["group"]:
            assert e["group_rate"] == pytest.approx(want["g_events"][e["event"]] / want["group"])
    assert [e["event"] for e in got["top_events"]] == [
        k
        for k, _ in sorted(
            want["g_events"].items(), key=lambda kv: (-kv[1], -want["events"][kv[0]], kv[0])
        )
    ][: len(got["top_events"])]
    assert got["active_days"]["population"]["average"] == pytest.approx(
        want["days"][0] / want["pop"]
    )
    if want["group"]:
        assert got["active_days"]["group"]["average"] == pytest.approx(
            want["days"][1] / want["group"]
        )
        assert sum(b["persons"] for b in got["active_days"]["group"]["buckets"]) == want["group"]
    rev = got["revenue"]
    assert rev["population"]["revenue"] == pytest.approx(want["revenue"][0])
    assert rev["group"]["revenue"] == pytest.approx(want["revenue"][1])
    assert (rev["population"]["payers"], rev["group"]["payers"]) == want["payers"]
    if want["payers"][1]:
        assert rev["group"]["arppu"] == pytest.approx(want["revenue"][1] / want["payers"][1])
        assert rev["group"]["arpu"] == pytest.approx(want["revenue"][1] / want["group"])


def both(ds: Dataset, q: PersonaQuery) -> dict[str, Any]:
    duck = persona(ds.duck, ds.project_id, q, S)
    assert_close(duck, persona(ds.chdb, ds.ch_project_id, q, S))
    return duck


def test_everyone_and_stage(ds: Dataset) -> None:
    got = both(ds, PersonaQuery("everyone", RANGE, properties=("plan", "age_band")))
    check(got, reference(ds, None, ["plan", "age_band"]))
    assert got["group"]["persons"] == got["population"]["persons"]
    for stage in ("silent",):
        members = {p for p, s in ref_stages(ds.events, S, RANGE.date_to).items() if s == stage}
        assert members
        got = both(ds, PersonaQuery("stage", RANGE, stage, properties=("plan",)))
        check(got, reference(ds, members, ["plan"]))


@pytest.mark.slow
def test_rfm_class_and_new_stage(ds: Dataset) -> None:
    scored = ref_rfm(ds.events, S, RANGE.date_to)
    members = {p for p, x in scored.items() if x["class"] == "important_value"}
    got = both(ds, PersonaQuery("rfm", RANGE, "important_value"))
    check(got, reference(ds, members, []))
    members = {p for p, s in ref_stages(ds.events, S, RANGE.date_to).items() if s == "new"}
    got = both(ds, PersonaQuery("stage", RANGE, "new", properties=("plan",)))
    check(got, reference(ds, members, ["plan"]))


def test_segment(ds: Dataset) -> None:
    """A segment: whatever a segment computation wrote to person_values."""
    duck_ids = person_ids(ds.duck, ds.project_id)
    picked = sorted(d for d in duck_ids if d.endswith(("3", "7")))
    for store, pid in ds.both():
        ids = person_ids(store, pid)
        store.replace_person_values(
            pid, "segment:42", pa.table({"person_id": sorted({ids[d] for d in picked})})
        )
    got = both(ds, PersonaQuery("segment", RANGE, "42", dimensions=("channel", "city")))
    check(got, reference(ds, {duck_ids[d] for d in picked}, []))
    assert [d["field"] for d in got["distributions"]] == ["channel", "city"]
    q = PersonaQuery("segment", RANGE, "nope", top_events=0, dimensions=())
    empty = persona(ds.duck, ds.project_id, q, S)
    assert empty["group"]["persons"] == 0 and empty["revenue"]["group"]["arpu"] is None


def test_several_groups_at_once(ds: Dataset) -> None:
    """A batch of groups (one facts and one events query for all): each report is what the
    reference says for that group alone, on both engines."""
    duck_ids = person_ids(ds.duck, ds.project_id)
    picked = sorted(d for d in duck_ids if d.endswith(("1", "5", "9")))
    for store, pid in ds.both():
        ids = person_ids(store, pid)
        store.replace_person_values(
            pid, "segment:43", pa.table({"person_id": sorted({ids[d] for d in picked})})
        )
    silent = {p for p, s in ref_stages(ds.events, S, RANGE.date_to).items() if s == "silent"}
    qs = [
        PersonaQuery("segment", RANGE, "43", properties=("plan",)),
        PersonaQuery("everyone", RANGE, properties=("plan",)),
        PersonaQuery("stage", RANGE, "silent", properties=("plan",)),
    ]
    got = personas(ds.duck, ds.project_id, qs, S)
    assert_close(got, personas(ds.chdb, ds.ch_project_id, qs, S))
    check(got[0], reference(ds, {duck_ids[d] for d in picked}, ["plan"]))
    check(got[1], reference(ds, None, ["plan"]))
    check(got[2], reference(ds, silent, ["plan"]))
    assert got[0] == persona(ds.duck, ds.project_id, qs[0], S)
    other = PersonaQuery("everyone", DateRange(RANGE.date_from, RANGE.date_to, "UTC"))
    with pytest.raises(InvalidQuery, match="share window and fields"):
        personas(ds.duck, ds.project_id, [qs[1], other], S)


def test_refusals() -> None:
    with pytest.raises(InvalidQuery, match="unknown stage"):
        PersonaQuery("stage", RANGE, "sleepy")
    with pytest.raises(InvalidQuery, match="unknown RFM class"):
        PersonaQuery("rfm", RANGE, "vip")
    with pytest.raises(InvalidQuery, match="needs a value"):
        PersonaQuery("segment", RANGE)
    with pytest.raises(InvalidQuery, match="unknown dimension"):
        PersonaQuery("everyone", RANGE, dimensions=("planet",))
    assert local_day(datetime(2024, 1, 1, 16), TZ).day == 2
