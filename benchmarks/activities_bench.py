"""Events/s through the live rules with 100 running activities, next to ingestion without rules.

Both runs happen in one process on the same kind of data: first N events are written through the
ingestion writer with no activity running (the reference), then N fresh events with 100 running
activities (task challenges, check-ins, member-day promotions, new-user gifts), timed from the
first submit until the live-rules processor has applied the last event and granted every reward
due. The ratio rules/reference is the figure to watch.

    .venv/bin/python benchmarks/activities_bench.py            # 20,000 events per run
    .venv/bin/python benchmarks/activities_bench.py --scale 0.1 # quick run
    .venv/bin/python benchmarks/activities_bench.py --risk      # claims through anti-fraud too
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from yunying.activities import engine, service
from yunying.activities.tables import claims
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import create_project

BASE_EVENTS = 20_000
BATCH = 500
USERS = 2_000
MIX = [
    ("edit_video", 0.40),
    ("view_content", 0.30),
    ("check_in", 0.10),
    ("export_video", 0.10),
    ("app_open", 0.08),
    ("sign_up", 0.02),
]


def activity_specs(risk: bool) -> list[dict[str, Any]]:
    """100 activities: 40 tasks, 30 check-ins, 20 promotions, 10 gifts."""
    policy: dict[str, Any] = {} if risk else {"mode": "off"}
    specs: list[dict[str, Any]] = []
    for i in range(40):
        specs.append(
            {
                "template": "task",
                "name": f"task {i}",
                "stages": [
                    {
                        "name": "edit",
                        "event": "edit_video",
                        "filters": [{"property": "template_id", "op": "eq", "value": f"t{i % 10}"}],
                        "count": 5,
                        "reward": {"kind": "points", "amount": 10},
                    },
                    {"name": "export", "event": "export_video", "count": 2,
                     "reward": {"kind": "coupon", "threshold_fen": 10000, "discount_fen": 1000}},
                ],
                "risk": policy,
            }
        )  # fmt: skip
    for i in range(30):
        specs.append(
            {
                "template": "checkin",
                "name": f"checkin {i}",
                "milestones": [
                    {"days": 3, "reward": {"kind": "points", "amount": 10}},
                    {"days": 7, "reward": {"kind": "membership_days", "amount": 30}},
                ],
                "risk": policy,
            }
        )
    for i in range(20):
        specs.append(
            {
                "template": "promotion",
                "name": f"member day {i}",
                "event": "view_content",
                "filters": [
                    {"property": "category", "op": "eq", "value": f"c{i % 10}"},
                    {"property": "placement", "op": "eq", "value": "banner"},
                ],
                "reward": {"kind": "coupon", "threshold_fen": 5000, "discount_fen": 500},
                "claim_limit": 1,
                "risk": policy,
            }
        )
    for i in range(10):
        specs.append(
            {
                "template": "gift",
                "name": f"gift {i}",
                "event": "sign_up",
                "filters": [{"property": "source", "op": "eq", "value": f"ch{i}"}],
                "reward": {"kind": "membership_days", "amount": 15},
                "risk": policy,
            }
        )
    return specs


def make_events(n: int, rng: random.Random, start: datetime) -> list[dict[str, Any]]:
    names = [m[0] for m in MIX]
    weights = [m[1] for m in MIX]
    out = []
    for i in range(n):
        name = rng.choices(names, weights)[0]
        props: dict[str, Any] = {}
        if name == "edit_video":
            props = {"template_id": f"t{rng.randrange(10)}", "duration": rng.randrange(5, 120)}
        elif name == "view_content":
            placement = "banner" if rng.random() < 0.1 else "feed"
            props = {"category": f"c{rng.randrange(10)}", "placement": placement}
        elif name == "sign_up":
            props = {"source": f"ch{rng.randrange(10)}"}
        out.append(
            {
                "uuid": str(uuid.uuid4()),
                "event": name,
                "distinct_id": f"user-{rng.randrange(USERS)}",
                "timestamp": (start + timedelta(milliseconds=i)).isoformat(),
                "properties": props,
            }
        )
    return out


def ingest(rt: Runtime, project_id: int, events: list[dict[str, Any]]) -> float:
    """Seconds to write ``events`` through the writer in batches (all submitted, then awaited)."""
    t0 = time.perf_counter()
    futures = []
    for i in range(0, len(events), BATCH):
        batch = validate_batch(events[i : i + BATCH], client_ip="10.0.0.1")
        futures.append(rt.writer.submit(project_id, batch.events))
    for f in futures:
        f.result()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=float, default=1.0, help="events per run = 20,000 × scale")
    ap.add_argument(
        "--risk", action="store_true", help="claims go through anti-fraud (default off)"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    n = max(BATCH, int(BASE_EVENTS * args.scale))
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="yunying-act-bench-") as tmp:
        rt = Runtime.open(load_settings(data_dir=Path(tmp) / "data"))
        try:
            project = create_project(rt.state, "bench").project
            now = datetime.now(UTC) - timedelta(hours=1)
            # reference: ingestion with no activity
            reference_s = ingest(rt, project.id, make_events(n, rng, now))
            # 100 running activities, the processor subscribed to the writer
            for spec in activity_specs(args.risk):
                act = service.create_activity(rt.state, project.id, spec, "bench")
                service.transition(rt.state, project.id, act.id, "start", "bench")
            proc = engine.live_rules(rt)
            proc.start()
            assert proc.wait_idle(600)
            events = make_events(n, rng, now + timedelta(minutes=30))
            t0 = time.perf_counter()
            written_s = ingest(rt, project.id, events)
            assert proc.wait_idle(3600), "live rules did not finish"
            rules_s = time.perf_counter() - t0
            with rt.state.connect() as conn:
                import sqlalchemy as sa

                by_status = dict(
                    conn.execute(
                        sa.select(claims.c.status, sa.func.count()).group_by(claims.c.status)
                    ).all()
                )
            engine.forget(rt)
        finally:
            rt.close()
    figures = {
        "events": n,
        "activities": 100,
        "risk": args.risk,
        "reference_events_per_s": round(n / reference_s),
        "rules_events_per_s": round(n / rules_s),
        "ratio_rules_to_reference": round(reference_s / rules_s, 3),
        "ingest_with_rules_subscribed_s": round(written_s, 2),
        "rules_end_to_end_s": round(rules_s, 2),
        "claims": {k: int(v) for k, v in by_status.items()},
        "processor_apply_s": round(proc.apply_s, 2),
        "processor_claims_s": round(proc.claims_s, 2),
    }
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        print(f"events per run:           {n}")
        print(f"ingestion, no rules:      {figures['reference_events_per_s']:>8} events/s")
        print(
            f"through 100 live rules:   {figures['rules_events_per_s']:>8} events/s (to last grant)"
        )
        print(f"ratio rules / reference:  {figures['ratio_rules_to_reference']}")
        print(f"claims:                   {figures['claims']}")
        print(
            f"processor time:           {figures['processor_apply_s']} s applying rules, "
            f"{figures['processor_claims_s']} s claiming (risk + ledger)"
        )


if __name__ == "__main__":
    main()
