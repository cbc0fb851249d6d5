"""Funnels on a DuckDB store compacted into person order (``compact_events``): the per-person
lists come as runs of rows (``funnel_pass.person_runs``) instead of a GROUP BY, and every answer
stays the one ClickHouse and the plain-Python references give -- with rows appended after the
compaction, persons merged after it, and journeys across a month boundary."""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlglot import exp

from tests.analytics import reference as ref
from tests.analytics.conftest import (
    DAYS,
    START,
    TZ,
    Dataset,
    both,
    iso,
    make_dataset,
    random_journeys,
)
from tests.analytics.test_funnels import window_funnel
from yunying.analytics import (
    DateRange,
    Filter,
    FunnelQuery,
    FunnelStep,
    FunnelTimeToConvertQuery,
    FunnelTrendsQuery,
    col,
    funnel,
    funnel_time_to_convert,
    funnel_trends,
    paths,
    prop,
)
from yunying.analytics import funnel_pass as fp
from yunying.analytics.paths import PathsQuery
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime

SEED = 21
# the journeys start up to 5 days before the range (2024-03-04) and run 3 weeks: they cross
# from February into March, so a person's rows lie in two month blocks after compaction
RANGE = DateRange(START - timedelta(days=6), START + timedelta(days=DAYS - 1))


def tail(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events that arrive after the compaction: more events of existing persons, a few new
    persons, and logins that merge an anonymous device into another person."""
    rng = random.Random(SEED + 1)
    later = max(datetime.fromisoformat(r["timestamp"]) for r in raws) - timedelta(days=9)
    ids = sorted({r["distinct_id"] for r in raws})
    devices = [d for d in ids if d.startswith("dev-") and f"user-{d[4:]}" not in ids]
    users = [d for d in ids if d.startswith("user-")]
    out: list[dict[str, Any]] = []

    def add(name: str, who: str, at: datetime, **props: Any) -> None:
        out.append(
            {"event": name, "distinct_id": who, "timestamp": iso(at), "properties": props,
             "uuid": str(uuid.UUID(int=rng.getrandbits(128)))}
        )  # fmt: skip

    for who in rng.sample(ids, 20) + [f"late-{i}" for i in range(5)]:
        at = later + timedelta(hours=rng.randrange(0, 100))
        for name in ("app_install", "sign_up", "edit_video", "export_video")[: rng.randrange(1, 5)]:
            at += timedelta(minutes=rng.randrange(0, 90))
            add(name, who, at, plan="pro", **{"$channel": rng.choice(["douyin", "zhihu"])})
    for device, user in zip(devices[:4], users[-4:], strict=True):  # merged after compaction
        add("$identify", user, later + timedelta(days=1), **{"$anon_distinct_id": device})
    return out


def events_of(rt: Runtime, project_id: int) -> list[dict[str, Any]]:
    """The resolved events relation, as the references read it."""
    res = rt.store.query(
        exp.select("uuid", "event", "person_id", "timestamp", "properties", "channel", "amount")
        .from_(rt.store.scoped("events", project_id).subquery("e"))
        .sql("duckdb")
    )
    out = [dict(zip(res.columns, r, strict=True)) for r in res.rows]
    for d in out:
        d["timestamp"] = datetime.fromisoformat(d["timestamp"])
    return out


def stored_rows(rt: Runtime) -> list[tuple[Any, ...]]:
    """Every stored event row, in the table's own order."""
    return [tuple(r) for r in rt.store.query("SELECT * FROM raw_events").rows]


@pytest.fixture(scope="module")
def compacted(
    tmp_path_factory: pytest.TempPathFactory, ch_runtime: Runtime
) -> Iterator[tuple[Dataset, list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, str]]]:
    """Random journeys on both engines, DuckDB's compacted, then a tail written to both; with
    DuckDB's rows before and right after the compaction, and its person overrides then."""
    raws = random_journeys(SEED, persons=250)
    ds = make_dataset(tmp_path_factory.mktemp("person-order"), ch_runtime, raws)
    before = stored_rows(ds.runtime)
    assert not ds.duck.person_ordered(ds.project_id)
    report = ds.duck.compact_events()
    assert report["rows"] == len(before)
    after = stored_rows(ds.runtime)
    merged = ds.duck.query("SELECT distinct_id, person_id FROM person_overrides").rows
    more = tail(raws)
    now = datetime(2030, 1, 1)
    ds.runtime.writer.write(ds.project_id, validate_batch(more, now=now).events)
    ds.ch.writer.write(ds.ch_project_id, validate_batch(more, now=now).events)
    ds.events = events_of(ds.runtime, ds.project_id)
    assert ds.duck.query("SELECT count(*) FROM person_overrides").rows[0][0] >= 4  # the logins
    yield ds, before, after, {r[0]: r[1] for r in merged}
    ds.runtime.close()


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows each call of ``funnel_pass.person_runs`` grouped."""
    calls: list[int] = []
    real = fp.person_runs

    def spy(keys: Any, values: Any) -> Any:
        calls.append(len(values))
        return real(keys, values)

    monkeypatch.setattr(fp, "person_runs", spy)
    return calls


def test_compaction_keeps_every_row_and_puts_them_in_person_order(compacted: Any) -> None:
    ds, before, after, overrides = compacted  # the overrides when it ran
    assert sorted(after) == sorted(before)  # the same rows, values untouched
    assert after != before  # written in time order, now in person order
    names = [c for c in ds.duck.query("SELECT * FROM raw_events LIMIT 0").columns]
    at = {c: names.index(c) for c in ("project_id", "uuid", "distinct_id", "person_id")}
    ts = names.index("timestamp")

    def key(r: tuple[Any, ...]) -> tuple[Any, ...]:
        month = r[ts][:7]
        person = overrides.get(r[at["distinct_id"]], r[at["person_id"]])
        return (r[at["project_id"]], month, person, r[ts], r[at["uuid"]])

    assert after == sorted(after, key=key)
    assert len({key(r)[1] for r in after}) >= 2  # the journeys span two months


def test_new_events_keep_the_order_until_a_tenth_arrived(compacted: Any) -> None:
    ds, before, _, _ = compacted
    assert ds.duck.person_ordered(ds.project_id)
    count = ds.duck.query(f"SELECT count(*) FROM raw_events WHERE project_id = {ds.project_id}")
    assert len(before) < count.rows[0][0] <= 1.1 * len(before)
    assert not ds.duck.person_ordered(ds.project_id + 1)  # a project never compacted


def test_duplicates_are_still_refused_after_compaction(compacted: Any) -> None:
    ds = compacted[0]
    again = [
        {"event": "sign_up", "distinct_id": "x", "timestamp": iso(datetime(2024, 3, 9)),
         "uuid": str(r[1])}
        for r in stored_rows(ds.runtime)[:3]
    ]  # fmt: skip
    result = ds.runtime.writer.write(ds.project_id, validate_batch(again).events)
    assert result.duplicates == 3


STEPS = ("app_install", "sign_up", "edit_video", "export_video")


def query(order: Any = "ordered", **kw: Any) -> FunnelQuery:
    steps = tuple(FunnelStep(e) for e in STEPS)
    return FunnelQuery(steps, RANGE, window=3, window_unit="day", order=order, **kw)


def test_ordered_funnel_by_runs_equals_window_funnel(compacted: Any, runs: list[int]) -> None:
    ds = compacted[0]
    q = query()
    got = both(ds, funnel, q).counts
    assert runs and runs[0] > 0  # read as runs, not grouped
    assert got == window_funnel(ds, q, [f"event = '{e}'" for e in STEPS])
    assert got[-1] > 0


@pytest.mark.parametrize("order", ["strict", "unordered"])
def test_strict_and_unordered_by_runs_equal_the_references(
    compacted: Any, runs: list[int], order: Any
) -> None:
    ds = compacted[0]
    matches = [lambda e, n=n: e["event"] == n for n in STEPS]
    lo, hi = ref.bounds(RANGE.date_from, RANGE.date_to, TZ)
    got = both(ds, funnel, query(order)).counts
    assert runs
    if order == "strict":
        want = ref.strict_funnel(ds.events, matches, lo, hi, timedelta(days=3))
    else:
        want = ref.unordered_funnel(ds.events, matches, list(STEPS), lo, hi, timedelta(days=3))
    assert got == want and want[1] > 0


@pytest.mark.parametrize("order", ["ordered", "strict"])
def test_breakdowns_times_and_trends_by_runs_equal_clickhouse(
    compacted: Any, runs: list[int], order: Any
) -> None:
    ds = compacted[0]
    by = query(order, breakdown=col("channel"))
    result = both(ds, funnel, by)
    assert {b.value for b in result.breakdowns} >= {"douyin", "zhihu"}
    both(ds, funnel_time_to_convert, FunnelTimeToConvertQuery(query(order), 0, 2, bins=6))
    trends = both(ds, funnel_trends, FunnelTrendsQuery(query(order), "week"))
    assert sum(trends.converted) > 0
    assert len(runs) >= 3


def test_runs_and_grouped_lists_give_the_same_chains(compacted: Any) -> None:
    """The same funnel through both ways of reading lists, on the same compacted store."""
    ds = compacted[0]
    with_runs = funnel(ds.duck, ds.project_id, query())
    ordered = ds.duck.person_ordered
    try:
        ds.duck.person_ordered = lambda project_id: False
        grouped = funnel(ds.duck, ds.project_id, query())
    finally:
        ds.duck.person_ordered = ordered
    assert with_runs.as_dict() == grouped.as_dict()


def test_clickhouse_groups_its_lists(compacted: Any, runs: list[int]) -> None:
    """ClickHouse keeps its own order (MergeTree) and reads lists by GROUP BY."""
    ds = compacted[0]
    assert funnel(ds.chdb, ds.ch_project_id, query()).counts[0] > 0
    assert not runs


# -- paths: every event of the person, read as runs ---------------------------------------------------

PATH_QUERIES = [
    PathsQuery(RANGE, start_event="sign_up", steps=4),
    PathsQuery(RANGE, end_event="purchase_membership", steps=3),
    PathsQuery(RANGE, "app_install", "export_video", steps=5),
    PathsQuery(RANGE, steps=6, exclude_events=("edit_video",)),
    PathsQuery(RANGE, start_event="edit_video", steps=3, filters=(Filter(prop("plan"), "eq", "pro"),)),
]  # fmt: skip


@pytest.fixture
def path_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many persons each paths-by-runs call left to the exact window query."""
    module = sys.modules["yunying.analytics.paths"]
    calls: list[int] = []
    real = module.path_counts

    def spy(*args: Any) -> Any:
        counted, unsure = real(*args)
        calls.append(len(unsure))
        return counted, unsure

    monkeypatch.setattr(module, "path_counts", spy)
    return calls


@pytest.mark.parametrize("q", PATH_QUERIES, ids=["start", "end", "between", "first", "filtered"])
def test_paths_by_runs_equal_the_window_query_and_the_reference(
    compacted: Any, path_runs: list[int], monkeypatch: pytest.MonkeyPatch, q: PathsQuery
) -> None:
    ds = compacted[0]
    got = both(ds, paths, q)
    assert path_runs  # read as runs
    module = sys.modules["yunying.analytics.paths"]
    monkeypatch.setattr(module, "_quick", lambda *a: None)
    assert paths(ds.duck, ds.project_id, q) == got  # the window query over every event
    if q.between or q.filters:
        return  # the reference walks neither
    lo, hi = ref.bounds(RANGE.date_from, RANGE.date_to, TZ)
    anchor = q.start_event or q.end_event
    nodes, edges = ref.paths(
        ds.events, lo, hi, lambda e: e["event"] not in q.exclude_events,
        None if anchor is None else (lambda e, a=anchor: e["event"] == a), q.backwards, q.steps,
    )  # fmt: skip
    assert {(n.step, n.event): n.persons for n in got.nodes} == nodes
    assert len(edges) > 10


@pytest.mark.parametrize("max_unsure", [10_000, 0])
def test_paths_by_runs_leave_events_at_one_instant_to_the_uuid(
    small: Any, path_runs: list[int], monkeypatch: pytest.MonkeyPatch, max_unsure: int
) -> None:
    """By their ids to the window query, or with too many of them (here: any), the smallest
    keys' query counts."""
    monkeypatch.setattr(sys.modules["yunying.analytics.paths"], "MAX_UNSURE", max_unsure)
    t = datetime(2024, 3, 5, 2)

    def e(name: str, who: str, sec: int, uid: int) -> dict[str, Any]:
        return {"event": name, "distinct_id": who, "timestamp": iso(t + timedelta(seconds=sec)),
                "uuid": f"00000000-0000-4000-8000-{uid:012d}"}  # fmt: skip

    ds = small(
        [
            # p's B and A at one instant: B's uuid is the smaller, so B comes first (the keys,
            # which hold the names' codes, would put A first)
            e("S", "p", 0, 5), e("B", "p", 1, 8), e("A", "p", 1, 9),
            e("S", "q", 0, 1), e("A", "q", 1, 2), e("B", "q", 2, 3),
            e("S", "q", 5, 4), e("X", "r", 0, 6),
        ]
    )  # fmt: skip
    ds.duck.compact_events()
    day = DateRange(date(2024, 3, 5), date(2024, 3, 5))
    got = both(ds, paths, PathsQuery(day, start_event="S", steps=3))
    assert path_runs == [1]  # p goes to the window query
    assert {(x.step, x.source, x.target): x.persons for x in got.edges} == {
        (0, "S", "A"): 1, (1, "A", "B"): 1, (0, "S", "B"): 1, (1, "B", "A"): 1,
    }  # fmt: skip
    back = both(ds, paths, PathsQuery(day, end_event="B", steps=2))
    assert {(x.step, x.source, x.target): x.persons for x in back.edges} == {
        (-1, "S", "B"): 1, (-1, "A", "B"): 1,
    }  # fmt: skip
