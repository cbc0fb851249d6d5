"""Ingestion throughput against its ceilings, on one machine, in one run, on the same payloads.

Measures, each time in events per second:

(a) HTTP ingestion: ``POST /v1/events`` on a real ``yunying serve`` subprocess over loopback, with
    ``--clients`` concurrent keep-alive connections, batches of each ``--batch-sizes``; a 200
    means committed, so this is end-to-end durable throughput;
(b) the HTTP ceiling: the same request bodies posted to ``benchmarks/parse_only_app.py`` -- the
    same uvicorn + FastAPI stack and process model, whose route only reads the body and
    ``orjson.loads`` it;
(c) file import: ``yunying import`` of JSONL (and CSV, Parquet) files of ``--import-events``
    events, next to the time to merely parse the same file (orjson per JSONL line; csv.DictReader;
    pyarrow ``to_pylist``) in this process.

Prints a table (events/s, ratio to the ceiling, CPU seconds the server and the client spent) and
writes the same figures as JSON to ``--out``. Every event is valid and has a unique uuid, so
each one is stored (no dedupe shortcuts). Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- realistic events -----------------------------------------------------------------------------

EVENT_MIX = [
    ("$screen", 30),
    ("edit_clip", 20),
    ("export_video", 12),
    ("template_click", 12),
    ("play_music", 10),
    ("share", 6),
    ("purchase", 3),
    ("$identify", 3),
    ("$signup", 1),
    ("vip_page_view", 3),
]
EXTRA_PROPS = (
    "$screen_name",
    "template_id",
    "duration_ms",
    "resolution",
    "fps",
    "music_id",
    "filter",
    "network",
    "is_vip",
    "$country",
    "$city",
    "clip_count",
)


class EventFactory:
    """Events shaped like a short-video editing app's: 8-15 properties, many users, $identify."""

    def __init__(self, seed: int, users: int = 20_000) -> None:
        self.rng = random.Random(seed)
        self.users = users
        self.now = datetime.now(UTC)
        names, weights = zip(*EVENT_MIX, strict=True)
        self.names, self.weights = list(names), list(weights)

    def _extra(self, key: str) -> Any:
        r = self.rng
        return {
            "$screen_name": lambda: r.choice(("home", "editor", "templates", "export", "vip")),
            "template_id": lambda: f"tpl_{r.randrange(500)}",
            "duration_ms": lambda: r.randrange(200, 600_000),
            "resolution": lambda: r.choice(("720p", "1080p", "4k")),
            "fps": lambda: r.choice((24, 30, 60)),
            "music_id": lambda: f"m{r.randrange(10_000)}",
            "filter": lambda: r.choice(("none", "warm", "film", "bw", "vivid")),
            "network": lambda: r.choice(("wifi", "5g", "4g")),
            "is_vip": lambda: r.random() < 0.1,
            "$country": lambda: "CN",
            "$city": lambda: r.choice(("Shanghai", "Beijing", "Shenzhen", "Chengdu", "Hangzhou")),
            "clip_count": lambda: r.randrange(1, 40),
        }[key]()

    def event(self) -> dict[str, Any]:
        r = self.rng
        user = r.randrange(self.users)
        android = user % 3 != 0
        name = r.choices(self.names, self.weights)[0]
        props: dict[str, Any] = {
            "$os": "Android" if android else "iOS",
            "$os_version": r.choice(("13", "14", "15")) if android else r.choice(("17.5", "18.1")),
            "$app_version": r.choice(("5.2.0", "5.3.1", "5.4.0")),
            "$device_id": f"dev-{user:06d}",
            "$lib": "yunying-android" if android else "yunying-ios",
            "$lib_version": "1.4.2",
            "$session_id": f"s-{user}-{r.randrange(50)}",
            "$channel": r.choice(("appstore", "huawei", "xiaomi", "oppo", "vivo", "douyin_ads")),
        }
        for key in r.sample(EXTRA_PROPS, r.randrange(0, 8)):
            props[key] = self._extra(key)
        distinct_id = f"user-{user}" if r.random() < 0.7 else f"anon-{user:06d}"
        if name == "$identify":
            distinct_id = f"user-{user}"
            props["$anon_distinct_id"] = f"anon-{user:06d}"
            props["$set"] = {"plan": r.choice(("free", "vip")), "city": props.get("$city", "")}
        elif name == "purchase":
            props["$amount"] = r.choice((6.0, 18.0, 30.0, 68.0, 198.0))
            props["$currency"] = "CNY"
        elif r.random() < 0.03:
            props["$set_once"] = {"first_channel": props["$channel"]}
        ts = self.now - timedelta(seconds=r.randrange(30 * 86_400))
        return {
            "event": name,
            "distinct_id": distinct_id,
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "uuid": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "properties": props,
        }

    def events(self, n: int) -> list[dict[str, Any]]:
        return [self.event() for _ in range(n)]


def bodies_of(events: list[dict[str, Any]], batch_size: int) -> list[bytes]:
    """Native request bodies ``{"batch": [...]}`` of ``batch_size`` events each."""
    return [
        orjson.dumps({"batch": events[i : i + batch_size]})
        for i in range(0, len(events), batch_size)
    ]


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def yunying(data_dir: Path, *args: str) -> Any:
    proc = subprocess.run(
        [PY, "-m", "yunying", *args, "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"yunying {' '.join(args)} failed: {proc.stderr.decode()[-2000:]}")
    return orjson.loads(proc.stdout)


class ServerProcess:
    """A server subprocess on a free loopback port; stopped with SIGINT (graceful)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log.open("ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}, see {log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"server did not start, see {log}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- HTTP load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    wall_s: float
    requests: int
    accepted: int
    failures: list[str] = field(default_factory=list)


def post_all(
    port: int,
    bodies: list[bytes],
    headers: dict[str, str],
    clients: int,
    seconds: float | None = None,
    repeat: bool = False,
) -> LoadResult:
    """POST bodies over ``clients`` keep-alive connections until they are all sent or
    ``seconds`` have passed; with ``repeat``, cycle through them until ``seconds`` have passed."""
    lock = threading.Lock()
    order = iter(range(10**12)) if repeat else iter(range(len(bodies)))
    accepted = [0] * clients
    sent = [0] * clients
    failures: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline = [float("inf")]

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        start.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                i = next(order, None)
            if i is None:
                break
            conn.request("POST", "/v1/events", bodies[i % len(bodies)], headers)
            resp = conn.getresponse()
            data = resp.read()
            sent[k] += 1
            if resp.status != 200:
                failures.append(f"{resp.status}: {data[:200]!r}")
                continue
            accepted[k] += orjson.loads(data)["accepted"]
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    if seconds is not None:
        deadline[0] = t0 + seconds
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return LoadResult(time.perf_counter() - t0, sum(sent), sum(accepted), failures)


@dataclass
class Measurement:
    """One line of the results table."""

    scenario: str
    target: str  # what ran: yunying serve, parse-only app, yunying import, parse in-process
    batch_size: int | None
    events: int
    seconds: float
    events_per_s: float
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    note: str = ""


def measure_http(
    target: str,
    bodies: list[bytes],
    warmup: list[bytes],
    batch_size: int,
    clients: int,
    seconds: float,
    workdir: Path,
    log_level: str,
) -> Measurement:
    """Load one server with ``bodies`` for at most ``seconds`` (the ceiling: cycling through
    them for ``seconds``, since it is too fast to time on one pass)."""
    port = free_port()
    headers = {"Content-Type": "application/json"}
    if target == "yunying":
        data_dir = workdir / f"serve-{batch_size}"
        key = yunying(data_dir, "project", "create", "bench")["write_key"]
        headers["Authorization"] = f"Bearer {key}"
        argv = [PY, "-m", "yunying", "serve", "--data-dir", str(data_dir), "--port", str(port)]
        argv += ["--log-level", log_level]
    else:
        argv = [PY, str(HERE / "parse_only_app.py"), "--port", str(port)]
    server = ServerProcess(argv, port, workdir / f"{target}-{batch_size}.log")
    try:
        post_all(port, warmup, headers, clients)
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        if target == "yunying":
            load = post_all(port, bodies, headers, clients, seconds)
        else:
            load = post_all(port, bodies, headers, clients, min(seconds, 5.0), repeat=True)
        server_cpu, client_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - client0
        if load.failures:
            raise RuntimeError(f"{target}: {len(load.failures)} failed: {load.failures[:3]}")
        expected = sum(
            len(orjson.loads(bodies[i % len(bodies)])["batch"]) for i in range(load.requests)
        )
        if load.accepted != expected:
            raise RuntimeError(f"{target}: accepted {load.accepted} of {expected}")
        if target == "yunying":  # every acknowledged event is really there
            warm = sum(len(orjson.loads(b)["batch"]) for b in warmup)
            stored = yunying(data_dir, "sql", "SELECT count(*) FROM events")["rows"][0][0]
            if stored != expected + warm:
                raise RuntimeError(f"stored {stored} events, expected {expected + warm}")
    finally:
        server.stop()
    return Measurement(
        scenario=f"http batch={batch_size}",
        target="yunying serve" if target == "yunying" else "parse-only app (ceiling)",
        batch_size=batch_size,
        events=load.accepted,
        seconds=load.wall_s,
        events_per_s=load.accepted / load.wall_s,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        note=f"{clients} connections, {load.requests} requests",
    )


# -- files ----------------------------------------------------------------------------------------


def flat_rows(events: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Events as flat rows: top-level fields, one column per scalar property, nested ones in
    ``properties`` (JSON), the way analytics exports usually look."""
    rows, keys = [], {}
    for ev in events:
        row = {k: ev[k] for k in ("event", "distinct_id", "timestamp", "uuid")}
        nested = {}
        for k, v in ev["properties"].items():
            if isinstance(v, dict | list):
                nested[k] = v
            else:
                row[k] = v
                keys[k] = None
        row["properties"] = orjson.dumps(nested).decode() if nested else None
        rows.append(row)
    return ["event", "distinct_id", "timestamp", "uuid", *keys, "properties"], rows


def write_files(
    events: list[dict[str, Any]], workdir: Path, formats: list[str], stem: str = "events"
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if "jsonl" in formats:
        paths["jsonl"] = workdir / f"{stem}.jsonl"
        with paths["jsonl"].open("wb") as fh:
            for ev in events:
                fh.write(orjson.dumps(ev) + b"\n")
    if "csv" in formats or "parquet" in formats:
        columns, rows = flat_rows(events)
    if "csv" in formats:
        paths["csv"] = workdir / f"{stem}.csv"
        with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    if "parquet" in formats:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        ts = pa.array(
            [datetime.fromisoformat(r["timestamp"]).replace(tzinfo=None) for r in rows],
            pa.timestamp("us"),
        )
        table = table.set_column(table.column_names.index("timestamp"), "timestamp", ts)
        paths["parquet"] = workdir / f"{stem}.parquet"
        pq.write_table(table, paths["parquet"])
    return paths


def parse_only(fmt: str, path: Path) -> int:
    """Read and decode a file without doing anything with its rows; returns the row count."""
    n = 0
    if fmt == "jsonl":
        loads = orjson.loads
        with path.open("rb") as fh:
            for line in fh:
                loads(line)
                n += 1
    elif fmt == "csv":
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            for _ in csv.DictReader(fh):
                n += 1
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            n += len(batch.to_pylist())
    return n


CEILING_WHAT = {
    "jsonl": "orjson.loads per line",
    "csv": "csv.DictReader",
    "parquet": "pyarrow iter_batches + to_pylist",
}


def run_import(path: Path, data_dir: Path, fmt: str) -> tuple[float, float, dict[str, Any]]:
    """``yunying import`` into a new project: wall seconds, CPU seconds, its JSON report."""
    yunying(data_dir, "project", "create", "bench")
    argv = [PY, "-m", "yunying", "import", str(path), "--project", "bench", "--json"]
    argv += ["--format", fmt, "--data-dir", str(data_dir)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"import failed: {proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, orjson.loads(proc.stdout)


def measure_import(fmt: str, path: Path, n: int, workdir: Path) -> list[Measurement]:
    t0 = time.perf_counter()
    parsed = parse_only(fmt, path)
    parse_s = time.perf_counter() - t0
    assert parsed == n, (parsed, n)
    # the fixed cost of the command (interpreter start, imports, opening the engines, closing)
    one = workdir / f"one.{fmt}"
    write_files(EventFactory(0).events(1), workdir, [fmt], stem="one")
    fixed_s, _, _ = run_import(one, workdir / f"import-one-{fmt}", fmt)
    import_s, import_cpu, report = run_import(path, workdir / f"import-{fmt}", fmt)
    if report["stored"] != n or report["rejected"]:
        raise RuntimeError(f"import stored {report['stored']} of {n}: {report['errors'][:3]}")
    size_mb = path.stat().st_size / 1e6
    return [
        Measurement(
            scenario=f"import {fmt}",
            target="yunying import",
            batch_size=None,
            events=n,
            seconds=import_s,
            events_per_s=n / import_s,
            server_cpu_s=import_cpu,
            note=(
                f"{size_mb:.1f} MB file; wall time of the whole command, of which about "
                f"{fixed_s:.2f} s is its fixed cost (the time to import a one-event file)"
            ),
        ),
        Measurement(
            scenario=f"import {fmt}",
            target=f"parse only: {CEILING_WHAT[fmt]} (ceiling)",
            batch_size=None,
            events=n,
            seconds=parse_s,
            events_per_s=n / parse_s,
        ),
    ]


# -- report ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import duckdb
    import fastapi
    import uvicorn

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "orjson": orjson.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
    }


def print_table(results: list[Measurement], ratios: dict[str, float]) -> None:
    head = (
        f"{'scenario':<15} {'target':<44} {'events':>9} {'seconds':>7} {'events/s':>9} "
        f"{'ratio':>6} {'srv CPU s':>9} {'ev/srv CPU s':>12} {'cli CPU s':>9}"
    )
    print(head)
    print("-" * len(head))
    for m in results:
        ratio = "" if "ceiling" in m.target else f"{ratios[m.scenario]:.4f}"
        cpu = "" if m.server_cpu_s is None else f"{m.server_cpu_s:.1f}"
        per_cpu = f"{m.events / m.server_cpu_s:,.0f}" if m.server_cpu_s else ""
        cli = "" if m.client_cpu_s is None else f"{m.client_cpu_s:.1f}"
        print(
            f"{m.scenario:<15} {m.target:<44} {m.events:>9,} {m.seconds:7.2f} "
            f"{m.events_per_s:9,.0f} {ratio:>6} {cpu:>9} {per_cpu:>12} {cli:>9}"
        )
    print(
        "ratio: events/s of the ingestion line over its ceiling's (the aim: >= 0.5). "
        "srv CPU: CPU seconds of the server process\n(all threads; for import, of the "
        "`yunying import` process); cli CPU: of the load generator (this process)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--http-events", type=int, default=200_000, help="most events per HTTP ingestion run"
    )
    parser.add_argument(
        "--seconds", type=float, default=12, help="most seconds per HTTP run (load phase)"
    )
    parser.add_argument("--batch-sizes", default="100,1000", help="events per request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--import-events", type=int, default=10_000, help="events per file")
    parser.add_argument("--formats", default="jsonl,csv,parquet", help="file formats to import")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--log-level", default="info", help="yunying serve --log-level")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ingest.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="yunying-bench-"))
    results: list[Measurement] = []
    started = time.perf_counter()
    info = machine()
    load_before = os.getloadavg()
    print(
        f"{info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"DuckDB {info['duckdb']}; load average {load_before[0]:.2f}; scratch {workdir}",
        flush=True,
    )
    if load_before[0] > 0.5 * info["cpus"]:
        print("warning: the machine is busy; figures will be low and noisy", flush=True)
    try:
        if not args.skip_http:
            factory = EventFactory(args.seed)
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                events = factory.events(args.http_events)
                bodies = bodies_of(events, batch_size)
                warmup = bodies_of(factory.events(min(args.http_events // 10, 2000)), batch_size)
                for target in ("parse_only", "yunying"):
                    print(f"http batch={batch_size}: {target} ...", flush=True)
                    results.append(
                        measure_http(
                            target,
                            bodies,
                            warmup,
                            batch_size,
                            args.clients,
                            args.seconds,
                            workdir,
                            args.log_level,
                        )
                    )
        if not args.skip_import:
            formats = [f for f in args.formats.split(",") if f]
            events = EventFactory(args.seed + 1).events(args.import_events)
            paths = write_files(events, workdir, formats)
            del events
            for fmt in formats:
                print(f"import {fmt} ...", flush=True)
                results.extend(measure_import(fmt, paths[fmt], args.import_events, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    ratios: dict[str, float] = {}
    for m in results:
        if "ceiling" in m.target:
            continue
        ceiling = next(c for c in results if c.scenario == m.scenario and "ceiling" in c.target)
        ratios[m.scenario] = m.events_per_s / ceiling.events_per_s
    print()
    print_table(results, ratios)
    load_after = os.getloadavg()  # includes this benchmark's own load
    if load_before[0] > 0.5 * info["cpus"]:
        print(f"warning: load average was {load_before[0]:.2f} at the start: figures are low")
    out = {
        "machine": {**info, "loadavg_before": load_before, "loadavg_after": load_after},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": [asdict(m) for m in results],
        "ratios": ratios,
        "total_seconds": time.perf_counter() - started,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nJSON: {args.out}  (total {out['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
