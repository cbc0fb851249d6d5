"""Projects: one per app being operated. Write keys are public; secret keys are stored hashed.

Secret keys are 256-bit random tokens, so a single SHA-256 is the right hash (as for API tokens
elsewhere): a slow password hash protects low-entropy secrets and would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy import Engine

from yunying.errors import M_, Conflict, NotFound, YunyingError
from yunying.state.models import projects


class InvalidProject(YunyingError):
    """A project's settings (name, time zone) are not acceptable; ``field`` names which."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Project:
    """A project as the rest of the system sees it (never the secret key itself)."""

    id: int
    name: str
    write_key: str
    secret_key_prefix: str
    timezone: str
    created_at: datetime


@dataclass(frozen=True)
class NewProject:
    """A freshly created project with its secret key, shown this one time only."""

    project: Project
    secret_key: str


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a secret key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(r: sa.Row[Any]) -> Project:
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
    return Project(r.id, r.name, r.write_key, r.secret_key_prefix, r.timezone, created)


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidProject(M_("project name must be 1 to 200 characters"), field="name")
    return name


def _checked_timezone(timezone: str) -> str:
    timezone = timezone.strip()
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidProject(
            M_("unknown time zone {timezone!r}", timezone=timezone), field="timezone"
        ) from exc
    return timezone


def create_project(engine: Engine, name: str, timezone: str = "Asia/Shanghai") -> NewProject:
    """Create a project with fresh keys; raises :class:`Conflict` if the name is taken."""
    name, timezone = _checked_name(name), _checked_timezone(timezone)
    write_key = "ywk_" + secrets.token_urlsafe(24)
    secret_key = "ysk_" + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first():
            raise Conflict(f"a project named {name!r} already exists")
        pid = conn.execute(
            projects.insert().values(
                name=name,
                write_key=write_key,
                secret_key_hash=hash_secret(secret_key),
                secret_key_prefix=secret_key[:8],
                timezone=timezone,
                created_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    return NewProject(Project(pid, name, write_key, secret_key[:8], timezone, now), secret_key)


def update_project(
    engine: Engine, project_id: int, *, name: str | None = None, timezone: str | None = None
) -> Project:
    """Rename a project or change its time zone (days, weeks and months of every analysis from
    then on); raises :class:`Conflict` if another project has the name."""
    values: dict[str, str] = {}
    if name is not None:
        values["name"] = _checked_name(name)
    if timezone is not None:
        values["timezone"] = _checked_timezone(timezone)
    with engine.begin() as conn:
        if "name" in values:
            taken = conn.execute(
                sa.select(projects.c.id).where(
                    projects.c.name == values["name"], projects.c.id != project_id
                )
            ).first()
            if taken:
                raise Conflict(M_("a project named {name!r} already exists", name=values["name"]))
        if values:
            conn.execute(projects.update().where(projects.c.id == project_id).values(**values))
        r = conn.execute(sa.select(projects).where(projects.c.id == project_id)).first()
    if r is None:
        raise NotFound(f"no project with id {project_id}")
    return _row(r)


def list_projects(engine: Engine) -> list[Project]:
    """All projects, oldest first."""
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(sa.select(projects).order_by(projects.c.id))]


def get_project(engine: Engine, name: str | None = None) -> Project:
    """The project called ``name``; without a name, the only project (error if several)."""
    all_projects = list_projects(engine)
    if name is None:
        if len(all_projects) == 1:
            return all_projects[0]
        if not all_projects:
            raise NotFound("no project yet: run `yunying project create NAME` or `yunying demo`")
        names = ", ".join(p.name for p in all_projects)
        raise NotFound(f"several projects exist ({names}): choose one with --project NAME")
    for p in all_projects:
        if p.name == name:
            return p
    raise NotFound(f"no project named {name!r}")


def project_by_write_key(engine: Engine, write_key: str) -> Project | None:
    """The project whose public write key this is, or ``None``."""
    with engine.connect() as conn:
        r = conn.execute(sa.select(projects).where(projects.c.write_key == write_key)).first()
    return _row(r) if r else None


def project_by_secret_key(engine: Engine, secret_key: str) -> Project | None:
    """The project whose secret key this is (compared by hash), or ``None``."""
    digest = hash_secret(secret_key)
    with engine.connect() as conn:
        r = conn.execute(sa.select(projects).where(projects.c.secret_key_hash == digest)).first()
    if r is None or not hmac.compare_digest(r.secret_key_hash, digest):
        return None
    return _row(r)
