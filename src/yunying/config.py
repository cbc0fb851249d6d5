"""Settings: where data lives and which engines hold it.

Resolution order for every setting: explicit argument, then environment variable, then default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from yunying.errors import ConfigError

DEFAULT_DATA_DIR = "yunying-data"
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
#: Events engines: DuckDB file, ClickHouse in-process (chdb), ClickHouse server.
EVENTS_URL_SCHEMES = ("duckdb:///", "chdb:///", "clickhouse://", "clickhouses://")


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one installation."""

    data_dir: Path
    events_url: str
    state_url: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Networks (CIDR) allowed to send to the Sensors Data endpoint without a ``token``.
    sensors_allow_networks: tuple[str, ...] = ()

    @property
    def server_file(self) -> Path:
        """Where a running server advertises its address, so the CLI can reach it."""
        return self.data_dir / "server.json"

    @property
    def admin_token_file(self) -> Path:
        """Local admin token: lets the CLI on this machine query the running server."""
        return self.data_dir / ".admin_token"


def load_settings(
    data_dir: str | Path | None = None,
    events_url: str | None = None,
    state_url: str | None = None,
    max_body_bytes: int | None = None,
) -> Settings:
    """Build :class:`Settings` from arguments, ``YUNYING_*`` variables and defaults."""
    root = Path(data_dir or os.environ.get("YUNYING_DATA_DIR") or DEFAULT_DATA_DIR).absolute()
    events = (
        events_url or os.environ.get("YUNYING_EVENTS_URL") or f"duckdb:///{root / 'events.duckdb'}"
    )
    state = state_url or os.environ.get("YUNYING_STATE_URL") or f"sqlite:///{root / 'state.sqlite'}"
    limit = max_body_bytes or int(os.environ.get("YUNYING_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
    if not events.startswith(EVENTS_URL_SCHEMES):
        raise ConfigError(
            f"events engine URL {events!r}: use duckdb:///PATH, chdb:///ABSOLUTE/PATH or "
            "clickhouse://user:password@host:port/database"
        )
    if not (state.startswith("sqlite") or state.startswith("postgresql")):
        raise ConfigError(f"state engine URL {state!r}: use sqlite:///PATH or postgresql://...")
    networks = tuple(
        n.strip()
        for n in os.environ.get("YUNYING_SENSORS_ALLOW_NETWORKS", "").split(",")
        if n.strip()
    )
    return Settings(
        data_dir=root,
        events_url=events,
        state_url=state,
        max_body_bytes=limit,
        sensors_allow_networks=networks,
    )


def duckdb_path(events_url: str) -> str:
    """The file path inside a ``duckdb:///PATH`` URL (``:memory:`` allowed)."""
    return events_url.removeprefix("duckdb:///") or ":memory:"


def chdb_path(events_url: str) -> str:
    """The directory inside a ``chdb:///ABSOLUTE/PATH`` URL (the embedded ClickHouse's data)."""
    path = events_url.removeprefix("chdb://")
    if not path.startswith("/") or path == "/":
        raise ConfigError(f"events engine URL {events_url!r}: use chdb:///ABSOLUTE/PATH")
    return path
