"""Helpers for activity tests: create and start activities and call the app API over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from yunying.activities.engine import live_rules
from yunying.state import NewProject


class App:
    """A project on a live server, with the calls an operator and an app make."""

    def __init__(self, live: LiveServer, project: NewProject) -> None:
        self.live = live
        self.project = project
        self.url = live.url
        self.secret = project.secret_key
        self.client = httpx.Client(base_url=live.url, timeout=60)

    def manage(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secret}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def create(self, spec: dict[str, Any], start: bool = True) -> dict[str, Any]:
        r = self.manage("POST", "/api/v1/activities", json=spec)
        assert r.status_code == 201, r.text
        act = r.json()
        if start:
            r = self.manage("POST", f"/api/v1/activities/{act['id']}/start")
            assert r.status_code == 200, r.text
            act = r.json()
        return act  # type: ignore[no-any-return]

    def token(self, user: str) -> str:
        r = self.manage("POST", "/api/v1/activities/user-token", json={"user_id": user})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def as_user(
        self, user: str, method: str, path: str, key: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(user)}", **kw.pop("headers", {})}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.request(method, path, headers=headers, **kw)

    def events(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            e.setdefault("uuid", str(uuid.uuid4()))
            e.setdefault("timestamp", datetime.now(UTC).isoformat())
        r = self.live.post_events(self.project.project.write_key, {"batch": events}, timeout=120)
        assert r.status_code == 200, r.text
        assert live_rules(self.live.runtime).wait_idle(30)

    def event(self, user: str, name: str, **props: Any) -> dict[str, Any]:
        return {"event": name, "distinct_id": user, "properties": props}

    def wait(self, check: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError("condition not met in time")


@pytest.fixture
def app(live: LiveServer, project: NewProject) -> App:
    return App(live, project)


NO_RISK = {"mode": "off"}
