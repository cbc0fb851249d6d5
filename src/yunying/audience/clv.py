"""Customer lifetime value: BG/NBD for purchase counts and survival, Gamma-Gamma for spend.

Models (see docs/clv.md for the formulas and the fitted figures):

- **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a
  customer buys at Poisson rate λ ~ Gamma(r, α); after each purchase they drop out with
  probability p ~ Beta(a, b). A customer is summarised by frequency ``x`` (repeat purchases),
  recency ``t_x`` (time of the last purchase since the first) and age ``T`` (time from the first
  purchase to the end of the calibration period).
- **Gamma-Gamma** (Fader, Hardie & Lee 2005 "RFM and CLV"; Fader & Hardie 2013, "The Gamma-Gamma
  Model of Monetary Value"): a customer's transaction values are Gamma(p, ν) with
  ν ~ Gamma(q, γ) across customers (``v`` here is γ); fitted on repeat customers' average value of
  their repeat transactions.

Why maximum likelihood with scipy: both likelihoods are closed-form (gamma and beta functions),
so a few hundred evaluations of a vectorised log-likelihood find the estimates in milliseconds.
The well-known ``lifetimes`` package does the same but is archived (unmaintained, pinned to old
pandas/scipy), and ``pymc-marketing`` brings PyMC, PyTensor and a Bayesian sampler to a
self-hosted install for point estimates we can get exactly without them. Parameters are optimised
on the log scale (they are all positive) with L-BFGS-B, over distinct ``(x, t_x, T)`` triples
weighted by how many customers share them (thousands of triples even for millions of people).

Purchase summaries come from the events engine (DuckDB or ClickHouse) as one SQLGlot tree over
the project's ``events``; purchases on the same local day (project time zone) are one transaction,
as in the paper's CDNOW data. Predictions are written per person to ``person_values`` under the
``clv:*`` scopes, and each fit is recorded in the state DB table ``clv_models``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from sqlalchemy import Engine
from sqlglot import exp

from yunying.analytics.common import (
    EPOCH,
    DateRange,
    Field,
    InvalidQuery,
    Source,
    Sql,
    as_float,
    as_int,
    col,
    events_from,
    lit,
    prop,
    run,
)
from yunying.audience.clv_tables import clv_models
from yunying.errors import M_, NotFound, YunyingError, message_record
from yunying.state import Project
from yunying.store.base import EventStore

Floats = NDArray[np.float64]

#: Length of each time unit in days (a month is the mean Gregorian month).
UNIT_DAYS: dict[str, float] = {"day": 1.0, "week": 7.0, "month": 365.25 / 12}
UNITS = tuple(UNIT_DAYS)

SCOPE_EXPECTED_PURCHASES = "clv:expected_purchases"
SCOPE_P_ALIVE = "clv:p_alive"
SCOPE_PREDICTED_VALUE = "clv:predicted_value"
SCOPE_CHURN_RISK = "clv:churn_risk"
SCOPE_VALUE_BAND = "clv:value_band"
#: Every ``person_values`` scope a fit replaces.
SCOPES = (
    SCOPE_EXPECTED_PURCHASES,
    SCOPE_P_ALIVE,
    SCOPE_PREDICTED_VALUE,
    SCOPE_CHURN_RISK,
    SCOPE_VALUE_BAND,
)
#: P(alive) at or above which churn risk is "low", and at or above which it is "medium".
CHURN_LOW, CHURN_MEDIUM = 0.7, 0.3

MAX_HORIZON = 10_000
#: Discounting sums expected purchases over at most this many steps of the horizon.
DISCOUNT_STEPS = 200
#: Parameters are searched within [1e-8, 1e8] (log scale bounds keep the optimiser finite).
LOG_BOUND = float(np.log(1e8))


class ClvError(YunyingError):
    """A CLV model could not be fitted or read."""


class InvalidClvRequest(ClvError):
    """A fit request names a bad unit, horizon, date or field; ``field`` names the input."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotEnoughData(ClvError):
    """The purchase history cannot identify the model (no customers, no repeat purchases)."""


class ModelNotFound(ClvError, NotFound):
    """No CLV model has been fitted for the project (and event) yet."""


# -- BG/NBD -----------------------------------------------------------------------------------------


def _arrays(*values: ArrayLike) -> list[Floats]:
    return [np.asarray(v, dtype=np.float64) for v in values]


@dataclass(frozen=True)
class BGNBD:
    """BG/NBD parameters: purchase rate λ ~ Gamma(shape r, rate α), dropout p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def log_likelihood(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """Log-likelihood of each customer's ``(x, t_x, T)`` (paper, eq. 6)::

        L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
            + [x > 0] · B(a+1, b+x−1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))
        """
        x, t_x, T = _arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
        alive = betaln(a, b + x) - (r + x) * np.log(alpha + T)
        repeat = x > 0
        gone = np.full_like(x, -np.inf)
        xr = x[repeat]
        gone[repeat] = betaln(a + 1, b + xr - 1) - (r + xr) * np.log(alpha + t_x[repeat])
        return common + np.logaddexp(alive, gone)

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """P(alive at T | x, t_x, T) = 1 / (1 + [x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))."""
        x, t_x, T = _arrays(x, t_x, T)
        repeat = x > 0
        log_odds = np.full_like(x, -np.inf)
        xr = x[repeat]
        log_odds[repeat] = (
            np.log(self.a)
            - np.log(self.b + xr - 1)
            + (self.r + xr) * (np.log(self.alpha + T[repeat]) - np.log(self.alpha + t_x[repeat]))
        )
        return expit(-log_odds)

    def expected_purchases(self, t: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """E[purchases in (T, T+t] | x, t_x, T] (paper, eq. 10)::

        (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x−1; t/(α+T+t))]
            · P(alive)

        scipy's ``hyp2f1`` overflows for heavy buyers over long horizons (x in the hundreds);
        there, and wherever the closed form leaves its bounds, :meth:`_alive_purchases_quad`
        integrates the same expectation numerically.
        """
        x, t_x, T = _arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        if t <= 0:
            return np.zeros_like(x)
        z = t / (alpha + T + t)
        with np.errstate(all="ignore"):
            ratio = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
            bracket = 1.0 - ratio * hyp2f1(r + x, b + x, a + b + x - 1, z)
            if_alive = (a + b + x - 1) / (a - 1) * bracket
        # 0 < E[Y | alive] < (r+x)·t/(α+T), since 1 − (1+u)^(−k) < k·u
        bad = (
            ~np.isfinite(if_alive)
            | (if_alive < 0)
            | (if_alive > (r + x) * t / (alpha + T) * (1 + 1e-9))
        )
        if np.any(bad):
            if_alive = if_alive.copy()
            for i in np.flatnonzero(bad):
                if_alive[i] = self._alive_purchases_quad(t, float(x[i]), float(T[i]))
        return if_alive * self.p_alive(x, t_x, T)

    def _alive_purchases_quad(self, t: float, x: float, T: float) -> float:
        """E[Y(t) | alive at T, x, T] by quadrature: given the history and being alive, λ ~
        Gamma(r+x, α+T) and p ~ Beta(a, b+x) independently, and an alive customer buys
        (1 − e^(−λpt))/p times in expectation; integrating λ out leaves
        ∫ (1 − ((α+T)/(α+T+pt))^(r+x)) / p · Beta(p; a, b+x) dp."""
        k, s, bb = self.r + x, self.alpha + T, self.b + x
        log_norm = -float(betaln(self.a, bb))
        a = self.a

        def integrand(p: float) -> float:
            if p <= 0.0 or p >= 1.0:
                return 0.0
            bought = -math.expm1(-k * math.log1p(p * t / s))
            if bought <= 0.0:
                return 0.0
            # in logs: p^(a-2) alone overflows near p = 0, bought (~ k·p·t/s there) tames it
            log_value = (
                math.log(bought) + (a - 2) * math.log(p) + (bb - 1) * math.log1p(-p) + log_norm
            )
            return math.exp(min(log_value, 700.0))

        mean = a / (a + bb)
        marks = sorted({min(max(v, 1e-12), 1 - 1e-12) for v in (mean, 10 * mean, s / t / k, s / t)})
        value, _ = quad(integrand, 0.0, 1.0, points=marks, epsabs=0.0, epsrel=1e-10, limit=500)
        return float(value)

    def expected_purchases_new(self, t: ArrayLike) -> Floats:
        """E[X(t)] for a customer just acquired (paper, eq. 9)::

        (a+b−1)/(a−1) · [1 − (α/(α+t))^r · 2F1(r, b; a+b−1; t/(α+t))]
        """
        (tt,) = _arrays(t)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        ratio = (alpha / (alpha + tt)) ** r
        return (a + b - 1) / (a - 1) * (1 - ratio * hyp2f1(r, b, a + b - 1, tt / (alpha + tt)))

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class Estimate:
    """Outcome of one maximum-likelihood fit."""

    params: tuple[float, ...]
    log_likelihood: float
    converged: bool
    at_bound: bool
    iterations: int
    message: str


def _maximise(
    log_lik: Callable[[Floats], tuple[float, Floats]], start: Floats, names: str
) -> Estimate:
    """Maximise ``log_lik(log_params) -> (value, gradient)`` with L-BFGS-B (analytic gradient),
    polishing with Nelder-Mead if L-BFGS-B does not report convergence."""

    def objective(theta: Floats) -> tuple[float, Floats]:
        value, grad = log_lik(theta)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            return 1e300, np.zeros_like(theta)
        return -value, -grad

    def value_only(theta: Floats) -> float:
        return objective(theta)[0]

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    res = minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-8, "maxiter": 10_000, "maxfun": 100_000},
    )
    if not res.success:
        polished = minimize(
            value_only,
            res.x,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-8, "fatol": 1e-9, "maxiter": 20_000},
        )
        if polished.fun <= res.fun:
            res = polished
    theta = np.asarray(res.x, dtype=np.float64)
    at_bound = bool(np.any(np.abs(theta) > LOG_BOUND - 1e-3))
    if not np.isfinite(res.fun) or res.fun >= 1e300:
        raise ClvError(f"the {names} likelihood could not be evaluated at any parameters tried")
    return Estimate(
        params=tuple(float(v) for v in np.exp(theta)),
        log_likelihood=-float(res.fun),
        converged=bool(res.success),
        at_bound=at_bound,
        iterations=int(res.nit),
        message=str(res.message),
    )


def _bgnbd_log_lik_grad(
    params: Floats, x: Floats, t_x: Floats, T: Floats, weights: Floats
) -> tuple[float, Floats]:
    """Weighted BG/NBD log-likelihood and its gradient with respect to the log-parameters.

    With ℓ = C + log(e^A + e^D) (see :meth:`BGNBD.log_likelihood`) and w_A, w_D the shares of the
    two terms, each derivative is ∂C + w_A ∂A + w_D ∂D (ψ is the digamma function; ∂ log B(u, v)
    is ψ(u) − ψ(u+v) in u and ψ(v) − ψ(u+v) in v); times the parameter, for its logarithm.
    """
    r, alpha, a, b = (float(v) for v in params)
    model = BGNBD(r, alpha, a, b)
    ll = model.log_likelihood(x, t_x, T)
    repeat = x > 0
    log_a = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    w_a = np.exp(common + log_a - ll)
    w_d = np.where(repeat, 1.0 - w_a, 0.0)
    t_d = np.where(repeat, t_x, 0.0)
    xb = np.where(repeat, b + x - 1, 1.0)  # ψ(b+x−1) only where x > 0
    psi_abx = digamma(a + b + x)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    d_r -= w_a * np.log(alpha + T) + w_d * np.log(alpha + t_d)
    d_alpha = r / alpha - (r + x) * (w_a / (alpha + T) + w_d / (alpha + t_d))
    d_a = -digamma(a) + digamma(a + b) + w_a * (digamma(a) - psi_abx)
    d_a += w_d * (digamma(a + 1) - psi_abx)
    d_b = -digamma(b) + digamma(a + b) + w_a * (digamma(b + x) - psi_abx)
    d_b += w_d * (digamma(xb) - psi_abx)
    grad = np.array([np.dot(weights, d) for d in (d_r, d_alpha, d_a, d_b)]) * params
    return float(np.dot(weights, ll)), grad


def _gamma_gamma_log_lik_grad(params: Floats, x: Floats, m: Floats) -> tuple[float, Floats]:
    """Gamma-Gamma log-likelihood and its gradient with respect to the log-parameters."""
    p, q, v = (float(val) for val in params)
    ll = GammaGamma(p, q, v).log_likelihood(x, m)
    px = p * x
    log_vmx = np.log(v + m * x)
    psi = digamma(px + q)
    d_p = x * (psi - digamma(px) + np.log(m) + np.log(x) - log_vmx)
    d_q = psi - digamma(q) + np.log(v) - log_vmx
    d_v = q / v - (px + q) / (v + m * x)
    grad = np.array([d_p.sum(), d_q.sum(), d_v.sum()]) * params
    return float(ll.sum()), grad


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[BGNBD, Estimate]:
    """Maximum-likelihood BG/NBD parameters for customers summarised by ``(x, t_x, T)``.

    Raises :class:`NotEnoughData` without customers or without any repeat purchase (the rate
    and dropout parameters are then not identified).
    """
    xs, txs, Ts = _arrays(x, t_x, T)
    if xs.size == 0:
        raise NotEnoughData(M_("no customers: no purchase event on or before the calibration end"))
    if not np.any(xs > 0):
        raise NotEnoughData(
            M_("no customer made a repeat purchase before the calibration end; BG/NBD needs some "
               "(choose a later calibration end or another event)")
        )  # fmt: skip
    keys, counts = np.unique(np.column_stack([xs, txs, Ts]), axis=0, return_counts=True)
    ux, utx, uT = keys[:, 0], keys[:, 1], keys[:, 2]
    weights = counts.astype(np.float64)

    def log_lik(theta: Floats) -> tuple[float, Floats]:
        with np.errstate(all="ignore"):
            return _bgnbd_log_lik_grad(np.exp(theta), ux, utx, uT, weights)

    # start where the mean purchase rate r/α matches the repeat purchases seen
    rate = max(float(xs.sum()) / max(float(Ts.sum()), 1e-9), 1e-6)
    start = np.log(np.array([1.0, 1.0 / rate, 1.0, 1.0]))
    start = np.clip(start, -LOG_BOUND + 1, LOG_BOUND - 1)
    est = _maximise(log_lik, start, "BG/NBD")
    return BGNBD(*est.params), est


# -- Gamma-Gamma ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma parameters: values ~ Gamma(shape p, rate ν), ν ~ Gamma(shape q, rate v)."""

    p: float
    q: float
    v: float

    def log_likelihood(self, x: ArrayLike, m: ArrayLike) -> Floats:
        """Log density of each customer's average value ``m`` of ``x`` transactions::

        f(m | x) = Γ(px+q) / (Γ(px) Γ(q)) · v^q · m^(px−1) · x^(px) / (v + m x)^(px+q)
        """
        x, m = _arrays(x, m)
        p, q, v = self.p, self.q, self.v
        px = p * x
        return (
            gammaln(px + q)
            - gammaln(px)
            - gammaln(q)
            + q * np.log(v)
            + (px - 1) * np.log(m)
            + px * np.log(x)
            - (px + q) * np.log(v + m * x)
        )

    @property
    def mean_spend(self) -> float:
        """Population mean transaction value p·v/(q−1) (infinite when q ≤ 1)."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else float("inf")

    def expected_spend(self, x: ArrayLike, m: ArrayLike) -> Floats:
        """E[value of a transaction | x transactions averaging m] = p(v + x·m) / (px + q − 1).

        ``x = 0`` (or ``m`` missing) gives the population mean; NaN where it is not finite.
        """
        x, m = _arrays(x, m)
        known = (x > 0) & np.isfinite(m)
        xm = np.where(known, x * np.where(known, m, 0.0), 0.0)
        xx = np.where(known, x, 0.0)
        denom = self.p * xx + self.q - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(denom > 0, self.p * (self.v + xm) / denom, np.nan)
        return out

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "v": self.v}


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> tuple[GammaGamma, Estimate]:
    """Maximum-likelihood Gamma-Gamma parameters from ``x`` transactions averaging ``m`` each.

    Only customers with ``x > 0`` and ``m > 0`` inform the model; :class:`NotEnoughData` if fewer
    than two remain.
    """
    xs, ms = _arrays(x, m)
    use = (xs > 0) & np.isfinite(ms) & (ms > 0)
    xs, ms = xs[use], ms[use]
    if xs.size < 2:
        raise NotEnoughData(
            M_(
                "the spend model needs at least two customers with repeat purchases of positive "
                "value"
            )
        )

    def log_lik(theta: Floats) -> tuple[float, Floats]:
        with np.errstate(all="ignore"):
            return _gamma_gamma_log_lik_grad(np.exp(theta), xs, ms)

    start = np.log(np.array([1.0, 2.0, float(np.mean(ms))]))
    est = _maximise(log_lik, start, "Gamma-Gamma")
    return GammaGamma(*est.params), est


def discounted_purchases(
    model: BGNBD,
    horizon: float,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    discount_rate: float = 0.0,
) -> Floats:
    """Expected purchases in the next ``horizon`` units, each discounted to today.

    Without discounting this is ``E[Y(horizon)]``. With a per-unit rate ``d`` the horizon is cut
    into ``n = min(ceil(horizon), DISCOUNT_STEPS)`` equal steps of ``h = horizon/n`` units and the
    purchases expected in step k are weighted by ``(1+d)^(−k·h)``:
    ``Σ_k (E[Y(k·h)] − E[Y((k−1)·h)]) / (1+d)^(k·h)`` (whole units, exactly, for horizons up to
    ``DISCOUNT_STEPS``).
    """
    xs, txs, Ts = _arrays(x, t_x, T)
    if discount_rate == 0.0:
        return model.expected_purchases(horizon, xs, txs, Ts)
    n = max(1, min(int(np.ceil(horizon)), DISCOUNT_STEPS))
    h = horizon / n
    total = np.zeros_like(xs)
    previous = np.zeros_like(xs)
    for k in range(1, n + 1):
        current = model.expected_purchases(k * h, xs, txs, Ts)
        total += (current - previous) / (1.0 + discount_rate) ** (k * h)
        previous = current
    return total


# -- purchase summaries from the events engine ---------------------------------------------------


@dataclass(frozen=True)
class Customers:
    """Per person who purchased on or before the calibration end: the model's summary.

    ``x``: repeat purchase days; ``t_x``, ``T``: in the chosen unit; ``spend_x``: repeat purchase
    days with a value; ``spend_m``: their average value (NaN without any).
    """

    person_ids: list[str]
    x: Floats
    t_x: Floats
    T: Floats
    spend_x: Floats
    spend_m: Floats

    def __len__(self) -> int:
        return len(self.person_ids)


def amount_of(amount_field: str | None) -> Field | None:
    """The field holding a purchase's value: ``amount`` is the column, ``prop:NAME`` or any
    other name an event property; ``None`` means no spend model."""
    if amount_field is None:
        return None
    name = amount_field.strip()
    if name.startswith("prop:"):
        name = name[5:]
        if not name:
            raise InvalidClvRequest(
                M_("amount_field 'prop:' needs a property name after the colon"), "amount_field"
            )
        return prop(name)
    if not name:
        raise InvalidClvRequest(
            M_("amount_field must not be empty (leave it out for no spend model)"), "amount_field"
        )
    return col("amount") if name == "amount" else prop(name)


def summary_tree(
    source: Source,
    project_id: int,
    event: str,
    calibration_end: date,
    timezone: str,
    amount: Field | None,
) -> exp.Query:
    """One row per person who did ``event`` on or before the local day ``calibration_end``:
    ``pid, days, first_day, last_day, repeat_spend, repeat_valued`` (days since 1970-01-01).

    Events are first collapsed to (person, local day), so several purchases on one day are one
    transaction whose value is their sum; ``repeat_*`` cover the days after the first.
    """
    sql = Sql(source.dialect)
    _, end = DateRange(calibration_end, calibration_end, timezone).utc_bounds()
    ts = exp.column("timestamp")
    spend = sql.field_number(amount) if amount is not None else exp.cast(exp.null(), "DOUBLE")
    daily = (
        exp.select(
            sql.text(exp.column("person_id")).as_("pid"),
            sql.day_number(ts, timezone).as_("d"),
            exp.func("SUM", spend).as_("spend"),
            exp.func("COUNT", spend.copy()).as_("valued"),
        )
        .from_(events_from(source, project_id))
        .where(
            exp.and_(sql.event_is(event), exp.LT(this=ts.copy(), expression=sql.ts_literal(end)))
        )
        .group_by(exp.column("pid"), exp.column("d"))
    )
    first = exp.Window(this=exp.func("MIN", exp.column("d")), partition_by=[exp.column("pid")])
    ranked = exp.select("pid", "d", "spend", "valued", first.as_("first_d")).from_(
        daily.subquery("daily")
    )
    repeat = exp.and_(
        exp.GT(this=exp.column("d"), expression=exp.column("first_d")),
        exp.GT(this=exp.column("valued"), expression=lit(0)),
    )
    return (
        exp.select(
            exp.column("pid"),
            exp.func("COUNT", exp.Star()).as_("days"),
            exp.func("MIN", exp.column("d")).as_("first_day"),
            exp.func("MAX", exp.column("d")).as_("last_day"),
            exp.func("SUM", exp.Case(ifs=[exp.If(this=repeat, true=exp.column("spend"))])).as_(
                "repeat_spend"
            ),
            exp.func(
                "SUM", exp.Case(ifs=[exp.If(this=repeat.copy(), true=lit(1))], default=lit(0))
            ).as_("repeat_valued"),
        )
        .from_(ranked.subquery("ranked"))
        .group_by(exp.column("pid"))
        .order_by(exp.column("pid"))
    )


def customers(
    source: Source,
    project_id: int,
    event: str,
    calibration_end: date,
    timezone: str,
    unit: str = "week",
    amount_field: str | None = "amount",
) -> Customers:
    """The BG/NBD summary of every purchaser (see :func:`summary_tree`) in ``unit``."""
    if unit not in UNIT_DAYS:
        raise InvalidClvRequest(
            M_("unit must be one of {units}, not {unit!r}", units=", ".join(UNITS), unit=unit),
            "unit",
        )
    rows = run(
        source,
        summary_tree(source, project_id, event, calibration_end, timezone, amount_of(amount_field)),
    )
    n = len(rows)
    days = np.fromiter((as_int(r[1]) for r in rows), np.float64, n)
    first = np.fromiter((as_int(r[2]) for r in rows), np.float64, n)
    last = np.fromiter((as_int(r[3]) for r in rows), np.float64, n)
    spend = np.fromiter(
        (np.nan if (v := as_float(r[4])) is None else v for r in rows), np.float64, n
    )
    valued = np.fromiter((as_int(r[5]) for r in rows), np.float64, n)
    end_day = float((calibration_end - EPOCH).days)
    width = UNIT_DAYS[unit]
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = np.where(valued > 0, spend / np.where(valued > 0, valued, 1.0), np.nan)
    return Customers(
        person_ids=[str(r[0]) for r in rows],
        x=days - 1,
        t_x=(last - first) / width,
        T=(end_day - first) / width,
        spend_x=valued,
        spend_m=avg,
    )


# -- the whole job: fit, predict, store -------------------------------------------------------------


@dataclass(frozen=True)
class ClvRequest:
    """What to fit: the purchase ``event`` up to the local day ``calibration_end`` (included),
    time in ``unit``, spend from ``amount_field`` (None: no spend model), predictions over the
    next ``horizon`` units, optionally discounted at ``discount_rate`` per unit."""

    event: str
    calibration_end: date
    unit: str = "week"
    amount_field: str | None = "amount"
    horizon: float = 52
    discount_rate: float = 0.0

    def __post_init__(self) -> None:
        if not self.event or not self.event.strip():
            raise InvalidClvRequest(M_("event must name the purchase event"), "event")
        if self.unit not in UNIT_DAYS:
            raise InvalidClvRequest(
                M_(
                    "unit must be one of {units}, not {unit!r}",
                    units=", ".join(UNITS),
                    unit=self.unit,
                ),
                "unit",
            )
        if not (0 < self.horizon <= MAX_HORIZON):
            raise InvalidClvRequest(
                M_(
                    "horizon must be above 0 and at most {max} units, not {horizon}",
                    max=MAX_HORIZON,
                    horizon=self.horizon,
                ),
                "horizon",
            )
        if not (0 <= self.discount_rate < 1):
            raise InvalidClvRequest(
                M_(
                    "discount_rate is a rate per unit in [0, 1), not {rate}",
                    rate=self.discount_rate,
                ),
                "discount_rate",
            )
        amount_of(self.amount_field)


@dataclass(frozen=True)
class Predictions:
    """Per-person predictions aligned with :attr:`Customers.person_ids`."""

    expected_purchases: Floats
    p_alive: Floats
    expected_spend: Floats | None
    predicted_value: Floats | None


def predict(
    data: Customers,
    model: BGNBD,
    spend_model: GammaGamma | None,
    horizon: float,
    discount_rate: float = 0.0,
) -> Predictions:
    """Expected purchases over the horizon, P(alive), expected spend and predicted value::

    predicted value = discounted expected purchases over the horizon × E[spend | x, m]
    """
    keys, inverse = np.unique(
        np.column_stack([data.x, data.t_x, data.T]), axis=0, return_inverse=True
    )
    inverse = inverse.reshape(-1)
    ux, utx, uT = keys[:, 0], keys[:, 1], keys[:, 2]
    expected = model.expected_purchases(horizon, ux, utx, uT)[inverse]
    alive = model.p_alive(ux, utx, uT)[inverse]
    if spend_model is None:
        return Predictions(expected, alive, None, None)
    if discount_rate:
        purchases = discounted_purchases(model, horizon, ux, utx, uT, discount_rate)[inverse]
    else:
        purchases = expected
    spend = spend_model.expected_spend(data.spend_x, data.spend_m)
    return Predictions(expected, alive, spend, purchases * spend)


def churn_labels(p_alive: Floats) -> list[str]:
    """``low`` for P(alive) ≥ 0.7, ``medium`` for ≥ 0.3, else ``high``."""
    return ["low" if p >= CHURN_LOW else "medium" if p >= CHURN_MEDIUM else "high" for p in p_alive]


def value_bands(values: Floats) -> tuple[list[str | None], tuple[float, float] | None]:
    """Terciles of the predicted value among persons that have one: ``high`` above the 2/3
    quantile, ``medium`` above the 1/3 quantile, ``low`` otherwise (ties share a band); the
    thresholds are numpy's linear-interpolation quantiles."""
    known = np.isfinite(values)
    if not np.any(known):
        return [None] * len(values), None
    t1, t2 = (float(v) for v in np.quantile(values[known], [1 / 3, 2 / 3]))
    labels: list[str | None] = [
        None if not ok else "high" if v > t2 else "medium" if v > t1 else "low"
        for v, ok in zip(values.tolist(), known.tolist(), strict=True)
    ]
    return labels, (t1, t2)


def _values(person_ids: list[str], labels: list[str | None] | None, values: Floats) -> pa.Table:
    keep = np.isfinite(values)
    ids = [p for p, k in zip(person_ids, keep.tolist(), strict=True) if k]
    return pa.table(
        {
            "person_id": pa.array(ids, pa.string()),
            "label": pa.array(
                [lab for lab, k in zip(labels, keep.tolist(), strict=True) if k]
                if labels is not None
                else [None] * len(ids),
                pa.string(),
            ),
            "value": pa.array(values[keep], pa.float64()),
        }
    )


def store_predictions(
    store: EventStore, project_id: int, person_ids: list[str], pred: Predictions
) -> dict[str, Any]:
    """Replace the ``clv:*`` scopes of ``person_values``; returns the label counts."""
    empty = np.array([], dtype=np.float64)
    churn = churn_labels(pred.p_alive)
    store.replace_person_values(
        project_id,
        SCOPE_EXPECTED_PURCHASES,
        _values(person_ids, None, pred.expected_purchases),
    )
    store.replace_person_values(project_id, SCOPE_P_ALIVE, _values(person_ids, None, pred.p_alive))
    store.replace_person_values(
        project_id, SCOPE_CHURN_RISK, _values(person_ids, list(churn), 1.0 - pred.p_alive)
    )
    value = pred.predicted_value if pred.predicted_value is not None else empty
    ids = person_ids if pred.predicted_value is not None else []
    bands, thresholds = value_bands(value)
    store.replace_person_values(project_id, SCOPE_PREDICTED_VALUE, _values(ids, None, value))
    store.replace_person_values(project_id, SCOPE_VALUE_BAND, _values(ids, bands, value))
    return {
        "churn_risk": {k: churn.count(k) for k in ("low", "medium", "high")},
        "value_band": {k: bands.count(k) for k in ("high", "medium", "low")},
        "value_band_thresholds": None if thresholds is None else list(thresholds),
    }


def _number(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _estimate(est: Estimate) -> dict[str, Any]:
    return {
        "log_likelihood": est.log_likelihood,
        "converged": est.converged,
        "at_bound": est.at_bound,
        "iterations": est.iterations,
    }


def fit_clv(
    store: EventStore,
    state: Engine,
    project: Project,
    request: ClvRequest,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Fit both models on ``project``'s purchases, write the per-person predictions to
    ``person_values`` and record the model in ``clv_models``; returns the API's JSON answer.

    Raises :class:`InvalidClvRequest`, :class:`NotEnoughData` or :class:`ClvError`.
    """
    created = (now or datetime.now(UTC)).astimezone(UTC)
    today = created.astimezone(ZoneInfo(project.timezone)).date()
    if request.calibration_end > today:
        # T would count days that have not happened yet, as if nobody bought in them
        raise InvalidClvRequest(
            M_(
                "calibration_end {day} is after today ({today}, {timezone}); use a day that is "
                "over",
                day=request.calibration_end,
                today=today,
                timezone=project.timezone,
            ),
            "calibration_end",
        )
    try:
        data = customers(
            store,
            project.id,
            request.event,
            request.calibration_end,
            project.timezone,
            request.unit,
            request.amount_field,
        )
    except InvalidQuery as exc:
        raise InvalidClvRequest(exc.message) from None
    warnings: list[str] = []
    model, est = fit_bgnbd(data.x, data.t_x, data.T)
    if not est.converged:
        warnings.append(
            M_("BG/NBD optimiser did not report convergence: {detail}", detail=est.message)
        )
    if est.at_bound:
        warnings.append(M_("a BG/NBD parameter reached its search bound; the fit is degenerate"))
    spend_model: GammaGamma | None = None
    spend_est: Estimate | None = None
    spenders = (data.spend_x > 0) & np.isfinite(data.spend_m) & (data.spend_m > 0)
    correlation: float | None = None
    if request.amount_field is None:
        pass
    elif int(spenders.sum()) < 2:
        warnings.append(
            M_(
                "fewer than two repeat customers with a positive {field!r}: no spend model, so "
                "no predicted value",
                field=request.amount_field,
            )
        )
    else:
        spend_model, spend_est = fit_gamma_gamma(data.spend_x, data.spend_m)
        if not spend_est.converged:
            warnings.append(
                M_(
                    "Gamma-Gamma optimiser did not report convergence: {detail}",
                    detail=spend_est.message,
                )
            )
        if spend_model.q <= 1:
            warnings.append(M_("Gamma-Gamma q ≤ 1: the mean spend is infinite for new customers"))
        if int(spenders.sum()) > 2:
            with np.errstate(all="ignore"):
                c = np.corrcoef(data.spend_x[spenders], data.spend_m[spenders])[0, 1]
            correlation = _number(c)
    pred = predict(data, model, spend_model, request.horizon, request.discount_rate)
    labels = store_predictions(store, project.id, data.person_ids, pred)

    repeat = data.x > 0
    counts = {
        "customers": len(data),
        "repeat_customers": int(repeat.sum()),
        "repeat_purchases": int(data.x.sum()),
        "spend_customers": int(spenders.sum()),
    }
    summary: dict[str, Any] = {
        "persons": len(data),
        "expected_purchases_total": float(pred.expected_purchases.sum()),
        "mean_p_alive": float(pred.p_alive.mean()),
        "predicted_value_total": (
            None if pred.predicted_value is None else _number(np.nansum(pred.predicted_value))
        ),
        **labels,
    }
    params: dict[str, Any] = {
        "timezone": project.timezone,
        "amount_field": request.amount_field,
        "horizon": request.horizon,
        "discount_rate": request.discount_rate,
        "bgnbd": {**model.as_dict(), **_estimate(est)},
        "gamma_gamma": (
            None
            if spend_model is None or spend_est is None
            else {
                **spend_model.as_dict(),
                **_estimate(spend_est),
                "customers": counts["spend_customers"],
                "mean_spend": _number(spend_model.mean_spend),
                "frequency_spend_correlation": correlation,
            }
        ),
        "counts": counts,
        "predictions": summary,
        "scopes": list(SCOPES),
        "warnings": warnings,
        # the same notes as template and parameters, for the console's catalogs
        "warning_messages": [message_record(w) for w in warnings],
    }
    with state.begin() as conn:
        result = conn.execute(
            sa.insert(clv_models).values(
                project_id=project.id,
                event=request.event,
                unit=request.unit,
                calibration_end=request.calibration_end,
                params=params,
                log_likelihood=est.log_likelihood,
                n_customers=len(data),
                created_at=created,
            )
        )
        model_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    return _answer(project, model_id, request.event, request.unit, request.calibration_end,
                   created, params)  # fmt: skip


def _answer(
    project: Project,
    model_id: int,
    event: str,
    unit: str,
    calibration_end: date,
    created: datetime,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The JSON shape of a stored model (docs/clv.md)."""
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return {
        "id": model_id,
        "project": project.name,
        "event": event,
        "unit": unit,
        "calibration_end": calibration_end.isoformat(),
        "created_at": created.isoformat(),
        **params,
    }


def latest_model(state: Engine, project: Project, event: str | None = None) -> dict[str, Any]:
    """The most recently fitted model of ``project`` (for ``event`` when given)."""
    query = sa.select(clv_models).where(clv_models.c.project_id == project.id)
    if event is not None:
        query = query.where(clv_models.c.event == event)
    with state.connect() as conn:
        row = conn.execute(query.order_by(clv_models.c.id.desc()).limit(1)).first()
    if row is None:
        what = f" for event {event!r}" if event is not None else ""
        raise ModelNotFound(
            f"no CLV model{what} in project {project.name!r} yet: run `yunying clv fit`"
        )
    return _answer(project, row.id, row.event, row.unit, row.calibration_end, row.created_at,
                   dict(row.params))  # fmt: skip


def calibration_day(text: str) -> date:
    """A ``YYYY-MM-DD`` calibration end (:class:`InvalidClvRequest` otherwise)."""
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidClvRequest(
            M_("calibration_end must be a date like 2026-11-01, not {text!r}", text=text),
            "calibration_end",
        ) from None


__all__ = [
    "BGNBD",
    "SCOPES",
    "UNITS",
    "ClvError",
    "ClvRequest",
    "Customers",
    "Estimate",
    "GammaGamma",
    "InvalidClvRequest",
    "ModelNotFound",
    "NotEnoughData",
    "Predictions",
    "calibration_day",
    "churn_labels",
    "customers",
    "discounted_purchases",
    "fit_bgnbd",
    "fit_clv",
    "fit_gamma_gamma",
    "latest_model",
    "predict",
    "summary_tree",
    "value_bands",
]
