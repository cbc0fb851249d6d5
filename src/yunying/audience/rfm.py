"""RFM: recency / frequency / monetary scores (1-5) and the common eight-class segmentation.

Purchases are the RFM events (see :class:`~yunying.audience.settings.RFMSettings`) with a
positive amount, within the ``window_days`` local days ending on the as-of day. Persons with no
such purchase are not scored. Per person:

- recency R: days from the local day of the last purchase to the as-of day (0 = bought today);
- frequency F: number of purchases; monetary M: sum of their amounts.

Scores (5 is best). ``quintile``: rank into fifths with ties sharing the lower rank, i.e.
``score = 1 + floor(5 * worse / n)`` where ``worse`` counts the scored persons strictly worse
(larger recency, fewer purchases, smaller amount) and ``n`` all scored persons. ``fixed``: with
four ascending thresholds t1..t4, ``R = 1 + #{t : recency <= t}``, ``F = 1 + #{t : frequency >= t}``,
``M = 1 + #{t : monetary >= t}``.

A score is *high* when it is at least the mean of that score over the scored persons
(``high = "mean"``) or at least a fixed cut-off (``high = "fixed"``). The class follows from
high/low of R, F, M (see :data:`CLASSES`).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from yunying.analytics.common import (
    DateRange,
    Source,
    Sql,
    as_float,
    as_int,
    fn,
    lit,
    run,
)
from yunying.analytics.local_periods import LocalPeriods
from yunying.audience.settings import AudienceSettings, RFMSettings
from yunying.audience.stages import day_number, local_today, person_key

if TYPE_CHECKING:
    from yunying.runtime import Runtime
    from yunying.state import Project

#: (R high, F high, M high) → (code, Chinese name, English name).
CLASSES: dict[tuple[bool, bool, bool], tuple[str, str, str]] = {
    (True, True, True): ("important_value", "重要价值客户", "important value"),
    (True, False, True): ("important_development", "重要发展客户", "important development"),
    (False, True, True): ("important_retention", "重要保持客户", "important retention"),
    (False, False, True): ("important_winback", "重要挽留客户", "important win-back"),
    (True, True, False): ("general_value", "一般价值客户", "general value"),
    (True, False, False): ("general_development", "一般发展客户", "general development"),
    (False, True, False): ("general_retention", "一般保持客户", "general retention"),
    (False, False, False): ("general_winback", "一般挽留客户", "general win-back"),
}
CLASS_CODES = tuple(c[0] for c in CLASSES.values())
CLASS_NAMES = {code: (zh, en) for code, zh, en in CLASSES.values()}
#: Scope in ``person_values`` written by :func:`store_rfm`.
SCOPE = "rfm"


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def purchase_condition(sql: Sql, events: list[str], amount_property: str | None) -> exp.Expr:
    """Purchase events (any event when ``events`` is empty) with a positive amount."""
    amount = amount_of(sql, amount_property)
    positive = exp.GT(this=amount, expression=lit(0))
    if not events:
        return positive
    return exp.and_(
        exp.In(this=_c("event"), expressions=[lit(e) for e in events]), positive, copy=False
    )


def amount_of(sql: Sql, amount_property: str | None) -> exp.Expr:
    """The amount of an event: the ``amount`` column, or a numeric property."""
    return _c("amount") if amount_property is None else sql.prop_number(amount_property)


def _case(cond: exp.Expr, then: exp.Expr, default: exp.Expr) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=cond, true=then)], default=default)


def _quintile(sql: Sql, column: str, descending: bool) -> exp.Expr:
    rank = exp.Window(
        this=exp.Anonymous(this="rank", expressions=[]),
        order=exp.Order(expressions=[exp.Ordered(this=_c(column), desc=descending)]),
    )
    n = exp.Window(this=exp.Count(this=exp.Star()))
    ratio = exp.Div(
        this=exp.Mul(
            this=lit(5.0), expression=exp.Paren(this=exp.Sub(this=rank, expression=lit(1)))
        ),
        expression=n,
    )
    floor = fn("floor", ratio)
    as_int64 = fn("toInt64", floor) if sql.ch else exp.cast(floor, "BIGINT", copy=False)
    return exp.Add(this=lit(1), expression=as_int64)


def _fixed(column: str, thresholds: list[float], at_most: bool) -> exp.Expr:
    total: exp.Expr = lit(1)
    for t in thresholds:
        cond = (
            exp.LTE(this=_c(column), expression=lit(float(t)))
            if at_most
            else exp.GTE(this=_c(column), expression=lit(float(t)))
        )
        total = exp.Add(this=total, expression=_case(cond, lit(1), lit(0)))
    return total


def rfm_window(as_of: date, rfm: RFMSettings, timezone: str) -> DateRange:
    """The local days whose purchases count."""
    return DateRange(as_of - timedelta(days=rfm.window_days - 1), as_of, timezone)


def rfm_sql(
    source: Source, project_id: int, settings: AudienceSettings, as_of: date, timezone: str
) -> exp.Select:
    """(person_id, recency, frequency, monetary, r, f, m, r_high, f_high, m_high) per buyer."""
    sql = Sql(source.dialect)
    rfm = settings.rfm
    window = rfm_window(as_of, rfm, timezone)
    start, end = window.utc_bounds()
    ts = _c("timestamp")
    purchases = (
        exp.select(
            exp.alias_(person_key(sql, _c("person_id")), "person_id", copy=False),
            exp.alias_(LocalPeriods(sql, timezone, start, end).day(ts), "day", copy=False),
            exp.alias_(amount_of(sql, settings.rfm_amount()), "amt", copy=False),
            copy=False,
        )
        .from_(source.scoped("events", project_id).subquery("e", copy=False), copy=False)
        .where(
            exp.and_(
                purchase_condition(sql, settings.rfm_events(), settings.rfm_amount()),
                sql.time_between(start, end),
                copy=False,
            ),
            copy=False,
        )
    )
    per = (
        exp.select(
            _c("person_id"),
            exp.alias_(
                exp.Sub(this=lit(day_number(as_of)), expression=exp.Max(this=_c("day"))),
                "recency",
                copy=False,
            ),
            exp.alias_(exp.Count(this=exp.Star()), "frequency", copy=False),
            exp.alias_(exp.Sum(this=_c("amt")), "monetary", copy=False),
            copy=False,
        )
        .from_(purchases.subquery("p", copy=False), copy=False)
        .group_by(_c("person_id"), copy=False)
    )
    if rfm.scoring == "quintile":
        r = _quintile(sql, "recency", descending=True)
        f = _quintile(sql, "frequency", descending=False)
        m = _quintile(sql, "monetary", descending=False)
    else:
        r = _fixed("recency", rfm.recency_thresholds, at_most=True)
        f = _fixed("frequency", rfm.frequency_thresholds, at_most=False)
        m = _fixed("monetary", rfm.monetary_thresholds, at_most=False)
    scored = exp.select(
        "person_id", "recency", "frequency", "monetary",
        exp.alias_(r, "r", copy=False), exp.alias_(f, "f", copy=False), exp.alias_(m, "m", copy=False),
    copy=False).from_(per.subquery("q", copy=False), copy=False)  # fmt: skip

    def high(score: str, cut: int) -> exp.Expr:
        if rfm.high == "mean":
            bar: exp.Expr = exp.Window(this=exp.Avg(this=_c(score)))
        else:
            bar = lit(cut)
        return _case(exp.GTE(this=_c(score), expression=bar), lit(1), lit(0))

    hs = rfm.high_scores
    return exp.select(
        "person_id", "recency", "frequency", "monetary", "r", "f", "m",
        exp.alias_(high("r", hs.r), "r_high", copy=False),
        exp.alias_(high("f", hs.f), "f_high", copy=False),
        exp.alias_(high("m", hs.m), "m_high", copy=False),
    copy=False).from_(scored.subquery("s", copy=False), copy=False)  # fmt: skip


def class_of(r_high: bool, f_high: bool, m_high: bool) -> str:
    """The class code of a high/low combination."""
    return CLASSES[(r_high, f_high, m_high)][0]


def person_rfm(
    source: Source, project_id: int, settings: AudienceSettings, as_of: date, timezone: str
) -> list[dict[str, Any]]:
    """One dict per scored person: person_id, recency, frequency, monetary, r, f, m, class."""
    out = []
    for pid, rec, freq, mon, r, f, m, rh, fh, mh in run(
        source, rfm_sql(source, project_id, settings, as_of, timezone)
    ):
        out.append(
            {
                "person_id": str(pid),
                "recency": as_int(rec),
                "frequency": as_int(freq),
                "monetary": as_float(mon) or 0.0,
                "r": as_int(r),
                "f": as_int(f),
                "m": as_int(m),
                "class": class_of(as_int(rh) == 1, as_int(fh) == 1, as_int(mh) == 1),
            }
        )
    return out


def rfm_report(
    source: Source, project_id: int, settings: AudienceSettings, as_of: date, timezone: str
) -> dict[str, Any]:
    """Class distribution with persons, share, revenue and revenue share, and the score means."""
    rows = person_rfm(source, project_id, settings, as_of, timezone)
    n = len(rows)
    revenue = sum(r["monetary"] for r in rows)
    window = rfm_window(as_of, settings.rfm, timezone)
    classes = []
    for (rh, fh, mh), (code, zh, en) in CLASSES.items():
        members = [r for r in rows if r["class"] == code]
        rev = sum(r["monetary"] for r in members)
        classes.append(
            {
                "class": code,
                "name_zh": zh,
                "name_en": en,
                "r_high": rh,
                "f_high": fh,
                "m_high": mh,
                "persons": len(members),
                "share": len(members) / n if n else None,
                "revenue": rev,
                "revenue_share": rev / revenue if revenue else None,
            }
        )
    return {
        "as_of": as_of.isoformat(),
        "window": {"date_from": window.date_from.isoformat(), "date_to": as_of.isoformat()},
        "scoring": settings.rfm.scoring,
        "high": settings.rfm.high,
        "means": {k: (sum(r[k] for r in rows) / n if n else None) for k in ("r", "f", "m")},
        "persons": n,
        "revenue": revenue,
        "classes": classes,
    }


def store_rfm(runtime: Runtime, project: Project, as_of: date | None = None) -> int:
    """Write every scored person's class to ``person_values`` scope ``rfm`` (label = class code,
    value = R*100 + F*10 + M); returns the number of persons."""
    from yunying.audience.settings import get_settings

    day = as_of or local_today(project.timezone)
    settings = get_settings(runtime.state, project.id)
    rows = person_rfm(runtime.store, project.id, settings, day, project.timezone)
    table = pa.table(
        {
            "person_id": pa.array([r["person_id"] for r in rows], pa.string()),
            "label": pa.array([r["class"] for r in rows], pa.string()),
            "value": pa.array(
                [float(r["r"] * 100 + r["f"] * 10 + r["m"]) for r in rows], pa.float64()
            ),
        }
    )
    runtime.store.replace_person_values(project.id, SCOPE, table)
    return len(rows)
