"""Blocklist: persons, distinct ids, devices, IPs and subnets whose claims are refused.

Entries carry a reason, who added them and an optional expiry; an expired entry no longer
matches and is listed only on request. Adding an entry that exists replaces its reason and expiry
(so "block for 7 more days" is one call). IPs and subnets are stored normalised
(``2001:db8::1``, ``203.0.113.0/24``) so that different spellings of one address match.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from yunying.errors import M_, NotFound, YunyingError
from yunying.risk.tables import risk_blocklist

BlockKind = Literal["person", "distinct_id", "device", "ip", "subnet"]
BLOCK_KINDS: tuple[str, ...] = get_args(BlockKind)
#: Active subnet entries read per check (a project blocks a few networks, not millions).
MAX_SUBNETS = 10_000


class InvalidBlockEntry(YunyingError):
    """A blocklist entry cannot be added as given (bad kind, empty value, malformed IP)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        #: The request field at fault (``kind``, ``value``, ``reason``, ``expires_at``).
        self.field = field


@dataclass(frozen=True)
class BlockEntry:
    """One blocklist entry."""

    id: int
    project_id: int
    kind: str
    value: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "value": self.value,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
        }


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite hands back naive UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _entry(r: sa.Row[Any]) -> BlockEntry:
    return BlockEntry(
        r.id,
        r.project_id,
        r.kind,
        r.value,
        r.reason,
        r.created_by,
        utc(r.created_at),
        None if r.expires_at is None else utc(r.expires_at),
    )


def normalise(kind: str, value: str) -> str:
    """The stored form of ``value`` for ``kind``; :class:`InvalidBlockEntry` if unusable."""
    if kind not in BLOCK_KINDS:
        raise InvalidBlockEntry(
            M_(
                "field 'kind' must be one of {kinds}, not {kind!r}",
                kinds=", ".join(BLOCK_KINDS),
                kind=kind,
            ),
            "kind",
        )
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > 200:
        raise InvalidBlockEntry(M_("field 'value' must be 1 to 200 characters"), "value")
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidBlockEntry(
                M_("field 'value': {value!r} is not an IP address", value=value), "value"
            ) from None
    if kind == "subnet":
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise InvalidBlockEntry(
                M_("field 'value': {value!r} is not a subnet such as 203.0.113.0/24", value=value),
                "value",
            ) from None
    return value


def add_block(
    engine: Engine,
    project_id: int,
    kind: str,
    value: str,
    reason: str,
    *,
    created_by: str = "api",
    expires_at: datetime | None = None,
) -> BlockEntry:
    """Add (or refresh) an entry; returns it as stored."""
    value = normalise(kind, value)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidBlockEntry(M_("field 'reason' is required: say why this is blocked"), "reason")
    now = datetime.now(UTC)
    if expires_at is not None:
        expires_at = utc(expires_at)
        if expires_at <= now:
            raise InvalidBlockEntry(M_("field 'expires_at' must be in the future"), "expires_at")
    values = {
        "reason": reason,
        "created_by": created_by,
        "created_at": now,
        "expires_at": expires_at,
    }
    key = (
        (risk_blocklist.c.project_id == project_id)
        & (risk_blocklist.c.kind == kind)
        & (risk_blocklist.c.value == value)
    )
    with engine.begin() as conn:
        if conn.execute(risk_blocklist.update().where(key).values(**values)).rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(
                        risk_blocklist.insert().values(
                            project_id=project_id, kind=kind, value=value, **values
                        )
                    )
            except sa.exc.IntegrityError:  # added concurrently: refresh that one
                conn.execute(risk_blocklist.update().where(key).values(**values))
        row = conn.execute(sa.select(risk_blocklist).where(key)).one()
    return _entry(row)


def get_block(engine: Engine, project_id: int, entry_id: int) -> BlockEntry:
    """One entry; :class:`NotFound` if the project has no entry ``entry_id``."""
    where = (risk_blocklist.c.project_id == project_id) & (risk_blocklist.c.id == entry_id)
    with engine.connect() as conn:
        row = conn.execute(sa.select(risk_blocklist).where(where)).first()
    if row is None:
        raise NotFound(f"no blocklist entry {entry_id} in this project")
    return _entry(row)


def remove_block(engine: Engine, project_id: int, entry_id: int) -> BlockEntry:
    """Delete an entry; :class:`NotFound` if the project has no entry ``entry_id``."""
    where = (risk_blocklist.c.project_id == project_id) & (risk_blocklist.c.id == entry_id)
    with engine.begin() as conn:
        row = conn.execute(sa.select(risk_blocklist).where(where)).first()
        if row is None:
            raise NotFound(f"no blocklist entry {entry_id} in this project")
        conn.execute(risk_blocklist.delete().where(where))
    return _entry(row)


def list_blocks(
    engine: Engine,
    project_id: int,
    kind: str | None = None,
    *,
    include_expired: bool = False,
    limit: int = 1000,
    offset: int = 0,
) -> list[BlockEntry]:
    """Entries of a project, newest first."""
    if kind is not None and kind not in BLOCK_KINDS:
        raise InvalidBlockEntry(
            M_(
                "field 'kind' must be one of {kinds}, not {kind!r}",
                kinds=", ".join(BLOCK_KINDS),
                kind=kind,
            ),
            "kind",
        )
    q = sa.select(risk_blocklist).where(risk_blocklist.c.project_id == project_id)
    if kind is not None:
        q = q.where(risk_blocklist.c.kind == kind)
    if not include_expired:
        now = datetime.now(UTC)
        q = q.where(
            sa.or_(risk_blocklist.c.expires_at.is_(None), risk_blocklist.c.expires_at > now)
        )
    q = q.order_by(risk_blocklist.c.id.desc()).limit(limit).offset(offset)
    with engine.connect() as conn:
        return [_entry(r) for r in conn.execute(q)]


def matching_entries(
    conn: Connection,
    project_id: int,
    now: datetime,
    *,
    person_id: str | None = None,
    distinct_id: str | None = None,
    device_id: str | None = None,
    ip: str | None = None,
) -> list[BlockEntry]:
    """Active entries that match any of the given identifiers (subnets by containment)."""
    wanted: list[tuple[str, str]] = []
    for kind, value in (("person", person_id), ("distinct_id", distinct_id), ("device", device_id)):
        if value:
            wanted.append((kind, value))
    addr = None
    if ip:
        try:
            addr = ipaddress.ip_address(ip.strip())
            wanted.append(("ip", str(addr)))
        except ValueError:
            wanted.append(("ip", ip.strip()))
    active = sa.or_(risk_blocklist.c.expires_at.is_(None), risk_blocklist.c.expires_at > now)
    base = sa.select(risk_blocklist).where(risk_blocklist.c.project_id == project_id, active)
    found: list[BlockEntry] = []
    if wanted:
        exact = sa.or_(
            *[(risk_blocklist.c.kind == k) & (risk_blocklist.c.value == v) for k, v in wanted]
        )
        found += [_entry(r) for r in conn.execute(base.where(exact))]
    if addr is not None:
        subnets = conn.execute(
            base.where(risk_blocklist.c.kind == "subnet").limit(MAX_SUBNETS)
        ).all()
        for r in subnets:
            net = ipaddress.ip_network(r.value, strict=False)
            if net.version == addr.version and addr in net:
                found.append(_entry(r))
    return found
