"""Per-project audience settings: what counts as activity, lifecycle thresholds, RFM scoring and
the revenue event, stored as one JSON document per project in ``audience_settings``.

Every field has a default, so a project without a stored document (or a document missing some
fields) behaves as documented in docs/audience-reports.md. ``PUT`` replaces the whole document;
fields it omits take their defaults.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic import Field as Doc
from sqlalchemy import Engine

from yunying.audience.settings_tables import audience_settings
from yunying.errors import YunyingError

EventNames = list[str]


class InvalidSettings(YunyingError):
    """Audience settings that do not validate; ``field`` is the dotted path of the first bad one."""

    def __init__(self, message: str, field: str = "", errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.field = field
        self.errors = errors or []


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _names(value: list[str], what: str) -> list[str]:
    for name in value:
        if not name or len(name) > 200:
            raise ValueError(f"{what} names must be 1 to 200 characters")
    return value


class ActivitySettings(_Section):
    """Which events make a person active on a day."""

    events: EventNames = Doc(
        default_factory=list,
        max_length=200,
        description="Events that count as activity; empty: every event (see include_platform).",
    )
    include_platform: bool = Doc(
        default=False,
        description="Whether `$`-prefixed platform events ($identify, $pageview...) count "
        "when `events` is empty.",
    )

    @model_validator(mode="after")
    def _check(self) -> ActivitySettings:
        _names(self.events, "activity event")
        return self


class LifecycleSettings(_Section):
    """Thresholds of the lifecycle stages, in local calendar days (see docs/audience-reports.md)."""

    new_days: int = Doc(
        default=7, ge=1, le=365, description="New: first active within the last N days."
    )
    silent_days: int = Doc(
        default=7, ge=1, le=3650, description="Silent: no activity for at least this many days."
    )
    churned_days: int = Doc(
        default=30, ge=2, le=3650, description="Churned: no activity for at least this many days."
    )
    returned_days: int = Doc(
        default=7, ge=1, le=365, description="Returned: for M days after coming back from churned."
    )
    active_window_days: int = Doc(
        default=7,
        ge=1,
        le=365,
        description="Active vs retained: look at the last this many days...",
    )
    active_min_days: int = Doc(
        default=3,
        ge=1,
        le=365,
        description="...active on at least this many of them: active, else retained.",
    )

    @model_validator(mode="after")
    def _check(self) -> LifecycleSettings:
        if self.silent_days >= self.churned_days:
            raise ValueError("silent_days must be smaller than churned_days")
        if self.active_min_days > self.active_window_days:
            raise ValueError("active_min_days must not exceed active_window_days")
        return self


class RevenueSettings(_Section):
    """The purchase events and their amount: lifetime revenue, paying rate, ARPU."""

    events: EventNames = Doc(
        default_factory=list,
        max_length=200,
        description="Purchase events; empty: any event with a positive amount.",
    )
    amount_property: str | None = Doc(
        default=None,
        max_length=200,
        description="Numeric event property holding the amount; null: the amount column "
        "($amount / amount).",
    )

    @model_validator(mode="after")
    def _check(self) -> RevenueSettings:
        _names(self.events, "revenue event")
        if self.amount_property == "":
            raise ValueError("amount_property must not be empty (null means the amount column)")
        return self


Thresholds = list[float]


class HighScores(_Section):
    """Fixed cut-offs: a score at or above this is high."""

    r: int = Doc(default=3, ge=1, le=5)
    f: int = Doc(default=3, ge=1, le=5)
    m: int = Doc(default=3, ge=1, le=5)


class RFMSettings(_Section):
    """RFM: purchases in a window, 1-5 scores and which scores count as high."""

    events: EventNames | None = Doc(
        default=None, description="Purchase events; null: the revenue settings' events."
    )
    amount_property: str | None = Doc(
        default=None,
        max_length=200,
        description="Amount property; null: the revenue settings' amount.",
    )
    window_days: int = Doc(
        default=365, ge=1, le=3650, description="Purchases within the last N days."
    )
    scoring: Literal["quintile", "fixed"] = Doc(
        default="quintile", description="quintile: rank into fifths; fixed: the thresholds below."
    )
    recency_thresholds: Thresholds = Doc(
        default_factory=lambda: [7.0, 30.0, 90.0, 180.0],
        description="Fixed scoring: R = 1 + number of thresholds >= days since last purchase.",
    )
    frequency_thresholds: Thresholds = Doc(
        default_factory=lambda: [2.0, 3.0, 5.0, 8.0],
        description="Fixed scoring: F = 1 + number of thresholds <= purchases.",
    )
    monetary_thresholds: Thresholds = Doc(
        default_factory=lambda: [50.0, 100.0, 300.0, 1000.0],
        description="Fixed scoring: M = 1 + number of thresholds <= amount.",
    )
    high: Literal["mean", "fixed"] = Doc(
        default="mean",
        description="mean: a score is high when >= the mean score; fixed: high_scores.",
    )
    high_scores: HighScores = HighScores()

    @model_validator(mode="after")
    def _check(self) -> RFMSettings:
        if self.events is not None:
            _names(self.events, "RFM event")
        if self.amount_property == "":
            raise ValueError("amount_property must not be empty (null means the revenue amount)")
        for name in ("recency_thresholds", "frequency_thresholds", "monetary_thresholds"):
            values = getattr(self, name)
            if len(values) != 4:
                raise ValueError(f"{name} needs exactly 4 ascending numbers (5 scores)")
            if any(b <= a for a, b in zip(values, values[1:], strict=False)):
                raise ValueError(f"{name} must be strictly ascending")
        return self


class AudienceSettings(_Section):
    """All audience settings of a project."""

    activity: ActivitySettings = ActivitySettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    rfm: RFMSettings = RFMSettings()
    revenue: RevenueSettings = RevenueSettings()

    def rfm_events(self) -> list[str]:
        """Purchase events of RFM (its own, else the revenue ones; empty: any with amount)."""
        return list(self.revenue.events if self.rfm.events is None else self.rfm.events)

    def rfm_amount(self) -> str | None:
        """Amount property of RFM (its own, else the revenue one; None: the amount column)."""
        return self.rfm.amount_property or self.revenue.amount_property


def error_list(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": dotted.path, "message": text}``."""
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        msg = str(e.get("msg", "invalid"))
        out.append({"field": ".".join(loc), "message": msg.removeprefix("Value error, ")})
    return out


def parse_settings(data: Any) -> AudienceSettings:
    """Validate a settings document; :class:`InvalidSettings` naming the field otherwise."""
    if not isinstance(data, dict):
        raise InvalidSettings("settings must be a JSON object", "")
    try:
        return AudienceSettings.model_validate(data)
    except ValidationError as exc:
        errors = error_list(exc)
        text = "; ".join(
            f"field {e['field']!r}: {e['message']}" if e["field"] else e["message"] for e in errors
        )
        raise InvalidSettings(text, errors[0]["field"] if errors else "", errors) from None


def get_settings(engine: Engine, project_id: int) -> AudienceSettings:
    """The project's settings (defaults when none are stored)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(audience_settings.c.settings).where(
                audience_settings.c.project_id == project_id
            )
        ).first()
    if row is None:
        return AudienceSettings()
    try:
        return AudienceSettings.model_validate(row.settings)
    except ValidationError:
        # a stored document from an older version that no longer validates: defaults, not a 500
        return AudienceSettings()


def put_settings(engine: Engine, project_id: int, data: Any) -> AudienceSettings:
    """Validate and store a whole settings document (omitted fields take defaults)."""
    parsed = data if isinstance(data, AudienceSettings) else parse_settings(data)
    doc = parsed.model_dump(mode="json")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        updated = conn.execute(
            audience_settings.update()
            .where(audience_settings.c.project_id == project_id)
            .values(settings=doc, updated_at=now)
        ).rowcount
        if not updated:
            conn.execute(
                audience_settings.insert().values(
                    project_id=project_id, settings=doc, updated_at=now
                )
            )
    return parsed


def with_changes(current: AudienceSettings, changes: dict[str, Any]) -> AudienceSettings:
    """``current`` with dotted-path changes applied (``{"lifecycle.silent_days": 10}``)."""
    doc = current.model_dump(mode="json")
    for path, value in changes.items():
        parts = path.split(".")
        node: Any = doc
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                raise InvalidSettings(
                    f"unknown setting {'.'.join(parts[: i + 1])!r}", ".".join(parts[: i + 1])
                )
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise InvalidSettings(f"unknown setting {path!r}", path)
        node[parts[-1]] = value
    return parse_settings(doc)
