"""Ingestion throughput against its ceilings, on one machine, in one run, on the same payloads.

Measures, each time in events per second, every figure next to a reference taken in the same run:

(a) HTTP ingestion: ``POST /v1/events`` on a real ``yunying serve`` subprocess over loopback, with
    ``--clients`` concurrent keep-alive connections, batches of each ``--batch-sizes``; a 200
    means committed, so this is end-to-end durable throughput. Reference (the ceiling): the same
    request bodies posted to ``benchmarks/parse_only_app.py`` -- the same uvicorn + FastAPI stack
    and process model, whose route only reads the body and ``orjson.loads`` it.
(b) file import: ``yunying import`` of JSONL, CSV and Parquet files, next to the time to merely
    parse the same file in this process (orjson per JSONL line; csv.DictReader; pyarrow
    ``to_pylist``). The import's fixed cost (interpreter start, imports, opening the engines) is
    measured by importing a one-event file and reported apart.
(c) SDK protocols: the same logical events encoded in each SDK-compatible wire format (PostHog
    ``/batch/``, Segment/RudderStack ``/v1/batch``, Mixpanel ``/track`` form, Amplitude
    ``/2/httpapi``, Sensors Data ``/sa`` base64+gzip ``data_list``) and natively, each posted to a
    fresh ``yunying serve``; each next to the native endpoint and next to the parse-only ceiling
    of the same bytes (the decoding the protocol needs at least: form, base64, gunzip, JSON).

Every scenario is time-boxed (``--seconds``, or its event count, whichever comes first), so a
slow server makes the run shorter in events, not longer in time. Every event is valid and has a
unique uuid (or unique dedupe id in its protocol), so each one is really stored; after each
scenario the stored count is read back (the server's ``/api/v1/sql``; ``yunying sql`` after an
import) and compared with what was acknowledged. A
mismatch or a refused request is reported loudly and makes the exit status 1.

Prints a table, writes the figures as JSON to ``--out``; ``--markdown`` prints the table as
Markdown too, and ``--render FILE`` prints a saved JSON as Markdown without running anything.
Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import gzip
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
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Environment of every ``yunying`` subprocess; ``--src`` puts another source tree first.
ENV = dict(os.environ)

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
SCREENS = ("home", "editor", "templates", "export", "vip")
CITIES = ("Shanghai", "Beijing", "Shenzhen", "Chengdu", "Hangzhou")
CHANNELS = ("appstore", "huawei", "xiaomi", "oppo", "vivo", "douyin_ads")


class EventFactory:
    """Events shaped like a short-video editing app's: 8-15 properties, many users, $identify."""

    def __init__(self, seed: int, users: int = 20_000) -> None:
        self.rng = r = random.Random(seed)
        self.users = users
        self.now = datetime.now(UTC).replace(microsecond=0)
        names, weights = zip(*EVENT_MIX, strict=True)
        self.names = list(names)
        self.cum_weights = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.extra: dict[str, Callable[[], Any]] = {
            "$screen_name": lambda: r.choice(SCREENS),
            "template_id": lambda: f"tpl_{r.randrange(500)}",
            "duration_ms": lambda: r.randrange(200, 600_000),
            "resolution": lambda: r.choice(("720p", "1080p", "4k")),
            "fps": lambda: r.choice((24, 30, 60)),
            "music_id": lambda: f"m{r.randrange(10_000)}",
            "filter": lambda: r.choice(("none", "warm", "film", "bw", "vivid")),
            "network": lambda: r.choice(("wifi", "5g", "4g")),
            "is_vip": lambda: r.random() < 0.1,
            "$country": lambda: "CN",
            "$city": lambda: r.choice(CITIES),
            "clip_count": lambda: r.randrange(1, 40),
        }
        self.extra_keys = list(self.extra)

    def event(self) -> dict[str, Any]:
        r = self.rng
        user = r.randrange(self.users)
        android = user % 3 != 0
        name = r.choices(self.names, cum_weights=self.cum_weights)[0]
        props: dict[str, Any] = {
            "$os": "Android" if android else "iOS",
            "$os_version": r.choice(("13", "14", "15")) if android else r.choice(("17.5", "18.1")),
            "$app_version": r.choice(("5.2.0", "5.3.1", "5.4.0")),
            "$device_id": f"dev-{user:06d}",
            "$lib": "yunying-android" if android else "yunying-ios",
            "$lib_version": "1.4.2",
            "$session_id": f"s-{user}-{r.randrange(50)}",
            "$channel": r.choice(CHANNELS),
        }
        for key in r.sample(self.extra_keys, r.randrange(0, 8)):
            props[key] = self.extra[key]()
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
        ts = self.now - timedelta(milliseconds=r.randrange(30 * 86_400_000))
        return {
            "event": name,
            "distinct_id": distinct_id,
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "uuid": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "properties": props,
        }

    def events(self, n: int) -> list[dict[str, Any]]:
        return [self.event() for _ in range(n)]


def chunks(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


# -- wire formats ---------------------------------------------------------------------------------
#
# Each protocol encodes the same logical events: event name, distinct id, time, a unique dedupe
# id and the properties bag travel in the places that protocol's SDKs put them; ``$identify``
# becomes the protocol's own login call. ``Payload.stored`` is the number of events the server
# stores for it (a Sensors ``track_signup`` is stored as ``$identify`` + ``$SignUp``).


@dataclass
class Payload:
    body: bytes
    events: int  # logical events (SDK calls) in the body
    stored: int  # events the server stores for it


@dataclass
class Protocol:
    name: str
    method_path: str  # path (and query) on both servers
    encode: Callable[[list[dict[str, Any]], str], Payload]
    headers: Callable[[str], dict[str, str]]
    ceiling_what: str


def ms_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _native(batch: list[dict[str, Any]], key: str) -> Payload:
    return Payload(orjson.dumps({"batch": batch}), len(batch), len(batch))


def _posthog(batch: list[dict[str, Any]], key: str) -> Payload:
    out = [
        {
            "event": ev["event"],
            "distinct_id": ev["distinct_id"],
            "timestamp": ev["timestamp"],
            "uuid": ev["uuid"],
            "properties": ev["properties"],
            "type": "capture",
        }
        for ev in batch
    ]
    return Payload(orjson.dumps({"api_key": key, "batch": out}), len(out), len(out))


def _segment(batch: list[dict[str, Any]], key: str) -> Payload:
    out = []
    for ev in batch:
        did, props = ev["distinct_id"], ev["properties"]
        msg: dict[str, Any] = {"timestamp": ev["timestamp"], "messageId": ev["uuid"]}
        if ev["event"] == "$identify":
            msg |= {"type": "identify", "userId": did, "anonymousId": props["$anon_distinct_id"]}
            msg["traits"] = props["$set"]
        else:
            msg |= {"type": "track", "event": ev["event"], "properties": props}
            msg["userId" if did.startswith("user-") else "anonymousId"] = did
        out.append(msg)
    return Payload(orjson.dumps({"batch": out}), len(out), len(out))


def _mixpanel(batch: list[dict[str, Any]], key: str) -> Payload:
    out = []
    for ev in batch:
        props = {"token": key, "distinct_id": ev["distinct_id"], "time": ms_of(ev["timestamp"])}
        props["$insert_id"] = ev["uuid"].replace("-", "")  # mixpanel-python: uuid4().hex
        out.append({"event": ev["event"], "properties": props | ev["properties"]})
    # mixpanel-python's Consumer: a form with the JSON in ``data``, ``verbose=1``, ``ip=0``
    body = urlencode({"data": orjson.dumps(out).decode(), "verbose": "1", "ip": "0"}).encode()
    return Payload(body, len(out), len(out))


def _amplitude(batch: list[dict[str, Any]], key: str) -> Payload:
    out = []
    for ev in batch:
        did, props = ev["distinct_id"], dict(ev["properties"])
        item: dict[str, Any] = {
            "event_type": ev["event"],
            "time": ms_of(ev["timestamp"]),
            "insert_id": ev["uuid"],
        }
        if ev["event"] == "$identify":  # a login: both ids on an $identify
            item |= {"user_id": did, "device_id": props.pop("$anon_distinct_id")}
        else:
            item["user_id" if did.startswith("user-") else "device_id"] = did
        user_props = {}
        if "$set" in props:
            user_props["$set"] = props.pop("$set")
        if "$set_once" in props:
            user_props["$setOnce"] = props.pop("$set_once")
        item["event_properties"] = props
        if user_props:
            item["user_properties"] = user_props
        out.append(item)
    body = orjson.dumps({"api_key": key, "events": out, "options": {"min_id_length": 5}})
    return Payload(body, len(out), len(out))


def _sensors(batch: list[dict[str, Any]], key: str) -> Payload:
    out, stored = [], 0
    for ev in batch:
        u = uuid.UUID(ev["uuid"])
        rec: dict[str, Any] = {
            "distinct_id": ev["distinct_id"],
            "time": ms_of(ev["timestamp"]),
            "_track_id": u.int & 0x7FFFFFFF,
            "lib": {"$lib": "python", "$lib_version": "1.11.0", "$lib_method": "code"},
        }
        props = ev["properties"]
        if ev["event"] == "$identify":  # track_signup: stored as $identify + $SignUp
            props = dict(props)
            rec |= {"type": "track_signup", "event": "$SignUp"}
            rec["original_id"] = props.pop("$anon_distinct_id")
            stored += 2
        else:
            rec |= {"type": "track", "event": ev["event"]}
            stored += 1
        rec["properties"] = props
        out.append(rec)
    # the Python/Java/Android SDKs: form ``data_list`` = base64(gzip(JSON array)), ``gzip=1``
    packed = base64.b64encode(gzip.compress(orjson.dumps(out), compresslevel=6)).decode()
    body = urlencode({"data_list": packed, "gzip": "1"}).encode()
    return Payload(body, len(out), stored)


def _json_headers(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _form_headers(key: str) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded"}


PROTOCOLS = {
    "native": Protocol(
        "native",
        "/v1/events",
        _native,
        lambda key: {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        "orjson.loads",
    ),
    "posthog": Protocol("posthog", "/batch/", _posthog, _json_headers, "orjson.loads"),
    "segment": Protocol(
        "segment",
        "/v1/batch",
        _segment,
        lambda key: {
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        },
        "Basic header + orjson.loads",
    ),
    "mixpanel": Protocol(
        "mixpanel", "/track", _mixpanel, _form_headers, "parse_qs + orjson.loads of data"
    ),
    "amplitude": Protocol("amplitude", "/2/httpapi", _amplitude, _json_headers, "orjson.loads"),
    "sensors": Protocol(
        "sensors",
        "/sa?token={key}",
        _sensors,
        _form_headers,
        "parse_qs + b64decode + gunzip + orjson",
    ),
}


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def yunying(data_dir: Path, *args: str, timeout: float = 300) -> Any:
    proc = subprocess.run(
        [PY, "-m", "yunying", *args, "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        check=False,
        timeout=timeout,
        env=ENV,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"yunying {' '.join(args)} failed: {proc.stderr.decode()[-2000:]}")
    return orjson.loads(proc.stdout)


def stored_events(data_dir: Path, tries: int = 3) -> int:
    """Events of project ``bench`` read back through ``yunying sql`` (via the server if up).
    Retried: a command failing to start (say, a source file caught mid-edit) is no verdict."""
    for attempt in range(tries):
        try:
            out = yunying(data_dir, "sql", "SELECT count(*) FROM events", "--project", "bench")
            return int(out["rows"][0][0])
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            if attempt == tries - 1:
                raise
            print(f"  yunying sql failed, retrying: {str(exc)[-300:]}", flush=True)
            time.sleep(3)
    raise AssertionError("unreachable")


def stored_via_api(port: int, data_dir: Path, tries: int = 3) -> int:
    """Events of project ``bench`` read back through the running server's ``/api/v1/sql``,
    authenticated by the installation's local admin token."""
    token = (data_dir / ".admin_token").read_text().strip()
    body = orjson.dumps({"sql": "SELECT count(*) FROM events", "project": "bench"})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for attempt in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("POST", "/api/v1/sql", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200:
                return int(orjson.loads(data)["rows"][0][0])
            problem = f"{resp.status}: {data[:300]!r}"
        except OSError as exc:
            problem = repr(exc)
        finally:
            conn.close()
        if attempt == tries - 1:
            raise RuntimeError(f"reading the stored count failed: {problem}")
        time.sleep(2)
    raise AssertionError("unreachable")


class ServerProcess:
    """A server subprocess on a free loopback port; stopped with SIGINT (graceful)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.logpath = log
        self.log = log.open("ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                tail = log.read_text(errors="replace")[-1000:]
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
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
        if not self.log.closed:
            self.log.close()


def start_yunying(data_dir: Path, workdir: Path, label: str, log_level: str) -> ServerProcess:
    port = free_port()
    argv = [PY, "-m", "yunying", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    argv += ["--log-level", log_level]
    return ServerProcess(argv, port, workdir / f"{label}.log")


def start_parse_only(workdir: Path, label: str) -> ServerProcess:
    port = free_port()
    argv = [PY, str(HERE / "parse_only_app.py"), "--port", str(port)]
    return ServerProcess(argv, port, workdir / f"{label}.log")


# -- HTTP load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    wall_s: float
    requests: int
    events: int  # logical events in the requests answered 200
    stored: int  # events the server should have stored for them
    failures: list[str] = field(default_factory=list)


def post_all(
    port: int,
    path: str,
    payloads: list[Payload],
    headers: dict[str, str],
    clients: int,
    seconds: float | None = None,
    repeat: bool = False,
) -> LoadResult:
    """POST payloads over ``clients`` keep-alive connections until they are all sent or
    ``seconds`` have passed; with ``repeat``, cycle through them until ``seconds`` have passed.
    A request counts when answered 200 (for the real server: every event committed)."""
    lock = threading.Lock()
    order = iter(range(10**12)) if repeat else iter(range(len(payloads)))
    events = [0] * clients
    stored = [0] * clients
    sent = [0] * clients
    failures: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline = [float("inf")]

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        start.wait()
        try:
            while time.perf_counter() < deadline[0]:
                with lock:
                    i = next(order, None)
                if i is None:
                    break
                p = payloads[i % len(payloads)]
                conn.request("POST", path, p.body, headers)
                resp = conn.getresponse()
                data = resp.read()
                sent[k] += 1
                if resp.status != 200:
                    failures.append(f"{resp.status}: {data[:300]!r}")
                    if len(failures) > 20:
                        break
                    continue
                events[k] += p.events
                stored[k] += p.stored
        except OSError as exc:
            failures.append(f"connection error: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    if seconds is not None:
        deadline[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    return LoadResult(time.perf_counter() - t0, sum(sent), sum(events), sum(stored), failures)


@dataclass
class Measurement:
    """One line of the results table."""

    section: str  # http, import, protocols
    scenario: str  # lines of one scenario are compared with each other
    target: str  # what ran
    events: int
    seconds: float
    events_per_s: float
    ceiling: bool = False  # the reference line of its scenario
    stored: int | None = None  # events read back after the run (None: not checked)
    expected: int | None = None  # events that should have been stored
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    vs_ceiling: float | None = None
    vs_native: float | None = None
    vs_ceiling_cpu: float | None = None  # the same ratios, of events per server CPU second
    vs_native_cpu: float | None = None
    note: str = ""
    error: str = ""


def measure_ceiling(
    section: str,
    scenario: str,
    proto: Protocol,
    prep: Prepared,
    clients: int,
    seconds: float,
    workdir: Path,
) -> Measurement:
    """The parse-only app, cycling through the same bodies for ``seconds``."""
    payloads = prep.payloads
    server = start_parse_only(workdir, f"ceiling-{scenario}".replace(" ", "_").replace("=", ""))
    try:
        path = proto.method_path.format(key=prep.key)
        headers = proto.headers(prep.key)
        post_all(server.port, path, payloads[:20], headers, clients)  # warm-up
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        load = post_all(server.port, path, payloads, headers, clients, seconds, repeat=True)
        server_cpu, client_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - client0
    finally:
        server.stop()
    m = Measurement(
        section=section,
        scenario=scenario,
        target=f"parse-only app: {proto.ceiling_what} (ceiling)",
        events=load.events,
        seconds=load.wall_s,
        events_per_s=load.events / load.wall_s,
        ceiling=True,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        note=f"{clients} connections, {load.requests} requests",
    )
    if load.failures:
        m.error = f"{len(load.failures)} requests failed: {load.failures[:3]}"
    return m


@dataclass
class Prepared:
    """A new data dir with project ``bench``, and the events encoded with its write key."""

    data_dir: Path
    key: str
    payloads: list[Payload]
    warmup: list[Payload]
    batch_size: int
    events: int


def new_data_dir(workdir: Path, label: str) -> tuple[Path, str]:
    """A fresh data dir holding project ``bench``, and its write key: a copy of a template
    made once with ``yunying project create`` (one command start instead of one per line)."""
    template = workdir / "template"
    if not template.exists():
        key = yunying(template, "project", "create", "bench")["write_key"]
        (template / "write_key").write_text(key)
    shutil.copytree(template, workdir / label)
    return workdir / label, (template / "write_key").read_text()


def prepare(
    label: str,
    proto: Protocol,
    events: list[dict[str, Any]],
    warmup: list[dict[str, Any]],
    batch_size: int,
    workdir: Path,
) -> Prepared:
    data_dir, key = new_data_dir(workdir, label)
    payloads = [proto.encode(b, key) for b in chunks(events, batch_size)]
    warm = [proto.encode(b, key) for b in chunks(warmup, batch_size)]
    return Prepared(data_dir, key, payloads, warm, batch_size, len(events))


def measure_yunying(
    section: str,
    scenario: str,
    proto: Protocol,
    prep: Prepared,
    clients: int,
    seconds: float,
    workdir: Path,
    log_level: str,
) -> Measurement:
    """A fresh ``yunying serve``: warm-up, then the events for at most ``seconds``; then the
    stored count is read back and compared with the events acknowledged."""
    data_dir, key, payloads, warm = prep.data_dir, prep.key, prep.payloads, prep.warmup
    batch_size = prep.batch_size
    label = data_dir.name
    path, headers = proto.method_path.format(key=key), proto.headers(key)
    target = "yunying serve" + ("" if proto.name == "native" else f" {proto.method_path}")
    m = Measurement(section, scenario, target.split("?")[0], 0, 0.0, 0.0)
    server = start_yunying(data_dir, workdir, label, log_level)
    try:
        w = post_all(server.port, path, warm, headers, clients, seconds)
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        load = post_all(server.port, path, payloads, headers, clients, seconds)
        server_cpu, client_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - client0
        m.events, m.seconds = load.events, load.wall_s
        m.events_per_s = load.events / load.wall_s
        m.server_cpu_s, m.client_cpu_s = server_cpu, client_cpu
        m.note = f"{clients} connections, {load.requests} requests of {batch_size}"
        if load.events < prep.events:
            m.note += f"; time-boxed: {load.events:,} of {prep.events:,} events sent"
        failures = w.failures + load.failures
        if failures:
            m.error = f"{len(failures)} requests not answered 200: {failures[:3]}"
        m.expected = w.stored + load.stored
        m.stored = stored_via_api(server.port, data_dir)
        if m.stored != m.expected:
            m.error += f" STORED {m.stored:,} EVENTS, EXPECTED {m.expected:,}"
    finally:
        server.stop()
    return m


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


def write_file(events: list[dict[str, Any]], path: Path, fmt: str) -> Path:
    if fmt == "jsonl":
        with path.open("wb") as fh:
            for ev in events:
                fh.write(orjson.dumps(ev) + b"\n")
        return path
    columns, rows = flat_rows(events)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    ts = pa.array(
        [datetime.fromisoformat(r["timestamp"]).replace(tzinfo=None) for r in rows],
        pa.timestamp("ms"),
    )
    table = table.set_column(table.column_names.index("timestamp"), "timestamp", ts)
    pq.write_table(table, path)
    return path


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


def run_import(
    path: Path, data_dir: Path, fmt: str, timeout: float
) -> tuple[float, float, dict[str, Any]]:
    """``yunying import`` into a new project: wall seconds, CPU seconds, its JSON report."""
    new_data_dir(data_dir.parent, data_dir.name)
    argv = [PY, "-m", "yunying", "import", str(path), "--project", "bench", "--json"]
    argv += ["--format", fmt, "--data-dir", str(data_dir)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, check=False, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"yunying import of {path.name} ran over {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"import failed: {proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, orjson.loads(proc.stdout)


def import_rate(
    factory: EventFactory, workdir: Path, n: int, timeout: float
) -> tuple[float, float]:
    """The JSONL import's fixed cost (one-event file) and its rate on ``n`` events beyond it,
    to size the measured files so that each import takes about ``--seconds``. The larger file
    goes first, so that the one-event run finds warm caches as the measured runs will."""
    many = write_file(factory.events(n), workdir / "calibrate-n.jsonl", "jsonl")
    wall, _, _ = run_import(many, workdir / "calibrate-n", "jsonl", timeout)
    one = write_file(factory.events(1), workdir / "calibrate-1.jsonl", "jsonl")
    fixed, _, _ = run_import(one, workdir / "calibrate-1", "jsonl", timeout)
    return fixed, (n - 1) / max(wall - fixed, 0.05)


def measure_import(
    fmt: str, events: list[dict[str, Any]], workdir: Path, timeout: float
) -> list[Measurement]:
    n = len(events)
    path = write_file(events, workdir / f"events.{fmt}", fmt)
    parse_s = parse_cpu = float("inf")
    for _ in range(3):  # best of three: the first pass also pays for lazy imports
        t0, c0 = time.perf_counter(), time.process_time()
        parsed = parse_only(fmt, path)
        parse_s = min(parse_s, time.perf_counter() - t0)
        parse_cpu = min(parse_cpu, time.process_time() - c0)
        if parsed != n:
            raise RuntimeError(f"parsed {parsed} rows of {n}")
    # the fixed cost of the command (interpreter start, imports, opening the engines, closing)
    one = write_file(events[:1], workdir / f"one.{fmt}", fmt)
    fixed_s, fixed_cpu, _ = run_import(one, workdir / f"import-one-{fmt}", fmt, timeout)
    import_s, import_cpu, report = run_import(path, workdir / f"import-{fmt}", fmt, timeout)
    net_s = max(import_s - fixed_s, 1e-3)
    size_mb = path.stat().st_size / 1e6
    m = Measurement(
        section="import",
        scenario=f"import {fmt}",
        target="yunying import (net of fixed cost)",
        events=n,
        seconds=net_s,
        events_per_s=n / net_s,
        expected=n,
        server_cpu_s=max(import_cpu - fixed_cpu, 1e-3),
        note=(
            f"{size_mb:.1f} MB file; whole command {import_s:.2f} s = {n / import_s:,.0f} "
            f"events/s, of which {fixed_s:.2f} s ({fixed_cpu:.2f} CPU s) fixed cost "
            "(importing a one-event file)"
        ),
    )
    if report["rejected"] or report["stored"] != n:
        m.error = f"import STORED {report['stored']} OF {n}: {report.get('errors', [])[:3]}"
    m.stored = stored_events(workdir / f"import-{fmt}")  # and read it back
    if m.stored != n:
        m.error += f" STORED {m.stored:,} EVENTS, EXPECTED {n:,}"
    ceiling = Measurement(
        section="import",
        scenario=f"import {fmt}",
        target=f"parse only: {CEILING_WHAT[fmt]} (ceiling)",
        events=n,
        seconds=parse_s,
        events_per_s=n / parse_s,
        ceiling=True,
        server_cpu_s=max(parse_cpu, 1e-3),
    )
    return [m, ceiling]


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
    commit = ""
    with contextlib.suppress(OSError):
        commit = subprocess.run(
            ["git", "-C", str(HERE), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    dirty = ""
    with contextlib.suppress(OSError):
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
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
        "commit": commit,
        "src_uncommitted_changes": bool(dirty),
    }


def per_cpu(m: Measurement) -> float | None:
    return m.events / m.server_cpu_s if m.server_cpu_s else None


def compute_ratios(results: list[Measurement]) -> None:
    for m in results:
        if m.ceiling or not m.events_per_s:
            continue
        ceiling = next((c for c in results if c.scenario == m.scenario and c.ceiling), None)
        if ceiling and ceiling.events_per_s:
            m.vs_ceiling = m.events_per_s / ceiling.events_per_s
            if (a := per_cpu(m)) and (b := per_cpu(ceiling)):
                m.vs_ceiling_cpu = a / b
        if m.section == "protocols":
            native = next(
                (
                    c
                    for c in results
                    if c.section == "protocols" and c.scenario == "native" and not c.ceiling
                ),
                None,
            )
            if native and native.events_per_s:
                m.vs_native = m.events_per_s / native.events_per_s
                if (a := per_cpu(m)) and (b := per_cpu(native)):
                    m.vs_native_cpu = a / b


def _cells(m: Measurement) -> list[str]:
    cpu_rate = f"{m.events / m.server_cpu_s:,.0f}" if m.server_cpu_s else ""
    check = ""
    if m.expected is not None:
        check = "ok" if m.stored == m.expected and not m.error else "MISMATCH"
    return [
        m.scenario,
        m.target,
        f"{m.events:,}",
        f"{m.seconds:.2f}",
        f"{m.events_per_s:,.0f}",
        "" if m.vs_ceiling is None else f"{m.vs_ceiling:.3f}",
        "" if m.vs_native is None else f"{m.vs_native:.2f}",
        "" if m.server_cpu_s is None else f"{m.server_cpu_s:.1f}",
        cpu_rate,
        "" if m.vs_ceiling_cpu is None else f"{m.vs_ceiling_cpu:.3f}",
        "" if m.vs_native_cpu is None else f"{m.vs_native_cpu:.2f}",
        "" if m.client_cpu_s is None else f"{m.client_cpu_s:.1f}",
        check,
    ]


HEADERS = [
    "scenario",
    "target",
    "events",
    "seconds",
    "events/s",
    "× ceiling",
    "× native",
    "srv CPU s",
    "events/srv CPU s",
    "× ceiling (CPU)",
    "× native (CPU)",
    "cli CPU s",
    "stored",
]
LEGEND = (
    "× ceiling: events/s over the parse-only line of the same scenario (the aim: >= 0.5). "
    "× native: over `yunying serve /v1/events` in the protocols section. srv CPU: CPU seconds "
    "of the server process, all threads (for import: of the `yunying import` process, net of "
    "its fixed cost; for parsing a file: of the benchmark process); cli "
    "CPU: of the load generator (the benchmark process); (CPU): the same ratios of events per "
    "server CPU second, steadier than wall-clock ones on a busy machine. stored: the events "
    "read back (`/api/v1/sql`, `yunying sql` after an import) equal those acknowledged."
)


def print_table(results: list[Measurement]) -> None:
    rows = [_cells(m) for m in results]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    left = {0, 1}

    def line(cells: list[str]) -> str:
        return " ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(HEADERS))
    print("-" * sum(w + 1 for w in widths))
    section = results[0].section if results else ""
    for m, row in zip(results, rows, strict=True):
        if m.section != section:
            print()
            section = m.section
        print(line(row))
    print(LEGEND)


def print_markdown(out: dict[str, Any]) -> None:
    results = [Measurement(**m) for m in out["results"]]
    compute_ratios(results)  # also for results saved before a ratio was added
    mach = out["machine"]
    print(
        f"Machine: {mach['cpus']} CPUs ({mach['cpu_model']}), {mach['memory']} RAM, "
        f"{mach['platform']}; Python {mach['python']}, DuckDB {mach['duckdb']}, "
        f"uvicorn {mach['uvicorn']}, FastAPI {mach['fastapi']}, orjson {mach['orjson']}. "
        f"Commit `{mach.get('commit', '')}`"
        + (" (plus uncommitted changes under src/)" if mach.get("src_uncommitted_changes") else "")
        + (f", source: {mach['src']}" if mach.get("src") else "")
        + f"; run {out['when']}, {out['total_seconds']:.0f} s in all; load average (1 min) "
        f"{mach['loadavg_before'][0]:.2f} before the run, {mach['loadavg_after'][0]:.2f} after.\n"
    )
    cols = [0, 1, 2, 4, 5, 6, 8, 9, 10, 12]
    titles = {
        "http": "HTTP, native `POST /v1/events`",
        "import": "File import",
        "protocols": "SDK protocols",
    }
    for section, title in titles.items():
        part = [m for m in results if m.section == section]
        if not part:
            continue
        print(f"**{title}**\n")
        print("| " + " | ".join(HEADERS[i] for i in cols) + " |")
        print("|" + "|".join("---" if i in (0, 1) else "---:" for i in cols) + "|")
        for m in part:
            cells = _cells(m)
            print("| " + " | ".join(cells[i].replace("|", "\\|") for i in cols) + " |")
        print()
    errors = [m for m in results if m.error]
    for m in errors:
        print(f"- **{m.scenario} / {m.target}: {m.error}**")


def run_section(results: list[Measurement], label: str, fn: Callable[[], Any]) -> None:
    """Run one measurement; a failure is recorded as a line with its error, not fatal."""
    print(f"{label} ...", flush=True)
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table and the exit status
        traceback.print_exc()
        section, scenario = label.split(": ", 1) if ": " in label else ("", label)
        error = f"{type(exc).__name__}: {str(exc)[-600:]}"  # the end of a traceback says why
        results.append(Measurement(section, scenario, "FAILED", 0, 0.0, 0.0, error=error))
        return
    for m in out if isinstance(out, list) else [out]:
        results.append(m)
        if m.error:
            print(f"  !!! {m.scenario} / {m.target}: {m.error}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=6, help="most seconds of load per ingestion run"
    )
    parser.add_argument(
        "--ceiling-seconds", type=float, default=3, help="seconds of load per parse-only run"
    )
    parser.add_argument(
        "--http-events", type=int, default=150_000, help="most events per HTTP ingestion run"
    )
    parser.add_argument("--batch-sizes", default="100,1000", help="events per native request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument(
        "--import-events",
        type=int,
        default=100_000,
        help="most events per imported file (fewer if the import would take over --seconds)",
    )
    parser.add_argument("--formats", default="jsonl,csv,parquet", help="file formats to import")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="protocols to compare (native first)"
    )
    parser.add_argument(
        "--protocol-events", type=int, default=60_000, help="most events per protocol run"
    )
    parser.add_argument("--protocol-batch", type=int, default=100, help="events per SDK request")
    parser.add_argument(
        "--only", default="http,import,protocols", help="sections to run (comma-separated)"
    )
    parser.add_argument("--log-level", default="info", help="yunying serve --log-level")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ingest.json")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print a saved result as Markdown and exit"
    )
    parser.add_argument(
        "--src",
        metavar="DIR_OR_REV",
        help="benchmark this source tree (a directory holding yunying/) or git revision "
        "(e.g. HEAD: a snapshot of its src/, immune to edits during the run) instead of the "
        "installed package, i.e. the working tree",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    if args.render:
        print_markdown(json.loads(args.render.read_text()))
        return
    sections = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="yunying-bench-"))
    src = "working tree (installed package)"
    if args.src:
        src_dir = Path(args.src)
        if not (src_dir / "yunying").is_dir():
            snap = workdir / "src-snapshot"
            snap.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(HERE.parent), "archive", args.src, "src"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
            src_dir = snap / "src"
        ENV["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src_dir.resolve()), os.environ.get("PYTHONPATH")) if p
        )
        src = args.src if src_dir == Path(args.src) else f"git revision {args.src}"
    results: list[Measurement] = []
    started = time.perf_counter()
    info = machine()
    info["src"] = src
    if args.src and not (Path(args.src) / "yunying").is_dir():  # a revision
        info["src_uncommitted_changes"] = False
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            info["commit"] = (
                subprocess.run(
                    ["git", "-C", str(HERE.parent), "log", "-1", "--format=%h %s", args.src],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                or info["commit"]
            )
    load_before = os.getloadavg()
    print(
        f"{info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"DuckDB {info['duckdb']}; commit {info['commit']!r}; load average "
        f"{load_before[0]:.2f}; scratch {workdir}",
        flush=True,
    )
    if load_before[0] > 0.5 * info["cpus"]:
        print("warning: the machine is busy; figures will be low and noisy", flush=True)
    factory = EventFactory(args.seed)
    warmup = factory.events(2000)
    native = PROTOCOLS["native"]
    try:
        if "http" in sections:
            events = factory.events(args.http_events)
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                scenario = f"http batch={batch_size}"
                prep = prepare(f"http-{batch_size}", native, events, warmup, batch_size, workdir)

                def ceiling(s: str = scenario, p: Prepared = prep) -> Measurement:
                    return measure_ceiling(
                        "http", s, native, p, args.clients, args.ceiling_seconds, workdir
                    )

                def real(s: str = scenario, p: Prepared = prep) -> Measurement:
                    return measure_yunying(
                        "http", s, native, p, args.clients, args.seconds, workdir, args.log_level
                    )

                run_section(results, f"http: {scenario} parse-only", ceiling)
                run_section(results, f"http: {scenario} yunying serve", real)
                del prep
            del events
        if "import" in sections:
            formats = [f for f in args.formats.split(",") if f]
            timeout = 10 * args.seconds + 120
            n = args.import_events
            try:
                fixed, rate = import_rate(factory, workdir, 10_000, timeout)
                n = max(5000, min(n, int(rate * args.seconds)))
                print(f"import: fixed cost {fixed:.2f} s, ~{rate:,.0f} events/s -> {n:,} events")
            except Exception:  # noqa: BLE001 - the measured runs will fail and say why
                traceback.print_exc()
            events = factory.events(n)
            for fmt in formats:
                run_section(
                    results,
                    f"import: {fmt}",
                    lambda f=fmt: measure_import(f, events, workdir, timeout),
                )
            del events
        if "protocols" in sections:
            names = [p for p in args.protocols.split(",") if p]
            if "native" in names:  # the reference first
                names.remove("native")
                names.insert(0, "native")
            events = factory.events(args.protocol_events)
            for name in names:
                proto = PROTOCOLS[name]
                prep = prepare(
                    f"protocol-{name}", proto, events, warmup, args.protocol_batch, workdir
                )

                def pceiling(p: Protocol = proto, pr: Prepared = prep) -> Measurement:
                    return measure_ceiling(
                        "protocols", p.name, p, pr, args.clients, args.ceiling_seconds, workdir
                    )

                def preal(p: Protocol = proto, pr: Prepared = prep) -> Measurement:
                    return measure_yunying(
                        "protocols", p.name, p, pr, args.clients, args.seconds, workdir,
                        args.log_level,
                    )  # fmt: skip

                run_section(results, f"protocols: {name} parse-only", pceiling)
                run_section(results, f"protocols: {name} yunying serve", preal)
                del prep
            del events
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    compute_ratios(results)
    print()
    print_table(results)
    load_after = os.getloadavg()  # includes this benchmark's own load
    if load_before[0] > 0.5 * info["cpus"]:
        print(f"warning: load average was {load_before[0]:.2f} at the start: figures are low")
    out = {
        "machine": {**info, "loadavg_before": load_before, "loadavg_after": load_after},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": [asdict(m) for m in results],
        "total_seconds": time.perf_counter() - started,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    if args.markdown:
        print()
        print_markdown(out)
    print(f"\nJSON: {args.out}  (total {out['total_seconds']:.0f} s)")
    errors = [m for m in results if m.error]
    if errors:
        print(f"\n!!! {len(errors)} line(s) FAILED or did not store what was sent:")
        for m in errors:
            print(f"!!!   {m.scenario} / {m.target}: {m.error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
