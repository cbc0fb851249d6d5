"""Per-activity anti-fraud policy: the ``risk:`` section of an activity spec.

Every rule is on by default with the thresholds below (documented in docs/risk.md); an activity
tunes them in its spec, e.g. ``risk: {device: {max_accounts: 2}, account_age: {enabled: false}}``.
Each rule names the action taken when it fires (``hold`` for the review queue, ``deny``); the
overall ``mode`` can switch a policy to ``monitor`` (decide and record, but always grant) or
``off`` (no rules at all).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from yunying.errors import M_, Message, YunyingError, pydantic_message

Action = Literal["hold", "deny"]
Mode = Literal["enforce", "monitor", "off"]


class InvalidPolicy(YunyingError):
    """The ``risk:`` section of an activity spec is not acceptable (the message names the field)."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    action: Action = "hold"


class DeviceRule(_Rule):
    """Many accounts on one device id (farms reuse a handful of phones or emulators)."""

    #: Most distinct persons a device may carry within ``window_days``; one more fires.
    max_accounts: int = Field(default=3, ge=1)
    window_days: int = Field(default=30, ge=1, le=365)


class NetworkRule(_Rule):
    """Many accounts behind one IP, or one subnet (/24 IPv4, /64 IPv6), in a short time."""

    max_accounts_per_ip: int = Field(default=5, ge=1)
    max_accounts_per_subnet: int = Field(default=10, ge=1)
    window_hours: int = Field(default=24, ge=1, le=24 * 30)
    ipv4_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_prefix: int = Field(default=64, ge=16, le=128)


class InviteRule(_Rule):
    """Invite rings: passive invitees, chains of them, cycles, and bursts of invitees."""

    #: An invitee is *passive* when it has fewer than this many events besides the qualifying
    #: event(s) and the bookkeeping events in ``ignored_events`` (within ``lookback_days``).
    min_activity_events: int = Field(default=2, ge=1)
    #: Events that do not count as activity (sign-up, install, identity calls, invite events).
    ignored_events: list[str] = Field(
        default_factory=lambda: [
            "$identify",
            "$create_alias",
            "$set",
            "$groupidentify",
            "$signup",
            "$pageview",
            "$screen",
            "app_install",
            "sign_up",
            "invite_sent",
            "invite_accepted",
        ]  # fmt: skip
    )
    #: The activity's qualifying events (e.g. ``export_video``); ``claim.details["event"]`` is
    #: added per claim.
    qualifying_events: list[str] = Field(default_factory=list)
    lookback_days: int = Field(default=30, ge=1, le=365)
    #: A chain of this many invite edges whose invitees are all passive fires.
    max_passive_chain: int = Field(default=3, ge=2)
    #: A cycle in the invite graph through the claim's persons fires (with ``cycle_action``).
    detect_cycles: bool = True
    cycle_action: Action = "deny"
    #: One inviter with more than this many invitees within ``burst_window_hours`` fires.
    burst_max_invitees: int = Field(default=10, ge=1)
    burst_window_hours: int = Field(default=1, ge=1, le=24 * 30)


class VelocityRule(_Rule):
    """Too many claims in a window, per person, per device and per IP (all outcomes count)."""

    max_per_person: int = Field(default=5, ge=1)
    max_per_device: int = Field(default=5, ge=1)
    max_per_ip: int = Field(default=20, ge=1)
    window_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)


class AccountAgeRule(_Rule):
    """The person was created (first seen) too recently before claiming."""

    min_age_minutes: int = Field(default=60, ge=0)
    #: Claims exempt from this rule: new-user gifts and the invitee side of referrals exist for
    #: brand-new accounts.
    exempt_kinds: list[str] = Field(default_factory=lambda: ["gift"])
    exempt_roles: list[str] = Field(default_factory=lambda: ["invitee"])


class BlocklistRule(_Rule):
    """A blocklisted person, distinct id, device, IP or subnet."""

    action: Action = "deny"


class RiskPolicy(BaseModel):
    """The anti-fraud policy of one activity (see the module docstring and docs/risk.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "enforce"
    device: DeviceRule = DeviceRule()
    network: NetworkRule = NetworkRule()
    invites: InviteRule = InviteRule()
    velocity: VelocityRule = VelocityRule()
    account_age: AccountAgeRule = AccountAgeRule()
    blocklist: BlocklistRule = BlocklistRule()

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> RiskPolicy:
        """The policy of a spec's ``risk:`` section (``None`` or ``{}``: every default).

        Raises :class:`InvalidPolicy` naming the first bad field as ``risk.<path>``.
        """
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise InvalidPolicy(M_("field 'risk' must be a mapping of rule names to settings"))
        try:
            return cls.model_validate(spec)
        except ValidationError as exc:
            problems = {}
            for i, e in enumerate(exc.errors()):
                where = ".".join(str(p) for p in ("risk", *e["loc"]))
                problem = M_("field {where!r}: {problem}", where=where, problem=pydantic_message(e))
                problems[f"p{i}"] = problem.with_text(f"field {where!r}: {e['msg']}")
            # one message per problem, each translatable, joined as before
            raise InvalidPolicy(
                Message("; ".join(f"{{{k}}}" for k in problems), problems)
            ) from None
