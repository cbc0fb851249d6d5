"""Retention (value on the cohort-defining event) and lifecycle (value on the first event of the
period) broken down, against plain-Python references, and across engines."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import DAYS, START, TZ, Dataset, both
from yunying.analytics import (
    DateRange,
    LifecycleQuery,
    RetentionQuery,
    col,
    lifecycle,
    prop,
    retention,
)

RANGE = DateRange(START, START + timedelta(days=DAYS - 1))
END = RANGE.date_to


def step_value(e: ref.Event) -> str | None:
    v = json.loads(e["properties"]).get("step")
    return None if v is None else str(v)


@pytest.mark.parametrize(
    ("target", "period", "cohort", "mode", "field"),
    [
        ("app_install", "day", "first_time", "on", "step"),
        ("edit_video", "week", "recurring", "on_or_after", "step"),
        (None, "day", "recurring", "on", "channel"),
    ],
)
def test_retention_breakdown_equals_reference(
    journeys: Dataset, target: str | None, period: Any, cohort: Any, mode: Any, field: str
) -> None:
    breakdown = prop("step") if field == "step" else col("channel")
    q = RetentionQuery(
        target, "edit_video", RANGE, period=period, cohort=cohort, mode=mode, breakdown=breakdown
    )
    got = both(journeys, retention, q)

    def match(name: str | None) -> ref.Match:
        return lambda e: name is None or e["event"] == name

    value = step_value if field == "step" else (lambda e: e["channel"])
    want = ref.retention_by(
        journeys.events, match(target), match("edit_video"), START, END, TZ, period, cohort,
        mode, value,
    )  # fmt: skip
    assert {b.value: [list(c.retained) for c in b.cohorts] for b in got.breakdowns} == want
    assert len(want) >= 3
    # the groups partition each cohort
    for i, c in enumerate(got.cohorts):
        assert c.size == sum(b.cohorts[i].size for b in got.breakdowns)


@pytest.mark.parametrize("interval", ["day", "week"])
def test_lifecycle_breakdown_equals_reference(journeys: Dataset, interval: Any) -> None:
    q = LifecycleQuery("edit_video", RANGE, interval, breakdown=prop("step"))
    got = both(journeys, lifecycle, q)
    want = ref.lifecycle_by(
        journeys.events, lambda e: e["event"] == "edit_video", START, END, TZ, interval, step_value
    )
    statuses = ("new", "returning", "resurrecting", "dormant")
    assert {b.value: {s: list(getattr(b, s)) for s in statuses} for b in got.breakdowns} == {
        v: rows for v, rows in want.items()
        if any(any(r) for r in rows.values())  # values seen only in periods before the range
    }  # fmt: skip
    for s in statuses:  # the groups add up to the totals
        assert [sum(x) for x in zip(*(getattr(b, s) for b in got.breakdowns), strict=True)] == list(
            getattr(got, s)
        )
    assert len(got.breakdowns) > 3
