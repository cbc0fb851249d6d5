"""A simulated bonus-hunter farm (羊毛党) next to honest users, and how to score the result.

The farm: 24 accounts on 4 shared phones behind one /24, created within the last hours, each
doing nothing but signing up and the qualifying event (export_video); their invites form a ring
(a cycle), chains of invitees inviting invitees, and one boss inviting a burst. Six "stealth"
farm accounts have a phone and a network each (no device or IP signal) but are passive invitees
in a chain. Honest users have their own phones (two siblings share a tablet), varied networks
(four colleagues share an office IP), weeks of history and real activity (editing before
exporting, check-ins); one of them invites three active friends.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from yunying.risk import Claim, RiskDecision

from .helpers import NOW, ev, make_claim

QUALIFYING = "export_video"


@dataclass
class Account:
    distinct_id: str
    device: str
    ip: str
    farm: bool


@dataclass
class Scenario:
    accounts: dict[str, Account] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: (inviter distinct id, invitee distinct id, invited at)
    invites: list[tuple[str, str, datetime]] = field(default_factory=list)
    #: (distinct id, kind, role, counterpart distinct id, at)
    claims: list[tuple[str, str, str | None, str | None, datetime]] = field(default_factory=list)


def build(seed: int = 6) -> Scenario:
    """The scenario's accounts, events, invites and claims (deterministic for a seed)."""
    rnd = random.Random(seed)
    s = Scenario()
    start = NOW - timedelta(hours=3)

    # -- honest users ------------------------------------------------------------------------
    for i in range(40):
        did = f"user-{i:02d}"
        device = f"phone-u{i:02d}"
        ip = f"{rnd.randint(11, 220)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
        if i in (1, 2):
            device = "tablet-family"  # siblings on one tablet
        if i in (3, 4, 5, 6):
            ip = "198.51.100.20"  # colleagues behind the office NAT
        s.accounts[did] = Account(did, device, ip, farm=False)
        joined = NOW - timedelta(days=rnd.randint(10, 60), hours=rnd.randint(0, 23))
        s.events.append(ev(did, "sign_up", joined, device=device, ip=ip))
        for d in range(rnd.randint(3, 8)):
            t = joined + timedelta(days=d, hours=rnd.randint(1, 10))
            s.events.append(ev(did, "edit_video", t, device=device, ip=ip))
            s.events.append(ev(did, "check_in", t + timedelta(minutes=3), device=device, ip=ip))
        t = start + timedelta(minutes=rnd.randint(0, 150))
        s.events.append(ev(did, "edit_video", t - timedelta(minutes=20), device=device, ip=ip))
        s.events.append(ev(did, QUALIFYING, t, device=device, ip=ip))
        s.claims.append((did, "task", None, None, t + timedelta(seconds=30)))

    # one honest inviter and three active friends who joined through the invite today
    host = "user-00"
    for j in range(3):
        did = f"friend-{j}"
        device, ip = f"phone-f{j}", f"{100 + j * 7}.{20 + j}.{j * 3}.{9 + j}"
        s.accounts[did] = Account(did, device, ip, farm=False)
        joined = start + timedelta(minutes=10 + 30 * j)
        s.invites.append((host, did, joined))
        s.events.append(ev(did, "sign_up", joined, device=device, ip=ip))
        for k in range(3):
            s.events.append(
                ev(did, "edit_video", joined + timedelta(minutes=5 + k), device=device, ip=ip)
            )
        s.events.append(
            ev(did, "join_community", joined + timedelta(minutes=9), device=device, ip=ip)
        )
        done = joined + timedelta(minutes=15)
        s.events.append(ev(did, QUALIFYING, done, device=device, ip=ip))
        s.claims.append((host, "referral", "inviter", did, done + timedelta(seconds=5)))
        s.claims.append((did, "referral", "invitee", host, done + timedelta(seconds=5)))

    # -- the farm ----------------------------------------------------------------------------
    farm = [f"acct-{i:02d}" for i in range(24)]
    for i, did in enumerate(farm):
        device = f"farm-phone-{i % 4}"
        ip = f"203.0.113.{rnd.randint(2, 250)}"
        s.accounts[did] = Account(did, device, ip, farm=True)
    stealth = [f"acct-s{i}" for i in range(6)]
    for i, did in enumerate(stealth):
        device = f"phone-s{i}"
        ip = f"{60 + 13 * i}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
        s.accounts[did] = Account(did, device, ip, farm=True)

    edges: list[tuple[str, str]] = []
    edges += [("acct-00", "acct-01"), ("acct-01", "acct-02"), ("acct-02", "acct-00")]  # ring
    edges += [("acct-00", "acct-03"), ("acct-03", "acct-04"), ("acct-04", "acct-05"),
              ("acct-05", "acct-06")]  # fmt: skip
    edges += [("acct-01", "acct-07"), ("acct-07", "acct-08"), ("acct-08", "acct-09")]
    edges += [("acct-10", farm[k]) for k in range(11, 24)]  # the boss's burst
    edges += [("acct-10", "acct-s0")] + [(stealth[k], stealth[k + 1]) for k in range(5)]

    t = start + timedelta(minutes=5)
    for did in [*farm, *stealth]:
        a = s.accounts[did]
        s.events.append(ev(did, "sign_up", t, device=a.device, ip=a.ip))
        t += timedelta(seconds=40)
    for inviter, invitee in edges:
        a = s.accounts[invitee]
        t += timedelta(seconds=50)
        s.invites.append((inviter, invitee, t))
        done = t + timedelta(minutes=2)
        s.events.append(ev(invitee, QUALIFYING, done, device=a.device, ip=a.ip))
        s.claims.append((inviter, "referral", "inviter", invitee, done + timedelta(seconds=5)))
        s.claims.append((invitee, "referral", "invitee", inviter, done + timedelta(seconds=5)))
    s.claims.sort(key=lambda c: c[4])
    return s


def to_claim(s: Scenario, project_id: int, persons: dict[str, str], c: tuple[Any, ...]) -> Claim:
    did, kind, role, other, at = c
    a = s.accounts[did]
    return make_claim(
        project_id,
        persons[did],
        distinct_id=did,
        at=at,
        activity_id=7 if kind == "referral" else 8,
        kind=kind,
        device=a.device,
        ip=a.ip,
        role=role,
        counterpart=persons[other] if other else None,
        event=QUALIFYING,
    )


@dataclass(frozen=True)
class Score:
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int
    precision: float
    recall: float
    reasons: dict[str, int]
    false_positives: list[str]
    missed: list[str]

    def report(self) -> str:
        lines = [
            "bonus-hunter farm scenario:",
            f"  farm claims flagged (hold/deny): {self.true_pos} of {self.true_pos + self.false_neg}",
            f"  honest claims flagged:           {self.false_pos} of {self.false_pos + self.true_neg}",
            f"  precision {self.precision:.3f}   recall {self.recall:.3f}",
            "  reasons on flagged claims: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1])),
        ]
        if self.false_positives:
            lines.append(f"  honest claims flagged: {self.false_positives}")
        if self.missed:
            lines.append(f"  farm claims missed: {self.missed}")
        return "\n".join(lines)


def score(s: Scenario, claims: list[tuple[Any, ...]], decisions: list[RiskDecision]) -> Score:
    """Precision and recall of "flagged" (hold or deny) against "claimed by a farm account"."""
    tp = fp = fn = tn = 0
    reasons: Counter[str] = Counter()
    fps: list[str] = []
    missed: list[str] = []
    for c, d in zip(claims, decisions, strict=True):
        farm = s.accounts[c[0]].farm
        flagged = d.outcome != "grant"
        if flagged:
            reasons.update({r.code for r in d.reasons})
        if farm and flagged:
            tp += 1
        elif farm:
            fn += 1
            missed.append(f"{c[0]}:{c[1]}:{c[2]}")
        elif flagged:
            fp += 1
            fps.append(f"{c[0]}:{c[1]}:{c[2]} {[r.code for r in d.reasons]}")
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return Score(tp, fp, fn, tn, precision, recall, dict(reasons), fps, missed)
