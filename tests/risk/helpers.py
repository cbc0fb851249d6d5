"""Test helpers for anti-fraud: events through the real ingestion path, claims, invite graphs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from yunying.ingest.model import validate_batch
from yunying.risk import Claim, InviteEdge
from yunying.runtime import Runtime

#: A fixed "now" for the scenarios (events in the recent past of it).
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def ev(
    distinct_id: str,
    event: str,
    at: datetime,
    *,
    device: str | None = None,
    ip: str | None = None,
    **props: Any,
) -> dict[str, Any]:
    """A native-API event dict."""
    properties = dict(props)
    if device is not None:
        properties["$device_id"] = device
    if ip is not None:
        properties["$ip"] = ip
    return {
        "event": event,
        "distinct_id": distinct_id,
        "timestamp": at.astimezone(UTC).isoformat(),
        "properties": properties,
    }


def ingest(runtime: Runtime, project_id: int, raws: list[dict[str, Any]]) -> None:
    """Validate and store events through the single writer, as the HTTP API does."""
    batch = validate_batch(raws)
    assert not batch.errors, batch.errors
    runtime.writer.write(project_id, batch.events, timeout=60)


def person_of(runtime: Runtime, project_id: int, distinct_id: str) -> str:
    """The person id identity resolution gave a distinct id."""
    sql = (
        "SELECT CAST(person_id AS VARCHAR) FROM person_distinct_ids "
        f"WHERE distinct_id = '{distinct_id}'"
    )
    from yunying.store import run_readonly_sql

    rows = run_readonly_sql(runtime.store, project_id, sql).rows
    assert rows, f"no person for {distinct_id}"
    return str(rows[0][0])


def make_claim(
    project_id: int,
    person_id: str,
    *,
    distinct_id: str | None = None,
    at: datetime | None = None,
    activity_id: int = 1,
    kind: str = "task",
    device: str | None = None,
    ip: str | None = None,
    role: str | None = None,
    counterpart: str | None = None,
    **details: Any,
) -> Claim:
    return Claim(
        project_id=project_id,
        activity_id=activity_id,
        activity_kind=kind,
        person_id=person_id,
        distinct_id=distinct_id or person_id,
        at=at or NOW,
        reward_kind="points",
        amount=100,
        device_id=device,
        ip=ip,
        role=role,
        counterpart_person_id=counterpart,
        details=details,
    )


@dataclass
class EdgeList:
    """An :class:`~yunying.risk.InviteGraph` over a plain list of edges."""

    items: list[InviteEdge] = field(default_factory=list)

    def add(self, inviter: str, invitee: str, at: datetime | None = None) -> None:
        self.items.append(InviteEdge(inviter, invitee, at or NOW, at or NOW))

    def edges(self, project_id: int, activity_id: int | None = None) -> Sequence[InviteEdge]:
        return list(self.items)
