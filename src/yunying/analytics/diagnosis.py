"""Diagnosis: why did a metric move between two periods? Ranks (dimension, value) pairs — and,
for the conversion funnel, its steps — by their contribution to the change.

Decompositions (docs/metrics.md, "Diagnosis"):

- additive metrics (new users, DAU/WAU/MAU, GMV): a segment contributes its own change,
  ``V_b(s) - V_a(s)``;
- ratio metrics (R = N / D: retention, activation, conversion, paying rate, ARPU...): with the
  segment's share of the denominator ``w = D(s) / D`` and its rate ``r = N(s) / D(s)``, the
  shift-share split ``ΔR = Σ (w_b - w_a)(r_a - R_a) + Σ w_b (r_b - r_a)``: a *mix* effect (the
  segment's share changed; centred on the overall rate ``R_a``, which leaves the sum unchanged
  because the shares add up to 1 in both periods) and a *rate* effect (the segment's own rate
  changed);
- funnel steps of ``conversion_rate``: the overall conversion is the product of the step
  conversions ``C = Π p_k``, so ``ln(C_b / C_a) = Σ ln(p_k,b / p_k,a)``; step k receives
  ``L(C_a, C_b) · ln(p_k,b / p_k,a)`` with the logarithmic mean
  ``L(x, y) = (y - x) / (ln y - ln x)``, which adds up to ``C_b - C_a`` exactly.

Where a breakdown does not partition the metric (a trends breakdown counts a person who used
two app versions on one day in both), the part the segments do not explain is ``residual``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from yunying.analytics.common import DateRange, Field, InvalidQuery, Source, col
from yunying.analytics.metrics import (
    MetricConfig,
    MetricResult,
    metric,
    metric_definition,
)

DEFAULT_DIMENSIONS: tuple[Field, ...] = (col("channel"), col("os"), col("app_version"))
FUNNEL_STEP = "funnel step"


@dataclass(frozen=True)
class Contribution:
    """How much one segment (or funnel step) moved the metric; ``mix + rate = contribution``
    for ratio metrics when the segment exists in both periods (else ``rate`` is None)."""

    dimension: str
    value: str | None
    contribution: float
    mix: float | None = None
    rate: float | None = None
    value_a: float | None = None  # the segment's value (rate) in period A
    value_b: float | None = None
    share_a: float | None = None  # its share of the denominator (ratio metrics)
    share_b: float | None = None


@dataclass(frozen=True)
class DimensionDiagnosis:
    """The decomposition of the change along one dimension: contributions (largest in the
    direction of the change first) and what they leave unexplained."""

    dimension: str
    contributions: tuple[Contribution, ...]
    residual: float


@dataclass(frozen=True)
class Diagnosis:
    """A metric in two periods, the change, and its contributors ranked across dimensions."""

    metric: str
    kind: str
    value_a: float | None
    value_b: float | None
    change: float | None
    dimensions: tuple[DimensionDiagnosis, ...]
    steps: tuple[Contribution, ...]
    ranked: tuple[Contribution, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def dimension_name(f: Field) -> str:
    """``channel`` for a column, ``properties.plan`` for a property."""
    return (
        f.name
        if f.kind == "column"
        else f"{f.kind if f.kind != 'property' else 'properties'}.{f.name}"
    )


def _rank_key(change: float | None) -> Any:
    sign = 0.0 if not change else math.copysign(1.0, change)

    def key(c: Contribution) -> tuple[float, float, bool, str]:
        lead = -c.contribution * sign if sign else -abs(c.contribution)
        return (lead, -abs(c.contribution), c.value is None, c.value or "")

    return key


def decompose_additive(a: MetricResult, b: MetricResult, dimension: str) -> DimensionDiagnosis:
    """Each segment's own change ``V_b(s) - V_a(s)``."""
    va = {p.key: p.value or 0.0 for p in a.segments}
    vb = {p.key: p.value or 0.0 for p in b.segments}
    out = [
        Contribution(
            dimension, k, vb.get(k, 0.0) - va.get(k, 0.0), value_a=va.get(k), value_b=vb.get(k)
        )  # fmt: skip
        for k in dict.fromkeys([*va, *vb])
    ]
    change = (b.value or 0.0) - (a.value or 0.0)
    residual = change - sum(c.contribution for c in out)
    return DimensionDiagnosis(dimension, tuple(sorted(out, key=_rank_key(change))), residual)


def decompose_ratio(a: MetricResult, b: MetricResult, dimension: str) -> DimensionDiagnosis:
    """Shift-share: mix ``(w_b - w_a)(r_a - R_a)`` and rate ``w_b (r_b - r_a)`` per segment.

    In general a segment contributes ``N_b(s)/D_b - N_a(s)/D_a - (w_b - w_a) R_a`` (its share of
    the ratio's change, centred), which equals mix + rate when it has a denominator in both
    periods; a segment present in one period only contributes all of it as mix."""
    if not a.denominator or not b.denominator or a.value is None or b.value is None:
        raise InvalidQuery(f"{a.name} has no value in one of the periods: nothing to decompose")
    ra_all, da, db = a.value, a.denominator, b.denominator
    sa = {p.key: p for p in a.segments}
    sb = {p.key: p for p in b.segments}
    out: list[Contribution] = []
    for k in dict.fromkeys([*sa, *sb]):
        pa, pb = sa.get(k), sb.get(k)
        na, dsa = (pa.numerator, pa.denominator) if pa else (0.0, 0.0)
        nb, dsb = (pb.numerator, pb.denominator) if pb else (0.0, 0.0)
        wa, wb = dsa / da, dsb / db
        total = nb / db - na / da - (wb - wa) * ra_all
        rate_a = na / dsa if dsa else None
        rate_b = nb / dsb if dsb else None
        if rate_a is not None and rate_b is not None:
            mix = (wb - wa) * (rate_a - ra_all)
            rate: float | None = wb * (rate_b - rate_a)
        else:
            mix, rate = total, None
        out.append(Contribution(dimension, k, total, mix, rate, rate_a, rate_b, wa, wb))
    change = b.value - a.value
    residual = change - sum(c.contribution for c in out)
    return DimensionDiagnosis(dimension, tuple(sorted(out, key=_rank_key(change))), residual)


def funnel_step_contributions(
    counts_a: Sequence[float], counts_b: Sequence[float], labels: Sequence[str]
) -> tuple[Contribution, ...]:
    """Split ``C_b - C_a`` (C = last count / first count) between the step conversions
    ``p_k = count_k / count_(k-1)``: log-ratio (LMDI) shares, or — when a step conversion is 0
    in either period, where logarithms fail — sequential replacement of p_1, p_2, ... from
    period A's value to period B's."""
    if len(counts_a) != len(counts_b) or len(counts_a) < 2 or not counts_a[0] or not counts_b[0]:
        return ()

    def steps(c: Sequence[float]) -> list[float]:
        return [c[k] / c[k - 1] if c[k - 1] else 0.0 for k in range(1, len(c))]

    pa, pb = steps(counts_a), steps(counts_b)
    ca, cb = math.prod(pa), math.prod(pb)
    names = [f"{labels[k - 1]} → {labels[k]}" for k in range(1, len(labels))]
    if all(x > 0 for x in (*pa, *pb)):
        mean = (
            ca
            if math.isclose(ca, cb, rel_tol=0, abs_tol=1e-15)
            else (cb - ca) / (math.log(cb) - math.log(ca))
        )
        values = [mean * math.log(y / x) for x, y in zip(pa, pb, strict=True)]
    else:
        values = []
        current = list(pa)
        before = math.prod(current)
        for k in range(len(pa)):
            current[k] = pb[k]
            after = math.prod(current)
            values.append(after - before)
            before = after
    return tuple(
        Contribution(FUNNEL_STEP, n, v, value_a=x, value_b=y)
        for n, v, x, y in zip(names, values, pa, pb, strict=True)
    )


def diagnose(
    source: Source,
    project_id: int,
    metric_name: str,
    period_a: DateRange,
    period_b: DateRange,
    dimensions: Sequence[Field] = DEFAULT_DIMENSIONS,
    config: MetricConfig | None = None,
) -> Diagnosis:
    """Why ``metric_name`` moved from ``period_a`` to ``period_b``: per dimension, each value's
    contribution to the change (see the module docstring), plus funnel steps for
    ``conversion_rate``; ``ranked`` lists every contributor, largest in the direction of the
    change first."""
    cfg = config or MetricConfig()
    definition = metric_definition(metric_name)
    # a breakdown result carries the overall value too (computed without the breakdown)
    pairs = [
        (
            dim,
            metric(source, project_id, metric_name, period_a, cfg, breakdown=dim),
            metric(source, project_id, metric_name, period_b, cfg, breakdown=dim),
        )
        for dim in dimensions
    ]
    if pairs:
        overall_a, overall_b = pairs[0][1], pairs[0][2]
    else:
        overall_a = metric(source, project_id, metric_name, period_a, cfg)
        overall_b = metric(source, project_id, metric_name, period_b, cfg)
    va, vb = overall_a.value, overall_b.value
    change = None if va is None or vb is None else vb - va
    found: list[DimensionDiagnosis] = []
    for dim, a, b in pairs:
        if definition.kind == "additive":
            found.append(decompose_additive(a, b, dimension_name(dim)))
        elif change is not None:
            found.append(decompose_ratio(a, b, dimension_name(dim)))
    steps: tuple[Contribution, ...] = ()
    if metric_name == "conversion_rate":
        counts_a = [
            overall_a.components[f"step_{i}"] or 0.0 for i in range(len(cfg.conversion_steps))
        ]
        counts_b = [
            overall_b.components[f"step_{i}"] or 0.0 for i in range(len(cfg.conversion_steps))
        ]
        steps = funnel_step_contributions(counts_a, counts_b, cfg.conversion_steps)
    everything = [c for d in found for c in d.contributions] + list(steps)
    ranked = tuple(sorted(everything, key=_rank_key(change)))
    return Diagnosis(metric_name, definition.kind, va, vb, change, tuple(found), steps, ranked)
