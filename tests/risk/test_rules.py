"""Each rule at and around its threshold, on events ingested through the real writer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from yunying.risk import RiskPolicy, add_block, assess
from yunying.risk.policy import InvalidPolicy
from yunying.runtime import Runtime
from yunying.state import NewProject

from .helpers import NOW, EdgeList, ev, ingest, make_claim, person_of

RULES = ("device", "network", "invites", "velocity", "account_age", "blocklist")


def only(rule: str, **settings: Any) -> RiskPolicy:
    """A policy with every rule but ``rule`` switched off (to test one rule alone)."""
    spec: dict[str, Any] = {r: {"enabled": False} for r in RULES if r != rule}
    spec[rule] = settings
    return RiskPolicy.from_spec(spec)


def persons(runtime: Runtime, pid: int, raws: list[dict[str, Any]]) -> dict[str, str]:
    ingest(runtime, pid, raws)
    return {d: person_of(runtime, pid, d) for d in dict.fromkeys(r["distinct_id"] for r in raws)}


def codes(decision: Any) -> list[str]:
    return [r.code for r in decision.reasons]


# -- policy ---------------------------------------------------------------------------------------


def test_policy_defaults_and_errors() -> None:
    p = RiskPolicy.from_spec(None)
    assert p.mode == "enforce"
    assert all(getattr(p, r).enabled for r in RULES)
    assert p.device.max_accounts == 3 and p.blocklist.action == "deny"
    assert RiskPolicy.from_spec({"device": {"max_accounts": 2}}).device.max_accounts == 2
    with pytest.raises(InvalidPolicy, match=r"risk\.device\.max_accounts"):
        RiskPolicy.from_spec({"device": {"max_accounts": 0}})
    with pytest.raises(InvalidPolicy, match=r"risk\.velocty"):
        RiskPolicy.from_spec({"velocty": {}})
    with pytest.raises(InvalidPolicy, match=r"risk\.mode"):
        RiskPolicy.from_spec({"mode": "loud"})
    with pytest.raises(InvalidPolicy, match="mapping"):
        RiskPolicy.from_spec(["device"])  # type: ignore[arg-type]


# -- device ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("accounts", "outcome"), [(2, "grant"), (3, "grant"), (4, "hold")])
def test_device_cap_from_events(
    runtime: Runtime, project: NewProject, accounts: int, outcome: str
) -> None:
    pid = project.project.id
    ids = persons(
        runtime,
        pid,
        [
            ev(f"d{i}", "sign_up", NOW - timedelta(days=2), device="phone-1")
            for i in range(accounts)
        ],
    )
    d = assess(runtime, only("device"), make_claim(pid, ids["d0"], device="phone-1"))
    assert d.outcome == outcome
    if outcome == "hold":
        assert codes(d) == ["device_shared"] and d.reasons[0].value == accounts
        assert d.review_id is not None
    else:
        assert d.reasons == () and d.review_id is None


def test_device_window_and_claim_history(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    # four accounts, but two of them used the device 40 days ago: outside the 30-day window
    raws = [ev(f"o{i}", "sign_up", NOW - timedelta(days=40), device="phone-2") for i in range(2)]
    raws += [ev(f"n{i}", "sign_up", NOW - timedelta(days=1), device="phone-2") for i in range(2)]
    ids = persons(runtime, pid, raws)
    assert (
        assess(runtime, only("device"), make_claim(pid, ids["n0"], device="phone-2")).outcome
        == "grant"
    )
    # claims count too: two more accounts claiming from the device (no events) make it four
    policy = only("device")
    assert assess(runtime, policy, make_claim(pid, "api-1", device="phone-2")).outcome == "grant"
    d = assess(runtime, policy, make_claim(pid, "api-2", device="phone-2"))
    assert d.outcome == "hold" and d.reasons[0].value == 4


# -- network --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("accounts", "outcome"), [(5, "grant"), (6, "hold")])
def test_ip_cap(runtime: Runtime, project: NewProject, accounts: int, outcome: str) -> None:
    pid = project.project.id
    ids = persons(
        runtime,
        pid,
        [
            ev(f"i{i}", "sign_up", NOW - timedelta(hours=3), ip="198.51.100.7")
            for i in range(accounts)
        ],
    )
    policy = only("network", max_accounts_per_subnet=100)
    d = assess(runtime, policy, make_claim(pid, ids["i0"], ip="198.51.100.7"))
    assert d.outcome == outcome
    assert codes(d) == ([] if outcome == "grant" else ["ip_shared"])


def test_ip_window_is_short(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    ids = persons(
        runtime,
        pid,
        [ev(f"w{i}", "sign_up", NOW - timedelta(hours=30), ip="198.51.100.8") for i in range(8)],
    )
    d = assess(runtime, only("network"), make_claim(pid, ids["w0"], ip="198.51.100.8"))
    assert d.outcome == "grant"  # 30 h ago is outside the 24 h window


@pytest.mark.parametrize(("accounts", "outcome"), [(10, "grant"), (11, "hold")])
def test_ipv4_subnet_cap(
    runtime: Runtime, project: NewProject, accounts: int, outcome: str
) -> None:
    pid = project.project.id
    raws = [
        ev(f"s{i}", "sign_up", NOW - timedelta(hours=2), ip=f"203.0.113.{i + 1}")
        for i in range(accounts)
    ]
    # a neighbouring /24 does not count
    raws += [
        ev(f"x{i}", "sign_up", NOW - timedelta(hours=2), ip=f"203.0.114.{i + 1}") for i in range(5)
    ]
    ids = persons(runtime, pid, raws)
    d = assess(runtime, only("network"), make_claim(pid, ids["s0"], ip="203.0.113.1"))
    assert d.outcome == outcome
    assert codes(d) == ([] if outcome == "grant" else ["subnet_shared"])


def test_ipv6_subnet_is_a_64(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    raws = [
        ev(f"v{i}", "sign_up", NOW - timedelta(hours=1), ip=f"2001:db8:7:1::{i + 1:x}")
        for i in range(11)
    ]
    raws += [
        ev(f"y{i}", "sign_up", NOW - timedelta(hours=1), ip=f"2001:db8:7:2::{i + 1:x}")
        for i in range(3)
    ]
    ids = persons(runtime, pid, raws)
    d = assess(runtime, only("network"), make_claim(pid, ids["v0"], ip="2001:db8:7:1::1"))
    assert codes(d) == ["subnet_shared"] and d.reasons[0].value == 11
    d = assess(runtime, only("network"), make_claim(pid, ids["y0"], ip="2001:db8:7:2::1"))
    assert d.outcome == "grant"


# -- velocity -------------------------------------------------------------------------------------


def test_velocity_per_person_device_and_ip(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    policy = only("velocity")
    for i in range(5):  # five claims within the hour are fine
        at = NOW - timedelta(minutes=50 - i)
        assert assess(runtime, policy, make_claim(pid, "p1", at=at)).outcome == "grant"
    d = assess(runtime, policy, make_claim(pid, "p1"))
    assert codes(d) == ["velocity_person"] and d.reasons[0].value == 6
    # an hour later the window has moved on
    later = NOW + timedelta(minutes=60)
    assert assess(runtime, policy, make_claim(pid, "p1", at=later)).outcome == "grant"

    for i in range(5):
        assert assess(runtime, policy, make_claim(pid, f"q{i}", device="tab-9")).outcome == "grant"
    assert codes(assess(runtime, policy, make_claim(pid, "q9", device="tab-9"))) == [
        "velocity_device"
    ]
    policy = only("velocity", max_per_ip=3)
    for i in range(3):
        assert assess(runtime, policy, make_claim(pid, f"r{i}", ip="192.0.2.9")).outcome == "grant"
    assert codes(assess(runtime, policy, make_claim(pid, "r9", ip="192.0.2.9"))) == ["velocity_ip"]


# -- account age ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("minutes", "outcome"), [(59, "hold"), (61, "grant")])
def test_account_age(runtime: Runtime, project: NewProject, minutes: int, outcome: str) -> None:
    pid = project.project.id
    ids = persons(runtime, pid, [ev("new", "sign_up", NOW - timedelta(minutes=minutes))])
    d = assess(runtime, only("account_age"), make_claim(pid, ids["new"]))
    assert d.outcome == outcome
    # new-user gifts and invitees are exempt
    for claim in (
        make_claim(pid, ids["new"], kind="gift"),
        make_claim(pid, ids["new"], kind="referral", role="invitee"),
    ):
        assert assess(runtime, only("account_age"), claim).outcome == "grant"


# -- blocklist ------------------------------------------------------------------------------------


def test_blocklist_hits(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    policy = only("blocklist")
    add_block(runtime.state, pid, "device", "emu-1", "emulator farm")
    add_block(runtime.state, pid, "subnet", "192.0.2.0/28", "proxy pool")
    add_block(runtime.state, pid, "distinct_id", "bad-did", "chargebacks")
    add_block(runtime.state, pid, "person", "p-bad", "confirmed hunter")
    d = assess(runtime, policy, make_claim(pid, "p", device="emu-1"))
    assert d.outcome == "deny" and codes(d) == ["blocklisted_device"]
    assert "emulator farm" in d.reasons[0].message
    assert codes(assess(runtime, policy, make_claim(pid, "p", ip="192.0.2.15"))) == [
        "blocklisted_subnet"
    ]
    assert assess(runtime, policy, make_claim(pid, "p", ip="192.0.2.16")).outcome == "grant"
    assert codes(assess(runtime, policy, make_claim(pid, "p", distinct_id="bad-did"))) == [
        "blocklisted_distinct_id"
    ]
    assert codes(assess(runtime, policy, make_claim(pid, "p-bad"))) == ["blocklisted_person"]
    # IPs match whatever way they are written
    add_block(runtime.state, pid, "ip", "2001:0db8:0000::0001", "abuse")
    assert codes(assess(runtime, policy, make_claim(pid, "p", ip="2001:db8::1"))) == [
        "blocklisted_ip"
    ]


def test_blocklist_expiry(runtime: Runtime, project: NewProject) -> None:
    from datetime import UTC, datetime

    pid = project.project.id
    soon = datetime.now(UTC) + timedelta(seconds=1)
    add_block(runtime.state, pid, "device", "phone-x", "suspicious", expires_at=soon)
    assert (
        assess(runtime, only("blocklist"), make_claim(pid, "p", device="phone-x")).outcome == "deny"
    )
    import time

    time.sleep(1.1)
    assert (
        assess(runtime, only("blocklist"), make_claim(pid, "p", device="phone-x")).outcome
        == "grant"
    )


# -- invites --------------------------------------------------------------------------------------


def referral(pid: int, person: str, invitee: str, **kw: Any) -> Any:
    return make_claim(pid, person, kind="referral", role="inviter", counterpart=invitee, **kw)


@pytest.mark.parametrize(("other_events", "passive"), [(0, True), (1, True), (2, False)])
def test_passive_invitee(
    runtime: Runtime, project: NewProject, other_events: int, passive: bool
) -> None:
    pid = project.project.id
    t = NOW - timedelta(hours=5)
    raws = [ev("host", "sign_up", t - timedelta(days=30)), ev("host", "edit_video", t)]
    raws += [ev("friend", "sign_up", t), ev("friend", "export_video", t)]
    raws += [ev("friend", "edit_video", t + timedelta(minutes=i + 1)) for i in range(other_events)]
    ids = persons(runtime, pid, raws)
    graph = EdgeList()
    graph.add(ids["host"], ids["friend"], t)
    claim = referral(pid, ids["host"], ids["friend"], event="export_video")
    d = assess(runtime, only("invites"), claim, graph)
    assert codes(d) == (["invitee_passive"] if passive else [])


def test_invite_chain_threshold(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    t = NOW - timedelta(hours=5)
    # root (active) → a → b → c → d, all passive invitees
    names = ["root", "a", "b", "c", "d"]
    raws = [ev(n, "sign_up", t) for n in names] + [ev("root", "edit_video", t)] * 1
    raws += [ev("root", "edit_video", t + timedelta(minutes=1))]
    ids = persons(runtime, pid, raws)
    policy = only("invites")
    graph = EdgeList()
    graph.add(ids["root"], ids["a"], t)
    graph.add(ids["a"], ids["b"], t)
    # chain root → a → b: 2 edges of passive invitees, under the limit of 3
    d = assess(runtime, policy, referral(pid, ids["a"], ids["b"]), graph)
    assert "invite_chain" not in codes(d)
    graph.add(ids["b"], ids["c"], t)
    d = assess(runtime, policy, referral(pid, ids["a"], ids["b"]), graph)
    assert "invite_chain" in codes(d)
    assert next(r for r in d.reasons if r.code == "invite_chain").value == 3


def test_invite_cycle_is_denied(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    graph = EdgeList()
    for a, b in (("x", "y"), ("y", "z"), ("z", "x")):
        graph.add(a, b)
    d = assess(runtime, only("invites", min_activity_events=1), referral(pid, "x", "y"), graph)
    assert d.outcome == "deny" and "invite_cycle" in codes(d)
    assert "x → y → z → x" in next(r for r in d.reasons if r.code == "invite_cycle").message
    # no cycle: no cycle reason
    plain = EdgeList()
    plain.add("x", "y")
    assert "invite_cycle" not in codes(
        assess(runtime, only("invites"), referral(pid, "x", "y"), plain)
    )


@pytest.mark.parametrize(("invitees", "fires"), [(10, False), (11, True)])
def test_invite_burst(runtime: Runtime, project: NewProject, invitees: int, fires: bool) -> None:
    pid = project.project.id
    graph = EdgeList()
    for i in range(invitees):
        graph.add("kol", f"fan{i}", NOW - timedelta(minutes=59) + timedelta(seconds=5 * i))
    graph.add("kol", "late", NOW - timedelta(hours=5))
    d = assess(runtime, only("invites"), referral(pid, "kol", "fan0"), graph)
    assert ("invite_burst" in codes(d)) is fires


# -- modes ----------------------------------------------------------------------------------------


def test_monitor_and_off_modes(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    add_block(runtime.state, pid, "device", "bad", "farm")
    monitor = RiskPolicy.from_spec({"mode": "monitor"})
    d = assess(runtime, monitor, make_claim(pid, "p", device="bad"))
    assert d.outcome == "grant" and "blocklisted_device" in codes(d) and d.review_id is None
    off = RiskPolicy.from_spec({"mode": "off"})
    d = assess(runtime, off, make_claim(pid, "p", device="bad"))
    assert d.outcome == "grant" and d.reasons == ()


def test_rule_action_can_be_deny(runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    policy = only("velocity", max_per_person=1, action="deny")
    assert assess(runtime, policy, make_claim(pid, "v")).outcome == "grant"
    d = assess(runtime, policy, make_claim(pid, "v"))
    assert d.outcome == "deny" and d.review_id is None


def test_invitee_known_by_distinct_id_only(runtime: Runtime, project: NewProject) -> None:
    """An invite recorded with a distinct id (no person yet) is judged on that id's events."""
    pid = project.project.id
    t = NOW - timedelta(hours=3)
    raws = [ev("busy-1", "sign_up", t)] + [
        ev("busy-1", "edit_video", t + timedelta(minutes=i)) for i in range(1, 4)
    ]
    raws += [ev("idle-1", "sign_up", t), ev("idle-1", "export_video", t)]
    ingest(runtime, pid, raws)
    graph = EdgeList()
    graph.add("host", "busy-1", t)
    graph.add("host", "idle-1", t)
    policy = only("invites")
    assert codes(assess(runtime, policy, referral(pid, "host", "busy-1"), graph)) == []
    assert codes(assess(runtime, policy, referral(pid, "host", "idle-1"), graph)) == [
        "invitee_passive"
    ]
