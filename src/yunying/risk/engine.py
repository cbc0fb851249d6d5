"""``assess``: decide grant, hold or deny for one claim, record it, queue holds for review.

Two phases keep it fast and correct under concurrency:

1. *Events phase*, no lock held: what the events engine knows (persons seen on the claim's
   device, IP and subnet, the person's first-seen time, invitees' activity). Each query is
   bounded by the rule's look-back window and a row limit.
2. *State phase*, in one state-DB transaction that first upserts a row of ``risk_locks`` for
   every key the claim touches (``device:…``, ``ip:…``, ``subnet:…``, ``person:…``, in sorted
   order): on PostgreSQL the row locks serialise assessments sharing a key, on SQLite the first
   write takes the database's write lock. Then the claim history is read (accounts per device
   and network, claim velocity, blocklist), the outcome decided, and the claim (and its review
   item) written before the locks are released. So 50 concurrent claims from one device see each
   other, and the device's account cap holds.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from yunying.risk.blocklist import matching_entries
from yunying.risk.graph import InviteIndex
from yunying.risk.model import Claim, InviteGraph, Outcome, RiskDecision, RiskReason
from yunying.risk.policy import Action, RiskPolicy
from yunying.risk.review import create_review
from yunying.risk.signals import EventSignals, network_of
from yunying.risk.tables import codes_text, risk_claims, risk_locks
from yunying.runtime import Runtime

#: Rows of claim history read per key at most (enough to compare with any sane threshold).
HISTORY_LIMIT = 5_000

Finding = tuple[RiskReason, Action]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _hours(h: float) -> str:
    return f"{h:g} h" if h < 48 else f"{h / 24:g} days"


def assess(
    runtime: Runtime, policy: RiskPolicy, claim: Claim, invites: InviteGraph | None = None
) -> RiskDecision:
    """The risk decision for ``claim`` under ``policy``, recorded in the state DB.

    ``invites`` is the referral activity's invite graph (invite-ring rules need it; other
    templates pass ``None``). A ``hold`` comes with the id of its review-queue item.
    """
    at = _utc(claim.at)
    subnet = network_of(claim.ip, policy.network.ipv4_prefix, policy.network.ipv6_prefix)
    findings: list[Finding] = []
    seen: dict[str, set[str]] = {}
    if policy.mode != "off":
        signals = EventSignals(runtime.store, claim.project_id)
        seen = _event_persons(signals, policy, claim, at, subnet)
        findings += _account_age(signals, policy, claim, at)
        if invites is not None and policy.invites.enabled:
            findings += _invite_findings(signals, policy, claim, at, invites)
    with runtime.state.begin() as conn:
        _lock(conn, claim, subnet)
        now = datetime.now(UTC)
        if policy.mode != "off":
            findings = _state_findings(conn, policy, claim, at, subnet, seen, now) + findings
        outcome = _outcome(policy, findings)
        reasons = tuple(r for r, _ in findings)
        claim_id = int(
            conn.execute(
                risk_claims.insert().values(
                    project_id=claim.project_id,
                    activity_id=claim.activity_id,
                    activity_kind=claim.activity_kind,
                    person_id=claim.person_id,
                    distinct_id=claim.distinct_id,
                    device_id=claim.device_id,
                    ip=claim.ip,
                    subnet=subnet,
                    role=claim.role,
                    counterpart_person_id=claim.counterpart_person_id,
                    reward_kind=claim.reward_kind,
                    amount=claim.amount,
                    at=at,
                    assessed_at=now,
                    outcome=outcome,
                    reasons=[asdict(r) for r in reasons],
                    reason_codes=codes_text([r.code for r in reasons]),
                    flagged=bool(reasons),
                    details=claim.details,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        review_id = None
        if outcome == "hold":
            review_id = create_review(conn, claim_id, claim, reasons, now)
            conn.execute(
                risk_claims.update().where(risk_claims.c.id == claim_id).values(review_id=review_id)
            )
    return RiskDecision(outcome, reasons, review_id)


def _outcome(policy: RiskPolicy, findings: list[Finding]) -> Outcome:
    if policy.mode != "enforce" or not findings:
        return "grant"
    return "deny" if any(action == "deny" for _, action in findings) else "hold"


# -- locks ----------------------------------------------------------------------------------------


def _lock(conn: Connection, claim: Claim, subnet: str | None) -> None:
    """Serialise assessments that share a key (see the module docstring)."""
    keys = {f"person:{claim.person_id}"}
    if claim.device_id:
        keys.add(f"device:{claim.device_id}")
    if claim.ip:
        keys.add(f"ip:{claim.ip}")
    if subnet:
        keys.add(f"subnet:{subnet}")
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for key in sorted(keys):
        stmt = insert(risk_locks).values(project_id=claim.project_id, key=key[:300], uses=1)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[risk_locks.c.project_id, risk_locks.c.key],
                set_={"uses": risk_locks.c.uses + 1},
            )
        )


# -- events phase ---------------------------------------------------------------------------------


def _event_persons(
    signals: EventSignals, policy: RiskPolicy, claim: Claim, at: datetime, subnet: str | None
) -> dict[str, set[str]]:
    """Persons the events engine saw on the claim's device, IP and subnet in each window."""
    device = ip = net = None
    if policy.device.enabled and claim.device_id:
        device = (claim.device_id, at - timedelta(days=policy.device.window_days))
    if policy.network.enabled and claim.ip:
        since = at - timedelta(hours=policy.network.window_hours)
        ip = (claim.ip, since)
        net = None if subnet is None else (subnet, since)
    return signals.persons_seen(at, device=device, ip=ip, subnet=net)


def _account_age(
    signals: EventSignals, policy: RiskPolicy, claim: Claim, at: datetime
) -> list[Finding]:
    rule = policy.account_age
    if (
        not rule.enabled
        or rule.min_age_minutes <= 0
        or claim.activity_kind in rule.exempt_kinds
        or (claim.role is not None and claim.role in rule.exempt_roles)
    ):
        return []
    created = signals.created_at(claim.person_id)
    if created is None:
        return []
    age = (at - created).total_seconds() / 60
    if age >= rule.min_age_minutes:
        return []
    reason = RiskReason(
        "account_too_new",
        f"account first seen {max(age, 0):.0f} minutes before claiming "
        f"(minimum {rule.min_age_minutes})",
        round(max(age, 0.0), 1),
        float(rule.min_age_minutes),
    )
    return [(reason, rule.action)]


def _invite_findings(
    signals: EventSignals, policy: RiskPolicy, claim: Claim, at: datetime, invites: InviteGraph
) -> list[Finding]:
    rule = policy.invites
    index = InviteIndex(invites.edges(claim.project_id, claim.activity_id))
    me = claim.person_id
    other = claim.counterpart_person_id
    inviter: str | None
    invitee: str | None
    if claim.role == "inviter":
        inviter, invitee = me, other
    elif claim.role == "invitee":
        inviter, invitee = other, me
    else:  # not said: read it from the graph
        inviter = me if index.invitees.get(me) else None
        invitee = me if index.inviters.get(me) else other
    focus = [p for p in dict.fromkeys((me, other)) if p]
    found: list[Finding] = []

    if rule.detect_cycles:
        for person in focus:
            cycle = index.cycle_through(person)
            if cycle is not None:
                path = " → ".join(cycle)
                reason = RiskReason(
                    "invite_cycle",
                    f"invites run in a circle through {person}: {path}",
                    float(len(cycle) - 1),
                    None,
                )
                found.append((reason, rule.cycle_action))
                break

    depth = rule.max_passive_chain + 1
    persons = index.neighbourhood(focus, depth) if focus else set()
    if invitee:
        persons.add(invitee)
    ignored = {*rule.ignored_events, *rule.qualifying_events}
    for key in ("event", "trigger_event", "qualifying_event"):
        if isinstance(claim.details.get(key), str):
            ignored.add(claim.details[key])
    since = at - timedelta(days=rule.lookback_days)
    counts = signals.activity_counts(persons, ignored, since, at)

    def passive(person: str) -> bool:
        # persons beyond the neighbourhood read are not judged (never passive)
        return person in counts and counts[person] < rule.min_activity_events

    if invitee and passive(invitee):
        n = counts.get(invitee, 0)
        reason = RiskReason(
            "invitee_passive",
            f"invitee {invitee} did nothing besides signing up and the qualifying event "
            f"({n} other events in {rule.lookback_days} days; needs {rule.min_activity_events})",
            float(n),
            float(rule.min_activity_events),
        )
        found.append((reason, rule.action))

    chain = max((index.passive_chain(p, passive, depth) for p in focus), default=0)
    if chain >= rule.max_passive_chain:
        reason = RiskReason(
            "invite_chain",
            f"on a chain of {chain} invites whose invitees did nothing else "
            f"(fires at {rule.max_passive_chain})",
            float(chain),
            float(rule.max_passive_chain),
        )
        found.append((reason, rule.action))

    if inviter:
        window = timedelta(hours=rule.burst_window_hours)
        burst = index.largest_burst(inviter, window)
        if burst > rule.burst_max_invitees:
            reason = RiskReason(
                "invite_burst",
                f"inviter {inviter} brought {burst} invitees within "
                f"{_hours(rule.burst_window_hours)} (limit {rule.burst_max_invitees})",
                float(burst),
                float(rule.burst_max_invitees),
            )
            found.append((reason, rule.action))
    return found


# -- state phase ----------------------------------------------------------------------------------


def _claim_persons(
    conn: Connection, project_id: int, column: sa.Column[str], value: str, since: datetime
) -> set[str]:
    q = (
        sa.select(risk_claims.c.person_id)
        .where(risk_claims.c.project_id == project_id, column == value, risk_claims.c.at >= since)
        .distinct()
        .limit(HISTORY_LIMIT)
    )
    return {r[0] for r in conn.execute(q)}


def _claim_count(
    conn: Connection, project_id: int, column: sa.Column[str], value: str, since: datetime
) -> int:
    inner = (
        sa.select(risk_claims.c.id)
        .where(risk_claims.c.project_id == project_id, column == value, risk_claims.c.at >= since)
        .limit(HISTORY_LIMIT)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())


def _state_findings(
    conn: Connection,
    policy: RiskPolicy,
    claim: Claim,
    at: datetime,
    subnet: str | None,
    seen: dict[str, set[str]],
    now: datetime,
) -> list[Finding]:
    found: list[Finding] = []
    pid = claim.project_id

    if policy.blocklist.enabled:
        for entry in matching_entries(
            conn,
            pid,
            now,
            person_id=claim.person_id,
            distinct_id=claim.distinct_id,
            device_id=claim.device_id,
            ip=claim.ip,
        ):
            what = {"distinct_id": "distinct id"}.get(entry.kind, entry.kind)
            reason = RiskReason(
                f"blocklisted_{entry.kind}",
                f"{what} {entry.value} is blocklisted: {entry.reason}",
            )
            found.append((reason, policy.blocklist.action))

    rule = policy.device
    if rule.enabled and claim.device_id:
        since = at - timedelta(days=rule.window_days)
        persons = seen.get("device", set()) | {claim.person_id}
        persons |= _claim_persons(conn, pid, risk_claims.c.device_id, claim.device_id, since)
        if len(persons) > rule.max_accounts:
            reason = RiskReason(
                "device_shared",
                f"device {claim.device_id} was used by {len(persons)} accounts in "
                f"{rule.window_days} days (limit {rule.max_accounts})",
                float(len(persons)),
                float(rule.max_accounts),
            )
            found.append((reason, rule.action))

    net = policy.network
    if net.enabled and claim.ip:
        since = at - timedelta(hours=net.window_hours)
        persons = seen.get("ip", set()) | {claim.person_id}
        persons |= _claim_persons(conn, pid, risk_claims.c.ip, claim.ip, since)
        if len(persons) > net.max_accounts_per_ip:
            reason = RiskReason(
                "ip_shared",
                f"IP {claim.ip} was used by {len(persons)} accounts in "
                f"{_hours(net.window_hours)} (limit {net.max_accounts_per_ip})",
                float(len(persons)),
                float(net.max_accounts_per_ip),
            )
            found.append((reason, net.action))
        if subnet:
            persons = seen.get("subnet", set()) | {claim.person_id}
            persons |= _claim_persons(conn, pid, risk_claims.c.subnet, subnet, since)
            if len(persons) > net.max_accounts_per_subnet:
                reason = RiskReason(
                    "subnet_shared",
                    f"subnet {subnet} was used by {len(persons)} accounts in "
                    f"{_hours(net.window_hours)} (limit {net.max_accounts_per_subnet})",
                    float(len(persons)),
                    float(net.max_accounts_per_subnet),
                )
                found.append((reason, net.action))

    vel = policy.velocity
    if vel.enabled:
        since = at - timedelta(minutes=vel.window_minutes)
        checks: list[tuple[str, str, sa.Column[str], str | None, int]] = [
            ("velocity_person", "person", risk_claims.c.person_id, claim.person_id,
             vel.max_per_person),
            ("velocity_device", "device", risk_claims.c.device_id, claim.device_id,
             vel.max_per_device),
            ("velocity_ip", "IP", risk_claims.c.ip, claim.ip, vel.max_per_ip),
        ]  # fmt: skip
        for code, what, column, value, limit in checks:
            if not value:
                continue
            n = _claim_count(conn, pid, column, value, since) + 1
            if n > limit:
                reason = RiskReason(
                    code,
                    f"{n} claims from {what} {value} within {vel.window_minutes} minutes "
                    f"(limit {limit})",
                    float(n),
                    float(limit),
                )
                found.append((reason, vel.action))
    return found
