"""Short-lived per-user tokens the app's backend signs, so the app can call grant endpoints.

Projects keep only a hash of their secret key, so tokens are signed with a separate per-project
signing secret kept in state (``activity_signing_keys``; the management API and ``yunying
user-token`` reveal it to holders of the secret key / the local admin). The app's backend, which
knows who is logged in, signs ``{project, user, expiry}`` with HMAC-SHA256; the app sends
``Authorization: Bearer yut_...``; nobody can claim for another user with the public write key.

Format: ``yut_`` + base64url(JSON payload) + ``.`` + base64url(HMAC-SHA256(secret, payload)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import orjson
import sqlalchemy as sa
from sqlalchemy import Engine

from yunying.activities.ledger import insert_ignore, utcnow
from yunying.activities.tables import signing_keys
from yunying.errors import YunyingError

PREFIX = "yut_"
DEFAULT_TTL = 3600
MAX_TTL = 7 * 24 * 3600


class InvalidToken(YunyingError):
    """A user token that is malformed, forged, for another project, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_secret(engine: Engine, project_id: int) -> str:
    """The project's signing secret (created on first use)."""
    c = signing_keys.c
    with engine.begin() as conn:
        insert_ignore(
            conn,
            signing_keys,
            {
                "project_id": project_id,
                "secret": "yss_" + secrets.token_urlsafe(32),
                "created_at": utcnow(),
            },
        )
        return str(conn.execute(sa.select(c.secret).where(c.project_id == project_id)).scalar_one())


def sign_user_token(
    secret: str, project_id: int, user_id: str, ttl: int = DEFAULT_TTL, now: float | None = None
) -> str:
    """A token for ``user_id`` (the app's distinct id) valid ``ttl`` seconds."""
    if not user_id:
        raise InvalidToken("user_id must not be empty")
    ttl = max(1, min(int(ttl), MAX_TTL))
    payload = orjson.dumps({"p": project_id, "u": user_id, "exp": int((now or time.time()) + ttl)})
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(payload)}.{_b64(mac)}"


def token_project(token: str) -> int:
    """The project a token claims to be for (unverified: to find the secret to check it)."""
    try:
        body = token.removeprefix(PREFIX).split(".", 1)[0]
        return int(orjson.loads(_unb64(body))["p"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidToken("malformed user token") from exc


def verify_user_token(secret: str, token: str, now: float | None = None) -> tuple[int, str]:
    """(project id, user id) of a valid token; :class:`InvalidToken` otherwise."""
    if not token.startswith(PREFIX) or "." not in token:
        raise InvalidToken("malformed user token")
    body, _, sig = token[len(PREFIX) :].partition(".")
    try:
        payload = _unb64(body)
        mac = _unb64(sig)
    except ValueError as exc:
        raise InvalidToken("malformed user token") from exc
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise InvalidToken("user token signature does not match")
    data = orjson.loads(payload)
    if int(data.get("exp", 0)) < (now or time.time()):
        raise InvalidToken("user token expired: have the app's backend sign a new one")
    return int(data["p"]), str(data["u"])
