"""The post-mortem's strata (first-seen ISO week × first channel, participants apart) counted in
Arrow, against a plain per-person count of the raw events, on DuckDB and ClickHouse."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlglot import exp

from tests.analytics.conftest import ch_runtime, iso, make_dataset  # noqa: F401 (fixture)
from yunying.activities.report import _strata
from yunying.runtime import Runtime

T0 = datetime(2020, 12, 14)  # a Monday; ISO week 2020-W53 runs into 2021
START, END = T0 + timedelta(days=10), T0 + timedelta(days=30)


def raw_events(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(120):
        at = T0 + timedelta(days=rng.uniform(0, 34))
        props: dict[str, Any] = {}
        if rng.random() < 0.8:
            props["$channel"] = rng.choice(["douyin", "zhihu", "kuaishou"])
        out.append({"event": "app_install", "distinct_id": f"u{i}", "timestamp": iso(at),
                    "properties": props})  # fmt: skip
        for _ in range(rng.randint(0, 2)):
            later = at + timedelta(days=rng.uniform(-2, 12))
            out.append({"event": "purchase_membership", "distinct_id": f"u{i}",
                        "timestamp": iso(later), "properties": {"$amount": rng.choice([30, 98])}})  # fmt: skip
    return out


def reference(raws: list[dict[str, Any]], members: set[str]) -> tuple[Any, Any, int]:
    """The strata from the raw events, person by person (one distinct id per person)."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in raws:
        by[r["distinct_id"]].append(r)
    part: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    rest: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    new_users = 0
    for who, evs in by.items():
        seen = [e for e in evs if datetime.fromisoformat(e["timestamp"]) < END.replace(tzinfo=UTC)]
        if not seen:
            continue
        first = min(seen, key=lambda e: e["timestamp"])
        t = datetime.fromisoformat(first["timestamp"])
        y, w, _ = t.isocalendar()
        conv = [e for e in seen if e["event"] == "purchase_membership"
                and datetime.fromisoformat(e["timestamp"]) >= START.replace(tzinfo=UTC)]  # fmt: skip
        s = (part if who in members else rest)[
            (f"{y}-W{w:02d}", first["properties"].get("$channel", ""))
        ]
        s[0] += 1
        s[1] += 1 if conv else 0
        s[2] += float(sum(e["properties"]["$amount"] for e in conv))
        new_users += who in members and t >= START.replace(tzinfo=UTC)
    return dict(part), dict(rest), new_users


def test_strata_equal_a_plain_count_on_both_engines(tmp_path: Path, ch_runtime: Runtime) -> None:  # noqa: F811
    raws = raw_events(5)
    ds = make_dataset(tmp_path, ch_runtime, raws)
    members = {f"u{i}" for i in range(0, 120, 3)}
    want = reference(raws, members)
    assert want[2] > 0 and len(want[0]) > 3 and len(want[1]) > 3
    for store, project in ds.both():
        rows = store.query(
            exp.select("distinct_id", exp.cast(exp.column("person_id"), "VARCHAR"))
            .from_(store.scoped("events", project).subquery("e"))
            .sql(store.dialect)
        ).rows
        person = {d: p for d, p in rows}
        got = _strata(
            SimpleNamespace(store=store),  # type: ignore[arg-type]
            project,
            START.replace(tzinfo=UTC),
            END.replace(tzinfo=UTC),
            "purchase_membership",
            {person[m] for m in members if m in person},
        )
        assert (dict(got[0]), dict(got[1]), got[2]) == want, store.dialect
