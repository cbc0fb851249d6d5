"""The identity examples of ``tests/ingest/test_identity.py``, run on embedded ClickHouse (chdb).

The functions are the same objects as there; only the installation differs: this module's
``settings`` fixture points the events engine at ``chdb:///...``, so every example writes through
the real writer into ClickHouse and reads back through ``run_readonly_sql`` in its dialect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import chdb_url
from tests.ingest import test_identity as _examples
from yunying.config import Settings, load_settings

pytest.importorskip("chdb")

pid = _examples.pid
globals().update({k: v for k, v in vars(_examples).items() if k.startswith("test_")})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", events_url=chdb_url(tmp_path))


def test_the_examples_really_run_on_clickhouse(runtime: object) -> None:
    from yunying.store.clickhouse_store import ClickHouseEventStore

    assert isinstance(runtime.store, ClickHouseEventStore)  # type: ignore[attr-defined]
    assert sum(k.startswith("test_") for k in globals()) > 30
