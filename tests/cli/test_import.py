"""`yunying import` of JSONL, CSV and Parquet: same validation and dedupe as the API."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from yunying.cli.main import app
from yunying.config import load_settings
from yunying.runtime import Runtime
from yunying.state import create_project, open_state
from yunying.store import run_readonly_sql

runner = CliRunner()

EVENTS: list[dict[str, Any]] = [
    {
        "event": "app_install",
        "distinct_id": "d-1",
        "timestamp": "2026-11-01T01:00:00Z",
        "uuid": str(uuid.UUID(int=1)),
        "properties": {"channel": "douyin", "$os": "iOS"},
    },
    {
        "event": "$identify",
        "distinct_id": "u-1",
        "timestamp": "2026-11-01T01:05:00Z",
        "uuid": str(uuid.UUID(int=2)),
        "properties": {"$anon_distinct_id": "d-1", "$set": {"city": "杭州"}},
    },
    {
        "event": "purchase_membership",
        "distinct_id": "u-1",
        "timestamp": "2026-11-02T03:00:00Z",
        "uuid": str(uuid.UUID(int=3)),
        "properties": {"amount": 198.0, "plan": "yearly"},
    },
]
BAD = {"event": "", "distinct_id": "d-2", "timestamp": "2026-11-01T00:00:00Z"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    create_project(open_state(load_settings(data_dir=d).state_url), "app")
    return d


def invoke(data_dir: Path, *args: str) -> Any:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    return result


def stored(data_dir: Path) -> list[list[Any]]:
    rt = Runtime.open(load_settings(data_dir=data_dir))
    try:
        return run_readonly_sql(
            rt.store,
            1,
            "SELECT uuid, event, distinct_id, timestamp, channel, amount, "
            "properties->>'$.plan' AS plan, person_id FROM events ORDER BY timestamp",
        ).rows
    finally:
        rt.close()


def write_jsonl(path: Path, events: list[Any], extra_lines: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    path.write_bytes(b"\n".join([orjson.dumps(e) for e in events] + list(extra_lines)) + b"\n")
    return path


def write_csv(path: Path, events: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["event", "distinct_id", "timestamp", "uuid", "channel", "amount", "properties"])
        for e in events:
            p = dict(e.get("properties", {}))
            channel, amount = p.pop("channel", ""), p.pop("amount", "")
            w.writerow(
                [
                    e["event"],
                    e["distinct_id"],
                    e["timestamp"],
                    e.get("uuid", ""),
                    channel,
                    amount,
                    orjson.dumps(p).decode() if p else "",
                ]
            )
    return path


def write_parquet(path: Path, events: list[dict[str, Any]]) -> Path:
    from datetime import datetime

    table = pa.table(
        {
            "event": [e["event"] for e in events],
            "distinct_id": [e["distinct_id"] for e in events],
            "timestamp": [datetime.fromisoformat(e["timestamp"].replace("Z", "")) for e in events],
            "uuid": [e.get("uuid") for e in events],
            "properties": [orjson.dumps(e.get("properties", {})).decode() for e in events],
        }
    )
    pq.write_table(table, path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_imports_every_field(fmt: str, data_dir: Path, tmp_path: Path) -> None:
    path = WRITERS[fmt](tmp_path / f"events.{fmt}", EVENTS)
    result = invoke(data_dir, "import", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == {
        "read": 3,
        "stored": 3,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
    }
    got = stored(data_dir)
    assert [r[0] for r in got] == [e["uuid"] for e in EVENTS]
    assert [r[3] for r in got] == [
        "2026-11-01T01:00:00",
        "2026-11-01T01:05:00",
        "2026-11-02T03:00:00",
    ]
    assert got[0][4] == "douyin" and got[2][5] == 198.0 and got[2][6] == "yearly"
    assert len({r[7] for r in got}) == 1, "the anonymous install belongs to the identified person"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_reimport_is_deduplicated(fmt: str, data_dir: Path, tmp_path: Path) -> None:
    path = WRITERS[fmt](tmp_path / f"events.{fmt}", EVENTS)
    assert invoke(data_dir, "import", str(path), "--json").exit_code == 0
    again = invoke(data_dir, "import", str(path), "--json")
    assert orjson.loads(again.stdout)["duplicates"] == 3
    assert len(stored(data_dir)) == 3


def test_bad_rows_are_reported_by_line_and_the_rest_stored(data_dir: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [EVENTS[0], BAD, EVENTS[2]], [b"{broken"])
    result = invoke(data_dir, "import", str(path), "--json", "--batch-size", "2")
    assert result.exit_code == 1
    report = orjson.loads(result.stdout)
    assert (report["read"], report["stored"], report["rejected"]) == (4, 2, 2)
    assert {(e["line"], e["field"]) for e in report["errors"]} == {(2, "event"), (4, "")}
    assert len(stored(data_dir)) == 2


def test_csv_amount_must_be_numeric(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(
        "event,distinct_id,amount\npurchase,u1,thirty\npurchase,u2,30\n", encoding="utf-8"
    )
    report = orjson.loads(invoke(data_dir, "import", str(path), "--json").stdout)
    assert report["stored"] == 1 and report["errors"][0]["line"] == 2
    assert "amount" in report["errors"][0]["message"]


def test_unknown_format_and_unreadable_files_give_clear_errors(
    data_dir: Path, tmp_path: Path
) -> None:
    txt = tmp_path / "e.txt"
    txt.write_text("hello")
    result = invoke(data_dir, "import", str(txt))
    assert result.exit_code == 1 and "--format" in result.output
    bad = tmp_path / "e.parquet"
    bad.write_bytes(b"not parquet")
    result = invoke(data_dir, "import", str(bad))
    assert result.exit_code == 1 and "Parquet" in result.output
    nohead = tmp_path / "e.csv"
    nohead.write_text("a,b\n1,2\n")
    result = invoke(data_dir, "import", str(nohead))
    assert result.exit_code == 1 and "header" in result.output
