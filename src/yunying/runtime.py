"""One open installation: settings, the state database, the events engine and its writer.

The server, the CLI and tests all open a :class:`Runtime`; nothing else opens engines.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from yunying.config import Settings
from yunying.ingest.writer import Writer
from yunying.state import Project, open_state, project_by_write_key
from yunying.store import EventStore, open_event_store

NEGATIVE_KEY_TTL = 5.0


def ensure_admin_token(path: Path) -> str:
    """The installation's local admin token (created on first use, readable by the owner only)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "yat_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


@dataclass
class Runtime:
    """Everything a request or command needs; close it to flush the writer and engines."""

    settings: Settings
    state: Engine
    store: EventStore
    _writer: Writer | None = None
    _keys: dict[str, Project] = field(default_factory=dict)
    _bad_keys: dict[str, float] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        state = open_state(settings.state_url)
        store = open_event_store(settings.events_url)
        return cls(settings, state, store)

    @property
    def writer(self) -> Writer:
        """The single writer, started on first use."""
        if self._writer is None:
            self._writer = Writer(self.store)
        return self._writer

    def project_for_write_key(self, key: str) -> Project | None:
        """Project of a public write key; cached, with short negative caching against floods."""
        project = self._keys.get(key)
        if project is not None:
            return project
        now = time.monotonic()
        if self._bad_keys.get(key, 0.0) > now:
            return None
        project = project_by_write_key(self.state, key)
        if project is None:
            if len(self._bad_keys) > 10_000:
                self._bad_keys.clear()
            self._bad_keys[key] = now + NEGATIVE_KEY_TTL
            return None
        self._keys[key] = project
        return project

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.store.close()
        self.state.dispose()
