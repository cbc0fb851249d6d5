"""The ClickHouse events engine gives DuckDB's answers.

One module-scoped pair of installations serves every test here (chdb opens one data directory
per process at a time); tests that need their own ClickHouse directory are in
``test_clickhouse_store.py``.

DuckDB (an independent engine, the default) is the reference: the same writes go into a DuckDB
installation and an embedded-ClickHouse (chdb) one, and the ``events``, ``persons`` and
``person_distinct_ids`` relations read through ``run_readonly_sql`` must hold the same rows.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import chdb_url, rows
from tests.ingest.identity_harness import alias, ev, identify, send, to_events
from tests.ingest.test_identity_model import History, histories
from yunying.config import load_settings
from yunying.demo import generate_demo
from yunying.runtime import Runtime

pytest.importorskip("chdb")


EVENT_FIELDS = (
    "uuid, event, distinct_id, person_id, timestamp, properties, channel, utm_source, os, "
    "app_version, device_id, ip, amount"
)


def snapshot(rt: Runtime, pid: int, *, received_at: bool = False) -> dict[str, list[list[Any]]]:
    """The three relations of a project, rows sorted in Python (engines order UUIDs apart)."""
    fields = EVENT_FIELDS + (", received_at" if received_at else "")
    return {
        "events": sorted(rows(rt, pid, f"SELECT {fields} FROM events"), key=repr),
        "persons": sorted(
            rows(rt, pid, "SELECT id, created_at, properties, is_identified FROM persons"),
            key=repr,
        ),
        "person_distinct_ids": sorted(
            rows(rt, pid, "SELECT distinct_id, person_id FROM person_distinct_ids"), key=repr
        ),
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Runtime]]:
    """One DuckDB and one chdb installation for the whole module; tests use fresh projects."""
    root = tmp_path_factory.mktemp("engines")
    duck = Runtime.open(load_settings(data_dir=root / "duck"))
    ch = Runtime.open(load_settings(data_dir=root / "ch", events_url=chdb_url(root)))
    yield duck, ch
    duck.close()
    ch.close()


_project_ids = itertools.count(1000)


@settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(histories())
def test_random_histories_give_the_same_relations_on_both_engines(
    both: tuple[Runtime, Runtime], history: History
) -> None:
    duck, ch = both
    pid = next(_project_ids)
    for batch in history.batches:
        expected = duck.writer.write(pid, to_events(batch), timeout=30)
        assert ch.writer.write(pid, to_events(batch), timeout=30) == expected
    assert snapshot(ch, pid) == snapshot(duck, pid)


def _journey(tag: str) -> list[dict[str, Any]]:
    """Anonymous use, login, a second device, an alias, property operations, every column."""
    cols = {
        "$channel": "douyin",
        "$utm_source": "ad-7",
        "$os": "iOS",
        "$app_version": "3.2.1",
        "$device_id": f"{tag}-phone",
        "$ip": "203.0.113.9",
    }
    return [
        ev("install", f"{tag}-dev-1", 0, {**cols, "$set_once": {"first": "douyin"}}),
        ev("export_video", f"{tag}-dev-1", 5, {"duration_s": 42, "$set": {"plan": "free"}}),
        identify(f"{tag}-user", f"{tag}-dev-1", 9, {"$set": {"name": "李雷"}}),
        ev("purchase", f"{tag}-user", 12, {"$amount": 30.5, "$increment": {"spent": 30.5}}),
        ev("open", f"{tag}-dev-2", 1, {"$os": "Android", "$append": {"tags": "a"}}),
        identify(f"{tag}-user", f"{tag}-dev-2", 20),
        alias(f"{tag}-user", f"{tag}-web", 21),
        ev("visit", f"{tag}-web", 22, {"$union": {"tags": ["a", "b"]}, "$unset": ["plan"]}),
        ev("other", f"{tag}-stranger", 3, {"$set": {"x": [1, True, None, 1.5, {"k": "v"}]}}),
    ]


def test_a_journey_is_stored_alike_with_merges_columns_and_resends(
    both: tuple[Runtime, Runtime],
) -> None:
    duck, ch = both
    pid = next(_project_ids)
    raws = _journey("j")
    for rt in both:
        assert send(rt, pid, *raws[:4]).stored == 4
        assert send(rt, pid, *raws[4:]).stored == 5
        resent = send(rt, pid, *raws)  # a client resends everything
        assert (resent.stored, resent.duplicates) == (0, len(raws))
    got, expected = snapshot(ch, pid), snapshot(duck, pid)
    assert got == expected
    assert len(got["events"]) == len(raws)
    user = dict(got["person_distinct_ids"])["j-user"]
    assert {d for d, p in got["person_distinct_ids"] if p == user} == {
        "j-dev-1",
        "j-dev-2",
        "j-user",
        "j-web",
    }
    (props,) = [orjson.loads(p[2]) for p in got["persons"] if p[0] == user]
    assert props == {"first": "douyin", "name": "李雷", "spent": 30.5, "tags": ["a", "b"]}


def test_analyst_queries_answer_alike(both: tuple[Runtime, Runtime]) -> None:
    duck, ch = both
    pid = next(_project_ids)
    for rt in both:
        send(rt, pid, *_journey("q"))
    queries = [
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
        "SELECT count(DISTINCT person_id) FROM events",
        "SELECT p.is_identified, count(*) FROM events e JOIN persons p ON e.person_id = p.id "
        "GROUP BY p.is_identified ORDER BY p.is_identified",
        "SELECT os, sum(amount) FROM events WHERE os IS NOT NULL GROUP BY os ORDER BY os",
        "WITH firsts AS (SELECT person_id, min(timestamp) AS t FROM events GROUP BY person_id) "
        "SELECT count(*) FROM firsts f JOIN persons p ON p.id = f.person_id "
        "WHERE p.created_at = f.t",
    ]
    for sql in queries:
        assert rows(ch, pid, sql) == rows(duck, pid, sql), sql
    # JSON properties: ClickHouse's JSON functions read the String column
    assert rows(
        ch,
        pid,
        "SELECT JSONExtractInt(properties, 'duration_s') FROM events WHERE event = 'export_video'",
    ) == [[42]]


def test_the_demo_data_set_loads_alike_and_reloads_in_place(
    both: tuple[Runtime, Runtime],
) -> None:
    summaries = [
        generate_demo(rt, "demo", users=150, days=20, seed=5, end=date(2026, 3, 31)) for rt in both
    ]
    assert summaries[0]["events"] == summaries[1]["events"] > 1000
    duck, ch = both
    pid_duck, pid_ch = (s["project_id"] for s in summaries)
    expected = snapshot(duck, pid_duck, received_at=True)
    assert snapshot(ch, pid_ch, received_at=True) == expected
    again = generate_demo(ch, "demo", users=150, days=20, seed=5, end=date(2026, 3, 31))
    assert snapshot(ch, again["project_id"], received_at=True) == expected  # replaced, not doubled


def test_reads_are_scoped_to_one_project(both: tuple[Runtime, Runtime]) -> None:
    _, ch = both
    a, b = next(_project_ids), next(_project_ids)
    send(ch, a, ev("open", "same-id", 0))
    send(ch, b, ev("open", "same-id", 1), ev("open", "other", 2))
    assert rows(ch, a, "SELECT count() FROM events") == [[1]]
    assert rows(ch, b, "SELECT count() FROM events") == [[2]]
    assert rows(ch, b, "SELECT count() FROM persons") == [[2]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM system.tables",
        "SELECT * FROM raw_events",
        "SELECT * FROM default.raw_events",
        "SELECT count() FROM events WHERE uuid IN (SELECT uuid FROM raw_events)",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT file('/etc/passwd') FROM events",
        "SELECT * FROM url('http://127.0.0.1/', CSV)",
        "SELECT * FROM remote('127.0.0.1', default, raw_events)",
        "SELECT * FROM events WHERE distinct_id IN url('http://127.0.0.1/', CSV, 'x String')",
        "SELECT dictGet('d', 'a', 1) FROM events",
        "SELECT joinGet('t', 'a', 1) FROM events",
        "SELECT count() FROM events SETTINGS max_threads = 1",
        "SELECT count() FROM events FORMAT JSON",
        "INSERT INTO events (event) VALUES ('x')",
        "SELECT 1; SELECT 2",
    ],
)
def test_read_only_sql_refuses_what_reaches_outside_the_project(
    both: tuple[Runtime, Runtime], sql: str
) -> None:
    from yunying.errors import ReadOnlyViolation

    _, ch = both
    with pytest.raises(ReadOnlyViolation):
        rows(ch, 1, sql)


def test_many_merges_in_one_batch_repoint_every_id(both: tuple[Runtime, Runtime]) -> None:
    duck, ch = both
    pid = next(_project_ids)
    raws: list[dict[str, Any]] = []
    for i in range(40):  # 40 devices, each used, then all identified as one user in one batch
        raws.append(ev("open", f"m-dev-{i}", i, {"$set": {f"k{i}": i}}))
    raws.append(ev("open", "m-user", 50))
    merges = [identify("m-user", f"m-dev-{i}", 60 + i) for i in range(40)]
    for rt in both:
        send(rt, pid, *raws)
        send(rt, pid, *merges)
    got = snapshot(ch, pid)
    assert got == snapshot(duck, pid)
    assert len({p for _, p in got["person_distinct_ids"]}) == 1
    assert len(got["persons"]) == 1 and len(orjson.loads(got["persons"][0][2])) == 40
    assert str(uuid.UUID(got["persons"][0][0])) == got["persons"][0][0]


def test_person_values_replace_a_scope_and_stay_in_their_project(
    both: tuple[Runtime, Runtime],
) -> None:
    import pyarrow as pa

    a, b = next(_project_ids), next(_project_ids)
    p1, p2, p3 = (str(uuid.UUID(int=i)) for i in (1, 2, 3))
    for rt in both:
        rt.store.replace_person_values(a, "segment:1", pa.table({"person_id": [p1, p2]}))
        rt.store.replace_person_values(
            a, "rfm", pa.table({"person_id": [p1], "label": ["champion"], "value": [5.0]})
        )
        rt.store.replace_person_values(b, "segment:1", pa.table({"person_id": [p3]}))
        rt.store.replace_person_values(a, "segment:1", pa.table({"person_id": [p2, p3]}))
    answers = [
        sorted(rows(rt, a, "SELECT scope, person_id, label, value FROM person_values"), key=repr)
        for rt in both
    ]
    assert (
        answers[0]
        == answers[1]
        == sorted(
            [
                ["segment:1", p2, None, None],
                ["segment:1", p3, None, None],
                ["rfm", p1, "champion", 5.0],
            ],
            key=repr,
        )
    )
    for rt in both:
        rt.store.replace_person_values(a, "rfm", pa.table({"person_id": pa.array([], pa.string())}))
        assert rows(rt, a, "SELECT count() FROM person_values WHERE scope = 'rfm'") == [[0]]
        assert rows(rt, b, "SELECT count() FROM person_values") == [[1]]
