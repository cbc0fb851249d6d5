"""Tags (标签): named rule trees that stamp persons, e.g. "heavy_editor" or "coupon_only_buyer".

A tag is a rule tree like a dynamic segment's; computing it writes its members into the
``tag:NAME`` scope of ``person_values`` (so rules, analytics and the operations engine can read
it). Tags are recomputed with the segments (see :func:`yunying.audience.segments.recompute_all`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from yunying.audience import definitions
from yunying.audience.definitions import aware, iso
from yunying.audience.rules import TAG_NAME, InvalidRule, parse_rule, rule_json
from yunying.audience.segment_tables import tags
from yunying.errors import M_, Conflict, NotFound, YunyingError, message_from_record
from yunying.state import Project


class InvalidTag(YunyingError):
    """A tag definition is not acceptable; ``field`` names the offending field."""

    def __init__(self, message: str, field: str = "", errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.field = field
        self.errors = errors or [{"field": field, "message": message}]


@dataclass(frozen=True)
class Tag:
    """A tag as stored: its rule tree and when it was last computed, with how many persons."""

    id: int
    project_id: int
    name: str
    description: str
    rules: dict[str, Any]
    schedule_minutes: int | None
    last_computed_at: datetime | None
    size: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def scope(self) -> str:
        """Its ``person_values`` scope."""
        return f"tag:{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "rules": self.rules,
            "schedule_minutes": self.schedule_minutes,
            "scope": self.scope,
            "last_computed_at": iso(self.last_computed_at),
            "size": self.size,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def _row(r: Any) -> Tag:
    return Tag(
        r.id,
        r.project_id,
        r.name,
        r.description,
        r.rules,
        r.schedule_minutes,
        None if r.last_computed_at is None else aware(r.last_computed_at),
        r.size,
        message_from_record(r.last_error_message, r.last_error),  # translatable where marked
        aware(r.created_at),
        aware(r.updated_at),
    )


def check_name(name: str) -> str:
    """A valid tag name (letters of any script, digits, ``_ - .``), else :class:`InvalidTag`."""
    name = name.strip() if isinstance(name, str) else name
    if not isinstance(name, str) or not TAG_NAME.match(name):
        raise InvalidTag(
            M_("tag name {name!r} must be 1 to 100 letters, digits, '_', '-' or '.'", name=name),
            "name",
        )
    return name


def check_schedule(minutes: Any) -> int | None:
    """A schedule in minutes (1 to 1 week), or None for on demand only."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 10_080:
        raise InvalidTag(
            M_("schedule_minutes must be a whole number of minutes from 1 to 10080 (or null)"),
            "schedule_minutes",
        )
    return minutes


def parse_rules(data: Any) -> Any:
    """A tag's rule tree, validated (:class:`InvalidTag` naming the field)."""
    try:
        return parse_rule(data, "rules")
    except InvalidRule as exc:
        raise InvalidTag(exc.message, exc.field, exc.errors) from None


def list_tags(engine: sa.Engine, project_id: int) -> list[Tag]:
    """Every tag of a project, by name."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tags).where(tags.c.project_id == project_id).order_by(tags.c.name)
        )
        return [_row(r) for r in rows]


def get_tag(engine: sa.Engine, project_id: int, ref: int | str) -> Tag:
    """A tag by id or name (:class:`NotFound` otherwise)."""
    row = definitions.find(engine, tags, project_id, ref)
    if row is None:
        raise NotFound(M_("no tag {ref!r} in this project", ref=ref))
    return _row(row)


def create_tag(
    engine: sa.Engine,
    project: Project,
    name: str,
    rules: Any,
    description: str = "",
    schedule_minutes: int | None = None,
) -> Tag:
    """Store a new tag (not computed yet); :class:`Conflict` if the name is taken."""
    from yunying.audience.segments import check_graph

    name = check_name(name)
    rule = parse_rules(rules)
    schedule = check_schedule(schedule_minutes)
    check_graph(engine, project.id, ("tag", name), rule)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if definitions.name_taken(conn, tags, project.id, name):
            raise Conflict(M_("a tag named {name!r} already exists in this project", name=name))
        tid = conn.execute(
            tags.insert().values(
                project_id=project.id,
                name=name,
                description=description or "",
                rules=rule_json(rule),
                schedule_minutes=schedule,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    return get_tag(engine, project.id, int(tid))


def update_tag(engine: sa.Engine, project: Project, ref: int | str, changes: dict[str, Any]) -> Tag:
    """Change a tag's description, rules or schedule (its name is its scope: fixed)."""
    from yunying.audience.segments import check_graph

    tag = get_tag(engine, project.id, ref)
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if "rules" in changes:
        rule = parse_rules(changes["rules"])
        check_graph(engine, project.id, ("tag", tag.name), rule)
        values["rules"] = rule_json(rule)
    if "description" in changes:
        values["description"] = str(changes["description"] or "")
    if "schedule_minutes" in changes:
        values["schedule_minutes"] = check_schedule(changes["schedule_minutes"])
    with engine.begin() as conn:
        conn.execute(tags.update().where(tags.c.id == tag.id).values(**values))
    return get_tag(engine, project.id, tag.id)


def record_tag(
    engine: sa.Engine, tag_id: int, at: datetime, size: int | None, error: str | None
) -> None:
    """Remember a computation (size) or its failure (error, size unchanged)."""
    with engine.begin() as conn:
        definitions.record(conn, tags, tag_id, at, size, error)


def delete_tag_row(engine: sa.Engine, tag_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(tags.delete().where(tags.c.id == tag_id))
