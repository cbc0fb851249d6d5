"""What segments and tags share about their stored definitions (tables ``segments`` and ``tags``
of :mod:`yunying.audience.segment_tables`): finding one by id or name, the name-taken check, and
recording a computation. The callers keep their own messages and row types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from yunying.errors import Message, message_of, message_record


def aware(ts: datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands back naive ones)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else aware(ts).isoformat()


def find(engine: sa.Engine, table: sa.Table, project_id: int, ref: int | str) -> Any | None:
    """The row of ``table`` in a project by id or by name (an id wins when a name is also
    digits), or None."""
    where = table.c.project_id == project_id
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        cond = sa.or_(table.c.id == int(ref), table.c.name == str(ref))
    else:
        cond = table.c.name == ref
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(where, cond).order_by(table.c.id)).all()
    if not rows:
        return None
    by_id = [r for r in rows if str(r.id) == str(ref)]
    return by_id[0] if by_id else rows[0]


def name_taken(conn: sa.Connection, table: sa.Table, project_id: int, name: str) -> bool:
    """Whether the project already has a row of ``table`` named ``name``."""
    query = sa.select(table.c.id).where(table.c.project_id == project_id, table.c.name == name)
    return conn.execute(query).first() is not None


def failure(exc: BaseException) -> str:
    """What a failed computation records: ``Type: message`` in English, keeping the message's
    template (a :class:`~yunying.errors.Message`) so the console can show it translated."""
    message = message_of(exc)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(message, Message):
        return Message(message.template, message.params, text)
    return text


def record(
    conn: sa.Connection,
    table: sa.Table,
    row_id: int,
    at: datetime,
    size: int | None,
    error: str | None,
) -> None:
    """Remember a computation (size) or its failure (error, size unchanged)."""
    values: dict[str, Any] = {"last_error": error, "last_error_message": message_record(error)}
    if error is None:
        values.update(last_computed_at=at, size=size)
    conn.execute(table.update().where(table.c.id == row_id).values(**values))
