"""The metrics catalog against plain-Python references written from docs/metrics.md, on random
journeys written into DuckDB and ClickHouse; both engines must agree."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlglot import exp

from tests.analytics import reference as ref
from tests.analytics.conftest import (
    METRIC_DAYS,
    START,
    TZ,
    Dataset,
    make_dataset,
    metric_journeys,
)
from yunying.analytics import (
    CATALOG,
    DateRange,
    Field,
    InvalidQuery,
    MetricConfig,
    col,
    metric,
    metric_definition,
)
from yunying.runtime import Runtime

Event = dict[str, Any]
Cells = dict[str | None, tuple[float, float]]  # breakdown value -> (numerator, denominator)

RANGE = DateRange(START, START + timedelta(days=METRIC_DAYS - 1))
CFG = MetricConfig(conversion_steps=("app_install", "edit_video", "export_video"))


@pytest.fixture(scope="module")
def mj(tmp_path_factory: pytest.TempPathFactory, ch_runtime: Runtime) -> Iterator[Dataset]:
    """Metric journeys (see conftest.metric_journeys) with os and app_version read back too."""
    ds = make_dataset(tmp_path_factory.mktemp("metrics"), ch_runtime, metric_journeys(11))
    res = ds.duck.query(
        exp.select("uuid", "os", "app_version")
        .from_(ds.duck.scoped("events", ds.project_id).subquery("e"))
        .sql("duckdb")
    )
    extra = {str(u): (o, v) for u, o, v in res.rows}
    for e in ds.events:
        e["os"], e["app_version"] = extra[str(e["uuid"])]
    yield ds
    ds.runtime.close()


# -- references, from docs/metrics.md -------------------------------------------------------------


def _order(e: Event) -> tuple[datetime, str]:
    return (e["timestamp"], str(e["uuid"]))


def _b(e: Event, by: str | None) -> str | None:
    return None if by is None else e[by]


def _bounds(dr: DateRange) -> tuple[datetime, datetime]:
    return ref.bounds(dr.date_from, dr.date_to, dr.timezone)


def _day(e: Event) -> date:
    return ref.local_day(e["timestamp"], TZ)


def _revenue(e: Event, cfg: MetricConfig) -> bool:
    return e["event"] in cfg.revenue_events and e["amount"] is not None


def _add(cells: dict[Any, list[float]], key: Any, num: float, den: float) -> None:
    c = cells.setdefault(key, [0.0, 0.0])
    c[0] += num
    c[1] += den


def _done(cells: dict[Any, list[float]]) -> Cells:
    return {k: (v[0], v[1]) for k, v in cells.items()}


def ref_cohort(
    events: list[Event], cohort_range: DateRange, cfg: MetricConfig, by: str | None
) -> dict[str, Event]:
    """Person -> first-ever new-user event, for persons whose first one is in ``cohort_range``."""
    lo, hi = _bounds(cohort_range)
    firsts: dict[str, Event] = {}
    for e in sorted(events, key=_order):
        if cfg.new_user_event in (None, e["event"]) and e["person_id"] not in firsts:
            firsts[e["person_id"]] = e
    return {p: e for p, e in firsts.items() if lo <= e["timestamp"] < hi}


def ref_cohort_metric(
    name: str,
    events: list[Event],
    dr: DateRange,
    cfg: MetricConfig,
    by: str | None = None,
    cohort_range: DateRange | None = None,
) -> Cells:
    """new_users, activation_rate, retention_dN, ltv: the cohort of ``cohort_range`` (default
    the range), observed within the range ``dr``."""
    cohort = ref_cohort(events, cohort_range or dr, cfg, by)
    mine = ref.by_person(events)
    lo, hi = _bounds(dr)
    cells: dict[Any, list[float]] = {}
    for person, first in cohort.items():
        key = _b(first, by)
        t0 = first["timestamp"]
        evs = mine[person]
        if name == "new_users":
            _add(cells, key, 1, 1)
        elif name == "activation_rate":
            hit = any(
                e["event"] in cfg.activation_events
                and t0 <= e["timestamp"] <= t0 + timedelta(days=cfg.activation_window_days)
                for e in evs
            )
            _add(cells, key, int(hit), 1)
        elif name == "ltv":
            end = None if cfg.ltv_days is None else t0 + timedelta(days=cfg.ltv_days)
            rev = sum(
                e["amount"]
                for e in evs
                if _revenue(e, cfg)
                and t0 <= e["timestamp"]
                and (end is None or e["timestamp"] < end)
            )
            _add(cells, key, rev, 1)
        else:
            n = int(name.removeprefix("retention_d"))
            d = _day(first)
            if d + timedelta(days=n) > dr.date_to:
                continue
            hit = any(lo <= e["timestamp"] < hi and _day(e) == d + timedelta(days=n) for e in evs)
            _add(cells, key, int(hit), 1)
    return _done(cells)


def ref_activity_metric(
    name: str, events: list[Event], dr: DateRange, cfg: MetricConfig, by: str | None = None
) -> Cells:
    """paying_rate, arpu, arppu, repurchase_rate, k_factor over the persons active in ``dr``,
    each in the value of their first active event."""
    lo, hi = _bounds(dr)
    cells: dict[Any, list[float]] = {}
    for evs in ref.by_person(events).values():
        inside = sorted((e for e in evs if lo <= e["timestamp"] < hi), key=_order)
        if not inside:
            continue
        key = _b(inside[0], by)
        paid = [e for e in inside if _revenue(e, cfg) and e["amount"] > 0]
        revenue = sum(e["amount"] for e in inside if _revenue(e, cfg))
        accepted = sum(e["event"] == cfg.invite_accepted_event for e in inside)
        if name == "paying_rate":
            _add(cells, key, int(bool(paid)), 1)
        elif name == "arpu" or name == "arppu" and paid:
            _add(cells, key, revenue, 1)
        elif name == "repurchase_rate" and paid:
            _add(cells, key, int(len(paid) >= 2), 1)
        elif name == "k_factor":
            _add(cells, key, accepted, 1)
        elif name in ("arppu", "repurchase_rate"):
            cells.setdefault(key, [0.0, 0.0])
    return _done(cells)


def ref_churn(events: list[Event], dr: DateRange, by: str | None = None) -> Cells:
    plo, phi = _bounds(dr.previous())
    lo, hi = _bounds(dr)
    cells: dict[Any, list[float]] = {}
    for evs in ref.by_person(events).values():
        before = sorted((e for e in evs if plo <= e["timestamp"] < phi), key=_order)
        if before:
            gone = not any(lo <= e["timestamp"] < hi for e in evs)
            _add(cells, _b(before[0], by), int(gone), 1)
    return _done(cells)


def ref_conversion(
    events: list[Event], dr: DateRange, cfg: MetricConfig, by: str | None = None
) -> Cells:
    """Ordered funnel, steps with distinct event names: from each step-1 event in the range,
    take the earliest later (or simultaneous) event of each next step within the window."""
    lo, hi = _bounds(dr)
    window = timedelta(days=cfg.conversion_window_days)
    steps = cfg.conversion_steps
    cells: dict[Any, list[float]] = {}
    for evs in ref.by_person(events).values():
        evs = sorted(evs, key=_order)
        best, best_key = 0, None
        for e in evs:
            if e["event"] != steps[0] or not lo <= e["timestamp"] < hi:
                continue
            level, t = 1, e["timestamp"]
            for s in steps[1:]:
                nxt = [
                    x
                    for x in evs
                    if x["event"] == s and t <= x["timestamp"] <= e["timestamp"] + window
                ]
                if not nxt:
                    break
                t = min(x["timestamp"] for x in nxt)
                level += 1
            if level > best:
                best, best_key = level, _b(e, by)
        if best:
            _add(cells, best_key, int(best == len(steps)), 1)
    return _done(cells)


def _daily_active(events: list[Event], by: str | None) -> dict[tuple[date, Any], set[str]]:
    out: dict[tuple[date, Any], set[str]] = defaultdict(set)
    for e in events:
        out[(_day(e), _b(e, by))].add(e["person_id"])
    return out


def ref_activity_average(
    name: str, events: list[Event], dr: DateRange, by: str | None = None
) -> Cells:
    """dau/wau/mau (mean over days, trends semantics: a person counts in every value they had
    an event with) and stickiness (Σ DAU / Σ MAU)."""
    daily = _daily_active(events, by)
    keys = {k for _, k in daily} if by else {None}
    cells: dict[Any, list[float]] = {}
    for key in keys:
        for i in range(dr.days):
            d = dr.date_from + timedelta(days=i)

            def rolling(n: int, d: date = d, key: Any = key) -> int:
                seen: set[str] = set()
                for k in range(n):
                    seen |= daily.get((d - timedelta(days=k), key), set())
                return len(seen)

            if name == "stickiness":
                _add(cells, key, rolling(1), rolling(30))
            else:
                _add(cells, key, rolling({"dau": 1, "wau": 7, "mau": 30}[name]), 1)
    return _done(cells)


def ref_gmv(events: list[Event], dr: DateRange, cfg: MetricConfig, by: str | None = None) -> Cells:
    lo, hi = _bounds(dr)
    cells: dict[Any, list[float]] = {}
    for e in events:
        if _revenue(e, cfg) and lo <= e["timestamp"] < hi:
            _add(cells, _b(e, by), e["amount"], 0)
    return _done(cells)


def reference(
    name: str, events: list[Event], dr: DateRange, cfg: MetricConfig, by: str | None = None
) -> Cells:
    """Reference cells of any catalog metric over ``dr``."""
    if name in ("new_users", "activation_rate", "ltv") or name.startswith("retention_d"):
        return ref_cohort_metric(name, events, dr, cfg, by)
    if name in ("paying_rate", "arpu", "arppu", "repurchase_rate", "k_factor"):
        return ref_activity_metric(name, events, dr, cfg, by)
    if name == "churn_rate":
        return ref_churn(events, dr, by)
    if name == "conversion_rate":
        return ref_conversion(events, dr, cfg, by)
    if name == "gmv":
        return ref_gmv(events, dr, cfg, by)
    return ref_activity_average(name, events, dr, by)


def ref_value(name: str, cells: Cells, dr: DateRange) -> float | None:
    num = sum(v[0] for v in cells.values())
    if name in ("new_users", "gmv"):
        return num
    if name in ("dau", "wau", "mau"):
        return num / dr.days
    den = sum(v[1] for v in cells.values())
    return num / den if den else None


def both(ds: Dataset, name: str, dr: DateRange, cfg: MetricConfig = CFG, **kw: Any) -> Any:
    """Run on DuckDB and ClickHouse, check they agree, return the DuckDB result."""
    duck = metric(ds.duck, ds.project_id, name, dr, cfg, **kw)
    ch = metric(ds.chdb, ds.ch_project_id, name, dr, cfg, **kw)
    ref.assert_close(duck.as_dict(), ch.as_dict())
    return duck


ALL = [*CATALOG, "retention_d7"]


def test_catalog_covers_brief_section_3() -> None:
    wanted = {"new_users", "activation_rate", "dau", "wau", "mau", "stickiness", "retention_d1",
              "churn_rate", "conversion_rate", "paying_rate", "gmv", "arpu", "arppu",
              "repurchase_rate", "ltv", "k_factor"}  # fmt: skip
    assert wanted <= set(CATALOG)
    for d in CATALOG.values():
        assert d.label_zh and d.label_en and d.definition and d.unit and d.needs
        assert d.kind in ("additive", "ratio")
    assert metric_definition("retention_d30").label_zh == "30日留存率"


@pytest.mark.parametrize("name", ALL)
def test_metric_equals_reference_overall_and_by_channel(mj: Dataset, name: str) -> None:
    got = both(mj, name, RANGE, breakdown=col("channel"))
    want = reference(name, mj.events, RANGE, CFG)
    assert got.value == pytest.approx(ref_value(name, want, RANGE), rel=1e-9, abs=1e-9)
    assert got.value is not None and (name == "k_factor" or got.value != 0)
    by = reference(name, mj.events, RANGE, CFG, "channel")
    segs = {p.key: p for p in got.segments}
    assert set(segs) == set(by)
    for key, (num, den) in by.items():
        assert segs[key].numerator == pytest.approx(num, abs=1e-9), key
        if CATALOG.get(name, CATALOG["retention_d1"]).kind == "ratio":
            assert segs[key].denominator == pytest.approx(den), key


@pytest.mark.parametrize(
    "name",
    ["new_users", "retention_d1", "ltv", "paying_rate", "k_factor", "churn_rate", "dau", "gmv"],
)  # fmt: skip
def test_weekly_values_equal_reference(mj: Dataset, name: str) -> None:
    dr = DateRange(START + timedelta(days=2), RANGE.date_to)  # a Wednesday: first week is partial
    got = both(mj, name, dr, interval="week")
    assert [p.key for p in got.periods] == ["2024-03-04", "2024-03-11", "2024-03-18", "2024-03-25"]
    for k, p in enumerate(got.periods):
        lo = max(dr.date_from, START + timedelta(days=7 * k))
        sub = DateRange(lo, START + timedelta(days=7 * k + 6), TZ)
        if name in ("new_users", "retention_d1", "ltv"):
            cells = ref_cohort_metric(name, mj.events, dr, CFG, cohort_range=sub)
        else:
            cells = reference(name, mj.events, sub, CFG)
        assert p.value == pytest.approx(ref_value(name, cells, sub), abs=1e-9), p.key


def test_configured_events(mj: Dataset) -> None:
    """Another project's naming: sign-ups make new users, check-ins activate within a day,
    activity is editing only (payments and invitations still count), LTV without a horizon."""
    cfg = MetricConfig(
        new_user_event="sign_up",
        activation_events=("check_in", "invite_sent"),
        activation_window_days=1,
        active_events=("edit_video",),
        ltv_days=None,
    )
    active = {"edit_video", "purchase_membership", "invite_sent", "invite_accepted"}
    activity = [e for e in mj.events if e["event"] in active]
    for name, events in [
        ("activation_rate", mj.events),
        ("ltv", mj.events),
        ("retention_d1", None),
        ("dau", activity),
        ("paying_rate", activity),
    ]:
        got = both(mj, name, RANGE, cfg, breakdown=col("os"))
        want: float | None
        if events is None:  # cohort from all events, returns from activity only
            firsts = ref_cohort(mj.events, RANGE, cfg, None)
            returns = {(e["person_id"], _day(e)) for e in activity}
            pairs = [
                (p, _day(e)) for p, e in firsts.items()
                if _day(e) + timedelta(days=1) <= RANGE.date_to
            ]  # fmt: skip
            want = sum((p, d + timedelta(days=1)) in returns for p, d in pairs) / len(pairs)
        else:
            want = ref_value(name, reference(name, events, RANGE, cfg), RANGE)
        assert got.value == pytest.approx(want, abs=1e-9), name
        assert sum(s.numerator for s in got.segments) == pytest.approx(got.numerator), name


def test_k_factor_components(mj: Dataset) -> None:
    got = both(mj, "k_factor", RANGE)
    lo, hi = _bounds(RANGE)
    inside = [e for e in mj.events if lo <= e["timestamp"] < hi]
    sent = sum(e["event"] == "invite_sent" for e in inside)
    accepted = sum(e["event"] == "invite_accepted" for e in inside)
    users = len({e["person_id"] for e in inside})
    c = got.components
    assert (c["invites_sent"], c["invites_accepted"], c["active_users"]) == (sent, accepted, users)
    assert c["invites_per_user"] == pytest.approx(sent / users)
    assert c["acceptance_rate"] == pytest.approx(accepted / sent)
    assert got.value == pytest.approx(c["invites_per_user"] * c["acceptance_rate"])


def test_local_day_decides_new_users_and_retention(small: Callable[..., Dataset]) -> None:
    """16:30 UTC on 3 March is 00:30 on 4 March in Shanghai: a new user of the 4th, and active
    the next local day at 23:59 on the 5th (15:59 UTC)."""

    def ev(name: str, who: str, at: datetime, uid: int, **props: Any) -> dict[str, Any]:
        return {"event": name, "distinct_id": who, "timestamp": at.isoformat() + "+00:00",
                "uuid": f"00000000-0000-0000-0000-{uid:012d}", "properties": props}  # fmt: skip

    ds = small(
        [
            ev("app_install", "a", datetime(2024, 3, 3, 16, 30), 1),
            ev("edit_video", "a", datetime(2024, 3, 5, 15, 59), 2),
            ev("app_install", "b", datetime(2024, 3, 3, 15, 59), 3),  # 23:59 on the 3rd
            ev("edit_video", "b", datetime(2024, 3, 4, 17, 0), 4),
            ev("purchase_membership", "a", datetime(2024, 3, 4, 1, 0), 5, **{"$amount": 30}),
            ev("purchase_membership", "a", datetime(2024, 3, 4, 2, 0), 6, **{"$amount": 0}),
        ]
    )
    dr = DateRange(date(2024, 3, 4), date(2024, 3, 6))
    for store, pid in ds.both():
        assert metric(store, pid, "new_users", dr).value == 1
        assert metric(store, pid, "retention_d1", dr).value == 1.0
        assert metric(store, pid, "ltv", dr).value == 30
        assert metric(store, pid, "paying_rate", dr).value == 0.5  # b is active, did not pay
        assert metric(store, pid, "repurchase_rate", dr).value == 0.0  # the 0 is not a purchase
        utc = DateRange(date(2024, 3, 4), date(2024, 3, 6), "UTC")
        assert metric(store, pid, "new_users", utc).value == 0


def test_invalid_requests_are_refused(mj: Dataset) -> None:
    with pytest.raises(InvalidQuery):
        metric(mj.duck, mj.project_id, "dau_per_cat", RANGE)
    with pytest.raises(InvalidQuery):
        metric(mj.duck, mj.project_id, "dau", RANGE, interval="hour")
    with pytest.raises(InvalidQuery):
        MetricConfig(conversion_steps=("app_install",))
    with pytest.raises(InvalidQuery):
        MetricConfig(activation_window_days=0)
    assert isinstance(col("channel"), Field)
