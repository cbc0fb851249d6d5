"""CLV (BG/NBD + Gamma-Gamma) against independent references.

- The CDNOW sample (tests/data/cdnow_sample.txt) is written through the real ingestion writer
  into DuckDB and embedded ClickHouse; the fitted parameters must match the published estimates
  (Fader, Hardie & Lee 2005; Fader & Hardie 2013) to the precision printed there.
- The purchase summary from SQL is compared with a plain-Python summary of the raw file.
- The closed forms (log-likelihood, P(alive), conditional expected purchases, expected spend) are
  compared with numerical integration of the models' definitions over λ, p and ν.
- The optimiser is checked on simulated customers with known parameters (likelihood-ratio bound).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import betaln, gammaln, hyp2f1
from sqlglot import exp

from tests.conftest import chdb_url
from yunying.audience.clv import (
    BGNBD,
    SCOPES,
    ClvRequest,
    GammaGamma,
    InvalidClvRequest,
    ModelNotFound,
    NotEnoughData,
    customers,
    discounted_purchases,
    fit_bgnbd,
    fit_clv,
    fit_gamma_gamma,
    latest_model,
)
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import Project, create_project

CDNOW = Path(__file__).resolve().parents[1] / "data" / "cdnow_sample.txt"
#: Ingestion refuses events before 2000: every CDNOW day moves by the same whole number of days,
#: which leaves every gap, and so every model input, unchanged.
SHIFT = date(2025, 1, 1) - date(1997, 1, 1)
CAL_END = date(1997, 9, 30) + SHIFT  # the paper's 39-week calibration period
TZ = "Asia/Shanghai"

#: Published estimates (BG/NBD: Fader, Hardie & Lee 2005, Table 1; Gamma-Gamma: Fader & Hardie 2013).
PAPER_BGNBD = {"r": (0.243, 3), "alpha": (4.414, 3), "a": (0.793, 3), "b": (2.426, 3)}
PAPER_LL = -9582.4
PAPER_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


@dataclass(frozen=True)
class Purchase:
    customer: str
    day: date
    cds: int
    value: float


def cdnow_purchases() -> list[Purchase]:
    """Every line of the sample, dates shifted by :data:`SHIFT`."""
    out = []
    for line in CDNOW.read_text().splitlines():
        _, sample_id, ymd, cds, value = line.split()
        day = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:])) + SHIFT
        out.append(Purchase(sample_id, day, int(cds), float(value)))
    return out


def purchase_events(purchases: list[Purchase]) -> list[dict[str, Any]]:
    """Native events, at local noon of each day in :data:`TZ` (two on one day stay two events)."""
    return [
        {
            "event": "purchase",
            "distinct_id": f"cdnow-{p.customer}",
            "timestamp": f"{p.day.isoformat()}T12:00:00+08:00",
            "properties": {"$amount": p.value, "cds": p.cds},
        }
        for p in purchases
    ]


#: Time-zone edge: local days in Asia/Shanghai are not UTC days.
TZ_EVENTS = [
    # 2025-03-01 00:10 and 23:50 local: one day; 2025-03-02 00:05 local (16:05 UTC on the 1st)
    ("2025-02-28T16:10:00Z", 10.0),
    ("2025-03-01T15:50:00Z", 5.0),
    ("2025-03-01T16:05:00Z", 7.0),
    ("2025-03-09T03:00:00Z", 1.0),
]


@dataclass(frozen=True)
class Reference:
    """The model summary computed in plain Python from the raw file (weeks)."""

    x: int
    t_x: float
    T: float
    spend_x: int
    spend_m: float
    cds_m: float


def reference_summary(purchases: list[Purchase], end: date) -> dict[str, Reference]:
    days: dict[str, dict[date, list[Purchase]]] = defaultdict(lambda: defaultdict(list))
    for p in purchases:
        if p.day <= end:
            days[p.customer][p.day].append(p)
    out = {}
    for customer, by_day in days.items():
        ordered = sorted(by_day)
        first, repeat = ordered[0], ordered[1:]
        spend = [sum(p.value for p in by_day[d]) for d in repeat]
        cds = [sum(p.cds for p in by_day[d]) for d in repeat]
        out[customer] = Reference(
            x=len(repeat),
            t_x=(ordered[-1] - first).days / 7,
            T=(end - first).days / 7,
            spend_x=len(repeat),
            spend_m=float(np.mean(spend)) if spend else math.nan,
            cds_m=float(np.mean(cds)) if cds else math.nan,
        )
    return out


@dataclass
class Installation:
    runtime: Runtime
    project: Project
    #: distinct id → person id
    persons: dict[str, str]

    def values(self, scope: str) -> dict[str, tuple[str | None, float | None]]:
        store = self.runtime.store
        tree = (
            exp.select(
                exp.cast(exp.column("person_id"), "VARCHAR")
                if store.dialect == "duckdb"
                else exp.func("toString", exp.column("person_id")),
                "label",
                "value",
            )
            .from_(store.scoped("person_values", self.project.id).subquery("v"))
            .where(exp.column("scope").eq(exp.Literal.string(scope)))
        )
        rows = store.query(tree.sql(store.dialect)).rows
        return {str(r[0]): (r[1], r[2]) for r in rows}


def install(root: Path, events_url: str | None, raws: list[dict[str, Any]]) -> Installation:
    """An installation with the events written through the real ingestion writer."""
    rt = Runtime.open(load_settings(data_dir=root / "data", events_url=events_url))
    project = create_project(rt.state, "cdnow", TZ).project
    batch = validate_batch(raws)
    assert not batch.errors, batch.errors[:3]
    rt.writer.write(project.id, batch.events)
    store = rt.store
    text = (
        exp.cast(exp.column("person_id"), "VARCHAR")
        if store.dialect == "duckdb"
        else exp.func("toString", exp.column("person_id"))
    )
    ids = store.query(
        exp.select("distinct_id", text)
        .from_(store.scoped("person_distinct_ids", project.id).subquery("d"))
        .sql(store.dialect)
    ).rows
    return Installation(rt, project, {str(d): str(p) for d, p in ids})


def all_raws() -> list[dict[str, Any]]:
    raws = purchase_events(cdnow_purchases())
    raws += [
        {
            "event": "order",
            "distinct_id": "tz-person",
            "timestamp": ts,
            "properties": {"$amount": v},
        }
        for ts, v in TZ_EVENTS
    ]
    return raws


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    inst = install(tmp_path_factory.mktemp("duck"), None, all_raws())
    yield inst
    inst.runtime.close()


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    pytest.importorskip("chdb")
    root = tmp_path_factory.mktemp("ch")
    inst = install(root, chdb_url(root), all_raws())
    yield inst
    inst.runtime.close()


@pytest.fixture(params=["duck", "chdb"])
def inst(request: pytest.FixtureRequest) -> Installation:
    return request.getfixturevalue(request.param)


# -- independent references: numerical integration of the model definitions ------------------------


@functools.lru_cache(maxsize=64)
def bgnbd_by_integration(
    m: BGNBD, x: int, t_x: float, T: float, t: float
) -> tuple[float, float, float]:
    """(log-likelihood, P(alive), E[purchases in (T, T+t]]) by integrating the individual-level
    BG/NBD over λ ~ Gamma(r, α) and p ~ Beta(a, b).

    Given λ and p: the likelihood is (1−p)^x λ^x e^{−λT} (alive at T) + [x>0] p(1−p)^(x−1) λ^x
    e^{−λ t_x} (dropped out after the last purchase); an alive customer buys (1 − e^{−λpt})/p
    times in expectation over the next t. Substitutions λ = v^(1/r), p = w^(1/a) absorb the
    densities' singular factors λ^(r−1), p^(a−1) so the integrands stay bounded.
    """
    r, alpha, a, b = m.r, m.alpha, m.a, m.b

    def terms(w: float, v: float) -> tuple[float, float, float, float]:
        if v == 0.0 or w == 0.0 or w == 1.0:
            return 0.0, 0.0, 1.0, 1.0
        lam, p = v ** (1 / r), w ** (1 / a)
        base = -alpha * lam + (b - 1) * math.log1p(-p) + x * math.log(lam)
        alive = math.exp(base + x * math.log1p(-p) - lam * T)
        gone = math.exp(base + math.log(p) + (x - 1) * math.log1p(-p) - lam * t_x) if x else 0.0
        return alive, gone, lam, p

    def f_alive(w: float, v: float) -> float:
        return terms(w, v)[0]

    def f_gone(w: float, v: float) -> float:
        return terms(w, v)[1]

    def f_future(w: float, v: float) -> float:
        alive, _, lam, p = terms(w, v)
        return alive * -math.expm1(-lam * p * t) / p

    def over_unit_square(f: Any) -> float:
        ranges = [[0.0, 1.0], [0.0, math.inf]]  # w inside, v outside
        return float(
            integrate.nquad(f, ranges, opts={"epsabs": 0, "epsrel": 1e-10, "limit": 200})[0]
        )

    A = over_unit_square(f_alive)
    D = over_unit_square(f_gone) if x else 0.0
    F = over_unit_square(f_future)
    # the densities' constants (and the Jacobians 1/r, 1/a of the substitutions)
    log_norm = r * math.log(alpha) - gammaln(r) - betaln(a, b) - math.log(r) - math.log(a)
    return math.log(A + D) + log_norm, A / (A + D), F / (A + D)


def gamma_gamma_by_integration(g: GammaGamma, x: int, m: float) -> tuple[float, float]:
    """(log density of m, E[transaction value | x, m]) integrating over ν ~ Gamma(q, rate v):
    given ν the x values are Gamma(p, rate ν), so their sum x·m is Gamma(px, rate ν)."""
    prior = stats.gamma(g.q, scale=1 / g.v)

    def f(nu: float) -> float:
        return x * stats.gamma.pdf(x * m, g.p * x, scale=1 / nu) * prior.pdf(nu)

    def f_mean(nu: float) -> float:
        return g.p / nu * f(nu)

    upper = prior.ppf(1 - 1e-15)
    density = integrate.quad(f, 0, upper, epsabs=0, epsrel=1e-11, limit=200)[0]
    mean = integrate.quad(f_mean, 0, upper, epsabs=0, epsrel=1e-11, limit=200)[0]
    return math.log(density), mean / density


# -- the published estimates ------------------------------------------------------------------------


def test_summary_from_events_matches_plain_python(inst: Installation) -> None:
    """x, t_x, T and repeat spend from SQL equal a plain-Python summary of the raw file, on both
    engines; purchases on one day are one transaction (CDNOW has 177 such days)."""
    ref = reference_summary(cdnow_purchases(), CAL_END)
    got = customers(inst.runtime.store, inst.project.id, "purchase", CAL_END, TZ, "week")
    cds = customers(inst.runtime.store, inst.project.id, "purchase", CAL_END, TZ, "week", "cds")
    assert len(got) == len(ref) == 2357
    by_person = {pid: i for i, pid in enumerate(got.person_ids)}
    for customer, r in ref.items():
        i = by_person[inst.persons[f"cdnow-{customer}"]]
        assert got.x[i] == r.x
        assert got.t_x[i] == pytest.approx(r.t_x, abs=1e-12)
        assert got.T[i] == pytest.approx(r.T, abs=1e-12)
        assert got.spend_x[i] == r.spend_x
        if r.x:
            assert got.spend_m[i] == pytest.approx(r.spend_m, rel=1e-9)
            assert cds.spend_m[i] == pytest.approx(r.cds_m, rel=1e-12)
        else:
            assert math.isnan(got.spend_m[i])


def test_local_days_in_the_project_time_zone(inst: Installation) -> None:
    """Events at 00:10 and 23:50 local are one day; 00:05 the next local day is another, though
    it falls on the same UTC date as the day before."""
    end = date(2025, 3, 10)
    got = customers(inst.runtime.store, inst.project.id, "order", end, TZ, "day")
    assert len(got) == 1
    # local days: 03-01 (10 + 5), 03-02 (7), 03-09 (1)
    assert got.x.tolist() == [2.0]
    assert got.t_x.tolist() == [8.0]
    assert got.T.tolist() == [9.0]
    assert got.spend_m.tolist() == [pytest.approx(4.0)]
    # the calibration end is a local day, included: 03-01 only
    early = customers(inst.runtime.store, inst.project.id, "order", date(2025, 3, 1), TZ, "day")
    assert early.x.tolist() == [0.0]


def test_fit_matches_published_estimates(inst: Installation) -> None:
    """BG/NBD on the 2357 CDNOW customers, 39 weeks: r=0.243, α=4.414, a=0.793, b=2.426,
    LL=−9582.4; Gamma-Gamma on the 946 repeat customers' mean repeat spend: p=6.25, q=3.74,
    γ=15.44 — to the printed precision, on both engines."""
    result = fit_clv(
        inst.runtime.store,
        inst.runtime.state,
        inst.project,
        ClvRequest("purchase", CAL_END, "week", horizon=39),
    )
    bg, gg = result["bgnbd"], result["gamma_gamma"]
    for name, (value, digits) in PAPER_BGNBD.items():
        assert round(bg[name], digits) == value, (name, bg[name])
    assert round(bg["log_likelihood"], 1) == PAPER_LL
    assert bg["converged"] and not bg["at_bound"]
    for name, value in PAPER_GG.items():
        assert round(gg[name], 2) == value, (name, gg[name])
    assert gg["customers"] == 946
    assert result["counts"] == {
        "customers": 2357,
        "repeat_customers": 946,
        "repeat_purchases": 2457,
        "spend_customers": 946,
    }
    assert result["warnings"] == []
    check_stored_predictions(inst, result)
    assert latest_model(inst.runtime.state, inst.project, "purchase")["id"] == result["id"]


def check_stored_predictions(inst: Installation, result: dict[str, Any]) -> None:
    """The clv:* person values: labels follow their rules, and a few persons' numbers equal the
    integrated model at the fitted parameters."""
    scopes = {s: inst.values(s) for s in SCOPES}
    for s in SCOPES:
        assert len(scopes[s]) == 2357, s
    alive = scopes["clv:p_alive"]
    for pid, (label, risk) in scopes["clv:churn_risk"].items():
        p = alive[pid][1]
        assert p is not None and risk == pytest.approx(1 - p)
        assert label == ("low" if p >= 0.7 else "medium" if p >= 0.3 else "high")
    values = np.array([v for _, v in scopes["clv:predicted_value"].values()])
    t1, t2 = np.quantile(values, [1 / 3, 2 / 3])
    for _, (label, v) in scopes["clv:value_band"].items():
        assert v is not None
        assert label == ("high" if v > t2 else "medium" if v > t1 else "low")
    bands = [label for label, _ in scopes["clv:value_band"].values()]
    assert abs(bands.count("high") - 2357 / 3) < 30 and abs(bands.count("low") - 2357 / 3) < 30

    bg = BGNBD(*(result["bgnbd"][k] for k in ("r", "alpha", "a", "b")))
    gg = GammaGamma(*(result["gamma_gamma"][k] for k in ("p", "q", "v")))
    ref = reference_summary(cdnow_purchases(), CAL_END)
    # a one-time buyer, a lapsed repeat buyer, a frequent buyer
    picks = ["0001", "0002", max(ref, key=lambda c: ref[c].x)]
    for customer in picks:
        r = ref[customer]
        pid = inst.persons[f"cdnow-{customer}"]
        _, p_alive, expected = bgnbd_by_integration(bg, r.x, r.t_x, r.T, 39.0)
        assert alive[pid][1] == pytest.approx(p_alive, rel=1e-7)
        assert scopes["clv:expected_purchases"][pid][1] == pytest.approx(expected, rel=1e-7)
        spend = gg.p * gg.v / (gg.q - 1)  # population mean, no repeat spend seen
        if r.x:
            spend = gamma_gamma_by_integration(gg, r.x, r.spend_m)[1]
        assert scopes["clv:predicted_value"][pid][1] == pytest.approx(expected * spend, rel=1e-7)


# -- closed forms against integration, optimiser against simulation -------------------------------

PUBLISHED = BGNBD(0.243, 4.414, 0.793, 2.426)


@pytest.mark.parametrize(
    ("x", "t_x", "T"), [(0, 0.0, 38.86), (2, 30.43, 38.86), (14, 32.0, 34.0), (29, 37.0, 38.0)]
)
def test_bgnbd_closed_forms_match_integration(x: int, t_x: float, T: float) -> None:
    ll, p_alive, expected = bgnbd_by_integration(PUBLISHED, x, t_x, T, 52.0)
    assert PUBLISHED.log_likelihood([x], [t_x], [T])[0] == pytest.approx(ll, rel=1e-9)
    assert PUBLISHED.p_alive([x], [t_x], [T])[0] == pytest.approx(p_alive, rel=1e-8)
    assert PUBLISHED.expected_purchases(52.0, [x], [t_x], [T])[0] == pytest.approx(
        expected, rel=1e-8
    )


def test_expected_purchases_of_a_new_customer_match_integration() -> None:
    """E[X(t)] for a new customer: λ-p integral of (1 − e^{−λpt})/p."""
    m = PUBLISHED

    def f(w: float, v: float) -> float:
        if v == 0.0 or w == 0.0 or w == 1.0:
            return 0.0
        lam, p = v ** (1 / m.r), w ** (1 / m.a)
        return (
            math.exp(-m.alpha * lam + (m.b - 1) * math.log1p(-p)) * -math.expm1(-lam * p * 39) / p
        )

    value = integrate.dblquad(f, 0, math.inf, 0, 1, epsabs=0, epsrel=1e-10)[0]
    value *= math.exp(m.r * math.log(m.alpha) - gammaln(m.r) - betaln(m.a, m.b)) / (m.r * m.a)
    assert m.expected_purchases_new(39.0) == pytest.approx(value, rel=1e-8)


@pytest.mark.parametrize(("x", "m"), [(1, 12.5), (3, 35.08), (12, 80.0)])
def test_gamma_gamma_closed_forms_match_integration(x: int, m: float) -> None:
    g = GammaGamma(6.25, 3.74, 15.44)
    ll, mean = gamma_gamma_by_integration(g, x, m)
    assert g.log_likelihood([x], [m])[0] == pytest.approx(ll, rel=1e-8)
    assert g.expected_spend([x], [m])[0] == pytest.approx(mean, rel=1e-8)


def simulate_bgnbd(
    truth: BGNBD, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers following the BG/NBD story: Poisson purchases at rate λ while alive, dropping out
    with probability p after each repeat purchase, observed for T weeks after their first."""
    lam = rng.gamma(truth.r, 1 / truth.alpha, n)
    p = rng.beta(truth.a, truth.b, n)
    T = rng.uniform(26, 39, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    return x, t_x, T


def test_fit_recovers_simulated_parameters() -> None:
    """The MLE beats the true parameters' likelihood, by less than the χ²(4) 99.9% bound of the
    likelihood-ratio statistic (it would be far more if the optimiser stopped short or the
    likelihood were wrong)."""
    truth = BGNBD(0.6, 5.0, 0.9, 3.0)
    x, t_x, T = simulate_bgnbd(truth, 4000, np.random.default_rng(7))
    model, est = fit_bgnbd(x, t_x, T)
    ll_truth = float(truth.log_likelihood(x, t_x, T).sum())
    assert est.log_likelihood >= ll_truth - 1e-6
    assert 2 * (est.log_likelihood - ll_truth) < stats.chi2.ppf(0.999, 4)
    assert model.r == pytest.approx(truth.r, rel=0.35)
    assert model.alpha == pytest.approx(truth.alpha, rel=0.35)


def test_gamma_gamma_fit_recovers_simulated_parameters() -> None:
    truth = GammaGamma(4.0, 3.0, 20.0)
    rng = np.random.default_rng(11)
    n = 3000
    nu = rng.gamma(truth.q, 1 / truth.v, n)
    x = rng.integers(1, 8, n).astype(float)
    m = np.array([rng.gamma(truth.p, 1 / nu[i], int(x[i])).mean() for i in range(n)])
    model, est = fit_gamma_gamma(x, m)
    ll_truth = float(truth.log_likelihood(x, m).sum())
    assert est.log_likelihood >= ll_truth - 1e-6
    assert 2 * (est.log_likelihood - ll_truth) < stats.chi2.ppf(0.999, 3)
    assert model.p == pytest.approx(truth.p, rel=0.2)


def test_time_unit_rescales_alpha_only(duck: Installation) -> None:
    """Measured in days instead of weeks, α is 7 times larger, r, a, b are unchanged, and the
    log-likelihood (a density over x purchase times) drops by Σx·ln 7."""
    store, pid = duck.runtime.store, duck.project.id
    weeks = customers(store, pid, "purchase", CAL_END, TZ, "week")
    days = customers(store, pid, "purchase", CAL_END, TZ, "day")
    mw, ew = fit_bgnbd(weeks.x, weeks.t_x, weeks.T)
    md, ed = fit_bgnbd(days.x, days.t_x, days.T)
    assert md.alpha / 7 == pytest.approx(mw.alpha, rel=1e-4)
    for name in ("r", "a", "b"):
        assert getattr(md, name) == pytest.approx(getattr(mw, name), rel=1e-4)
    assert ed.log_likelihood == pytest.approx(
        ew.log_likelihood - weeks.x.sum() * math.log(7), abs=1e-4
    )


def test_discounting_weights_each_unit(duck: Installation) -> None:
    """Discounted purchases are the increments of E[Y(k)] over whole units, each divided by
    (1+d)^k; integration gives each E[Y(k)] independently."""
    x, t_x, T, d = 2, 30.43, 38.86, 0.05
    increments, previous = [], 0.0
    for k in range(1, 4):
        current = bgnbd_by_integration(PUBLISHED, x, t_x, T, float(k))[2]
        increments.append(current - previous)
        previous = current
    expected = sum(inc / (1 + d) ** (k + 1) for k, inc in enumerate(increments))
    got = discounted_purchases(PUBLISHED, 3, [x], [t_x], [T], d)[0]
    assert got == pytest.approx(expected, rel=1e-7)
    assert discounted_purchases(PUBLISHED, 3, [x], [t_x], [T])[0] == pytest.approx(
        previous, rel=1e-7
    )


# -- refusals and partial fits -------------------------------------------------------------------


def test_no_spend_model_stores_no_value(duck: Installation) -> None:
    result = fit_clv(
        duck.runtime.store,
        duck.runtime.state,
        duck.project,
        ClvRequest("purchase", CAL_END, "week", amount_field=None),
    )
    assert result["gamma_gamma"] is None
    assert result["predictions"]["predicted_value_total"] is None
    assert duck.values("clv:predicted_value") == {} and duck.values("clv:value_band") == {}
    assert len(duck.values("clv:p_alive")) == 2357


def test_refusals(duck: Installation) -> None:
    rt, project = duck.runtime, duck.project
    with pytest.raises(NotEnoughData, match="no customers"):
        fit_clv(rt.store, rt.state, project, ClvRequest("refund", CAL_END))
    # before anyone's second purchase day: nobody repeated
    with pytest.raises(NotEnoughData, match="repeat purchase"):
        fit_clv(rt.store, rt.state, project, ClvRequest("purchase", date(2025, 1, 1)))
    with pytest.raises(InvalidClvRequest, match="after today") as future:
        fit_clv(rt.store, rt.state, project, ClvRequest("purchase", date(2099, 1, 1)))
    assert future.value.field == "calibration_end"
    with pytest.raises(InvalidClvRequest, match="unit") as info:
        ClvRequest("purchase", CAL_END, "year")
    assert info.value.field == "unit"
    with pytest.raises(InvalidClvRequest, match="horizon"):
        ClvRequest("purchase", CAL_END, horizon=0)
    with pytest.raises(InvalidClvRequest, match="discount_rate"):
        ClvRequest("purchase", CAL_END, discount_rate=1.5)
    with pytest.raises(InvalidClvRequest, match="amount_field"):
        ClvRequest("purchase", CAL_END, amount_field="prop:")
    with pytest.raises(ModelNotFound, match="no CLV model for event 'refund'"):
        latest_model(rt.state, project, "refund")


def test_heavy_buyers_beyond_hyp2f1() -> None:
    """scipy's hyp2f1 overflows for hundreds of repeat purchases over a long horizon; the
    numerical fallback must still match the integrated model."""
    x, t_x, T, t = 300, 38.0, 39.0, 520.0
    assert not np.isfinite(hyp2f1(PUBLISHED.r + x, PUBLISHED.b + x, PUBLISHED.a + PUBLISHED.b + x - 1,
                                  t / (PUBLISHED.alpha + T + t)))  # fmt: skip
    _, p_alive, expected = bgnbd_by_integration(PUBLISHED, x, t_x, T, t)
    got = PUBLISHED.expected_purchases(t, [x], [t_x], [T])[0]
    assert got == pytest.approx(expected, rel=1e-7)
    assert PUBLISHED.p_alive([x], [t_x], [T])[0] == pytest.approx(p_alive, rel=1e-7)


@pytest.mark.parametrize("a", [0.02, 0.3, 1.5])
def test_fallback_quadrature_stays_finite_for_small_a(a: float) -> None:
    """The fallback integrand holds p^(a-2); near p = 0 that alone overflows a float, so it is
    evaluated in logs. It must agree with the integrated model wherever that is computable."""
    model = BGNBD(r=0.24, alpha=4.4, a=a, b=2.4)
    x, t_x, T, t = 4, 20.0, 39.0, 52.0
    alive_purchases = model._alive_purchases_quad(t, float(x), T)
    assert math.isfinite(alive_purchases) and 0.0 < alive_purchases < (0.24 + x) * t / (4.4 + T)
    _, p_alive, expected = bgnbd_by_integration(model, x, t_x, T, t)
    assert alive_purchases * p_alive == pytest.approx(expected, rel=1e-6)


def test_notes_keep_their_templates(duck: Installation) -> None:
    """A fit's notes are English text, with their templates beside them for the console."""
    from yunying.console.i18n import translate
    from yunying.errors import message_from_record

    result = fit_clv(
        duck.runtime.store,
        duck.runtime.state,
        duck.project,
        ClvRequest("purchase", CAL_END, "week", amount_field="no_such_amount"),
    )
    assert result["warnings"] == [
        "fewer than two repeat customers with a positive 'no_such_amount': no spend model, so "
        "no predicted value"
    ]
    stored = latest_model(duck.runtime.state, duck.project, "purchase")
    [record] = stored["warning_messages"]
    note = message_from_record(record, stored["warnings"][0])
    zh = {"fewer than two repeat customers with a positive {field!r}: no spend model, so no "
          "predicted value": "有正值 {field!r} 的复购客户少于两位"}  # fmt: skip
    assert translate(note, lambda s: zh.get(s, s)) == "有正值 'no_such_amount' 的复购客户少于两位"
