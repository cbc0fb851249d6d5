"""Segments: a full recompute of 20 segments (and 2 tags) of mixed rules, on DuckDB and on
ClickHouse (chdb), on the same generated data, in one run.

The data (``--scale 1``: 1,000,000 persons, 10,000,000 events over 90 days) are generated with
numpy and bulk-loaded as Arrow (``EventStore.bulk_insert_arrow``) into both engines: persons with
city / age / vip properties, one or two distinct ids each, events of six kinds with ``plan`` and
``duration_s`` properties and amounts on purchases, and per-person lifecycle stage, RFM class and
CLV bands in ``person_values`` (what the stages / RFM / CLV modules would write).

Measured per engine: ``recompute_all`` (2 tags and 20 segments; stages and RFM are not refreshed:
they are those modules' own cost) — ONE query computing all 22 definitions together (one pass over
the events), then the write of each one's members — and, in the same run, one scan of the events
relation (``SELECT count(*), sum(amount)``) as the reference; the ratio says how many event scans
a full recompute costs. ``--one-by-one`` also times the previous way (one query per definition,
in dependency order) and checks it finds the same sizes. Prints a table, writes JSON to
``--out``; ``--markdown`` prints Markdown.

    .venv/bin/python benchmarks/segments_bench.py --scale 0.01      # seconds
    .venv/bin/python benchmarks/segments_bench.py --scale 1         # the documented run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from yunying.audience import segments as S  # noqa: E402
from yunying.audience import tags as T  # noqa: E402
from yunying.audience.rules import inline_references  # noqa: E402
from yunying.config import load_settings  # noqa: E402
from yunying.runtime import Runtime  # noqa: E402
from yunying.state import create_project, open_state  # noqa: E402
from yunying.store.clickhouse_store import ClickHouseEventStore  # noqa: E402
from yunying.store.duckdb_store import ARROW_EVENTS, DuckDBEventStore  # noqa: E402

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DAYS = 90
EVENTS = np.array(
    ["app_install", "sign_up", "edit_video", "export_video", "check_in", "purchase_membership"]
)
WEIGHTS = np.array([0.08, 0.07, 0.40, 0.25, 0.15, 0.05])
CITIES = np.array(["北京", "上海", "深圳", "成都", "杭州", "武汉"])
PLANS = np.array(["free", "pro", "vip"])
STAGES = np.array(["new", "active", "retained", "silent", "churned", "returned"])
RFM = np.array([f"{r}{f}{m}" for r in "HL" for f in "HL" for m in "HL"])
BANDS = np.array(["low", "medium", "high"])

TAGS: dict[str, dict[str, Any]] = {
    "heavy_editor": {"type": "event", "event": "edit_video", "times": 20,
                     "window": {"last_days": 30}},
    "payer": {"type": "event", "event": "purchase_membership"},
}  # fmt: skip


def segment_rules() -> list[tuple[str, dict[str, Any]]]:
    """20 segments of mixed rules (the 20th reads the 1st: dependency order)."""
    return [
        ("beijing", {"type": "property", "name": "city", "op": "eq", "value": "北京"}),
        ("young vip", {"type": "and", "rules": [
            {"type": "property", "name": "age", "op": "lt", "value": 25},
            {"type": "property", "name": "vip", "op": "eq", "value": True}]}),
        ("active editors 7d", {"type": "event", "event": "edit_video", "times": 3,
                               "window": {"last_days": 7}}),
        ("no export 30d", {"type": "event", "event": "export_video", "did": False,
                           "window": {"last_days": 30}}),
        ("exactly 2 check-ins 14d", {"type": "event", "event": "check_in", "count": "exactly",
                                     "times": 2, "window": {"last_days": 14}}),
        ("pro long edits", {"type": "event", "event": "edit_video", "times": 2, "filters": [
            {"field": "plan", "op": "eq", "value": "pro"},
            {"field": "duration_s", "op": "gte", "value": 120}]}),
        ("spent 100 in 30d", {"type": "aggregate", "event": "purchase_membership", "math": "sum",
                              "op": "gte", "value": 100, "window": {"last_days": 30}}),
        ("avg order > 40", {"type": "aggregate", "event": "purchase_membership", "math": "avg",
                            "op": "gt", "value": 40}),
        ("new this week", {"type": "first_time", "event": "app_install",
                           "window": {"last_days": 7}}),
        ("lapsed", {"type": "last_time", "event": None,
                    "window": {"before": (NOW - timedelta(days=30)).date().isoformat()}}),
        ("october buyers", {"type": "event", "event": "purchase_membership", "window": {
            "from": "2026-10-01", "to": "2026-10-31"}}),
        ("churned or silent", {"type": "stage", "in": ["churned", "silent"]}),
        ("rfm champions", {"type": "rfm", "in": ["HHH", "HHL"]}),
        ("high churn risk", {"type": "clv", "band": "churn_risk", "in": ["high"]}),
        ("high value", {"type": "clv", "band": "value_band", "in": ["high"]}),
        ("heavy editors", {"type": "tag", "name": "heavy_editor"}),
        ("win back payers", {"type": "and", "rules": [
            {"type": "tag", "name": "payer"},
            {"type": "stage", "in": ["churned"]},
            {"type": "not", "rule": {"type": "event", "event": None,
                                     "window": {"last_days": 14}}}]}),
        ("shanghai or shenzhen exporters", {"type": "and", "rules": [
            {"type": "property", "name": "city", "op": "in", "value": ["上海", "深圳"]},
            {"type": "event", "event": "export_video", "times": 5}]}),
        ("mixed", {"type": "or", "rules": [
            {"type": "and", "rules": [
                {"type": "event", "event": "sign_up", "window": {"last_days": 30}},
                {"type": "event", "event": "purchase_membership", "did": False}]},
            {"type": "aggregate", "event": "edit_video", "math": "max", "field": "duration_s",
             "op": "gte", "value": 290, "window": {"last_days": 3}}]}),
        ("beijing not heavy", {"type": "and", "rules": [
            {"type": "segment", "id": 1},
            {"type": "not", "rule": {"type": "tag", "name": "heavy_editor"}}]}),
    ]  # fmt: skip


# -- data -------------------------------------------------------------------------------------------


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random version-4-looking UUID strings, formatted without a Python loop."""
    import binascii

    raw = np.frombuffer(binascii.hexlify(rng.bytes(16 * n)), dtype="S32")
    hexed = pa.array(raw, pa.binary(32)).cast(pa.string())

    def part(a: int, b: int) -> pa.Array:
        return pc.utf8_slice_codeunits(hexed, a, b)

    return pc.binary_join_element_wise(
        part(0, 8), part(8, 12), part(12, 16), part(16, 20), part(20, 32), "-"
    )


def _names(prefix: str, numbers: np.ndarray) -> pa.Array:
    """``prefix`` followed by each number, as Arrow strings."""
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def generate(persons: int, events: int, seed: int = 7) -> dict[str, Any]:
    """Arrow tables of raw persons, distinct ids and events, and person values."""
    rng = np.random.default_rng(seed)
    pids = _uuids(rng, persons)
    city = pa.array(CITIES[rng.integers(0, len(CITIES), persons)])
    age = pa.array(rng.integers(16, 60, persons).astype(str))
    vip = pa.array(np.where(rng.random(persons) < 0.2, "true", "false"))
    props = pc.binary_join_element_wise('{"city":"', city, '","age":', age, ',"vip":', vip, "}", "")
    persons_t = pa.table(
        {
            "project_id": pa.array(np.ones(persons, np.int32)),
            "id": pids,
            "created_at": pa.array([datetime(2026, 1, 1)] * persons, pa.timestamp("us")),
            "properties": props,
            "is_identified": pa.array(np.zeros(persons, bool)),
        }
    )
    second = rng.random(persons) < 0.2
    idx = np.arange(persons)
    dids = pa.concat_arrays([_names("d", idx), _names("u", idx[second])])
    owner = pc.take(pids, pa.array(np.concatenate([idx, idx[second]])))
    ids_t = pa.table(
        {
            "project_id": pa.array(np.ones(len(dids), np.int32)),
            "distinct_id": dids,
            "person_id": owner,
        }
    )
    # events: persons with skewed activity, times spread over DAYS before NOW
    who = np.minimum((rng.pareto(1.2, events) * persons / 8).astype(np.int64), persons - 1)
    who = rng.permutation(persons)[who]
    kind = rng.choice(len(EVENTS), size=events, p=WEIGHTS)
    end_us = int(NOW.replace(tzinfo=None).timestamp() * 1e6)
    ts = end_us - (rng.random(events) * DAYS * 86_400e6).astype(np.int64)
    plan = pa.array(PLANS[rng.integers(0, 3, events)])
    dur = pa.array(rng.integers(5, 300, events).astype(str))
    eprops = pc.binary_join_element_wise('{"plan":"', plan, '","duration_s":', dur, "}", "")
    amount = np.where(kind == 5, rng.choice([6.0, 30.0, 68.0, 128.0], events), np.nan)
    n = events
    events_t = pa.Table.from_arrays(
        [
            pa.array(np.ones(n, np.int32)),
            _uuids(rng, n),
            pa.array(EVENTS[kind]),
            _names("d", who),
            pc.take(pids, pa.array(who)),
            pa.array(ts.astype("datetime64[us]")),
            pa.array(ts.astype("datetime64[us]")),
            eprops,
            pa.array(np.full(n, "douyin")),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            pa.array(amount, from_pandas=True),
        ],
        schema=ARROW_EVENTS,
    )
    values = {
        "stage": STAGES[rng.integers(0, len(STAGES), persons)],
        "rfm": RFM[rng.integers(0, len(RFM), persons)],
        "clv:churn_risk": BANDS[rng.integers(0, 3, persons)],
        "clv:value_band": BANDS[rng.integers(0, 3, persons)],
    }
    return {"persons": persons_t, "ids": ids_t, "events": events_t, "pids": pids,
            "values": values}  # fmt: skip


def load(store: Any, data: dict[str, Any]) -> None:
    for start in range(0, data["events"].num_rows, 2_000_000):
        store.bulk_insert_arrow("raw_events", data["events"].slice(start, 2_000_000))
    store.bulk_insert_arrow("raw_persons", data["persons"])
    store.bulk_insert_arrow("raw_person_distinct_ids", data["ids"])
    store.refresh_overrides()  # the bulk load bypassed the writer's person overrides
    for scope, labels in data["values"].items():
        store.replace_person_values(
            1, scope, pa.table({"person_id": data["pids"], "label": pa.array(labels)})
        )


# -- timing -----------------------------------------------------------------------------------------


def scan_seconds(store: Any, reps: int) -> float:
    """Median time of one scan of the events relation: count(*), sum(amount)."""
    rel = store.scoped("events", 1).sql(store.dialect)
    sql = f"SELECT count(*), sum(amount) FROM ({rel}) AS e"
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        store.query(sql)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_engine(
    name: str, root: Path, data: dict[str, Any], threads: int, reps: int, one_by_one: bool
) -> dict:
    state_url = f"sqlite:///{root / name / 'state.db'}"
    settings = load_settings(data_dir=root / name)
    if name == "duckdb":
        store: Any = DuckDBEventStore(root / name / "events.duckdb", threads=threads)
    else:
        store = ClickHouseEventStore(f"chdb://{(root / name / 'ch').absolute()}")
        store.db.command(f"SET max_threads = {threads}")
    rt = Runtime(settings, open_state(state_url), store)
    t = time.perf_counter()
    load(store, data)
    if name == "duckdb":
        store.checkpoint()
    else:
        for table in ("raw_events", "raw_persons", "raw_person_distinct_ids"):
            store.db.command(f"OPTIMIZE TABLE {table} FINAL")
    load_s = time.perf_counter() - t
    project = create_project(rt.state, "bench", "Asia/Shanghai").project
    for tag, rule in TAGS.items():
        T.create_tag(rt.state, project, tag, rule)
    for seg_name, rule in segment_rules():
        S.create_segment(rt, project, seg_name, rules=rule)
    scan_seconds(store, 1)  # warm-up
    runs = []
    report: Any = None
    for _ in range(reps):
        t = time.perf_counter()
        report = S.recompute_all(rt, project, NOW, derived=False)
        runs.append(time.perf_counter() - t)
        assert not report.failed, report.failed
    scan = scan_seconds(store, 3)
    full = statistics.median(runs)
    # the one query of the 22 definitions, without writing members or state
    order = S.dependency_order(rt.state, project.id)
    defs = S._batch_rules(rt.state, project.id, order)
    t = time.perf_counter()
    S.run_batch(rt, project, [inline_references(defs[n], defs) for n in order], NOW)
    queries = time.perf_counter() - t
    out = {
        "engine": name,
        "load_seconds": round(load_s, 2),
        "recompute_seconds": round(full, 3),
        "recompute_runs": [round(r, 3) for r in runs],
        "recompute_query_seconds": report.query_seconds,
        "recompute_write_seconds": report.write_seconds,
        "queries_only_seconds": round(queries, 3),
        "scan_seconds": round(scan, 3),
        "ratio_to_scan": round(full / scan, 1),
        "queries_ratio_to_scan": round(queries / scan, 1),
    }
    if one_by_one:  # the previous way, in the same run: one query (one events scan) each
        t = time.perf_counter()
        single = S._compute_nodes(rt, project, order, NOW, batch=False)
        out["one_by_one_seconds"] = round(time.perf_counter() - t, 3)
        out["one_by_one_ratio_to_scan"] = round(out["one_by_one_seconds"] / scan, 1)
        assert not single.failed, single.failed
        assert [c["size"] for c in single.computed] == [c["size"] for c in report.computed]
    out |= {
        "items": [
            {"kind": c["kind"], "name": c["name"], "size": c["size"], "seconds": c["seconds"]}
            for c in report.computed
        ],
    }
    rt.close()
    return out


def markdown(result: dict[str, Any]) -> str:
    info = result["info"]
    lines = [
        f"{info['persons']:,} persons, {info['events']:,} events; {info['threads']} threads; "
        f"{info['reps']} run(s), median; {info['machine']}",
        "",
        "| engine | full recompute (2 tags + 20 segments) | their one query alone | one events "
        "scan | ratio (full / scan) | ratio (query / scan) | one query each (previous way) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["engines"]:
        single = (
            f"{r['one_by_one_seconds']:.2f} s ({r['one_by_one_ratio_to_scan']:.0f}×)"
            if "one_by_one_seconds" in r
            else "not run"
        )
        lines.append(
            f"| {r['engine']} | {r['recompute_seconds']:.2f} s | {r['queries_only_seconds']:.2f} s "
            f"| {r['scan_seconds']:.3f} s | {r['ratio_to_scan']:.1f}× "
            f"| {r['queries_ratio_to_scan']:.1f}× | {single} |"
        )
    lines += ["", "Member writes (and bookkeeping) per item, after the shared query:", ""]
    lines += ["| item | size | " + " | ".join(r["engine"] for r in result["engines"]) + " |"]
    lines.append("|---|---:|" + "---:|" * len(result["engines"]))
    for i, item in enumerate(result["engines"][0]["items"]):
        secs = " | ".join(f"{r['items'][i]['seconds']:.2f} s" for r in result["engines"])
        lines.append(f"| {item['kind']} {item['name']} | {item['size']:,} | {secs} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1,
                        help="1 = 1M persons / 10M events (default 0.1)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1, help="full recomputes per engine")
    parser.add_argument("--engines", default="duckdb,chdb")
    parser.add_argument("--out", default=str(HERE / "results" / "segments.json"))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--one-by-one", action="store_true",
                        help="also time computing each definition by its own query")  # fmt: skip
    parser.add_argument("--keep", help="keep the data under this directory")
    args = parser.parse_args()
    persons = max(1000, int(1_000_000 * args.scale))
    events = max(10_000, int(10_000_000 * args.scale))
    t = time.perf_counter()
    data = generate(persons, events)
    gen_s = time.perf_counter() - t
    print(f"generated {persons:,} persons, {events:,} events in {gen_s:.1f} s", flush=True)
    root = Path(args.keep or tempfile.mkdtemp(prefix="yunying-segbench-"))
    engines = []
    try:
        for name in args.engines.split(","):
            (root / name).mkdir(parents=True, exist_ok=True)
            r = run_engine(name, root, data, args.threads, args.reps, args.one_by_one)
            print(
                f"{name:7s} recompute {r['recompute_seconds']:7.2f} s   query alone "
                f"{r['queries_only_seconds']:7.2f} s   scan "
                f"{r['scan_seconds']:6.3f} s   ratio {r['ratio_to_scan']:5.1f}x   "
                f"(load {r['load_seconds']:.1f} s)",
                flush=True,
            )
            engines.append(r)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load_avg = os.getloadavg()
    result = {
        "info": {
            "persons": persons,
            "events": events,
            "threads": args.threads,
            "reps": args.reps,
            "scale": args.scale,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{load_avg[0]:.1f} at the end",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        },
        "engines": engines,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    if args.markdown:
        print(markdown(result))


if __name__ == "__main__":
    main()
