"""A small demo installation shared by a module's console tests, with one user per role, served
by a real uvicorn server on loopback."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlglot import exp

from tests.conftest import LiveServer, start_server
from yunying.activities.service import create_activity, settle, transition
from yunying.activities.spec import rewards_of
from yunying.audience.clv import ClvRequest, fit_clv
from yunying.audience.segments import compute_segment, compute_tag, create_segment
from yunying.audience.tags import create_tag
from yunying.config import load_settings
from yunying.console.users import create_user
from yunying.console.web import ConsoleApp
from yunying.demo import generate_demo
from yunying.runtime import Runtime
from yunying.state import list_projects

#: One account per role (name = role), all with this password.
PASSWORD = "correct-horse-42"
ROLES = ("admin", "operator", "analyst", "viewer")
DEMO_USERS = 300
DEMO_DAYS = 35


@pytest.fixture(scope="module")
def demo_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """An installation with a small demo project ending yesterday and the four users."""
    root = tmp_path_factory.mktemp("console")
    rt = Runtime.open(load_settings(data_dir=root / "data"))
    generate_demo(
        rt, "demo", users=DEMO_USERS, days=DEMO_DAYS, seed=7, end=date.today() - timedelta(days=1)
    )
    for role in ROLES:
        create_user(rt.state, role, PASSWORD, role)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def console_live(demo_runtime: Runtime) -> Iterator[LiveServer]:
    """The demo installation served on a loopback port; pages wait for their analyses (tests of
    the "computing" page set ``console_of(srv).compute_wait`` themselves)."""
    srv = start_server(demo_runtime)
    console_of(srv).compute_wait = None
    yield srv
    srv.server.should_exit = True
    srv.thread.join(10)


def console_of(srv: LiveServer) -> ConsoleApp:
    """The console mounted on a live server's app."""
    console: ConsoleApp = srv.server.config.app.state.console
    return console


def csrf_of(html: str) -> str:
    """The CSRF token in a page's first form."""
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token field in the page"
    return m.group(1)


def login(url: str, name: str, password: str = PASSWORD) -> httpx.Client:
    """An HTTP client signed in as ``name`` (cookies kept, redirects not followed)."""
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=120)
    page = client.get("/login")
    r = client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "username": name, "password": password},
    )
    assert r.status_code == 303, r.text[:500]
    return client


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$YUNYING_TEST_ARTIFACTS/console`` or a pytest temp dir."""
    import os

    base = os.environ.get("YUNYING_TEST_ARTIFACTS")
    path = Path(base) / "console" if base else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_people(rt: Runtime, n: int = 3) -> list[tuple[str, str]]:
    """(distinct_id, person_id) of a few demo users."""
    project = list_projects(rt.state)[0]
    store = rt.store
    q = (
        exp.select("distinct_id", "person_id")
        .from_(store.scoped("person_distinct_ids", project.id).subquery("d"))
        .order_by("distinct_id")
        .limit(n)
    )
    return [(str(d), str(p)) for d, p in store.query(q.sql(dialect=store.dialect)).rows]


def seed_features(rt: Runtime) -> dict[str, Any]:
    """A computed segment and tag, a running gift activity and held claims waiting for review."""
    project = list_projects(rt.state)[0]
    tag = create_tag(rt.state, project, "heavy_editor", {"type": "event", "event": "edit_video",
                     "count": "at_least", "times": 3, "window": {"last_days": 30}})  # fmt: skip
    compute_tag(rt, project, tag.id)
    seg = create_segment(rt, project, "剪辑用户", rules={"type": "event", "event": "edit_video"})
    compute_segment(rt, project, seg.id)
    compute_segment(rt, project, seg.id)  # two sizes: a sparkline and a history chart
    act = create_activity(
        rt.state,
        project.id,
        {
            "template": "gift",
            "name": "新人礼 (held)",
            "event": "sign_up",
            "reward": {"kind": "points", "amount": 20},
            "goal": {"metric": "rewards", "target": 10},
            "risk": {"account_age": {"exempt_kinds": [], "min_age_minutes": 10**8}},
        },
        "test",
    )
    act = transition(rt.state, project.id, act.id, "start", "test")
    held = []
    for distinct_id, person_id in demo_people(rt, 2):
        res = settle(
            rt,
            act,
            user_id=distinct_id,
            person_id=person_id,
            reward=rewards_of(act.spec)[0],
            key=f"test:{act.id}:{distinct_id}",
        )
        held.append(res.review_id)
    assert all(held), held
    return {"segment": seg.id, "activity": act.id, "reviews": held, "tag": tag.id}


@pytest.fixture(scope="module")
def seeded(demo_runtime: Runtime) -> dict[str, Any]:
    """The module's demo with :func:`seed_features` applied once."""
    return seed_features(demo_runtime)


@pytest.fixture(scope="module")
def clv_model(console_live: LiveServer, seeded: dict[str, Any]) -> int:
    """A fitted CLV model: the small demo has no repeat purchases, so eighty of its users buy a
    membership one to six times in the last month first (sent over the events API)."""
    rt = console_live.runtime
    project = list_projects(rt.state)[0]
    rng = random.Random(7)
    batch = []
    for distinct_id, _ in demo_people(rt, 80):
        times = rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 6])
        for days_ago in sorted(rng.sample(range(2, 34), times), reverse=True):
            day = date.today() - timedelta(days=days_ago)
            batch.append({"event": "purchase_membership", "distinct_id": distinct_id,
                          "timestamp": f"{day.isoformat()}T12:00:00+08:00",
                          "properties": {"amount": rng.choice([30, 68, 128, 198])}})  # fmt: skip
    r = console_live.post_events(project.write_key, {"batch": batch})
    assert r.status_code == 200, r.text
    request = ClvRequest("purchase_membership", date.today() - timedelta(days=1), horizon=12)
    return int(fit_clv(rt.store, rt.state, project, request)["id"])
