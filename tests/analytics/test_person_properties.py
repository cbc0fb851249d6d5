"""Person properties (current values, joined from ``persons``) in filters and breakdowns, against
plain-Python references over the persons read back from the store, and across engines."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import (
    DAYS,
    START,
    TZ,
    Dataset,
    both,
    iso,
    make_dataset,
    random_journeys,
)
from yunying.analytics import (
    DateRange,
    Filter,
    FunnelQuery,
    FunnelStep,
    RetentionQuery,
    Series,
    StickinessQuery,
    TrendsQuery,
    funnel,
    person_prop,
    retention,
    stickiness,
    trends,
)
from yunying.runtime import Runtime

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))
END = RANGE.date_to
LO, HI = ref.bounds(START, END, TZ)


@pytest.fixture(scope="module")
def with_sets(tmp_path_factory: pytest.TempPathFactory, ch_runtime: Runtime) -> Iterator[Dataset]:
    """Random journeys whose events ``$set`` a changing tier and age on the person."""
    rng = random.Random(3)
    raws = random_journeys(11, persons=120)
    for r in raws:
        if r["event"] != "$identify" and rng.random() < 0.3:
            r["properties"]["$set"] = {"tier": rng.choice(["gold", "silver", "bronze"]),
                                       "age": rng.randrange(18, 60)}  # fmt: skip
    ds = make_dataset(tmp_path_factory.mktemp("sets"), ch_runtime, raws)
    yield ds
    ds.runtime.close()


def current(ds: Dataset) -> dict[str, dict[str, Any]]:
    """person id -> current properties, read from the persons relation of both engines."""
    out = []
    for store, pid in ds.both():
        rows = store.query(store.scoped("persons", pid).sql(store.dialect)).rows
        out.append({str(r[0]): json.loads(r[2]) for r in rows})
    assert out[0] == out[1]
    return out[0]


def test_person_property_filter_and_breakdown_in_trends(with_sets: Dataset) -> None:
    people = current(with_sets)
    tiers = {p: props.get("tier") for p, props in people.items()}
    assert len({t for t in tiers.values()}) == 4  # gold, silver, bronze and never set
    q = TrendsQuery(
        (Series("edit_video"),), RANGE, interval="week", breakdown=person_prop("tier"),
        filters=(Filter(person_prop("age"), "gte", 30),),
    )  # fmt: skip
    got = both(with_sets, trends, q)
    want: dict[str | None, list[int]] = {}
    weeks = ref.buckets(START, END, "week")
    for e in with_sets.events:
        age = people[e["person_id"]].get("age")
        if (
            e["event"] == "edit_video"
            and LO <= e["timestamp"] < HI
            and age is not None
            and age >= 30
        ):
            row = want.setdefault(tiers[e["person_id"]], [0] * len(weeks))
            row[weeks.index(ref.bucket(e["timestamp"], TZ, "week"))] += 1
    assert {s.breakdown_value: list(s.values) for s in got.series} == want
    assert len(want) >= 3


def test_person_property_in_funnel_retention_and_stickiness(with_sets: Dataset) -> None:
    people = current(with_sets)
    gold = {p for p, props in people.items() if props.get("tier") == "gold"}
    steps = [lambda e: e["event"] == "app_install", lambda e: e["event"] == "edit_video"]
    chains = ref.funnel_chains(with_sets.events, steps, LO, HI, timedelta(days=1))
    f = both(
        with_sets, funnel,
        FunnelQuery((FunnelStep("app_install"), FunnelStep("edit_video")), RANGE, window=1,
                    breakdown=person_prop("tier")),
    )  # fmt: skip
    got = {b.value: [s.count for s in b.steps] for b in f.breakdowns}
    assert got["gold"] == ref.step_counts({k: c for k, c in chains.items() if k[0] in gold}, 2)
    assert got["gold"][1] > 0
    only_gold = (Filter(person_prop("tier"), "eq", "gold"),)
    r = both(
        with_sets, retention, RetentionQuery("app_install", None, RANGE, "week", filters=only_gold)
    )
    gold_events = [e for e in with_sets.events if e["person_id"] in gold]
    want = ref.retention(
        gold_events, lambda e: e["event"] == "app_install", lambda e: True, START, END, TZ,
        "week", "first_time", "on",
    )  # fmt: skip
    assert [(c.size, list(c.retained)) for c in r.cohorts] == want
    s = both(with_sets, stickiness, StickinessQuery(None, RANGE, filters=only_gold))
    assert [list(p.persons) for p in s.periods] == ref.stickiness(
        gold_events, lambda e: True, START, END, TZ, "week"
    )


def test_current_value_not_event_time_value_after_a_merge(small: Any) -> None:
    t = datetime(2024, 3, 5, 2)
    ds = small(
        [
            {"event": "A", "distinct_id": "dev", "timestamp": iso(t),
             "properties": {"$set": {"tier": "free"}}},
            {"event": "$identify", "distinct_id": "user", "timestamp": iso(t + timedelta(hours=1)),
             "properties": {"$anon_distinct_id": "dev"}},
            {"event": "A", "distinct_id": "user", "timestamp": iso(t + timedelta(hours=2)),
             "properties": {"$set": {"tier": "pro"}}},
            {"event": "A", "distinct_id": "other", "timestamp": iso(t)},
        ]
    )  # fmt: skip
    day = DateRange(date(2024, 3, 5), date(2024, 3, 5))
    got = both(ds, trends, TrendsQuery((Series("A"),), day, breakdown=person_prop("tier")))
    # the first A was sent while the device's tier was "free", but the person is "pro" now
    assert {s.breakdown_value: s.values for s in got.series} == {"pro": (2,), None: (1,)}
    neq = (Filter(person_prop("tier"), "neq", "pro"),)
    assert both(ds, trends, TrendsQuery((Series("A"),), day, filters=neq)).series[0].values == (1,)
