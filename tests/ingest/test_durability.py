"""A 200 from ``POST /v1/events`` means durable: ``kill -9`` of the server loses no acknowledged event.

The real server runs as a subprocess (``python -m yunying serve``). Client threads stream batches
of events with known uuids; the server is killed with SIGKILL at a random moment while batches are
in flight. After a restart on the same data dir:

- every event of every acknowledged batch (HTTP 200) is stored exactly once;
- a batch that got no answer is stored entirely or not at all: the writer puts each request's
  events in one DuckDB transaction (possibly together with other requests), never splitting a
  request across transactions, so recovery sees all of it or none of it;
- re-sending the unacknowledged batches (the client's retry) leaves exactly the union of all
  batches, each event once, and the server reports the already-stored ones as duplicates.

``YUNYING_DURABILITY_SEED`` replays one run (the seed is printed on failure).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

CLIENTS = 4
STARTUP_TIMEOUT = 30.0


@dataclass
class Sent:
    """One batch a client tried to send, and whether the server acknowledged it."""

    client: int
    seq: int
    events: list[dict[str, Any]]
    status: int | None = None  # HTTP status, None when no answer came (connection cut)

    @property
    def uuids(self) -> list[str]:
        return [e["uuid"] for e in self.events]

    @property
    def acked(self) -> bool:
        return self.status == 200


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: list[Sent] = field(default_factory=list)
    first_ack: threading.Event = field(default_factory=threading.Event)

    def add(self, sent: Sent) -> None:
        with self.lock:
            self.batches.append(sent)
        if sent.acked:
            self.first_ack.set()


def yunying(data_dir: Path, *args: str, timeout: float = 60) -> Any:
    """Run a ``yunying ... --json`` command and return its parsed output."""
    proc = subprocess.run(
        [sys.executable, "-m", "yunying", *args, "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return orjson.loads(proc.stdout)


class Server:
    """``yunying serve`` in a subprocess."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yunying",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"server did not start; see {log_path}")
            time.sleep(0.05)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def make_batch(rng: random.Random, client: int, seq: int) -> list[dict[str, Any]]:
    """Valid events with fresh uuids: a few users, page views, purchases, some $identify."""
    size = rng.choice((1, 5, 20, 50, 100, 200, 400))
    events = []
    for i in range(size):
        user = f"c{client}-u{rng.randrange(40)}"
        props: dict[str, Any] = {
            "$os": rng.choice(("iOS", "Android")),
            "$app_version": "3.2.1",
            "$channel": rng.choice(("appstore", "huawei", "xiaomi")),
            "client": client,
            "seq": seq,
            "i": i,
            "note": "x" * rng.randrange(0, 200),
        }
        name = rng.choice(("$pageview", "export_video", "purchase"))
        if rng.random() < 0.05:
            name = "$identify"
            props["$anon_distinct_id"] = f"anon-{client}-{rng.randrange(100)}"
            props["$set"] = {"plan": rng.choice(("free", "pro"))}
        elif name == "purchase":
            props["$amount"] = rng.choice((6, 30, 68))
        events.append(
            {
                "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "event": name,
                "distinct_id": user,
                "timestamp": "2026-11-20T08:00:00Z",
                "properties": props,
            }
        )
    return events


def stream(
    url: str, write_key: str, client: int, seed: int, log: Log, stop: threading.Event
) -> None:
    """Send batches back to back until the server stops answering (or ``stop``)."""
    rng = random.Random(f"{seed}-{client}")
    headers = {"Authorization": f"Bearer {write_key}", "Content-Type": "application/json"}
    with httpx.Client(timeout=30) as http:
        seq = 0
        while not stop.is_set():
            sent = Sent(client, seq, make_batch(rng, client, seq))
            seq += 1
            try:
                resp = http.post(
                    f"{url}/v1/events",
                    content=orjson.dumps({"batch": sent.events}),
                    headers=headers,
                )
            except httpx.HTTPError:
                log.add(sent)  # no answer: the server died with this batch in flight
                return
            sent.status = resp.status_code
            if resp.status_code == 200:
                body = resp.json()
                assert body["accepted"] == len(sent.events) and body["duplicates"] == 0, body
            log.add(sent)


def stored_counts(data_dir: Path) -> Counter[str]:
    """How many times each event uuid is stored, asked through the running server's SQL API."""
    out = yunying(data_dir, "sql", "SELECT uuid, count(*) AS n FROM events GROUP BY uuid")
    return Counter({str(u): int(n) for u, n in out["rows"]})


def test_acknowledged_events_survive_kill_9_and_retries_complete_exactly_once(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("YUNYING_DURABILITY_SEED") or random.SystemRandom().randrange(10**9))
    rng = random.Random(seed)
    print(f"durability seed {seed}")
    data_dir = tmp_path / "data"
    server_log = tmp_path / "server.log"
    write_key = yunying(data_dir, "project", "create", "durability")["write_key"]

    # -- stream batches, kill -9 at a random moment -------------------------------------------
    server = Server(data_dir, server_log)
    log, stop = Log(), threading.Event()
    clients = [
        threading.Thread(target=stream, args=(server.url, write_key, c, seed, log, stop))
        for c in range(CLIENTS)
    ]
    for t in clients:
        t.start()
    try:
        assert log.first_ack.wait(20), f"no batch was acknowledged; see {server_log}"
        time.sleep(rng.uniform(0.2, 2.5))
    finally:
        server.kill9()
        stop.set()
        for t in clients:
            t.join(30)
    assert not any(t.is_alive() for t in clients)

    batches = log.batches
    acked = [b for b in batches if b.acked]
    unacked = [b for b in batches if not b.acked]
    assert all(b.status in (200, None) for b in batches), [b.status for b in batches]
    assert acked, "no batch was acknowledged before the kill"
    assert len(unacked) >= 1  # each client's last batch was cut off
    all_uuids = [u for b in batches for u in b.uuids]
    assert len(set(all_uuids)) == len(all_uuids)

    # -- restart on the same data dir ---------------------------------------------------------
    server = Server(data_dir, server_log)
    try:
        counts = stored_counts(data_dir)
        context = f"seed {seed}, {len(acked)} acked, {len(unacked)} unacked batches"

        # every acknowledged event is there, exactly once
        missing = [u for b in acked for u in b.uuids if counts[u] == 0]
        assert not missing, f"{len(missing)} acknowledged events lost ({context})"
        assert max(counts.values()) == 1, f"an event is stored twice ({context})"

        # nothing that was never sent is there; each unacknowledged batch is all or nothing
        assert set(counts) <= set(all_uuids)
        present = []
        for b in unacked:
            n = sum(counts[u] for u in b.uuids)
            assert n in (0, len(b.uuids)), (
                f"batch {b.client}/{b.seq} is partly stored: {n} of {len(b.uuids)} ({context})"
            )
            if n:
                present.append(b)
        assert len(counts) == sum(len(b.uuids) for b in acked + present)
        print(f"{context}; {len(present)} unacked batches were committed before the kill")

        # -- the client retries what was not acknowledged: exactly the union, no duplicates ----
        present_ids = {id(b) for b in present}
        with httpx.Client(timeout=30) as http:
            for b in unacked:
                resp = http.post(
                    f"{server.url}/v1/events",
                    json={"batch": b.events},
                    headers={"Authorization": f"Bearer {write_key}"},
                )
                assert resp.status_code == 200, resp.text
                body = resp.json()
                already = len(b.uuids) if id(b) in present_ids else 0
                assert body == {"accepted": len(b.uuids), "duplicates": already, "rejected": 0}

        counts = stored_counts(data_dir)
        assert set(counts) == set(all_uuids)
        assert sum(counts.values()) == len(all_uuids)
    finally:
        server.stop()
