"""Segment fixtures: random persons, distinct ids, events and person values bulk-loaded into
DuckDB and embedded ClickHouse (chdb), and a plain-Python evaluation of rule trees over the same
generated data (the independent reference the compiled SQL is checked against)."""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from tests.conftest import chdb_url
from yunying.config import load_settings
from yunying.runtime import Runtime
from yunying.state import create_project
from yunying.store.duckdb_store import ARROW_EVENTS

TZ = "Asia/Shanghai"
#: "now" of the generated world: events spread around it, some after it.
NOW = datetime(2024, 3, 25, 9, 30, tzinfo=UTC)
EVENTS = ("app_install", "sign_up", "edit_video", "export_video", "purchase_membership")
CITIES = ("北京", "上海", "深圳", "成都")
PLANS = ("free", "pro", "vip")
CHANNELS = ("douyin", "kuaishou", "zhihu", None)
STAGE_LABELS = ("new", "active", "retained", "silent", "churned", "returned")
RFM_LABELS = ("重要价值客户", "重要发展客户", "一般挽留客户")
BANDS = ("low", "medium", "high")


@dataclass
class World:
    """Generated persons, their distinct ids, events and person values (the truth)."""

    persons: dict[str, dict[str, Any]]  # id -> properties
    distinct: dict[str, str]  # distinct id -> person id
    events: list[dict[str, Any]]  # raw: uuid, event, distinct_id, person_id, timestamp, props...
    values: dict[str, dict[str, str | None]] = field(default_factory=dict)  # scope -> pid -> label

    def resolved(self) -> dict[str, list[dict[str, Any]]]:
        """Events by resolved person (distinct id mapping first, the event's own id else)."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in self.events:
            out[self.distinct.get(e["distinct_id"], e["person_id"])].append(e)
        return out


def make_world(seed: int, persons: int = 250) -> World:
    """Random persons with assorted property types, one or two distinct ids each, events around
    NOW (some after it, some with a stale person id), and random stage/RFM/CLV/tag values."""
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(persons)]
    props: dict[str, dict[str, Any]] = {}
    distinct: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    for n, pid in enumerate(ids):
        p: dict[str, Any] = {}
        if rng.random() < 0.8:
            p["city"] = rng.choice(CITIES)
        if rng.random() < 0.7:
            p["age"] = rng.randrange(16, 60)
        if rng.random() < 0.5:
            p["vip"] = rng.random() < 0.5
        if rng.random() < 0.4:
            p["score"] = rng.choice([1.5, 2.25, 7, 9.75])
        if rng.random() < 0.2:
            p["city"] = None  # JSON null: not set
        if rng.random() < 0.1:
            p["hobbies"] = ["video"]  # an array: not a comparable value
        if rng.random() < 0.5:
            p["nickname"] = rng.choice(["剪辑达人", "video fan", "小明", "editor-pro"])
        props[pid] = p
        dids = [f"d{seed}-{n}"] + ([f"u{seed}-{n}"] if rng.random() < 0.3 else [])
        for d in dids:
            distinct[d] = pid
        stale = str(uuid.UUID(int=rng.getrandbits(128)))  # a merged-away person id
        t = NOW - timedelta(days=rng.uniform(0, 45))
        for _ in range(rng.choice([0, 1, 2, 4, 8, 14])):
            t = t + timedelta(seconds=rng.choice([0, 1, 3600, 20_000, 86_400, 3 * 86_400]))
            if rng.random() < 0.05:
                t = NOW + timedelta(minutes=rng.randrange(1, 3000))  # after now
            name = rng.choices(EVENTS, weights=[2, 2, 5, 3, 2])[0]
            ep: dict[str, Any] = {"plan": rng.choice(PLANS)}
            if rng.random() < 0.5:
                ep["duration_s"] = rng.randrange(5, 300)
            if rng.random() < 0.2:
                ep["ok"] = rng.random() < 0.5
            amount = None
            if name == "purchase_membership":
                amount = rng.choice([6.0, 12.5, 30.0, 68.0, 0.0])
            events.append(
                {
                    "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
                    "event": name,
                    "distinct_id": rng.choice(dids),
                    "person_id": stale if rng.random() < 0.3 else pid,
                    "timestamp": t.replace(tzinfo=None, microsecond=0),
                    "properties": ep,
                    "channel": rng.choice(CHANNELS),
                    "amount": amount,
                }
            )
    values: dict[str, dict[str, str | None]] = {}
    for scope, labels in (
        ("stage", STAGE_LABELS),
        ("rfm", RFM_LABELS),
        ("clv:churn_risk", BANDS),
        ("clv:value_band", BANDS),
    ):
        values[scope] = {pid: rng.choice(labels) for pid in ids if rng.random() < 0.8}
    for scope in ("tag:heavy", "tag:剪辑", "segment:901", "segment:902"):
        values[scope] = {pid: None for pid in ids if rng.random() < 0.35}
    return World(props, distinct, events, values)


# -- loading ----------------------------------------------------------------------------------------


def load_world(runtime: Runtime, project_id: int, world: World) -> None:
    """Bulk-load the world into the events engine of ``runtime``."""
    store = runtime.store
    n = len(world.events)
    store.bulk_insert_arrow(
        "raw_events",
        pa.Table.from_pydict(
            {
                "project_id": [project_id] * n,
                "uuid": [e["uuid"] for e in world.events],
                "event": [e["event"] for e in world.events],
                "distinct_id": [e["distinct_id"] for e in world.events],
                "person_id": [e["person_id"] for e in world.events],
                "timestamp": [e["timestamp"] for e in world.events],
                "received_at": [e["timestamp"] for e in world.events],
                "properties": [json.dumps(e["properties"]) for e in world.events],
                "channel": [e["channel"] for e in world.events],
                "utm_source": [None] * n,
                "os": [None] * n,
                "app_version": [None] * n,
                "device_id": [None] * n,
                "ip": [None] * n,
                "amount": [e["amount"] for e in world.events],
            },
            schema=ARROW_EVENTS,
        ),
    )
    pids = list(world.persons)
    store.bulk_insert_arrow(
        "raw_persons",
        pa.table(
            {
                "project_id": pa.array([project_id] * len(pids), pa.int32()),
                "id": pa.array(pids, pa.string()),
                "created_at": pa.array([datetime(2024, 1, 1)] * len(pids), pa.timestamp("us")),
                "properties": pa.array([json.dumps(world.persons[p]) for p in pids], pa.string()),
                "is_identified": pa.array([False] * len(pids), pa.bool_()),
            }
        ),
    )
    store.bulk_insert_arrow(
        "raw_person_distinct_ids",
        pa.table(
            {
                "project_id": pa.array([project_id] * len(world.distinct), pa.int32()),
                "distinct_id": pa.array(list(world.distinct), pa.string()),
                "person_id": pa.array(list(world.distinct.values()), pa.string()),
            }
        ),
    )
    for scope, rows in world.values.items():
        store.replace_person_values(
            project_id,
            scope,
            pa.table(
                {
                    "person_id": pa.array(list(rows), pa.string()),
                    "label": pa.array(list(rows.values()), pa.string()),
                }
            ),
        )


@dataclass
class Loaded:
    """The same world in DuckDB and in ClickHouse."""

    world: World
    duck: Runtime
    duck_pid: int
    ch: Runtime
    ch_pid: int

    def both(self) -> list[tuple[Runtime, int]]:
        return [(self.duck, self.duck_pid), (self.ch, self.ch_pid)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """A generated world bulk-loaded into both engines (module-wide, read-mostly)."""
    pytest.importorskip("chdb")
    root = tmp_path_factory.mktemp("world")
    world = make_world(11)
    duck = Runtime.open(load_settings(data_dir=root / "duck"))
    ch = Runtime.open(load_settings(data_dir=root / "ch", events_url=chdb_url(root)))
    dp = create_project(duck.state, "短视频剪辑", TZ).project.id
    cp = create_project(ch.state, "短视频剪辑", TZ).project.id
    load_world(duck, dp, world)
    load_world(ch, cp, world)
    yield Loaded(world, duck, dp, ch, cp)
    duck.close()
    ch.close()


# -- the reference ----------------------------------------------------------------------------------


def _json_text(value: Any) -> str | None:
    """What the analytics' text of a JSON value is: strings as-is, numbers and booleans as JSON
    text, null/arrays/objects none."""
    if value is None or isinstance(value, list | dict):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _json_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _want(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def filter_holds(op: str, value: Any, text: str | None, number: float | None) -> bool:
    """The analytics filter semantics, written out in Python."""
    if op in ("gt", "gte", "lt", "lte"):
        if number is None:
            return False
        v = float(value)
        return {"gt": number > v, "gte": number >= v, "lt": number < v, "lte": number <= v}[op]
    if op == "is_set":
        return text is not None
    if op == "is_not_set":
        return text is None
    if op == "eq":
        return text is not None and text == _want(value)
    if op == "neq":
        return text is None or text != _want(value)
    if op == "in":
        return text is not None and text in {_want(v) for v in value}
    if op == "not_in":
        return text is None or text not in {_want(v) for v in value}
    if op == "contains":
        return text is not None and _want(value) in text
    raise AssertionError(op)


def event_value(e: dict[str, Any], f: dict[str, Any]) -> tuple[str | None, float | None]:
    kind, name = f["kind"], f["name"]
    if kind == "column":
        v = e.get(name)
        if name == "amount":
            return (None if v is None else _json_text(int(v) if v == int(v) else v)), v
        return v, None
    v = e["properties"].get(name)
    return _json_text(v), _json_number(v)


def _field(spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        from yunying.analytics.common import COLUMNS

        return {"kind": "column" if spec in COLUMNS else "property", "name": spec}
    return {"kind": spec.get("kind", "property"), "name": spec["name"]}


def event_matches(e: dict[str, Any], rule: dict[str, Any]) -> bool:
    if rule.get("event") is not None and e["event"] != rule["event"]:
        return False
    for f in rule.get("filters", []):
        text, number = event_value(e, _field(f["field"]))
        if not filter_holds(f.get("op", "eq"), f.get("value"), text, number):
            return False
    return True


def window_bounds(
    window: dict[str, Any] | None, now: datetime, tz: str
) -> tuple[datetime | None, datetime]:
    """[start, end) in naive UTC, written independently of the code under test."""
    zone = ZoneInfo(tz)
    now_utc = now.astimezone(UTC).replace(tzinfo=None)

    def midnight(d: date) -> datetime:
        return datetime.combine(d, time(0), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)

    if window is None:
        return None, now_utc
    if "last_days" in window:
        today = now.astimezone(zone).date()
        return midnight(today - timedelta(days=window["last_days"] - 1)), now_utc
    start = end = None
    if "from" in window:
        start = midnight(date.fromisoformat(window["from"]))
    if "after" in window:
        start = midnight(date.fromisoformat(window["after"]) + timedelta(days=1))
    if "to" in window:
        end = midnight(date.fromisoformat(window["to"]) + timedelta(days=1))
    if "before" in window:
        end = midnight(date.fromisoformat(window["before"]))
    return start, now_utc if end is None else min(end, now_utc)


def inside(ts: datetime, bounds: tuple[datetime | None, datetime]) -> bool:
    start, end = bounds
    return (start is None or ts >= start) and ts < end


def evaluate(
    rule: dict[str, Any], pid: str, world: World, evs: list[dict[str, Any]], now: datetime
) -> bool:
    """Whether person ``pid`` matches ``rule`` (JSON form), in plain Python."""
    kind = rule["type"]
    if kind == "and":
        return all(evaluate(r, pid, world, evs, now) for r in rule["rules"])
    if kind == "or":
        return any(evaluate(r, pid, world, evs, now) for r in rule["rules"])
    if kind == "not":
        return not evaluate(rule["rule"], pid, world, evs, now)
    now_utc = now.astimezone(UTC).replace(tzinfo=None)
    if kind == "property":
        v = world.persons[pid].get(rule["name"])
        return filter_holds(rule.get("op", "eq"), rule.get("value"), _json_text(v), _json_number(v))
    if kind == "event":
        b = window_bounds(rule.get("window"), now, TZ)
        n = sum(1 for e in evs if event_matches(e, rule) and inside(e["timestamp"], b))
        times = rule.get("times", 1)
        ok = {"at_least": n >= times, "at_most": n <= times, "exactly": n == times}[
            rule.get("count", "at_least")
        ]
        return ok if rule.get("did", True) else not ok
    if kind in ("first_time", "last_time"):
        stamps = [
            e["timestamp"] for e in evs if event_matches(e, rule) and e["timestamp"] < now_utc
        ]
        if not stamps:
            return False
        at = min(stamps) if kind == "first_time" else max(stamps)
        return inside(at, window_bounds(rule["window"], now, TZ))
    if kind == "aggregate":
        b = window_bounds(rule.get("window"), now, TZ)
        f = _field(rule.get("field", {"kind": "column", "name": "amount"}))
        vals = [
            event_value(e, f)[1]
            for e in evs
            if event_matches(e, rule) and inside(e["timestamp"], b)
        ]
        nums = [v for v in vals if v is not None]
        math = rule.get("math", "sum")
        got: float | None
        if math == "sum":
            got = sum(nums)
        elif not nums:
            got = None
        else:
            got = {"avg": sum(nums) / len(nums), "min": min(nums), "max": max(nums)}[math]
        if got is None:
            return False
        v = float(rule["value"])
        op = rule.get("op", "gte")
        return {"eq": abs(got - v) < 1e-9, "neq": abs(got - v) >= 1e-9, "gt": got > v,
                "gte": got >= v - 1e-9, "lt": got < v, "lte": got <= v + 1e-9}[op]  # fmt: skip
    if kind in ("stage", "rfm", "clv"):
        scope = kind if kind != "clv" else f"clv:{rule['band']}"
        return world.values.get(scope, {}).get(pid) in set(rule["in"])
    if kind == "tag":
        return pid in world.values.get(f"tag:{rule['name']}", {})
    if kind == "segment":
        return pid in world.values.get(f"segment:{rule['id']}", {})
    raise AssertionError(kind)


def reference_members(world: World, rule: dict[str, Any], now: datetime = NOW) -> list[str]:
    """The persons matching ``rule``, evaluated in Python over the generated world."""
    by_person = world.resolved()
    return sorted(p for p in world.persons if evaluate(rule, p, world, by_person.get(p, []), now))


def fresh(tmp: Path, name: str = "短视频剪辑") -> tuple[Runtime, int]:
    """A new DuckDB installation with one project."""
    rt = Runtime.open(load_settings(data_dir=tmp))
    return rt, create_project(rt.state, name, TZ).project.id
