"""ClickHouse-specific behaviour: URLs, the write order without transactions, reopening.

Each test opens its own embedded ClickHouse directory (one at a time: chdb's limit per process).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import chdb_url, rows
from tests.ingest.identity_harness import alias, ev, identify, send, to_events
from yunying.config import load_settings
from yunying.ingest.identity import IdentityResolver
from yunying.runtime import Runtime
from yunying.state import create_project
from yunying.store import open_event_store
from yunying.store.duckdb_store import DuckDBEventStore

pytest.importorskip("chdb")

from yunying.store.clickhouse_store import ClickHouseEventStore  # noqa: E402


def test_urls_choose_the_engine(tmp_path: Path) -> None:
    duck = open_event_store(f"duckdb:///{tmp_path / 'e.duckdb'}")
    assert isinstance(duck, DuckDBEventStore) and duck.dialect == "duckdb"
    duck.close()
    store = open_event_store(chdb_url(tmp_path))
    assert isinstance(store, ClickHouseEventStore) and store.dialect == "clickhouse"
    store.close()
    assert (tmp_path / "clickhouse").is_dir()
    with pytest.raises(ValueError):
        open_event_store("mysql://x/y")


def test_settings_accept_clickhouse_urls_and_refuse_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from yunying.errors import ConfigError

    monkeypatch.setenv("YUNYING_EVENTS_URL", chdb_url(tmp_path))
    assert load_settings(data_dir=tmp_path).events_url == chdb_url(tmp_path)
    url = "clickhouse://u:p@ch.internal:8123/yunying"
    assert load_settings(data_dir=tmp_path, events_url=url).events_url == url
    for bad in ("chdb://relative/path", "mysql://h/db"):
        with pytest.raises(ConfigError):
            load_settings(data_dir=tmp_path, events_url=bad)


def test_a_failed_batch_leaves_no_events_and_its_retry_stores_each_once(tmp_path: Path) -> None:
    """ClickHouse has no transactions: the events go in last, so a batch that fails before them
    is simply not stored (and not acknowledged); its retry finds the uuids new and stores them."""
    rt = Runtime.open(load_settings(data_dir=tmp_path / "data", events_url=chdb_url(tmp_path)))
    try:
        pid = create_project(rt.state, "p").project.id
        batch = [ev("open", "dev", 0), identify("user", "dev", 1, {"$set": {"plan": "pro"}})]
        received = datetime.now(UTC).replace(tzinfo=None)
        with pytest.raises(RuntimeError, match="crash"), rt.store.transaction() as tx:
            IdentityResolver().ingest(tx, pid, to_events(batch), received)
            raise RuntimeError("crash after the identity writes")
        assert rows(rt, pid, "SELECT count() FROM events") == [[0]]
        # the identity writes did land (no rollback on ClickHouse) ...
        assert rows(rt, pid, "SELECT count() FROM person_distinct_ids") == [[2]]
        # ... and the retry applies the batch in full, storing each event once
        result = rt.writer.write(pid, to_events(batch), timeout=30)
        assert (result.stored, result.duplicates) == (2, 0)
        assert rows(rt, pid, "SELECT count() FROM events") == [[2]]
        assert rows(rt, pid, "SELECT properties, is_identified FROM persons") == [
            ['{"plan":"pro"}', True]
        ]
    finally:
        rt.close()


def test_data_and_versions_survive_reopening(tmp_path: Path) -> None:
    settings_ = load_settings(data_dir=tmp_path / "data", events_url=chdb_url(tmp_path))
    first = ev("open", "dev", 0, {"$set": {"plan": "free"}})
    rt = Runtime.open(settings_)
    pid = create_project(rt.state, "p").project.id
    send(rt, pid, first, alias("dev", "web", 1))
    rt.close()
    rt = Runtime.open(settings_)
    try:
        assert (send(rt, pid, first).duplicates, rows(rt, pid, "SELECT count() FROM events")) == (
            1,
            [[2]],
        )
        send(rt, pid, ev("upgrade", "web", 2, {"$set": {"plan": "pro"}}))
        assert rows(rt, pid, "SELECT properties FROM persons") == [['{"plan":"pro"}']]
        assert sorted(rows(rt, pid, "SELECT distinct_id FROM person_distinct_ids")) == [
            ["dev"],
            ["web"],
        ]
    finally:
        rt.close()
