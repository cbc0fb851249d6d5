"""What the events engine tells anti-fraud: who used a device or network, how old a person is,
and how active invitees are. Every query is a SQLGlot tree over the project-scoped ``events`` /
``persons`` relations, bounded by a look-back window and a row limit, rendered per engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlglot import exp

from yunying.analytics.common import Sql, lit
from yunying.store.base import EventStore

#: Rows read per question at most: enough to tell "over the limit" from "under it".
ROW_LIMIT = 5_000
#: Events up to this long after the claim's time still count (client clocks run ahead).
CLOCK_SKEW = timedelta(hours=1)


def network_of(ip: str | None, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str | None:
    """The subnet of ``ip`` (``203.0.113.0/24``, ``2001:db8:1:2::/64``), ``None`` if not an IP."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def naive_utc(value: datetime) -> datetime:
    """``value`` as naive UTC, how ``events.timestamp`` holds time."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


class EventSignals:
    """Read-only questions about one project's events (see the module docstring)."""

    def __init__(self, store: EventStore, project_id: int) -> None:
        self.store = store
        self.project_id = project_id
        self.sql = Sql(store.dialect)

    def _events(self) -> exp.Expr:
        return self.store.scoped("events", self.project_id).subquery("e")

    def _window(self, since: datetime, until: datetime) -> exp.Expr:
        return self.sql.time_between(naive_utc(since), naive_utc(until) + CLOCK_SKEW)

    def _rows(self, tree: exp.Expr) -> list[list[object]]:
        return self.store.query(self.sql.render(tree)).rows

    def persons_with(self, column: str, value: str, since: datetime, until: datetime) -> set[str]:
        """Distinct persons with an event whose ``column`` (device_id, ip) is ``value``."""
        person = self.sql.text(exp.column("person_id"))
        tree = (
            exp.select(exp.alias_(person, "pid"))
            .distinct()
            .from_(self._events())
            .where(exp.column(column).eq(lit(value)), self._window(since, until))
            .limit(ROW_LIMIT)
        )
        return {str(r[0]) for r in self._rows(tree)}

    def persons_in_subnet(self, subnet: str, since: datetime, until: datetime) -> set[str]:
        """Distinct persons with an event from an address inside ``subnet``.

        The engine narrows by the textual prefix every address of the subnet shares (whole
        octets of IPv4, the first group of IPv6); exact containment is checked here.
        """
        net = ipaddress.ip_network(subnet, strict=False)
        if net.version == 4:
            octets = str(net.network_address).split(".")[: net.prefixlen // 8]
            prefix = ".".join(octets) + "." if octets else ""
        else:
            first = net.network_address.exploded.split(":")[0].lstrip("0")
            prefix = f"{first}:" if first and net.prefixlen >= 16 else ""
        person = self.sql.text(exp.column("person_id"))
        ip = exp.column("ip")
        cond: exp.Expr = exp.not_(exp.Is(this=ip, expression=exp.null()))
        if prefix:
            cond = exp.Like(this=ip.copy(), expression=lit(prefix + "%"))
        tree = (
            exp.select(exp.alias_(person, "pid"), exp.column("ip"))
            .distinct()
            .from_(self._events())
            .where(cond, self._window(since, until))
            .limit(ROW_LIMIT)
        )
        out: set[str] = set()
        for pid, text in self._rows(tree):
            try:
                if ipaddress.ip_address(str(text).strip()) in net:
                    out.add(str(pid))
            except ValueError:
                continue
        return out

    def created_at(self, person_id: str) -> datetime | None:
        """When the person was first seen (aware UTC), ``None`` if the engine does not know it."""
        persons = self.store.scoped("persons", self.project_id).subquery("p")
        tree = (
            exp.select(exp.func("MIN", exp.column("created_at")))
            .from_(persons)
            .where(self.sql.text(exp.column("id")).eq(lit(person_id)))
        )
        rows = self._rows(tree)
        value = rows[0][0] if rows else None
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def activity_counts(
        self, person_ids: Iterable[str], ignored: Iterable[str], since: datetime, until: datetime
    ) -> dict[str, int]:
        """Events per person, leaving out the ``ignored`` event names (missing persons: 0)."""
        ids = sorted(set(person_ids))
        counts = dict.fromkeys(ids, 0)
        if not ids:
            return counts
        skip = sorted(set(ignored))
        person = self.sql.text(exp.column("person_id"))
        conds: list[exp.Expr] = [
            exp.In(this=person.copy(), expressions=[lit(p) for p in ids]),
            self._window(since, until),
        ]
        if skip:
            conds.append(
                exp.not_(exp.In(this=exp.column("event"), expressions=[lit(n) for n in skip]))
            )
        tree = (
            exp.select(exp.alias_(person, "pid"), exp.alias_(exp.func("COUNT", exp.Star()), "n"))
            .from_(self._events())
            .where(*conds)
            .group_by(exp.column("pid"))
        )
        for pid, n in self._rows(tree):
            counts[str(pid)] = int(n)  # type: ignore[call-overload]
        return counts
