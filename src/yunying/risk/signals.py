"""What the events engine tells anti-fraud: who used a device or network, how old a person is,
and how active invitees are. Every query is a SQLGlot tree over the project-scoped ``events`` /
``persons`` relations, bounded by a look-back window and a row limit, rendered per engine.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlglot import exp

from yunying.analytics.common import Sql, lit
from yunying.store.base import EventStore

#: Rows read per question at most: enough to tell "over the limit" from "under it".
ROW_LIMIT = 5_000
#: Events up to this long after the claim's time still count (client clocks run ahead).
CLOCK_SKEW = timedelta(hours=1)


_SCOPED: weakref.WeakKeyDictionary[EventStore, dict[tuple[str, int], str]] = (
    weakref.WeakKeyDictionary()
)


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

    def _scoped(self, relation: str, alias: str) -> exp.Expr:
        """The engine's project-scoped ``relation`` as a FROM item.

        Its SQL is the engine's own tree rendered once per store and project and embedded as
        is: building, copying and rendering that tree for every claim cost more than running
        the query. No caller-supplied text is in it (values go into the outer tree as literals).
        """
        key = (relation, self.project_id)
        try:
            cache = _SCOPED.setdefault(self.store, {})
        except TypeError:  # a store that cannot be weakly referenced: no caching
            cache = {}
        if key not in cache:
            cache[key] = self.sql.render(self.store.scoped(relation, self.project_id))
        return exp.Subquery(
            this=exp.Var(this=cache[key]), alias=exp.TableAlias(this=exp.to_identifier(alias))
        )

    def _events(self) -> exp.Expr:
        return self._scoped("events", "e")

    def _window(self, since: datetime, until: datetime) -> exp.Expr:
        return self.sql.time_between(naive_utc(since), naive_utc(until) + CLOCK_SKEW)

    def _rows(self, tree: exp.Expr) -> list[list[object]]:
        return self.store.query(self.sql.render(tree)).rows

    def persons_seen(
        self,
        until: datetime,
        *,
        device: tuple[str, datetime] | None = None,
        ip: tuple[str, datetime] | None = None,
        subnet: tuple[str, datetime] | None = None,
    ) -> dict[str, set[str]]:
        """Distinct persons with an event on a device, from an IP, from inside a subnet, each
        since its own time: ``{"device": {...}, "ip": {...}, "subnet": {...}}`` in one query.

        Each question is one selective branch of a UNION ALL (an OR of them defeats the
        engines' filter pushdown). For the subnet the engine narrows by the text all its
        addresses start with (whole IPv4 octets, the first IPv6 group); exact containment is
        checked here.
        """
        out: dict[str, set[str]] = {}
        branches: list[exp.Select] = []
        person = exp.alias_(self.sql.text(exp.column("person_id")), "pid")

        def branch(kind: str, cond: exp.Expr, since: datetime) -> exp.Select:
            return (
                exp.select(exp.alias_(lit(kind), "kind"), person.copy(), exp.column("ip"))
                .distinct(copy=False)
                .from_(self._events(), copy=False)
                .where(cond, self._window(since, until), copy=False)
                .limit(ROW_LIMIT, copy=False)
            )

        if device is not None:
            out["device"] = set()
            branches.append(branch("device", exp.column("device_id").eq(lit(device[0])), device[1]))
        if ip is not None:
            out["ip"] = set()
            branches.append(branch("ip", exp.column("ip").eq(lit(ip[0])), ip[1]))
        net = None
        if subnet is not None:
            out["subnet"] = set()
            net = ipaddress.ip_network(subnet[0], strict=False)
            branches.append(branch("subnet", _prefix_condition(net), subnet[1]))
        if not branches:
            return out
        tree: exp.Query = branches[0]
        if len(branches) > 1:  # each branch in parentheses, so its LIMIT stays its own
            union: exp.Expr = exp.Subquery(this=branches[0])
            for b in branches[1:]:
                union = exp.Union(this=union, expression=exp.Subquery(this=b), distinct=False)
            tree = exp.select("*").from_(exp.Subquery(this=union, alias="u"), copy=False)
        for kind, pid, text in self._rows(tree):
            if kind == "subnet":
                assert net is not None
                try:
                    if text is None or ipaddress.ip_address(str(text).strip()) not in net:
                        continue
                except ValueError:
                    continue
            out[str(kind)].add(str(pid))
        return out

    def created_at(self, person_id: str) -> datetime | None:
        """When the person was first seen (aware UTC), ``None`` if the engine does not know it."""
        persons = self._scoped("persons", "p")
        tree = (
            exp.select(exp.func("MIN", exp.column("created_at")))
            .from_(persons, copy=False)
            .where(self.sql.text(exp.column("id")).eq(lit(person_id)), copy=False)
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
        """Events per person, leaving out the ``ignored`` event names (missing persons: 0).

        An id that is no person's but a distinct id (an invite recorded before identity
        resolution knew the user) counts the events of that distinct id. The events are first
        narrowed by the persons' distinct ids, a raw column the engine filters while scanning.
        """
        ids = sorted(set(person_ids))
        counts = dict.fromkeys(ids, 0)
        if not ids:
            return counts
        wanted = set(ids)
        mapping = self._scoped("person_distinct_ids", "m")
        dids_tree = (
            exp.select(exp.column("distinct_id"))
            .from_(mapping, copy=False)
            .where(
                exp.In(
                    this=self.sql.text(exp.column("person_id")),
                    expressions=[lit(p) for p in ids],
                ),
                copy=False,
            )
            .limit(ROW_LIMIT * 2, copy=False)
        )
        dids = {str(r[0]) for r in self._rows(dids_tree)} | wanted
        skip = sorted(set(ignored))
        person = self.sql.text(exp.column("person_id"))
        conds: list[exp.Expr] = [
            exp.In(this=exp.column("distinct_id"), expressions=[lit(d) for d in sorted(dids)]),
            self._window(since, until),
        ]
        if skip:
            conds.append(
                exp.not_(exp.In(this=exp.column("event"), expressions=[lit(n) for n in skip]))
            )
        tree = (
            exp.select(
                exp.alias_(person, "pid"),
                exp.column("distinct_id"),
                exp.alias_(exp.func("COUNT", exp.Star()), "n"),
            )
            .from_(self._events(), copy=False)
            .where(*conds, copy=False)
            .group_by(exp.column("pid"), exp.column("distinct_id"), copy=False)
        )
        for pid, did, n in self._rows(tree):
            key = str(pid) if str(pid) in wanted else str(did)
            if key in wanted:
                counts[key] += int(n)  # type: ignore[call-overload]
        return counts


def _prefix_condition(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> exp.Expr:
    """``starts_with(ip, 'a.b.c.')``: the text every address of ``net`` starts with (or any IP)."""
    if net.version == 4:
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        prefix = ".".join(octets) + "." if octets else ""
    else:
        first = net.network_address.exploded.split(":")[0].lstrip("0")
        prefix = f"{first}:" if first and net.prefixlen >= 16 else ""
    ip = exp.column("ip")
    if not prefix:
        return exp.not_(exp.Is(this=ip, expression=exp.null()))
    return exp.StartsWith(this=ip, expression=lit(prefix))
