"""The console dashboard's eight KPI metrics: sixteen single ``metric()`` calls against two
``metric_batch()`` calls, on the same data in the same run.

The dashboard (``yunying.console.data.dashboard``) shows new users, DAU, MAU, D1 and D7
retention, paying rate, GMV and ARPU, each per day over a 30-day range and over the 30 days
before: 16 ``metric()`` calls. ``metric_batch`` computes the same results with one call per range,
running each shared underlying query once (one new-user cohort query, one active-user facts
query, one trends pass). Both paths are timed here on a demo project (``generate_demo``, the
console benchmark's default size: 20,000 users x 90 days, ~1.1M events), generated once into
``--data-dir`` and reused; the results of the two paths must be equal.

Lines: ``single`` (16 calls one after another), ``single x4 threads`` (16 calls on 4 threads, as
the dashboard ran them), ``batch`` (2 calls one after another), ``batches`` (one
``metric_batches`` call for both ranges, what the dashboard runs now: the active-user counts and
GMV of both ranges from one query each, 6 queries); ``--legacy FILE`` adds the 16
calls of an older ``metrics.py`` (e.g. ``git show HEAD~1:src/yunying/analytics/metrics.py``), the
implementation before ``metric_batch``. Each line runs once as a warm-up, then ``--reps`` times,
interleaved; the table gives the median wall time, the process CPU time, the engine queries of
one run and the ratio to ``batch``. On a shared machine read the ratios.

    python benchmarks/metrics_bench.py [--users 20000 --days 90 --reps 5 --legacy FILE --json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from yunying.analytics import DateRange, MetricResult, metric, metric_batch  # noqa: E402
from yunying.analytics.metrics import metric_batches  # noqa: E402
from yunying.store.base import QueryResult  # noqa: E402

DASHBOARD = (
    "new_users",
    "dau",
    "mau",
    "retention_d1",
    "retention_d7",
    "paying_rate",
    "gmv",
    "arpu",
)


class Counting:
    """A source that passes every query to the real store and counts them."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dialect: str = store.dialect
        self.queries = 0

    def scoped(self, relation: str, project_id: int) -> Any:
        return self.store.scoped(relation, project_id)

    def query(self, sql: str) -> QueryResult:
        self.queries += 1
        result: QueryResult = self.store.query(sql)
        return result


Cards = dict[str, tuple[MetricResult, MetricResult]]


def single(one: Callable[..., MetricResult], workers: int = 1) -> Callable[..., Cards]:
    """The dashboard's way: per metric, one call per day over the range and one over the previous."""

    def run(source: Any, pid: int, dr: DateRange) -> Cards:
        def card(name: str) -> tuple[str, tuple[MetricResult, MetricResult]]:
            now = one(source, pid, name, dr, interval="day")
            return name, (now, one(source, pid, name, dr.previous()))

        if workers == 1:
            return dict(map(card, DASHBOARD))
        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(card, DASHBOARD))

    return run


def batch(source: Any, pid: int, dr: DateRange) -> Cards:
    now = metric_batch(source, pid, DASHBOARD, dr, interval="day")
    before = metric_batch(source, pid, DASHBOARD, dr.previous())
    return {name: (now[name], before[name]) for name in DASHBOARD}


def batches(source: Any, pid: int, dr: DateRange) -> Cards:
    """The dashboard's way now: one metric_batches call for both ranges."""
    now, before = metric_batches(source, pid, DASHBOARD, [(dr, "day"), (dr.previous(), None)])
    return {name: (now[name], before[name]) for name in DASHBOARD}


def as_dicts(cards: Cards) -> dict[str, Any]:
    return {name: (a.as_dict(), b.as_dict()) for name, (a, b) in cards.items()}


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


def load_legacy(path: Path) -> Callable[..., MetricResult]:
    spec = importlib.util.spec_from_file_location("legacy_metrics", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["legacy_metrics"] = module
    spec.loader.exec_module(module)
    fn: Callable[..., MetricResult] = module.metric
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--end", default="2026-11-22", help="last demo day (fixed: reusable data)")
    ap.add_argument("--range-days", type=int, default=30, help="the dashboard's range (30)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/yunying-metrics-bench"))
    ap.add_argument("--events-url", help="events engine URL (default: DuckDB in the data dir)")
    ap.add_argument("--legacy", type=Path, help="an older metrics.py to time as well")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()

    from yunying.config import load_settings
    from yunying.demo import generate_demo
    from yunying.runtime import Runtime

    end = date.fromisoformat(args.end)
    engine = "chdb" if args.events_url else "duckdb"
    data_dir = args.data_dir / f"{args.users}x{args.days}-{args.end}-{engine}"
    marker = data_dir / "metrics-bench.json"
    settings = {"events_url": args.events_url} if args.events_url else {}
    rt = Runtime.open(load_settings(data_dir=data_dir, **settings))
    if not marker.exists():
        started = time.perf_counter()
        summary = generate_demo(rt, "demo", users=args.users, days=args.days, seed=7, end=end)
        marker.write_text(json.dumps({"events": summary["events"], "project": summary["project"]}))
        print(f"demo: {summary['events']:,} events in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)  # fmt: skip
    info = json.loads(marker.read_text())
    from yunying.state import get_project

    pid = get_project(rt.state, info["project"]).id
    dr = DateRange(end - timedelta(days=args.range_days - 1), end)

    lines: dict[str, Callable[..., Cards]] = {
        "single": single(metric),
        "single x4 threads": single(metric, 4),
        "batch": batch,
        "batches": batches,
    }
    if args.legacy:
        lines["legacy single"] = single(load_legacy(args.legacy))
        lines["legacy single x4 threads"] = single(load_legacy(args.legacy), 4)
    queries: dict[str, int] = {}
    reference: dict[str, Any] | None = None
    for name, fn in lines.items():  # warm-up, query counts, equal results
        source = Counting(rt.store)
        got = as_dicts(fn(source, pid, dr))
        queries[name] = source.queries
        if reference is None:
            reference = got
        elif not close(got, reference):
            raise SystemExit(f"!!! {name} differs from single")
    wall: dict[str, list[float]] = {n: [] for n in lines}
    cpu: dict[str, list[float]] = {n: [] for n in lines}
    for _ in range(args.reps):
        for name, fn in lines.items():
            w, c = time.perf_counter(), time.process_time()
            fn(rt.store, pid, dr)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    rt.close()
    med = {n: statistics.median(v) for n, v in wall.items()}
    report = {
        "events": info["events"],
        "engine": engine,
        "range": f"{dr.date_from} .. {dr.date_to} and the {args.range_days} days before",
        "reps": args.reps,
        "lines": [
            {
                "line": n,
                "calls": {"batch": 2, "batches": 1}.get(n, 16),
                "queries": queries[n],
                "median_s": round(med[n], 3),
                "cpu_s": round(statistics.median(cpu[n]), 3),
                "x_batch": round(med[n] / med["batch"], 2),
            }
            for n in lines
        ],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['events']:,} events on {engine}; {report['range']}; median of {args.reps}")
    print(f"{'line':<26}{'calls':>6}{'queries':>9}{'wall s':>9}{'cpu s':>8}{'x batch':>9}")
    for r in report["lines"]:
        print(f"{r['line']:<26}{r['calls']:>6}{r['queries']:>9}{r['median_s']:>9.3f}"
              f"{r['cpu_s']:>8.3f}{r['x_batch']:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
