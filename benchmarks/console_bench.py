"""Console page timings on the default demo data (20,000 users × 90 days, ~1.1M events).

Generates the demo once into ``--data-dir`` (reused by later runs with the same size: the demo
ends on a fixed day, ``--end``), creates a user, serves the app with uvicorn on a loopback port in
this process and signs in like a browser. Each page is then fetched:

* **cold**: the page cache emptied first, so every analysis behind the page runs (what the first
  visitor after new data waits for; the dashboard is also warmed in the background from the login
  page, which this does not count);
* **warm**: ``--runs`` times with the cache filled (what every later visitor waits for).

A segment's persona is computed with the segment and stored with it (``segment_persona``), so
the segment's page reads it: the bench computes its segment once per run, as the schedule
would, and prints how long that took and how much of it was the persona.

Times are wall-clock round trips over loopback HTTP (server time plus well under a millisecond of
client overhead); the table gives the median and the process CPU time per request. Prints a
table, ``--json`` prints JSON. Scale down with ``--users`` / ``--days``.

    .venv/bin/python benchmarks/console_bench.py [--users 20000 --days 90 --runs 5]
    .venv/bin/python benchmarks/console_bench.py --cold-runs 5 --pages dashboard,persona,layers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

PAGES = {
    "dashboard": "/",
    "trends": "/trends",
    "trends (3 series, breakdown)": "/trends?event=app_install&math=total&event=sign_up"
    "&math=unique_persons&event=purchase_membership&math=sum&breakdown=channel",
    "funnels": "/funnels",
    "funnels (by channel)": "/funnels?breakdown=channel",
    "retention": "/retention",
    "lifecycle": "/lifecycle",
    "project settings": "/settings/project",
    "team": "/settings/team",
    "segments": "/segments",
    "segment (members + persona)": "/segments/{segment}",
    "segment editor": "/segments/new",
    "user layers (stages + RFM)": "/audience/layers",
    "person profile": "/persons?q={person}",
    "activities": "/activities",
    "activity monitor": "/activities/{activity}",
    "activity post-mortem": "/activities/{activity}/report",
    "review queue": "/reviews",
    "blocklist": "/blocklist",
    "tags": "/tags",
    "tag (rule + 50 members)": "/tags/{tag}",
    "CLV (model, bands, top 20)": "/clv",
}


def seed_features(rt: Any) -> tuple[dict[str, str], dict[str, float]]:
    """A computed segment, a running activity with a held claim, and a demo user to look up
    (created once per data directory; later runs find them by name); and the segment's
    computation of this run: seconds in all, and of them its persona's."""
    import sqlalchemy as sa
    from sqlglot import exp

    from yunying.activities.service import create_activity, list_activities, settle, transition
    from yunying.activities.spec import rewards_of
    from yunying.audience.clv import ClvError, ClvRequest, ModelNotFound, fit_clv, latest_model
    from yunying.audience.segment_tables import segment_personas
    from yunying.audience.segments import (
        compute_segment,
        compute_tag,
        create_segment,
        list_segments,
    )
    from yunying.audience.tags import create_tag, list_tags
    from yunying.state import list_projects

    project = list_projects(rt.state)[0]
    store = rt.store
    q = (
        exp.select("distinct_id", "person_id")
        .from_(store.scoped("person_distinct_ids", project.id).subquery("d"))
        .order_by("distinct_id")
        .limit(1)
    )
    person, person_id = (str(v) for v in store.query(q.sql(dialect=store.dialect)).rows[0])
    seg = next((s for s in list_segments(rt.state, project.id) if s.name == "bench editors"), None)
    if seg is None:
        rule = {"type": "event", "event": "edit_video", "count": "at_least", "times": 3,
                "window": {"last_days": 30}}  # fmt: skip
        seg = create_segment(rt, project, "bench editors", rules=rule)
    # computed on every run, as a schedule would: its persona is stored with the computation
    started = time.perf_counter()
    compute_segment(rt, project, seg.id)
    computed = {"seconds": round(time.perf_counter() - started, 3)}
    with rt.state.connect() as conn:
        computed["persona_seconds"] = round(
            conn.execute(
                sa.select(segment_personas.c.seconds).where(segment_personas.c.segment_id == seg.id)
            ).scalar_one(),
            3,
        )
    act = next((a for a in list_activities(rt.state, project.id) if a.name == "bench gift"), None)
    if act is None:
        spec = {"template": "gift", "name": "bench gift", "event": "sign_up",
                "reward": {"kind": "points", "amount": 20},
                "goal": {"metric": "rewards", "target": 100},
                "risk": {"account_age": {"exempt_kinds": [], "min_age_minutes": 10**8}}}  # fmt: skip
        act = create_activity(rt.state, project.id, spec, "bench")
        act = transition(rt.state, project.id, act.id, "start", "bench")
        settle(rt, act, user_id=person, person_id=person_id, reward=rewards_of(act.spec)[0],
               key=f"bench:{act.id}:{person}")  # fmt: skip
    tag = next((t for t in list_tags(rt.state, project.id) if t.name == "bench_heavy"), None)
    if tag is None:
        rule = {"type": "event", "event": "edit_video", "count": "at_least", "times": 10,
                "window": {"last_days": 30}}  # fmt: skip
        tag = create_tag(rt.state, project, "bench_heavy", rule)
        compute_tag(rt, project, tag.id)
    try:
        latest_model(rt.state, project)
    except ModelNotFound:
        with contextlib.suppress(ClvError):  # too few repeat buyers: the page's empty state
            end = date.today() - timedelta(days=1)
            fit_clv(rt.store, rt.state, project, ClvRequest("purchase_membership", end))
    ids = {"segment": str(seg.id), "activity": str(act.id), "person": person, "tag": str(tag.id)}
    return ids, computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--end", default="2026-11-22", help="Last demo day (fixed: reusable data).")
    parser.add_argument("--runs", type=int, default=5, help="Warm requests per page (median).")
    parser.add_argument("--cold-runs", type=int, default=1, help="Cold requests per page.")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/yunying-console-bench"))
    parser.add_argument(
        "--pages", help="Only the pages whose name contains one of these comma-separated words."
    )
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    args = parser.parse_args()

    import httpx
    import uvicorn

    from yunying.config import load_settings
    from yunying.console.users import create_user, get_user, set_password
    from yunying.demo import generate_demo
    from yunying.errors import NotFound
    from yunying.runtime import Runtime
    from yunying.web import create_app

    data_dir = args.data_dir / f"{args.users}x{args.days}-{args.end}"
    marker = data_dir / "console-bench.json"
    rt = Runtime.open(load_settings(data_dir=data_dir))
    if not marker.exists():
        started = time.perf_counter()
        summary = generate_demo(
            rt, "demo", users=args.users, days=args.days, seed=7, end=date.fromisoformat(args.end)
        )
        marker.write_text(json.dumps({"events": summary["events"]}))
        print(f"demo: {summary['events']:,} events in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)  # fmt: skip
    events = json.loads(marker.read_text())["events"]
    password = "bench-password-1"
    try:
        get_user(rt.state, "bench")
        set_password(rt.state, "bench", password)
    except NotFound:
        create_user(rt.state, "bench", password, "admin")

    ids, segment_compute = seed_features(rt)
    app = create_app(rt)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    console = app.state.console
    console.compute_wait = None  # time the whole computation, not the "computing" page
    client = httpx.Client(base_url=url, timeout=600)
    login = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert token
    # the login page starts the background warm-up: wait for it so it does not run during cold
    # measurements
    if console._warming is not None:
        console._warming.join()
    r = client.post(
        "/login", data={"csrf_token": token.group(1), "username": "bench", "password": password}
    )
    assert r.status_code == 303, r.status_code

    def timed(path: str) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        resp = client.get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000

    rows: list[dict[str, Any]] = []
    load_start = os.getloadavg()[0]
    wanted = [w.strip() for w in (args.pages or "").split(",") if w.strip()]
    for name, template in PAGES.items():
        if wanted and not any(w in name for w in wanted):
            continue
        path = template.format(**ids)
        cold = []
        for _ in range(args.cold_runs):
            console.cache.clear()
            console._stamps.clear()
            cold.append(timed(path))
        warm = [timed(path) for _ in range(args.runs)]
        rows.append(
            {
                "page": name,
                "path": path,
                "cold_ms": round(statistics.median(w for w, _ in cold), 1),
                "cold_cpu_ms": round(statistics.median(c for _, c in cold), 1),
                "warm_ms": round(statistics.median(w for w, _ in warm), 1),
                "warm_cpu_ms": round(statistics.median(c for _, c in warm), 1),
            }
        )
    server.should_exit = True
    thread.join(10)
    rt.close()
    load = (round(load_start, 2), round(os.getloadavg()[0], 2))
    out = {"users": args.users, "days": args.days, "events": events, "runs": args.runs,
           "cold_runs": args.cold_runs, "load_average": load,
           "segment_compute": segment_compute, "pages": rows}  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.users:,} users × {args.days} days, {events:,} events; cold = median of "
          f"{args.cold_runs}, warm = median of {args.runs}; load average {load[0]} at the "
          f"start, {load[1]} at the end")  # fmt: skip
    print(f"segment computation {segment_compute['seconds']:.3f} s, of which its stored "
          f"persona {segment_compute['persona_seconds']:.3f} s")  # fmt: skip
    print(f"{'page':32} {'cold ms':>10} {'cold CPU':>10} {'warm ms':>9} {'warm CPU':>9}")
    for row in rows:
        print(f"{row['page']:32} {row['cold_ms']:>10,.1f} {row['cold_cpu_ms']:>10,.1f} "
              f"{row['warm_ms']:>9,.1f} {row['warm_cpu_ms']:>9,.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
