"""Analytics on DuckDB and on ClickHouse (chdb), on the same generated data, in one run.

The data are the demo's short-video editing app (``src/yunying/demo``), generated once as Arrow
chunks and bulk-loaded into both engines (``EventStore.bulk_insert_arrow``), so both hold exactly
the same rows; the pair of stores is cached under ``--cache-dir`` keyed by size, seed and end day,
and reused by later runs. The demo makes ~11 events per user over 4 days: ``--full`` (1,000,000
users) gives about 11M events and 1M persons, the documented run; the default (``make bench``)
is 100,000 users, ~1.1M events, so that it stays within a few minutes on 2 cores.

Each analysis (funnels ordered / strict / unordered over install -> sign up -> edit -> export ->
purchase with a 7-day window, by channel, its time to convert and daily trends; retention,
trends, lifecycle, stickiness, paths, metrics) runs once on each engine as a warm-up, where the two answers are compared (they must be equal), then
``--reps`` times alternating engines; the table gives the median wall time on each engine, the
process CPU time, and the DuckDB / ClickHouse ratio. Both engines run with ``--threads`` threads
(DuckDB ``threads``, ClickHouse ``max_threads``).

The ordered funnel is also timed against ClickHouse's own ``windowFunnel(window, 'strict_once')``
on the same chdb data, same range and steps (per person the maximum level, then persons per
step); the counts must be identical, and the ratio says how many times faster our funnel is.
``--only window`` runs just that comparison; ``--no-chdb-funnel`` leaves our (slow) funnel on
chdb out of it. On a shared machine, rely on the ratios (runs interleaved seconds apart) and the
CPU columns, not on absolute times.

Prints a table, writes JSON to ``--out`` (``benchmarks/results/analytics.json``); ``--markdown``
prints Markdown for docs/benchmarks.md; ``--render FILE`` prints a saved JSON as Markdown.
``--explain NAME`` writes per-query timings, DuckDB's operator profile and ClickHouse's plan.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from yunying.analytics import (  # noqa: E402
    DateRange,
    FunnelQuery,
    FunnelStep,
    FunnelTimeToConvertQuery,
    FunnelTrendsQuery,
    LifecycleQuery,
    PathsQuery,
    RetentionQuery,
    Series,
    StickinessQuery,
    TrendsQuery,
    col,
    funnel,
    funnel_time_to_convert,
    funnel_trends,
    lifecycle,
    metric,
    paths,
    retention,
    stickiness,
    trends,
)
from yunying.analytics.memory import keep_freed_memory  # noqa: E402
from yunying.store.base import QueryResult  # noqa: E402
from yunying.store.clickhouse_store import ClickHouseEventStore  # noqa: E402
from yunying.store.duckdb_store import DuckDBEventStore  # noqa: E402

PROJECT_ID = 1
JOURNEY = ("app_install", "sign_up", "edit_video", "export_video", "purchase_membership")
WINDOW_DAYS = 7
#: ``make bench``: 100,000 users (~1.1M events), a few minutes on 2 cores; ``--full``: 1,000,000
#: users (~11M events, 1M persons), the documented run (~5 min to build, ~10 min to run).
DEFAULT_USERS = 100_000
FULL_USERS = 1_000_000
DEFAULT_DAYS = 4
#: A Tuesday: the 4-day period (Saturday..Tuesday) spans two weeks, so weekly analyses have two.
DEFAULT_END = date(2026, 11, 3)
#: Bumped when the cached layout or the way it is built changes.
CACHE_VERSION = 1

# -- the dataset ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    users: int
    days: int
    seed: int
    end: date
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def first_day(self) -> date:
        return self.end - timedelta(days=self.days - 1)

    @property
    def duck_path(self) -> Path:
        return self.path / "events.duckdb"

    @property
    def chdb_url(self) -> str:
        return f"chdb://{(self.path / 'chdb').resolve()}"


def dataset_dir(cache: Path, users: int, days: int, seed: int, end: date) -> Path:
    return cache / f"v{CACHE_VERSION}-{users}u-{days}d-seed{seed}-{end.isoformat()}"


def open_stores(
    ds: Dataset, threads: int, timeout: float = 0, ch_settings: list[str] | None = None
) -> tuple[DuckDBEventStore, ClickHouseEventStore]:
    """Both stores with ``threads`` threads; ClickHouse queries give up after ``timeout`` s
    (``max_execution_time``; DuckDB's are interrupted by :func:`timed`), and take the extra
    session ``ch_settings`` (``name=value``)."""
    duck = DuckDBEventStore(ds.duck_path, threads=threads)
    ch = ClickHouseEventStore(ds.chdb_url)
    ch.db.command(f"SET max_threads = {threads}")
    if timeout:
        ch.db.command(f"SET max_execution_time = {math.ceil(timeout)}")
    for setting in ch_settings or ():
        ch.db.command(f"SET {setting}")
    return duck, ch


def engine_threads(duck: DuckDBEventStore, ch: ClickHouseEventStore) -> dict[str, int]:
    d = duck.query("SELECT current_setting('threads')").rows[0][0]
    c = ch.query("SELECT getSetting('max_threads')").rows[0][0]
    return {"duckdb": int(d), "chdb": int(c)}


def counts(store: Any) -> dict[str, int]:
    """Rows of the three raw tables (ClickHouse's versioned tables read with FINAL)."""
    final = " FINAL" if store.dialect == "clickhouse" else ""
    out = {}
    for table in ("raw_events", "raw_persons", "raw_person_distinct_ids"):
        fin = final if table != "raw_events" else ""
        sql = f"SELECT count(*) FROM {table}{fin} WHERE project_id = {PROJECT_ID}"
        out[table] = int(store.query(sql).rows[0][0])
    sql = f"SELECT count(DISTINCT person_id) FROM ({store.scoped('events', PROJECT_ID).sql(store.dialect)})"
    out["persons_with_events"] = int(store.query(sql).rows[0][0])
    return out


def build_dataset(ds: Dataset, threads: int) -> None:
    """Simulate the demo chunk by chunk (as ``yunying demo`` does) and append every chunk to both
    engines; then checkpoint DuckDB, merge ClickHouse's parts, and check both hold the same rows."""
    from yunying.demo.generator import _build_chunk, chunk_users
    from yunying.demo.simulate import make_calendar

    if ds.path.exists():
        shutil.rmtree(ds.path)
    ds.path.mkdir(parents=True)
    started = time.perf_counter()
    cpu0 = time.process_time()
    cal = make_calendar(ds.seed, ds.first_day, ds.days)
    size = chunk_users(ds.days)
    duck, ch = open_stores(ds, threads)
    load = {"duckdb": 0.0, "chdb": 0.0}
    sim = 0.0

    def append(chunk: Any) -> None:
        for name, store in (("duckdb", duck), ("chdb", ch)):
            t = time.perf_counter()
            store.bulk_insert_arrow("raw_events", chunk.events)
            store.bulk_insert_arrow("raw_persons", chunk.persons)
            store.bulk_insert_arrow("raw_person_distinct_ids", chunk.distinct_ids)
            load[name] += time.perf_counter() - t

    events = 0
    with ThreadPoolExecutor(1, "bench-append") as appender:
        pending: Future[None] | None = None
        for i, first in enumerate(range(0, ds.users, size)):
            t = time.perf_counter()
            chunk = _build_chunk(
                PROJECT_ID, ds.seed, cal, i, first, min(size, ds.users - first), None
            )
            sim += time.perf_counter() - t
            if pending is not None:
                pending.result()
            pending = appender.submit(append, chunk)
            events += chunk.events.num_rows
            print(
                f"\r  generating: {first + len(chunk.channel):,}/{ds.users:,} users, "
                f"{events:,} events, {time.perf_counter() - started:.0f} s",
                end="",
                flush=True,
            )
        if pending is not None:
            pending.result()
    print()
    for store in (duck, ch):  # the bulk load bypassed the writer's person overrides
        store.refresh_overrides()
    t = time.perf_counter()
    duck.checkpoint()
    load["duckdb"] += time.perf_counter() - t
    # events into person order, as OPTIMIZE FINAL below merges ClickHouse's parts in its order
    load["duckdb_compact"] = duck.compact_events()["seconds"]
    t = time.perf_counter()
    for table in ("raw_events", "raw_persons", "raw_person_distinct_ids"):
        ch.db.command(f"OPTIMIZE TABLE {table} FINAL")
    load["chdb_optimize"] = time.perf_counter() - t
    c_duck, c_ch = counts(duck), counts(ch)
    duck.close()
    ch.close()
    if c_duck != c_ch:
        raise SystemExit(f"!!! MISMATCH: DuckDB holds {c_duck}, chdb holds {c_ch}")
    ds.info = {
        "users": ds.users,
        "days": ds.days,
        "seed": ds.seed,
        "first_day": ds.first_day.isoformat(),
        "last_day": ds.end.isoformat(),
        "events": c_duck["raw_events"],
        "persons": c_duck["raw_persons"],
        "distinct_ids": c_duck["raw_person_distinct_ids"],
        "persons_with_events": c_duck["persons_with_events"],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "build_cpu_seconds": round(time.process_time() - cpu0, 1),
        "simulate_seconds": round(sim, 1),
        "load_seconds": {k: round(v, 1) for k, v in load.items()},
        "duckdb_file_bytes": ds.duck_path.stat().st_size,
        "chdb_dir_bytes": sum(
            p.stat().st_size for p in (ds.path / "chdb").rglob("*") if p.is_file()
        ),
    }
    (ds.path / "dataset.json").write_text(json.dumps(ds.info, indent=2))


def get_dataset(args: argparse.Namespace) -> tuple[Dataset, bool]:
    users = max(100, round(args.users * args.events_scale))
    path = dataset_dir(Path(args.cache_dir), users, args.days, args.seed, args.end)
    ds = Dataset(users, args.days, args.seed, args.end, path)
    marker = path / "dataset.json"
    if marker.exists() and not args.fresh:
        ds.info = json.loads(marker.read_text())
        duck = DuckDBEventStore(ds.duck_path, threads=args.threads)
        if not duck.person_ordered(PROJECT_ID):  # cached before compaction existed
            print(f"compacting the cached DuckDB events in {path}")
            ds.info["load_seconds"]["duckdb_compact"] = duck.compact_events()["seconds"]
            marker.write_text(json.dumps(ds.info, indent=2))
        duck.close()
        return ds, True
    print(f"building the dataset in {path} ({users:,} users x {args.days} days, seed {args.seed})")
    build_dataset(ds, args.threads)
    return ds, False


# -- the analyses -----------------------------------------------------------------------------------


class Recording:
    """A Source that runs the store's queries and remembers their SQL (for --explain)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dialect = store.dialect
        self.sqls: list[str] = []

    def scoped(self, relation: str, project_id: int) -> Any:
        return self.store.scoped(relation, project_id)

    def query(self, sql: str) -> QueryResult:
        self.sqls.append(sql)
        result: QueryResult = self.store.query(sql)
        return result

    def query_arrow(self, sql: str) -> Any:
        self.sqls.append(sql)
        return self.store.query_arrow(sql)

    def person_ordered(self, project_id: int) -> bool:
        ordered = getattr(self.store, "person_ordered", None)
        return callable(ordered) and bool(ordered(project_id))


def analyses(dr: DateRange) -> dict[str, Callable[[Any], Any]]:
    steps = tuple(FunnelStep(e) for e in JOURNEY)

    def funnel_q(order: str, **kw: Any) -> FunnelQuery:
        return FunnelQuery(steps, dr, window=WINDOW_DAYS, window_unit="day", order=order, **kw)  # type: ignore[arg-type]

    p = PROJECT_ID
    return {
        "funnel ordered": lambda s: funnel(s, p, funnel_q("ordered")),
        "funnel strict": lambda s: funnel(s, p, funnel_q("strict")),
        "funnel unordered": lambda s: funnel(s, p, funnel_q("unordered")),
        "funnel ordered, by channel": lambda s: funnel(
            s, p, funnel_q("ordered", breakdown=col("channel"))
        ),
        "funnel strict, by channel (last touch)": lambda s: funnel(
            s,
            p,
            funnel_q("strict", breakdown=col("channel"), breakdown_attribution="last_touch"),
        ),
        "funnel time to convert": lambda s: funnel_time_to_convert(
            s, p, FunnelTimeToConvertQuery(funnel_q("ordered"))
        ),
        "funnel trends, daily": lambda s: funnel_trends(
            s, p, FunnelTrendsQuery(funnel_q("ordered"), interval="day")
        ),
        "retention day (install -> open)": lambda s: retention(
            s, p, RetentionQuery("app_install", "app_open", dr, period="day")
        ),
        "retention week (install -> open)": lambda s: retention(
            s, p, RetentionQuery("app_install", "app_open", dr, period="week")
        ),
        "trends DAU + sum(amount), by channel": lambda s: trends(
            s,
            p,
            TrendsQuery(
                (Series(None, "dau"), Series("purchase_membership", "sum")),
                dr,
                interval="day",
                breakdown=col("channel"),
            ),
        ),
        "lifecycle weekly (app_open)": lambda s: lifecycle(
            s, p, LifecycleQuery("app_open", dr, "week")
        ),
        "stickiness weekly (app_open)": lambda s: stickiness(
            s, p, StickinessQuery("app_open", dr, "week")
        ),
        "paths from app_install, 5 steps": lambda s: paths(
            s, p, PathsQuery(dr, start_event="app_install", steps=5)
        ),
        "metric dau": lambda s: metric(s, p, "dau", dr),
        "metric retention_d1": lambda s: metric(s, p, "retention_d1", dr),
        "metric conversion_rate": lambda s: metric(s, p, "conversion_rate", dr),
        "metric arpu": lambda s: metric(s, p, "arpu", dr),
    }


def window_funnel_sql(ch: ClickHouseEventStore, dr: DateRange) -> str:
    """Persons per maximum level by ``windowFunnel(window, 'strict_once')``, step 1 restricted to
    the range and later steps up to the window after it (as tests/analytics/test_funnels.py)."""
    lo, hi = dr.utc_bounds()
    w = timedelta(days=WINDOW_DAYS)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    lo_s, hi_s, end_s = lo.strftime(fmt), hi.strftime(fmt), (hi + w).strftime(fmt)
    conds = [f"event = '{e}'" for e in JOURNEY]
    conds[0] += (
        f" AND timestamp >= toDateTime64('{lo_s}', 6, 'UTC')"
        f" AND timestamp < toDateTime64('{hi_s}', 6, 'UTC')"
    )
    events = ch.scoped("events", PROJECT_ID).sql("clickhouse")
    window_us = WINDOW_DAYS * 86_400 * 1_000_000
    return (
        f"SELECT level, count() FROM (SELECT person_id, windowFunnel({window_us}, 'strict_once')"
        f"(toUInt64(toUnixTimestamp64Micro(timestamp)), {', '.join(conds)}) AS level "
        f"FROM ({events}) WHERE timestamp >= toDateTime64('{lo_s}', 6, 'UTC') "
        f"AND timestamp < toDateTime64('{end_s}', 6, 'UTC') GROUP BY person_id) GROUP BY level"
    )


def window_funnel(ch: ClickHouseEventStore, sql: str) -> list[int]:
    levels = {int(r[0]): int(r[1]) for r in ch.query(sql).rows}
    return [sum(c for lv, c in levels.items() if lv >= k) for k in range(1, len(JOURNEY) + 1)]


def same(a: Any, b: Any, tol: float = 1e-9) -> bool:
    """Equal JSON-like values, floats to a relative ``tol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return bool(a == b)


class TimedOut(Exception):
    """A run went past ``--timeout``."""


def timed(fn: Callable[[], Any], store: Any = None, timeout: float = 0) -> tuple[float, float, Any]:
    """Wall and process CPU seconds of ``fn()`` and its result. With a DuckDB ``store`` and a
    ``timeout``, the query running then is interrupted (ClickHouse has max_execution_time)."""
    gc.collect()
    timer = None
    if timeout and isinstance(store, DuckDBEventStore):
        timer = threading.Timer(timeout, store._reader().interrupt)
        timer.start()
    c, t = time.process_time(), time.perf_counter()
    try:
        out = fn()
    except Exception as exc:
        wall = time.perf_counter() - t
        if timeout and wall >= timeout * 0.99:
            raise TimedOut(f"over {timeout:.0f} s") from exc
        raise
    finally:
        if timer is not None:
            timer.cancel()
    return time.perf_counter() - t, time.process_time() - c, out


@dataclass
class Line:
    name: str
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    equal: bool | None = None
    timed_out: list[str] = field(default_factory=list)
    note: str = ""

    def median(self, engine: str) -> float | None:
        t = self.times.get(engine)
        return statistics.median(t) if t else None

    def median_cpu(self, engine: str) -> float | None:
        t = self.cpu.get(engine)
        return statistics.median(t) if t else None

    def as_dict(self) -> dict[str, Any]:
        d, c = self.median("duckdb"), self.median("chdb")
        return {
            "name": self.name,
            "median_s": {e: round(v, 4) for e in self.times if (v := self.median(e)) is not None},
            "median_cpu_s": {
                e: round(v, 4) for e in self.cpu if (v := self.median_cpu(e)) is not None
            },
            "times_s": {e: [round(x, 4) for x in v] for e, v in self.times.items()},
            "duckdb_over_chdb": round(d / c, 3) if d and c else None,
            "queries": self.queries,
            "equal_results": self.equal,
            "timed_out": self.timed_out,
            "note": self.note.strip(),
        }


def resync(store: Any) -> None:
    """After a failed ClickHouse query chdb (4.4) hands the *next* query a broken result;
    run and drop a throwaway query so the next real one is clean."""
    if store.dialect != "clickhouse":
        return
    for _ in range(2):
        try:
            store.query("SELECT 1")
            return
        except Exception:
            continue


def reps_for(first: float, reps: int, budget: float) -> int:
    """Repetitions after the warm-up: ``reps``, fewer for slow queries (at least 1)."""
    return max(1, min(reps, int(budget / max(first, 1e-3))))


def run_line(
    args: argparse.Namespace, name: str, fn: Callable[[Any], Any], engines: dict[str, Any]
) -> tuple[Line, bool]:
    """One analysis: a warm-up on each engine (answers compared), then up to ``--reps`` timed
    runs alternating engines (fewer when a run is slow, see ``--budget``)."""
    line, ok = Line(name), True
    results = {}
    for e, store in engines.items():
        rec = Recording(store)
        try:
            _wall, _cpu, out = timed(lambda rec=rec: fn(rec), store, args.timeout)
        except TimedOut as exc:
            line.timed_out.append(e)
            line.note += f"{e}: {exc}. "
            print(f"!!! {name}: {e} {exc}")
            resync(store)
            continue
        except Exception as exc:  # report it and go on with the others
            line.note += f"{e} FAILED: {type(exc).__name__}: {str(exc)[:200]}. "
            print(f"!!! {name}: {e} FAILED: {exc}")
            resync(store)
            ok = False
            continue
        results[e] = out.as_dict()
        line.queries[e] = len(rec.sqls)
        line.times[e], line.cpu[e] = [], []
        if args.explain and any(w in name for w in args.explain.split(",")):
            explain(args, name, e, store, rec.sqls)
    if len(results) == 2:
        line.equal = same(results["duckdb"], results["chdb"])
        if not line.equal:
            print(f"!!! MISMATCH: {name}: DuckDB and chdb answer differently")
            ok = False
    n = args.reps
    for rep in range(args.reps):
        for e, store in engines.items():
            if e not in line.times:
                continue
            wall, cpu, _out = timed(lambda store=store: fn(store), store, args.timeout)
            line.times[e].append(wall)
            line.cpu[e].append(cpu)
        if rep == 0:
            slowest = max((t[0] for t in line.times.values() if t), default=0.0)
            n = reps_for(slowest, args.reps, args.budget)
        if rep + 1 >= n:
            break
    return line, ok


def bench(args: argparse.Namespace, ds: Dataset) -> dict[str, Any]:
    duck, ch = open_stores(ds, args.threads, args.timeout, args.ch_setting)
    threads = engine_threads(duck, ch)
    dr = DateRange(ds.first_day, ds.end)
    todo = analyses(dr)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        todo = {k: v for k, v in todo.items() if any(w in k for w in wanted)}
    engines = {"duckdb": duck, "chdb": ch}
    lines: list[Line] = []
    failed = False
    for name, fn in todo.items():
        line, ok = run_line(args, name, fn, engines)
        failed = failed or not ok
        d, c = line.median("duckdb"), line.median("chdb")
        verdict = {True: "same", False: "DIFF", None: ""}[line.equal]
        print(
            f"  {name:<40} duckdb {fmt_s(d):>8}  chdb {fmt_s(c):>8}  "
            f"duck/ch {fmt_ratio(d, c):>6}  {verdict} {line.note}",
            flush=True,
        )
        lines.append(line)

    native = None
    if not args.only or "funnel" in args.only or "window" in args.only:
        native = bench_window_funnel(args, ds, duck, ch, dr)
        failed = failed or not native["counts_equal"]
    duck.close()
    ch.close()
    return {"threads": threads, "lines": lines, "native": native, "failed": failed}


def bench_window_funnel(
    args: argparse.Namespace,
    ds: Dataset,
    duck: DuckDBEventStore,
    ch: ClickHouseEventStore,
    dr: DateRange,
) -> dict[str, Any]:
    """Our ordered funnel on both engines against ``windowFunnel`` on chdb, interleaved."""
    steps = tuple(FunnelStep(e) for e in JOURNEY)
    q = FunnelQuery(steps, dr, window=WINDOW_DAYS, window_unit="day")
    sql = window_funnel_sql(ch, dr)
    runs: dict[str, tuple[Any, Callable[[], list[int]]]] = {
        "windowFunnel (chdb)": (ch, lambda: window_funnel(ch, sql)),
        "our funnel (duckdb)": (duck, lambda: funnel(duck, PROJECT_ID, q).counts),
        "our funnel (chdb)": (ch, lambda: funnel(ch, PROJECT_ID, q).counts),
    }
    if args.no_chdb_funnel:
        del runs["our funnel (chdb)"]
    got: dict[str, list[int]] = {}
    timed_out = []
    for k, (store, fn) in runs.items():  # warm-up, and the counts
        try:
            got[k] = timed(fn, store, args.timeout)[2]
        except TimedOut:
            timed_out.append(k)
            print(f"!!! {k}: over {args.timeout:.0f} s")
            resync(store)
    ref = got.get("windowFunnel (chdb)")
    equal = ref is not None and all(v == ref for v in got.values())
    if not equal:
        print("!!! MISMATCH: funnel counts differ from windowFunnel:")
        for k, v in got.items():
            print(f"!!!   {k}: {v}")
    times: dict[str, list[float]] = {k: [] for k in got}
    cpu: dict[str, list[float]] = {k: [] for k in got}
    n = args.reps
    for rep in range(args.reps):
        for k in got:
            store, fn = runs[k]
            w, c, _ = timed(fn, store, args.timeout)
            times[k].append(w)
            cpu[k].append(c)
        if rep == 0:
            n = reps_for(max(t[0] for t in times.values()), args.reps, args.budget)
        if rep + 1 >= n:
            break
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    wf = med.get("windowFunnel (chdb)")
    out = {
        "sql": sql,
        "counts": got,
        "counts_equal": equal,
        "timed_out": timed_out,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "median_cpu_s": {k: round(v, 4) for k, v in med_cpu.items()},
        "times_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "speedup_vs_window_funnel": {k: round(wf / v, 3) for k, v in med.items() if wf and v > 0},
    }
    print(f"  windowFunnel vs ours (counts {'identical' if equal else 'MISMATCH'}: {ref})")
    for k, v in med.items():
        print(f"    {k:<24} {fmt_s(v):>8}  windowFunnel/this {fmt_ratio(wf, v)}")
    return out


def duckdb_profile(store: DuckDBEventStore, sql: str, path: Path) -> str:
    """DuckDB's profile of ``sql`` (JSON kept in ``path``): the operators taking most time."""
    con = store._reader()
    con.execute("SET enable_profiling = 'json'")
    con.execute(f"SET profiling_output = '{path}'")
    con.execute(sql).fetchall()
    con.execute("SET enable_profiling = 'no_output'")
    con.execute("SET profiling_output = ''")
    tree = json.loads(path.read_text())
    ops: list[tuple[float, str, int, str]] = []

    def walk(node: dict[str, Any]) -> None:
        # DuckDB 1.x: operator_name / operator_timing / operator_cardinality; 2.x: type / timing
        name = node.get("operator_name") or node.get("operator_type") or node.get("type")
        if name:
            timing = node.get("operator_timing", node.get("timing", 0))
            rows = node.get("operator_cardinality", node.get("intermediate_rows", 0))
            extra = json.dumps(node.get("extra_info", {}), ensure_ascii=False)[:160]
            ops.append((float(timing or 0), str(name), int(rows or 0), extra))
        for child in node.get("children", []):
            walk(child)

    for root in tree.get("operator", [tree]) if isinstance(tree, dict) else tree:
        walk(root)
    total = sum(o[0] for o in ops) or 1.0
    lines = [f"-- DuckDB operators by time ({len(ops)} operators, {total:.3f} s in all):"]
    for t, name, rows, extra in sorted(ops, reverse=True)[:10]:
        lines.append(
            f"--   {t:7.3f} s {100 * t / total:4.0f}%  {name:<22} {rows:>12,} rows  {extra}"
        )
    return "\n".join(lines)


def explain(args: argparse.Namespace, name: str, engine: str, store: Any, sqls: list[str]) -> None:
    """Per-query wall time of an analysis, with DuckDB's operator profile and ClickHouse's
    EXPLAIN PLAN, into ``--explain-dir``."""
    out = Path(args.explain_dir)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    path = out / f"{slug}.{engine}.txt"
    with path.open("w") as f:
        for i, sql in enumerate(sqls):
            t = time.perf_counter()
            store.query(sql)
            f.write(f"-- query {i + 1}/{len(sqls)}: {time.perf_counter() - t:.3f} s\n{sql}\n\n")
            if engine == "duckdb":
                f.write(duckdb_profile(store, sql, out / f"{slug}.{i + 1}.duckdb.json") + "\n\n")
            else:
                plan = store.query("EXPLAIN PLAN " + sql).rows
                f.write("\n".join(str(r[0]) for r in plan) + "\n\n")
    print(f"    explained {name} on {engine}: {path}")


# -- output ---------------------------------------------------------------------------------------


def fmt_s(v: float | None, over: float | None = None) -> str:
    if v is None:
        return f"> {over:.0f} s" if over else "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def machine() -> dict[str, Any]:
    import chdb
    import duckdb

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "chdb": chdb.__version__,
    }


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def over(engine: str, line: dict[str, Any], report: dict[str, Any]) -> float | None:
    """The timeout, when ``engine`` ran past it on this line."""
    return float(report["args"]["timeout"]) if engine in line.get("timed_out", []) else None


def markdown(report: dict[str, Any]) -> str:
    m, d, th = report["machine"], report["dataset"], report["threads"]
    out = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['platform']}; "
        f"Python {m['python']}, DuckDB {m['duckdb']}, chdb {m['chdb']}. Threads: DuckDB "
        f"{th['duckdb']}, ClickHouse {th['chdb']}"
        f"{'; ClickHouse session settings: ' + ', '.join(f'`{x}`' for x in report['args'].get('ch_setting') or []) if report['args'].get('ch_setting') else ' (ClickHouse settings as shipped)'}"
        f". Commit `{report['commit']}`; run "
        f"{report['started']}, {report['seconds']:.0f} s (dataset "
        f"{'reused from the cache' if report['dataset_cached'] else 'built in this run'}); "
        f"load average (1 min) {report['load_before']:.2f} before, {report['load_after']:.2f} after.",
        "",
        f"Dataset: demo, {d['users']:,} users x {d['days']} days ({d['first_day']} .. "
        f"{d['last_day']}), seed {d['seed']}: **{d['events']:,} events, {d['persons']:,} persons**, "
        f"{d['distinct_ids']:,} distinct ids; built in {d['build_seconds']:.0f} s.",
        "",
        "| analysis | DuckDB | chdb | DuckDB / chdb | DuckDB CPU | chdb CPU | queries | same answer |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ln in report["lines"]:
        md, mc = ln["median_s"], ln["median_cpu_s"]
        q = ln["queries"]
        out.append(
            f"| {ln['name']} | {fmt_s(md.get('duckdb'), over('duckdb', ln, report))} | {fmt_s(md.get('chdb'), over('chdb', ln, report))} | "
            f"{ln['duckdb_over_chdb'] if ln['duckdb_over_chdb'] is not None else '-'} | "
            f"{fmt_s(mc.get('duckdb'))} | {fmt_s(mc.get('chdb'))} | "
            f"{q.get('duckdb', '-')} / {q.get('chdb', '-')} | "
            f"{'yes' if ln['equal_results'] else 'NO' if ln['equal_results'] is False else '-'}"
            f"{' ' + ln['note'] if ln['note'] else ''} |"
        )
    nat = report.get("native")
    if nat:
        out += [
            "",
            f"Ordered funnel ({' → '.join(JOURNEY)}, {WINDOW_DAYS}-day window, whole range) "
            f"against ClickHouse's `windowFunnel({WINDOW_DAYS * 86400 * 10**6}, 'strict_once')` "
            f"on the same chdb data; counts "
            f"{'**identical**' if nat['counts_equal'] else '**MISMATCH**'}: "
            f"{', '.join(f'{c:,}' for c in nat['counts'].get('windowFunnel (chdb)', []))}.",
            "",
            "| funnel | median | CPU | windowFunnel time / this time |",
            "|---|---:|---:|---:|",
        ]
        for k, v in nat["median_s"].items():
            out.append(
                f"| {k} | {fmt_s(v)} | {fmt_s(nat['median_cpu_s'][k])} | "
                f"{nat['speedup_vs_window_funnel'].get(k, '-')} |"
            )
    return "\n".join(out)


def plain(report: dict[str, Any]) -> str:
    out = []
    d = report["dataset"]
    out.append(
        f"dataset: {d['events']:,} events, {d['persons']:,} persons ({d['users']:,} users x "
        f"{d['days']} days, seed {d['seed']}); threads {report['threads']}"
    )
    out.append(
        f"{'analysis':<40} {'duckdb':>9} {'chdb':>9} {'duck/ch':>8} {'cpu duck':>9} {'cpu ch':>9} same"
    )
    for ln in report["lines"]:
        md, mc = ln["median_s"], ln["median_cpu_s"]
        out.append(
            f"{ln['name']:<40} {fmt_s(md.get('duckdb'), over('duckdb', ln, report)):>9} {fmt_s(md.get('chdb'), over('chdb', ln, report)):>9} "
            f"{ln['duckdb_over_chdb'] if ln['duckdb_over_chdb'] is not None else '-':>8} "
            f"{fmt_s(mc.get('duckdb')):>9} {fmt_s(mc.get('chdb')):>9} "
            f"{'yes' if ln['equal_results'] else 'NO' if ln['equal_results'] is False else '-'}"
        )
    nat = report.get("native")
    if nat:
        out.append(
            f"funnel vs windowFunnel: counts {'identical' if nat['counts_equal'] else 'MISMATCH'}"
        )
        for k, v in nat["median_s"].items():
            out.append(f"  {k:<24} {fmt_s(v):>9}  x{nat['speedup_vs_window_funnel'].get(k, '-')}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=DEFAULT_USERS, help="demo users (100,000)")
    ap.add_argument(
        "--full", action="store_true", help=f"{FULL_USERS:,} users: ~11M events, 1M persons"
    )
    ap.add_argument("--days", type=int, default=DEFAULT_DAYS, help="demo days (4)")
    ap.add_argument(
        "--events-scale", type=float, default=1.0, help="multiply --users (0.1: ~1M events)"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--end", type=date.fromisoformat, default=DEFAULT_END, help="last day (2026-11-03)"
    )
    ap.add_argument("--threads", type=int, default=2, help="threads of each engine (2)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per analysis (5)")
    ap.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds per analysis and engine before fewer reps",
    )
    ap.add_argument(
        "--timeout", type=float, default=30.0, help="give up a run after this many seconds (30)"
    )
    ap.add_argument(
        "--ch-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra ClickHouse session setting (repeatable), e.g.\n"
        "query_plan_optimize_join_order_limit=0",
    )
    ap.add_argument(
        "--no-chdb-funnel",
        action="store_true",
        help="leave our funnel on chdb out of the windowFunnel comparison\n"
        "(ClickHouse still builds chains with joins: 20-60 s a run at 11M events)",
    )
    ap.add_argument("--build-only", action="store_true", help="build/reuse the dataset, then stop")
    ap.add_argument("--only", help="comma-separated substrings of analysis names")
    ap.add_argument(
        "--cache-dir",
        default=os.environ.get(
            "YUNYING_BENCH_CACHE", str(Path(tempfile.gettempdir()) / "yunying-analytics-bench")
        ),
        help="where datasets are kept between runs",
    )
    ap.add_argument("--fresh", action="store_true", help="rebuild the dataset even if cached")
    ap.add_argument("--out", default=str(HERE / "results" / "analytics.json"))
    ap.add_argument("--markdown", action="store_true", help="also print Markdown")
    ap.add_argument("--render", help="print a saved JSON as Markdown and exit")
    ap.add_argument("--explain", help="comma-separated substrings: explain those analyses")
    ap.add_argument("--explain-dir", help="where --explain writes (default: CACHE_DIR/explain)")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as `yunying serve` and the CLI do (yunying.analytics.memory)
    if args.full:
        args.users = FULL_USERS
    if not args.explain_dir:
        args.explain_dir = str(Path(args.cache_dir) / "explain")
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return 0
    started, t0 = datetime.now(UTC), time.perf_counter()
    load_before = os.getloadavg()[0]
    if load_before > (os.cpu_count() or 1) / 2:
        print(
            f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs: timings are noisy"
        )
    ds, cached = get_dataset(args)
    info = ds.info
    print(
        f"dataset: {info['events']:,} events, {info['persons']:,} persons "
        f"({'cached' if cached else 'built'} in {ds.path})"
    )
    if args.build_only:
        return 0
    res = bench(args, ds)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "machine": machine(),
        "commit": commit(),
        "args": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in vars(args).items()},
        "dataset": info,
        "dataset_cached": cached,
        "threads": res["threads"],
        "reps": args.reps,
        "lines": [ln.as_dict() for ln in res["lines"]],
        "native": res["native"],
        "failed": res["failed"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(plain(report))
    if args.markdown:
        print()
        print(markdown(report))
    print(f"\nwritten {args.out}")
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
