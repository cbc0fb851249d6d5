"""Team members of the console: roles, argon2 passwords and login sessions.

Plain functions over the state engine, so the CLI (``yunying user create``), the demo and the
web pages share them and tests call them directly.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine

from yunying.console.tables import console_sessions, console_users
from yunying.errors import M_, Conflict, NotFound, YunyingError

#: Roles, most powerful first. The seeds' operations director is ``admin``.
ROLES: tuple[str, ...] = ("admin", "operator", "analyst", "viewer")
ROLE_ALIASES = {"director": "admin"}

#: What each role may do. Pages and forms ask :func:`can`, never compare role names.
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"view", "export", "explore", "keys", "users", "budgets", "activities", "segments"}
    ),
    "operator": frozenset({"view", "export", "explore", "activities", "segments"}),
    "analyst": frozenset({"view", "export", "explore"}),
    "viewer": frozenset({"view"}),
}

SESSION_DAYS = 14
MIN_PASSWORD = 8
_hasher = PasswordHasher()  # argon2id with the library's maintained defaults
# A hash of a random password: verifying against it when the user does not exist keeps the
# answer time the same, so timing does not reveal which user names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class InvalidUser(YunyingError):
    """A user name, role or password is not acceptable; ``field`` names which (``username``,
    ``role``, ``password``; empty when it is about the request as a whole)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class User:
    """A console user as pages see it (never the password hash)."""

    id: int
    name: str
    role: str
    locale: str | None
    active: bool
    created_at: datetime
    last_login_at: datetime | None

    def can(self, permission: str) -> bool:
        """Whether this user's role grants ``permission``."""
        return can(self.role, permission)


@dataclass(frozen=True)
class Session:
    """A logged-in browser: the user and the CSRF token its forms must carry."""

    user: User
    csrf_token: str
    token_hash: str


def can(role: str, permission: str) -> bool:
    """Whether ``role`` grants ``permission`` (see :data:`PERMISSIONS`)."""
    return permission in PERMISSIONS.get(role, frozenset())


def normalise_role(role: str) -> str:
    """``director`` → ``admin``; raises :class:`InvalidUser` for an unknown role."""
    role = ROLE_ALIASES.get(role.strip().lower(), role.strip().lower())
    if role not in ROLES:
        raise InvalidUser(
            M_("unknown role {role!r}; roles are {roles} (director = admin)",
               role=role, roles=", ".join(ROLES)),
            "role",
        )  # fmt: skip
    return role


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _user(r: sa.Row[Any]) -> User:
    created = _aware(r.created_at)
    assert created is not None
    return User(r.id, r.name, r.role, r.locale, bool(r.active), created, _aware(r.last_login_at))


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InvalidUser(M_("a user name is 1 to 100 characters without spaces"), "username")
    return name


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidUser(
            M_("a password needs at least {n} characters", n=MIN_PASSWORD), "password"
        )


def generate_password() -> str:
    """A random password to print once (demo, ``user create`` without ``--password``)."""
    return secrets.token_urlsafe(12)


def create_user(engine: Engine, name: str, password: str, role: str = "viewer") -> User:
    """Create a user; :class:`Conflict` when the name is taken."""
    name = _check_name(name)
    role = normalise_role(role)
    _check_password(password)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if conn.execute(sa.select(console_users.c.id).where(console_users.c.name == name)).first():
            raise Conflict(M_("a user named {name!r} already exists", name=name))
        uid = conn.execute(
            console_users.insert().values(
                name=name,
                password_hash=_hasher.hash(password),
                role=role,
                active=True,
                created_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    return User(uid, name, role, None, True, now, None)


def set_password(engine: Engine, name: str, password: str) -> None:
    """Replace a user's password and end all their sessions."""
    _check_password(password)
    user = get_user(engine, name)
    with engine.begin() as conn:
        conn.execute(
            console_users.update()
            .where(console_users.c.id == user.id)
            .values(password_hash=_hasher.hash(password))
        )
        conn.execute(console_sessions.delete().where(console_sessions.c.user_id == user.id))


def update_user(
    engine: Engine,
    name: str,
    *,
    role: str | None = None,
    active: bool | None = None,
    locale: str | None = None,
) -> User:
    """Change a user's role, active flag or preferred language; deactivating ends sessions."""
    user = get_user(engine, name)
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = normalise_role(role)
    if active is not None:
        values["active"] = active
    if locale is not None:
        values["locale"] = locale
    if values:
        with engine.begin() as conn:
            conn.execute(console_users.update().where(console_users.c.id == user.id).values(values))
            if active is False or "role" in values:
                conn.execute(console_sessions.delete().where(console_sessions.c.user_id == user.id))
    return get_user(engine, name)


def get_user(engine: Engine, name: str) -> User:
    """The user called ``name`` (:class:`NotFound` otherwise)."""
    with engine.connect() as conn:
        r = conn.execute(sa.select(console_users).where(console_users.c.name == name)).first()
    if r is None:
        raise NotFound(M_("no user named {name!r}", name=name))
    return _user(r)


def list_users(engine: Engine) -> list[User]:
    """All users, oldest first."""
    with engine.connect() as conn:
        return [_user(r) for r in conn.execute(sa.select(console_users).order_by("id"))]


def count_users(engine: Engine) -> int:
    """How many users exist (the login page explains how to create the first one)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(console_users)).scalar_one())


def authenticate(engine: Engine, name: str, password: str) -> User | None:
    """The active user with this name and password, or None (same work either way)."""
    with engine.connect() as conn:
        r = conn.execute(
            sa.select(console_users).where(console_users.c.name == name.strip())
        ).first()
    stored = r.password_hash if r is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if r is None or not r.active:
        return None
    if _hasher.check_needs_rehash(stored):
        with engine.begin() as conn:
            conn.execute(
                console_users.update()
                .where(console_users.c.id == r.id)
                .values(password_hash=_hasher.hash(password))
            )
    return _user(r)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(engine: Engine, user: User) -> tuple[str, Session]:
    """A new session for ``user``: the cookie value (shown once) and the session."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            console_sessions.insert().values(
                token_hash=_digest(token),
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + timedelta(days=SESSION_DAYS),
            )
        )
        conn.execute(
            console_users.update().where(console_users.c.id == user.id).values(last_login_at=now)
        )
        conn.execute(console_sessions.delete().where(console_sessions.c.expires_at < now))
    return token, Session(user, csrf, _digest(token))


def session_for(engine: Engine, token: str) -> Session | None:
    """The live session of a cookie value, or None (unknown, expired, user deactivated)."""
    if not token or len(token) > 100:
        return None
    digest = _digest(token)
    with engine.connect() as conn:
        r = conn.execute(
            sa.select(
                console_sessions.c.token_hash,
                console_sessions.c.csrf_token,
                console_sessions.c.expires_at,
                console_users,
            )
            .join(console_users, console_users.c.id == console_sessions.c.user_id)
            .where(console_sessions.c.token_hash == digest)
        ).first()
    if r is None or not hmac.compare_digest(r.token_hash, digest):
        return None
    expires = _aware(r.expires_at)
    if not r.active or expires is None or expires < datetime.now(UTC):
        return None
    return Session(_user(r), r.csrf_token, digest)


def end_session(engine: Engine, token_hash: str) -> None:
    """Log a session out."""
    with engine.begin() as conn:
        conn.execute(console_sessions.delete().where(console_sessions.c.token_hash == token_hash))
