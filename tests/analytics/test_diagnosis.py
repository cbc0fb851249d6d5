"""Diagnosis: planted causes are ranked first, and every decomposition adds up to the change."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.analytics import reference as ref
from tests.analytics.conftest import START, Dataset, make_dataset, metric_journeys
from tests.analytics.test_metrics import ref_cohort_metric, ref_conversion
from yunying.analytics import DateRange, Diagnosis, Field, MetricConfig, col, diagnose, prop
from yunying.analytics.diagnosis import funnel_step_contributions
from yunying.runtime import Runtime

A = DateRange(START, START + timedelta(days=13))
B = DateRange(START + timedelta(days=14), START + timedelta(days=27))
CFG = MetricConfig(conversion_steps=("app_install", "edit_video", "export_video"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, ch_runtime: Runtime) -> Iterator[Dataset]:
    """From period B on, kuaishou's new users rarely return the next day, and edits rarely lead
    to an export (for everyone)."""
    raws = metric_journeys(23, persons=700, d1_drop="kuaishou", export_drop=True)
    ds = make_dataset(tmp_path_factory.mktemp("planted"), ch_runtime, raws)
    yield ds
    ds.runtime.close()


def _both(ds: Dataset, name: str, dims: list[Field], cfg: MetricConfig = CFG) -> Diagnosis:
    duck = diagnose(ds.duck, ds.project_id, name, A, B, dims, cfg)
    ch = diagnose(ds.chdb, ds.ch_project_id, name, A, B, dims, cfg)
    ref.assert_close(duck.as_dict(), ch.as_dict())
    return duck


def test_d1_retention_drop_is_traced_to_the_planted_channel(planted: Dataset) -> None:
    d = _both(planted, "retention_d1", [col("channel"), prop("$os"), col("app_version")])
    # the change itself, from the plain-Python reference
    ra = ref_cohort_metric("retention_d1", planted.events, A, CFG)
    rb = ref_cohort_metric("retention_d1", planted.events, B, CFG)
    va = sum(n for n, _ in ra.values()) / sum(m for _, m in ra.values())
    vb = sum(n for n, _ in rb.values()) / sum(m for _, m in rb.values())
    assert d.change is not None and d.change == pytest.approx(vb - va) and d.change < -0.05
    top = d.ranked[0]
    assert (top.dimension, top.value) == ("channel", "kuaishou")
    assert top.contribution < 0 and top.rate is not None and top.mix is not None
    assert top.rate < top.mix
    for dim in d.dimensions:  # each dimension partitions the cohort: nothing left over
        assert sum(c.contribution for c in dim.contributions) == pytest.approx(d.change, abs=1e-12)
        assert dim.residual == pytest.approx(0, abs=1e-12)
    # shift-share of the top segment, recomputed from the reference cells
    by_a = ref_cohort_metric("retention_d1", planted.events, A, CFG, "channel")
    by_b = ref_cohort_metric("retention_d1", planted.events, B, CFG, "channel")
    da, db = sum(v[1] for v in by_a.values()), sum(v[1] for v in by_b.values())
    (na, sa), (nb, sb) = by_a["kuaishou"], by_b["kuaishou"]
    wa, wb, rate_a, rate_b = sa / da, sb / db, na / sa, nb / sb
    assert top.mix == pytest.approx((wb - wa) * (rate_a - va), abs=1e-12)
    assert top.rate == pytest.approx(wb * (rate_b - rate_a), abs=1e-12)
    props = next(x for x in d.dimensions if x.dimension == "properties.$os")
    assert {c.value for c in props.contributions} == {"iOS", "Android", "HarmonyOS"}
    # the channels not planted moved far less than the planted one
    channel = next(x for x in d.dimensions if x.dimension == "channel")
    assert all(abs(c.contribution) < abs(top.contribution) / 2 for c in channel.contributions[1:])


def test_conversion_drop_is_traced_to_the_planted_step(planted: Dataset) -> None:
    d = _both(planted, "conversion_rate", [col("channel")])
    want_a = ref_conversion(planted.events, A, CFG)[None]
    want_b = ref_conversion(planted.events, B, CFG)[None]
    assert d.value_a == pytest.approx(want_a[0] / want_a[1])
    assert d.value_b == pytest.approx(want_b[0] / want_b[1])
    assert d.ranked[0].dimension == "funnel step"
    assert d.ranked[0].value == "edit_video → export_video"
    assert sum(s.contribution for s in d.steps) == pytest.approx(d.change, abs=1e-12)
    for dim in d.dimensions:
        assert dim.residual == pytest.approx(0, abs=1e-12)


def test_additive_metric_segments_add_up(planted: Dataset) -> None:
    d = _both(planted, "new_users", [col("channel")])
    dim = d.dimensions[0]
    assert {c.value for c in dim.contributions} == {"douyin", "kuaishou", "zhihu", None}
    assert sum(c.contribution for c in dim.contributions) == pytest.approx(d.change)
    assert dim.residual == pytest.approx(0)
    assert all(c.mix is None and c.rate is None for c in dim.contributions)


def test_log_ratio_step_split_worked_example() -> None:
    """docs/metrics.md: 1000 → 500 → 100 (C = 10%) becomes 1000 → 500 → 50 (C = 5%): the
    second step halved, the first did not move, so the second step takes the whole −5 points."""
    steps = funnel_step_contributions([1000, 500, 100], [1000, 500, 50], ["a", "b", "c"])
    assert [s.contribution for s in steps] == pytest.approx([0.0, -0.05])
    # both steps move: shares proportional to the log of each step's ratio
    steps = funnel_step_contributions([1000, 500, 100], [1000, 250, 100], ["a", "b", "c"])
    c_a, c_b = 0.1, 0.1
    assert sum(s.contribution for s in steps) == pytest.approx(c_b - c_a, abs=1e-15)
    assert steps[0].contribution == pytest.approx(0.1 * math.log(0.5))
    assert steps[1].contribution == pytest.approx(0.1 * math.log(2))
    # a step that drops to zero: sequential replacement still adds up
    steps = funnel_step_contributions([100, 50, 10], [100, 0, 0], ["a", "b", "c"])
    assert sum(s.contribution for s in steps) == pytest.approx(-0.1)
