"""Analytics fixtures: random journeys written through the real ingestion writer into DuckDB and
into embedded ClickHouse (chdb), so every analysis can be run and compared on both engines."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlglot import exp

from tests.analytics.reference import assert_close
from tests.conftest import chdb_url
from yunying.analytics import funnel_pass
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import create_project

_names = itertools.count()

TZ = "Asia/Shanghai"
START = date(2024, 3, 4)  # a Monday
DAYS = 21
EVENTS = ("app_install", "sign_up", "edit_video", "export_video", "purchase_membership")


@pytest.fixture(scope="module")
def ch_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """An installation on embedded ClickHouse (chdb), shared by a module: one project per dataset
    (chdb allows one data directory per process at a time)."""
    pytest.importorskip("chdb")
    root = tmp_path_factory.mktemp("ch")
    rt = Runtime.open(load_settings(data_dir=root / "data", events_url=chdb_url(root)))
    yield rt
    rt.close()


@dataclass
class Dataset:
    """The same raw events written through the real writer into DuckDB and into ClickHouse."""

    runtime: Runtime
    project_id: int
    ch: Runtime
    ch_project_id: int
    events: list[dict[str, Any]]  # the resolved events relation, read back from DuckDB

    @property
    def duck(self) -> Any:
        return self.runtime.store

    @property
    def chdb(self) -> Any:
        return self.ch.store

    def both(self) -> list[tuple[Any, int]]:
        """(store, project id) on each engine."""
        return [(self.duck, self.project_id), (self.chdb, self.ch_project_id)]


def iso(ts: datetime) -> str:
    """A UTC instant as the ISO text clients send."""
    return ts.replace(tzinfo=UTC).isoformat()


def make_dataset(tmp: Path, ch: Runtime, raws: list[dict[str, Any]], timezone: str = TZ) -> Dataset:
    """Write raw events through the real writer of both engines; read DuckDB's back."""
    runtime = Runtime.open(load_settings(data_dir=tmp / "data"))
    pid = create_project(runtime.state, "短视频剪辑", timezone).project.id
    ch_pid = create_project(ch.state, f"p{next(_names)}", timezone).project.id
    batch = validate_batch(raws, now=datetime(2030, 1, 1))
    assert not batch.errors, batch.errors
    runtime.writer.write(pid, batch.events)
    ch.writer.write(ch_pid, validate_batch(raws, now=datetime(2030, 1, 1)).events)
    res = runtime.store.query(
        exp.select("uuid", "event", "person_id", "timestamp", "properties", "channel", "amount")
        .from_(runtime.store.scoped("events", pid).subquery("e"))
        .sql("duckdb")
    )
    events = []
    for r in res.rows:
        d = dict(zip(res.columns, r, strict=True))
        d["timestamp"] = datetime.fromisoformat(d["timestamp"])
        events.append(d)
    return Dataset(runtime, pid, ch, ch_pid, events)


def random_journeys(seed: int, persons: int = 300) -> list[dict[str, Any]]:
    """Random product journeys with timestamp ties, events outside the range, repeated events,
    and anonymous devices that log in ($identify) midway."""
    rng = random.Random(seed)
    local = ZoneInfo(TZ)
    range_start = datetime(START.year, START.month, START.day, tzinfo=local).astimezone(UTC)
    raws: list[dict[str, Any]] = []
    for p in range(persons):
        device = f"dev-{seed}-{p}"
        user = f"user-{seed}-{p}"
        t = range_start + timedelta(seconds=rng.uniform(-5 * 86400, (DAYS + 3) * 86400))
        t = t.replace(microsecond=rng.choice([0, 0, 0, rng.randrange(1_000_000)]))
        identify_at = rng.randrange(1, 12) if rng.random() < 0.5 else None
        channel = rng.choice(["douyin", "kuaishou", "zhihu", None])
        plan = rng.choice(["free", "pro", "vip"])
        current = device
        for i in range(rng.randrange(2, 24)):
            gap = rng.choice(
                [0, 0, 1, rng.randrange(2, 600), rng.randrange(600, 7200), rng.randrange(3600, 86400),
                 rng.randrange(86400, 4 * 86400), 86400, 3600]
            )  # fmt: skip
            t = t + timedelta(seconds=gap)
            if identify_at is not None and i == identify_at:
                raws.append(
                    {"event": "$identify", "distinct_id": user, "timestamp": iso(t.replace(tzinfo=None)),
                     "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
                     "properties": {"$anon_distinct_id": device}}
                )  # fmt: skip
                current = user
            name = rng.choices(EVENTS, weights=[3, 3, 5, 3, 1])[0]
            props: dict[str, Any] = {"plan": plan, "step": i}
            if channel:
                props["$channel"] = channel
            if name == "purchase_membership":
                props["$amount"] = rng.choice([6, 12.5, 30, 68])
            if name == "export_video" and rng.random() < 0.5:
                props["duration_s"] = rng.randrange(5, 300)
            raws.append(
                {"event": name, "distinct_id": current, "timestamp": iso(t.replace(tzinfo=None)),
                 "uuid": str(uuid.UUID(int=rng.getrandbits(128))), "properties": props}
            )  # fmt: skip
    return raws


@pytest.fixture(scope="module")
def journeys(tmp_path_factory: pytest.TempPathFactory, ch_runtime: Runtime) -> Iterator[Dataset]:
    """A few hundred random journeys over three weeks (module-wide, read-only)."""
    ds = make_dataset(tmp_path_factory.mktemp("journeys"), ch_runtime, random_journeys(7))
    yield ds
    ds.runtime.close()


@pytest.fixture
def small(tmp_path: Path, ch_runtime: Runtime) -> Iterator[Any]:
    """Build a hand-written dataset in a test: ``small(raws) -> Dataset``."""
    opened: list[Dataset] = []

    def build(raws: list[dict[str, Any]], timezone: str = TZ) -> Dataset:
        ds = make_dataset(tmp_path / f"d{len(opened)}", ch_runtime, raws, timezone)
        opened.append(ds)
        return ds

    yield build
    for ds in opened:
        ds.runtime.close()


# -- metric journeys (tests/analytics/test_metrics.py, test_diagnosis.py) ---------------------------

METRIC_CHANNELS = ("douyin", "kuaishou", "zhihu", None)
METRIC_OS = ("iOS", "Android", "HarmonyOS")
METRIC_DAYS = 28  # period A = the first 14 days from START, period B = the next 14


def metric_journeys(
    seed: int,
    persons: int = 400,
    d1_drop: str | None = None,
    export_drop: bool = False,
) -> list[dict[str, Any]]:
    """Installs spread over METRIC_DAYS (some before START, some re-installs), daily activity
    with ties, sign-ups, edits, exports, check-ins, invitations sent and accepted, purchases with
    positive, zero and negative (refund) amounts, OS and app version columns, and anonymous
    devices that log in midway.

    Planted causes for diagnosis, from day 14 on (period B): ``d1_drop`` — users of that channel
    installing in B rarely come back the next day; ``export_drop`` — edits in B rarely lead to
    an export."""
    rng = random.Random(seed)
    local = ZoneInfo(TZ)
    base = datetime(START.year, START.month, START.day, tzinfo=local)
    raws: list[dict[str, Any]] = []

    def emit(name: str, who: str, at: datetime, props: dict[str, Any]) -> None:
        raws.append(
            {"event": name, "distinct_id": who,
             "timestamp": iso(at.astimezone(UTC).replace(tzinfo=None)),
             "uuid": str(uuid.UUID(int=rng.getrandbits(128))), "properties": props}
        )  # fmt: skip

    for p in range(persons):
        device, user = f"mdev-{seed}-{p}", f"muser-{seed}-{p}"
        channel = rng.choice(METRIC_CHANNELS)
        os_name = rng.choice(METRIC_OS)
        install_day = rng.randrange(-20, METRIC_DAYS + 2)
        lifetime = rng.choice([1, 2, 4, 8, 15, 60])
        in_b = install_day >= 14
        current = device
        logged_in = False

        def props(
            day: int, os_name: str = os_name, channel: str | None = channel, **extra: Any
        ) -> dict[str, Any]:
            out: dict[str, Any] = {
                "$os": os_name,
                "$app_version": "1.1.0" if day >= 10 else "1.0.0",
            }
            if channel:
                out["$channel"] = channel
            out.update(extra)
            return out

        d1 = 0.6
        if d1_drop is not None and in_b and channel == d1_drop:
            d1 = 0.08
        day = install_day
        active_days = [install_day]
        while True:
            day += 1
            if day > min(METRIC_DAYS + 3, install_day + lifetime):
                break
            chance = d1 if day == install_day + 1 else 0.35
            if rng.random() < chance:
                active_days.append(day)
        if rng.random() < 0.1:  # a re-install later on: not a new user again
            active_days.append(install_day + rng.randrange(2, 9))
            active_days.sort()
        for n, day in enumerate(active_days):
            t = base + timedelta(days=day, seconds=rng.choice([0, rng.randrange(0, 86000)]))
            if n == 0 or (day != install_day and rng.random() < 0.02):
                emit("app_install", current, t, props(day))
            if n == 0 and rng.random() < 0.1:
                emit("invite_accepted", current, t, props(day, inviter_id="someone"))
            if not logged_in and rng.random() < 0.5:
                emit("sign_up", current, t, props(day))
                raws.append(
                    {"event": "$identify", "distinct_id": user,
                     "timestamp": iso(t.astimezone(UTC).replace(tzinfo=None)),
                     "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
                     "properties": {"$anon_distinct_id": device}}
                )  # fmt: skip
                current, logged_in = user, True
            for _ in range(rng.randrange(1, 4)):
                t = t + timedelta(seconds=rng.choice([0, 1, rng.randrange(2, 3000)]))
                name = rng.choices(["edit_video", "check_in", "invite_sent"], [5, 2, 1])[0]
                emit(name, current, t, props(day))
                export = 0.15 if export_drop and day >= 14 else 0.7
                if name == "edit_video" and rng.random() < export:
                    emit(
                        "export_video",
                        current,
                        t + timedelta(seconds=rng.choice([0, 60])),
                        props(day),
                    )
            if rng.random() < 0.12:
                amount = rng.choice([6, 30, 30, 68, 0, -30])
                bought = props(day)
                bought["$amount"] = amount
                emit("purchase_membership", current, t + timedelta(seconds=5), bought)
    return raws


def both(ds: Dataset, analysis: Any, q: Any) -> Any:
    """Run an analysis on DuckDB and ClickHouse, check they agree, return the DuckDB result."""
    duck = analysis(ds.duck, ds.project_id, q)
    ch = analysis(ds.chdb, ds.ch_project_id, q)
    assert_close(duck.as_dict(), ch.as_dict())
    return duck


@pytest.fixture
def coded_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, for each call of ``funnel_pass.coded_chains``, whether it gave an answer (the
    values travelled as numbers) or ``None`` (the caller fell back to the lists of starts)."""
    outcomes: list[bool] = []
    real = funnel_pass.coded_chains

    def spy(*args: Any, **kw: Any) -> Any:
        done = real(*args, **kw)
        outcomes.append(done is not None)
        return done

    monkeypatch.setattr(funnel_pass, "coded_chains", spy)
    return outcomes
