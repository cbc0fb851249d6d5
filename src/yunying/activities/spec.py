"""Activity specs: the declarative document (YAML or JSON) every activity is created from.

One Pydantic model per template (签到 check-in, 邀请裂变 referral, 任务挑战 task, 限额报名 signup,
新人礼 gift, 会员日 promotion) on a shared base (schedule, audience, budget, goal, risk). The API,
the CLI (``yunying activity create --file F``) and the console all call :func:`parse_spec`, so a
bad document is refused the same way everywhere: :class:`SpecError` lists every problem with its
field path (``rewards.0.amount``). :func:`json_schema` exports the schema documented in
docs/activities.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from yunying.errors import M_, YunyingError, pydantic_message

RewardKind = Literal["points", "coupon", "membership_days", "cash", "badge"]
Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "is_set"]


class SpecError(YunyingError):
    """A spec that does not validate; ``errors`` holds ``{"field", "message"}`` per problem."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {"field": "", "message": "invalid spec"}
        where = f"{first['field']}: " if first["field"] else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid activity spec: {where}{first['message']}{more}")

    @property
    def field(self) -> str:
        return self.errors[0]["field"] if self.errors else ""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PropertyFilter(_Model):
    """A condition on an event property (event rules) or a person property (audience)."""

    property: str = Field(min_length=1, description="Property name (event or person).")
    op: Op = "eq"
    value: Any = None

    def matches(self, props: dict[str, Any]) -> bool:
        """Whether ``props`` satisfy this condition (missing property: only ``neq`` holds)."""
        if self.op == "is_set":
            return props.get(self.property) is not None
        if self.property not in props or props[self.property] is None:
            return self.op == "neq"
        have = props[self.property]
        want = self.value
        try:
            if self.op == "eq":
                return bool(have == want or str(have) == str(want))
            if self.op == "neq":
                return not (have == want or str(have) == str(want))
            if self.op == "contains":
                return str(want) in str(have)
            if self.op == "in":
                return have in (want or []) or str(have) in [str(w) for w in (want or [])]
            a, b = float(have), float(want)
        except (TypeError, ValueError):
            return False
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[self.op]


class Reward(_Model):
    """What a rule grants. ``amount``: points, days, fen (cash) or count (coupon, badge)."""

    kind: RewardKind
    amount: int = Field(
        default=1, ge=1, description="Points, membership days, fen for cash, count."
    )
    #: Coupons: spend at least ``threshold_fen`` to take ``discount_fen`` off, within validity.
    threshold_fen: int = Field(default=0, ge=0)
    discount_fen: int | None = Field(default=None, ge=1)
    valid_days: int | None = Field(
        default=None, ge=1, description="Coupon / points validity in days."
    )
    badge: str | None = Field(default=None, max_length=100)
    #: What one grant costs the budget in fen (cash: always its amount; coupons by default the
    #: discount times their number; others 0 unless given).
    cost_fen: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _kind_fields(self) -> Reward:
        if self.kind == "coupon" and self.discount_fen is None:
            raise ValueError(M_("a coupon reward needs discount_fen"))
        if self.kind == "badge" and not self.badge:
            raise ValueError(M_("a badge reward needs badge (its name)"))
        return self

    def cost(self) -> int:
        """Budget cost in fen."""
        if self.kind == "cash":
            return self.amount
        if self.cost_fen is not None:
            return self.cost_fen
        if self.kind == "coupon":
            return (self.discount_fen or 0) * self.amount
        return 0


class Schedule(_Model):
    start: datetime | None = Field(default=None, description="When the activity opens (ISO 8601).")
    end: datetime | None = Field(default=None, description="When it closes (exclusive).")
    timezone: str | None = Field(default=None, description="IANA zone; default: the project's.")

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    M_("unknown time zone {timezone!r}", timezone=self.timezone)
                ) from None
        if self.start and self.end and _utc(self.end) <= _utc(self.start):
            raise ValueError(M_("end must be after start"))
        return self


class Audience(_Model):
    """Who may take part: every condition on person properties holds, and segment membership."""

    properties: list[PropertyFilter] = Field(default_factory=list)
    segment_id: int | None = Field(
        default=None, ge=1, description="person_values scope segment:<id>."
    )


class Budget(_Model):
    """Caps: in money (fen) and in grant count, overall and per user. Null means no cap."""

    total_fen: int | None = Field(default=None, ge=0)
    total_count: int | None = Field(default=None, ge=0)
    per_user_fen: int | None = Field(default=None, ge=0)
    per_user_count: int | None = Field(default=None, ge=0)


class Goal(_Model):
    metric: Literal["participants", "completions", "new_users", "rewards", "cost_fen"]
    target: int = Field(ge=1)


class _Base(_Model):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    schedule: Schedule = Schedule()
    audience: Audience = Audience()
    budget: Budget = Budget()
    goal: Goal | None = None
    #: Anti-fraud policy, read by ``yunying.risk.RiskPolicy.from_spec``.
    risk: dict[str, Any] = Field(default_factory=dict)


class Milestone(_Model):
    days: int = Field(ge=1, description="Streak length that earns the reward.")
    reward: Reward


class CheckinSpec(_Base):
    """签到: a streak of calendar days (project time zone) with milestone rewards."""

    template: Literal["checkin"]
    event: str = Field(default="check_in", description="Event that counts as a check-in.")
    on_break: Literal["reset", "grace"] = "reset"
    grace_days: int = Field(
        default=1, ge=0, le=7, description="Missed days forgiven when on_break=grace."
    )
    repeat: bool = Field(default=False, description="Start over after the last milestone.")
    milestones: list[Milestone] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> CheckinSpec:
        days = [m.days for m in self.milestones]
        if days != sorted(set(days)):
            raise ValueError(M_("milestones must have increasing, distinct days"))
        return self


class ReferralSpec(_Base):
    """邀请裂变: personal invite codes; the invitee's activation rewards both sides."""

    template: Literal["referral"]
    accept_event: str = Field(
        default="invite_accepted", description="Event carrying an invite code."
    )
    code_property: str = "invite_code"
    activation_event: str = Field(default="export_video", description="Invitee's qualifying event.")
    activation_filters: list[PropertyFilter] = Field(default_factory=list)
    activation_days: int = Field(default=30, ge=1, description="Days after the invite to activate.")
    inviter_reward: Reward
    invitee_reward: Reward | None = None
    max_invites_per_inviter: int | None = Field(default=None, ge=1)


class Stage(_Model):
    name: str = Field(min_length=1, max_length=100)
    event: str = Field(min_length=1)
    filters: list[PropertyFilter] = Field(default_factory=list)
    count: int = Field(ge=1)
    reward: Reward | None = None


class TaskSpec(_Base):
    """任务挑战: counters over events with filters; stages in order, each with its reward."""

    template: Literal["task"]
    sequential: bool = Field(
        default=True, description="Count a stage only after the previous is done."
    )
    stages: list[Stage] = Field(min_length=1)


class SignupSpec(_Base):
    """限额报名: exactly ``seats`` places, a waitlist promoted in order when someone cancels."""

    template: Literal["signup"]
    seats: int = Field(ge=1)
    waitlist: bool = True
    reward: Reward | None = None


class GiftSpec(_Base):
    """新人礼 / trial: a reward once per person on a trigger event."""

    template: Literal["gift"]
    event: str = Field(default="sign_up")
    filters: list[PropertyFilter] = Field(default_factory=list)
    reward: Reward
    new_users_within_days: int | None = Field(
        default=None, ge=1, description="Only persons first seen at most this many days before."
    )


class PromotionSpec(_Base):
    """会员日 / promotion: coupons with threshold and discount, claimed or granted on an event."""

    template: Literal["promotion"]
    event: str | None = Field(
        default=None, description="Event that grants the coupon (else claim API)."
    )
    filters: list[PropertyFilter] = Field(default_factory=list)
    reward: Reward
    claim_limit: int = Field(default=1, ge=1, description="Coupons per person.")

    @model_validator(mode="after")
    def _coupon(self) -> PromotionSpec:
        if self.reward.kind != "coupon":
            raise ValueError(M_("a promotion's reward must be a coupon"))
        return self


ActivitySpec = Annotated[
    CheckinSpec | ReferralSpec | TaskSpec | SignupSpec | GiftSpec | PromotionSpec,
    Field(discriminator="template"),
]
TEMPLATES = ("checkin", "referral", "task", "signup", "gift", "promotion")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ActivitySpec)


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        if len(loc) > 0 and loc[0] in TEMPLATES:  # the discriminator's branch name
            loc = loc[1:]
        out.append({"field": ".".join(loc), "message": pydantic_message(e)})
    return out


def parse_spec(data: Any) -> Any:
    """A validated spec from a dict, JSON or YAML text; :class:`SpecError` otherwise."""
    if isinstance(data, bytes):
        data = data.decode()
    if isinstance(data, str):
        try:
            data = orjson.loads(data) if data.lstrip().startswith("{") else yaml.safe_load(data)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise SpecError(
                [{"field": "", "message": M_("not valid YAML or JSON: {error}", error=str(exc))}]
            ) from None
    if not isinstance(data, dict):
        raise SpecError([{"field": "", "message": M_("a spec is a mapping with a template field")}])
    if data.get("template") not in TEMPLATES:
        raise SpecError(
            [
                {
                    "field": "template",
                    "message": M_(
                        "template must be one of {templates}", templates=", ".join(TEMPLATES)
                    ),
                }
            ]  # fmt: skip
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise SpecError(_errors(exc)) from None


def spec_dict(spec: Any) -> dict[str, Any]:
    """The spec as JSON-ready data (what is stored and shown)."""
    return dict(spec.model_dump(mode="json", exclude_none=False))


def json_schema() -> dict[str, Any]:
    """JSON Schema of every template (a ``oneOf`` on ``template``)."""
    return dict(_ADAPTER.json_schema())


def rewards_of(spec: Any) -> list[Reward]:
    """Every reward a spec can grant (for cost estimates and documentation)."""
    if isinstance(spec, CheckinSpec):
        return [m.reward for m in spec.milestones]
    if isinstance(spec, ReferralSpec):
        return [r for r in (spec.inviter_reward, spec.invitee_reward) if r]
    if isinstance(spec, TaskSpec):
        return [s.reward for s in spec.stages if s.reward]
    if isinstance(spec, SignupSpec):
        return [spec.reward] if spec.reward else []
    return [spec.reward]
