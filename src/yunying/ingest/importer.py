"""File import: JSONL, CSV and Parquet into native-shaped events, in chunks.

Every format yields the same dicts the native API takes (``event``, ``distinct_id``,
``timestamp``, ``uuid``, ``properties``), so import applies the API's validation and dedupe.

- JSONL: one event object per line.
- CSV: columns ``event``, ``distinct_id``, ``timestamp``, ``uuid`` map to the event; a
  ``properties`` column may hold a JSON object; every other non-empty cell becomes a text
  property, except ``amount``/``$amount`` which must parse as a number.
- Parquet: the same columns; ``properties`` may be a JSON string or a struct/map column;
  timestamp columns are taken as UTC.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from yunying.errors import YunyingError

TOP_LEVEL = ("event", "distinct_id", "timestamp", "uuid")
NUMERIC_COLUMNS = ("amount", "$amount")
FORMATS = ("jsonl", "csv", "parquet")


class ImportFormatError(YunyingError):
    """The file cannot be read as the chosen format."""


@dataclass
class Row:
    """One raw event and where it came from (1-based line or row number)."""

    line: int
    raw: Any


def detect_format(path: Path, fmt: str | None) -> str:
    """The format named, or the one the file extension implies."""
    if fmt:
        if fmt not in FORMATS:
            raise ImportFormatError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    raise ImportFormatError(
        f"cannot tell the format of {path.name}: pass --format jsonl|csv|parquet"
    )


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Row(n, orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                yield Row(n, _Unreadable(f"line is not valid JSON: {exc}"))


class _Unreadable:
    """Marker for a row that could not be decoded; validation reports it."""

    def __init__(self, message: str) -> None:
        self.message = message


def _cell_event(cells: dict[str, Any]) -> Any:
    out: dict[str, Any] = {}
    props: dict[str, Any] = {}
    for key, value in cells.items():
        if value is None or value == "":
            continue
        if key in TOP_LEVEL:
            out[key] = value.isoformat() if isinstance(value, datetime | date) else value
        elif key == "properties":
            if isinstance(value, str):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    return _Unreadable("column properties is not a JSON object")
            if isinstance(value, list):  # a parquet map column arrives as key/value pairs
                value = dict(value)
            if not isinstance(value, dict):
                return _Unreadable("column properties is not a JSON object")
            props.update(value)
        elif key in NUMERIC_COLUMNS and isinstance(value, str):
            try:
                props[key] = float(value)
            except ValueError:
                return _Unreadable(f"column {key} is not a number: {value[:40]!r}")
        else:
            props[key] = value.isoformat() if isinstance(value, datetime | date) else value
    if isinstance(out.get("timestamp"), str) and isinstance(cells.get("timestamp"), datetime):
        ts = cells["timestamp"]
        if ts.tzinfo is None:
            out["timestamp"] = ts.replace(tzinfo=UTC).isoformat()
    if props:
        out["properties"] = props
    return out


def _csv(path: Path) -> Iterator[Row]:
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "event" not in reader.fieldnames:
            raise ImportFormatError(
                "CSV needs a header row with at least 'event' and 'distinct_id'"
            )
        for n, cells in enumerate(reader, 2):
            if None in cells:
                yield Row(n, _Unreadable("row has more cells than the header"))
                continue
            yield Row(n, _cell_event(cells))


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ImportFormatError(f"not a readable Parquet file: {exc}") from None
    n = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for cells in batch.to_pylist():
            n += 1
            yield Row(n, _cell_event(cells))


def read_rows(path: Path, fmt: str) -> Iterator[Row]:
    """Raw events of a file, in order."""
    readers = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}
    return readers[fmt](path)


def chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Group rows into lists of at most ``size``."""
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def is_unreadable(raw: Any) -> str | None:
    """The decode error of a row, or ``None`` if it decoded."""
    return raw.message if isinstance(raw, _Unreadable) else None


#: Sends a list of raw events; returns (stored, duplicates, errors as {"index","field","message"}).
Submit = Callable[[list[Any]], tuple[int, int, list[dict[str, Any]]]]
MAX_REPORTED_ERRORS = 1000


@dataclass
class ImportReport:
    """Totals of one import; ``errors`` name the file line (or row) and field."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": self.errors,
        }


def import_rows(
    rows: Iterator[Row],
    submit: Submit,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Feed rows to ``submit`` in batches and total up what happened, line by line."""
    report = ImportReport()

    def reject(line: int, field_name: str, message: str) -> None:
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.errors.append({"line": line, "field": field_name, "message": message})

    for chunk in chunks(rows, batch_size):
        report.read += len(chunk)
        good: list[Row] = []
        for row in chunk:
            problem = is_unreadable(row.raw)
            if problem is None:
                good.append(row)
            else:
                report.rejected += 1
                reject(row.line, "", problem)
        if good:
            stored, dups, errors = submit([r.raw for r in good])
            report.stored += stored
            report.duplicates += dups
            report.rejected += len({e["index"] for e in errors})
            for e in errors:
                reject(good[e["index"]].line, e["field"], e["message"])
        if progress:
            progress(len(chunk))
    return report


__all__ = [
    "FORMATS",
    "ImportFormatError",
    "ImportReport",
    "Row",
    "chunks",
    "detect_format",
    "import_rows",
    "is_unreadable",
    "read_rows",
]
