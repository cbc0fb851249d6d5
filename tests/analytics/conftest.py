"""Analytics fixtures: random journeys written through the real ingestion writer into DuckDB, and
the same resolved events loaded into a ClickHouse (chdb) session as a second engine."""

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

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlglot import exp

from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import create_project
from yunying.store.base import QueryResult

TZ = "Asia/Shanghai"
START = date(2024, 3, 4)  # a Monday
DAYS = 21
EVENTS = ("app_install", "sign_up", "edit_video", "export_video", "purchase_membership")

_tables = itertools.count()


class ChdbSource:
    """A project's resolved events in a chdb table: an analytics source on the ClickHouse engine."""

    dialect = "clickhouse"

    def __init__(self, session: Any, table: str) -> None:
        self.session = session
        self.table = table

    def scoped(self, relation: str, project_id: int) -> exp.Query:
        if relation != "events":
            raise KeyError(relation)
        return exp.select("*").from_(self.table)

    def query(self, sql: str) -> QueryResult:
        table = self.session.query(sql, "ArrowTable")
        return QueryResult(table.column_names, [list(r.values()) for r in table.to_pylist()])


@pytest.fixture(scope="session")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from chdb import session

    s = session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield s
    s.close()


@dataclass
class Dataset:
    """One project's events in DuckDB (through the writer) and the same events in chdb."""

    runtime: Runtime
    project_id: int
    chdb: ChdbSource
    events: list[dict[str, Any]]  # the resolved events relation, read back from DuckDB

    @property
    def duck(self) -> Any:
        return self.runtime.store


def load_into_chdb(session: Any, runtime: Runtime, project_id: int, tmp: Path) -> ChdbSource:
    """Copy the project's resolved ``events`` relation into a fresh chdb table."""
    scoped = runtime.store.scoped("events", project_id).subquery("e")
    sql = exp.select(
        exp.cast(exp.column("uuid"), "VARCHAR").as_("uuid"), "event", "distinct_id",
        exp.cast(exp.column("person_id"), "VARCHAR").as_("person_id"), "timestamp",
        exp.cast(exp.column("properties"), "VARCHAR").as_("properties"), "channel", "utm_source",
        "os", "app_version", "device_id", "ip", "amount",
    ).from_(scoped)  # fmt: skip
    res = runtime.store.query(sql.sql("duckdb"))
    cols = {name: [r[i] for r in res.rows] for i, name in enumerate(res.columns)}
    cols["timestamp"] = [datetime.fromisoformat(t) for t in cols["timestamp"]]
    table = pa.table(cols)
    path = tmp / f"events_{next(_tables)}.parquet"
    pq.write_table(table, path)
    name = f"events_{next(_tables)}"
    session.query(
        f"CREATE TABLE {name} (uuid UUID, event String, distinct_id String, person_id String, "
        "timestamp DateTime64(6, 'UTC'), properties String, channel Nullable(String), "
        "utm_source Nullable(String), os Nullable(String), app_version Nullable(String), "
        "device_id Nullable(String), ip Nullable(String), amount Nullable(Float64)) "
        "ENGINE = MergeTree ORDER BY (person_id, timestamp)"
    )
    session.query(f"INSERT INTO {name} SELECT * FROM file('{path}', Parquet)")
    return ChdbSource(session, name)


def iso(ts: datetime) -> str:
    """A UTC instant as the ISO text clients send."""
    return ts.replace(tzinfo=UTC).isoformat()


def make_dataset(
    tmp: Path, chdb_session: Any, raws: list[dict[str, Any]], timezone: str = TZ
) -> Dataset:
    """Write raw events through the real writer, read them back, mirror them into chdb."""
    settings = load_settings(data_dir=tmp / "data")
    runtime = Runtime.open(settings)
    project = create_project(runtime.state, "短视频剪辑", timezone)
    pid = project.project.id
    batch = validate_batch(raws, now=datetime(2030, 1, 1))
    assert not batch.errors, batch.errors
    runtime.writer.write(pid, batch.events)
    source = load_into_chdb(chdb_session, runtime, pid, tmp)
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
    return Dataset(runtime, pid, source, events)


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
def journeys(tmp_path_factory: pytest.TempPathFactory, chdb_session: Any) -> Iterator[Dataset]:
    """A few hundred random journeys over three weeks (module-wide, read-only)."""
    ds = make_dataset(tmp_path_factory.mktemp("journeys"), chdb_session, random_journeys(7))
    yield ds
    ds.runtime.close()


@pytest.fixture
def small(tmp_path: Path, chdb_session: Any) -> Iterator[Any]:
    """Build a hand-written dataset in a test: ``small(raws) -> Dataset``."""
    opened: list[Dataset] = []

    def build(raws: list[dict[str, Any]], timezone: str = TZ) -> Dataset:
        ds = make_dataset(tmp_path / f"d{len(opened)}", chdb_session, raws, timezone)
        opened.append(ds)
        return ds

    yield build
    for ds in opened:
        ds.runtime.close()
