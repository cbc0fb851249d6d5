"""Data and plain-Python references for the audience report tests (stages, RFM, persona,
profile): journeys with long pauses (churn and comeback), merges, purchases and platform-only
persons, written through the real writer into DuckDB and embedded ClickHouse."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from tests.analytics.conftest import Dataset, iso
from yunying.audience.rfm import CLASSES
from yunying.audience.settings import AudienceSettings

TZ = "Asia/Shanghai"
START = date(2024, 1, 1)
SPAN = 120  # days of generated activity
CHANNELS = ("douyin", "kuaishou", "zhihu", "bilibili", None)
OSES = ("iOS", "Android", "HarmonyOS")
CITIES = ("北京", "上海", "成都", None)
EVENTS = ("edit_video", "export_video", "check_in", "view_content")


def local_day(ts: datetime, tz: str = TZ) -> date:
    """The local date of a naive-UTC instant."""
    return ts.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).date()


def at_local(day: date, seconds: int, tz: str = TZ) -> str:
    """ISO UTC text of ``seconds`` after local midnight of ``day``."""
    local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)) + timedelta(seconds=seconds)
    return iso(local.astimezone(UTC).replace(tzinfo=None))


def raw(name: str, who: str, when: str, rng: random.Random, **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": who,
        "timestamp": when,
        "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
        "properties": props,
    }


def lifecycle_journeys(seed: int, persons: int = 150) -> list[dict[str, Any]]:
    """Persons active on scattered local days over SPAN days: short gaps, week-long pauses and
    pauses past the churn threshold (some come back), events near local midnight, anonymous
    devices merged by $identify, purchases (some refunds / zero amounts), person properties,
    and a few persons with platform events only."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for p in range(persons):
        device, user = f"ldev-{seed}-{p}", f"luser-{seed}-{p}"
        channel = rng.choice(CHANNELS)
        os_name = rng.choice(OSES)
        city = rng.choice(CITIES)
        plan = rng.choice(["free", "pro", "vip"])
        if rng.random() < 0.04:  # platform events only: a person with no activity
            out.append(raw("$set", device, at_local(START, rng.randrange(86400), TZ), rng,
                           **{"$set": {"plan": plan}}))  # fmt: skip
            continue
        day = rng.randrange(0, SPAN)
        days = [day]
        for _ in range(rng.randrange(0, 14)):
            day += rng.choice([0, 1, 1, 2, 3, 5, 6, 7, 8, 13, 29, 30, 31, 32, 45])
            if day >= SPAN + 10:
                break
            days.append(day)
        identify_at = rng.randrange(len(days)) if rng.random() < 0.4 else None
        current = device
        for i, d in enumerate(days):
            local = START + timedelta(days=d)
            secs = rng.choice([0, 1, 86399, 86398, rng.randrange(86400), rng.randrange(86400)])
            when = at_local(local, secs)
            props: dict[str, Any] = {"$os": os_name, "plan": plan}
            if channel and rng.random() < 0.8:
                props["$channel"] = channel
            if city:
                props["$city"] = city
            props["$device_type"] = "phone" if os_name != "iOS" or p % 3 else "tablet"
            if i == 0:
                props["$set"] = {"plan": plan, "age_band": rng.choice(["18-24", "25-34", "35+"])}
            if identify_at is not None and i == identify_at:
                out.append(raw("$identify", user, when, rng, **{"$anon_distinct_id": device}))
                current = user
            for _ in range(rng.randrange(1, 4)):
                out.append(raw(rng.choice(EVENTS), current, when, rng, **props))
            if rng.random() < 0.25:
                amount = rng.choice([6, 12.5, 30, 30, 68, 128, 0, -30])
                out.append(raw("purchase_membership", current, when, rng,
                               **{**props, "$amount": amount, "price": amount * 2}))  # fmt: skip
    return out


# -- references -------------------------------------------------------------------------------------


def activity_days(
    events: list[dict[str, Any]], s: AudienceSettings, tz: str = TZ
) -> dict[str, set[date]]:
    """Local days with an activity event, per person."""
    out: dict[str, set[date]] = defaultdict(set)
    for e in events:
        name = e["event"]
        if s.activity.events:
            counts = name in s.activity.events
        else:
            counts = s.activity.include_platform or not name.startswith("$")
        if counts:
            out[str(e["person_id"])].add(local_day(e["timestamp"], tz))
    return out


def ref_stage(days: set[date], as_of: date, s: AudienceSettings) -> str | None:
    """The stage as of ``as_of`` by walking day by day from the first active day, remembering
    when the person last came back from being churned."""
    lc = s.lifecycle
    seen = sorted(d for d in days if d <= as_of)
    if not seen:
        return None
    first = seen[0]
    last_active = first
    churned_yesterday = False
    came_back: date | None = None
    day = first
    while day <= as_of:
        if day in days:
            if churned_yesterday:
                came_back = day
            last_active = day
        churned_yesterday = (day - last_active).days >= lc.churned_days
        day += timedelta(days=1)
    since = (as_of - last_active).days
    if since >= lc.churned_days:
        return "churned"
    if since >= lc.silent_days:
        return "silent"
    if (as_of - first).days < lc.new_days:
        return "new"
    if came_back is not None and (as_of - came_back).days < lc.returned_days:
        return "returned"
    window = {as_of - timedelta(days=k) for k in range(lc.active_window_days)}
    if len(window & days) >= lc.active_min_days:
        return "active"
    return "retained"


def ref_stages(
    events: list[dict[str, Any]], s: AudienceSettings, as_of: date, tz: str = TZ
) -> dict[str, str]:
    out = {}
    for pid, days in activity_days(events, s, tz).items():
        stage = ref_stage(days, as_of, s)
        if stage is not None:
            out[pid] = stage
    return out


def ref_rfm(
    events: list[dict[str, Any]], s: AudienceSettings, as_of: date, tz: str = TZ
) -> dict[str, dict[str, Any]]:
    """Per buyer: recency, frequency, monetary, scores and class, computed from the definition."""
    names = s.rfm_events()
    prop = s.rfm_amount()
    first = as_of - timedelta(days=s.rfm.window_days - 1)
    buys: dict[str, list[tuple[date, float]]] = defaultdict(list)
    for e in events:
        if names and e["event"] not in names:
            continue
        if prop is None:
            amount = e["amount"]
        else:
            props = e["properties"]
            props = orjson.loads(props) if isinstance(props, str) else props or {}
            v = props.get(prop)
            amount = v if isinstance(v, int | float) and not isinstance(v, bool) else None
        if amount is None or amount <= 0:
            continue
        d = local_day(e["timestamp"], tz)
        if first <= d <= as_of:
            buys[str(e["person_id"])].append((d, float(amount)))
    base: dict[str, dict[str, Any]] = {
        pid: {
            "recency": (as_of - max(d for d, _ in b)).days,
            "frequency": len(b),
            "monetary": sum(a for _, a in b),
        }
        for pid, b in buys.items()
    }
    n = len(base)
    rfm = s.rfm
    for x in base.values():
        if rfm.scoring == "quintile":
            worse_r = sum(1 for y in base.values() if y["recency"] > x["recency"])
            worse_f = sum(1 for y in base.values() if y["frequency"] < x["frequency"])
            worse_m = sum(1 for y in base.values() if y["monetary"] < x["monetary"])
            x["r"], x["f"], x["m"] = (1 + (5 * w) // n for w in (worse_r, worse_f, worse_m))
        else:
            x["r"] = 1 + sum(1 for t in rfm.recency_thresholds if x["recency"] <= t)
            x["f"] = 1 + sum(1 for t in rfm.frequency_thresholds if x["frequency"] >= t)
            x["m"] = 1 + sum(1 for t in rfm.monetary_thresholds if x["monetary"] >= t)
    bars: dict[str, float] = {}
    for k in ("r", "f", "m"):
        if rfm.high == "mean":
            bars[k] = sum(x[k] for x in base.values()) / n if n else 0.0
        else:
            bars[k] = getattr(rfm.high_scores, k)
    for x in base.values():
        highs = tuple(x[k] >= bars[k] for k in ("r", "f", "m"))
        x["class"] = CLASSES[(highs[0], highs[1], highs[2])][0]
    return base


def ds_events(ds: Dataset) -> list[dict[str, Any]]:
    """The resolved events of a dataset (read back from DuckDB)."""
    return ds.events


def person_ids(store: Any, project_id: int) -> dict[str, str]:
    """distinct id → person id on one engine (person ids differ between the two projects)."""
    from sqlglot import exp

    from yunying.analytics.common import Sql, run

    sql = Sql(store.dialect)
    tree = exp.select("distinct_id", sql.text(exp.column("person_id"))).from_(
        store.scoped("person_distinct_ids", project_id).subquery("d")
    )
    return {str(d): str(p) for d, p in run(store, tree)}
