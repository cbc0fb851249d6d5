"""Live rules across restarts: nothing lost, nothing granted twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.activities.conftest import NO_RISK, App
from tests.conftest import start_server
from yunying.activities import engine, ledger, service
from yunying.activities.tables import activity_outbox, ledger_transactions
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import create_project


def ev(user: str, name: str, when: datetime) -> dict[str, object]:
    return {
        "uuid": str(uuid.uuid4()),
        "event": name,
        "distinct_id": user,
        "timestamp": when.isoformat(),
    }


def test_restart_catches_up_without_double_grants(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    rt = Runtime.open(settings)
    project = create_project(rt.state, "restart")
    srv = start_server(rt)
    app = App(srv, project)
    act = app.create(
        {
            "template": "task",
            "name": "剪 4 个视频",
            "stages": [
                {
                    "name": "edit",
                    "event": "edit_video",
                    "count": 4,
                    "reward": {"kind": "points", "amount": 100},
                }
            ],
            "risk": NO_RISK,
        }
    )
    now = datetime.now(UTC)
    first = [ev("u", "edit_video", now - timedelta(minutes=10 - i)) for i in range(2)]
    app.events(first)
    # the processor goes away (crash); two more events are committed while it is down
    engine.forget(rt)
    later = [ev("u", "edit_video", now - timedelta(minutes=5 - i)) for i in range(2)]
    batch = validate_batch(later, client_ip=None)
    rt.writer.write(project.project.id, batch.events)
    srv.server.should_exit = True
    srv.thread.join(10)
    rt.close()

    rt2 = Runtime.open(settings)
    srv2 = start_server(rt2)
    try:
        app2 = App(srv2, project)
        proc = engine.live_rules(rt2)
        assert proc.wait_idle(30)
        p = app2.as_user("u", "GET", f"/v1/activities/{act['id']}/progress").json()
        assert p["stages"][0]["count"] == 4
        assert [c["status"] for c in p["claims"]] == ["granted"]
        # replaying everything again, and resending the same events, changes nothing
        proc.catch_up()
        app2.events([dict(e) for e in first + later])
        with rt2.state.connect() as conn:
            # rewind the watermark: a full replay is skipped event by event
            conn.execute(sa.text("DELETE FROM activity_watermarks"))
            conn.commit()
        proc.catch_up()
        p = app2.as_user("u", "GET", f"/v1/activities/{act['id']}/progress").json()
        assert p["stages"][0]["count"] == 4
        assert ledger.wallet(rt2.state, project.project.id, "u")["points"] == 100
        with rt2.state.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(ledger_transactions)).scalar()
        assert n == 1
    finally:
        srv2.server.should_exit = True
        srv2.thread.join(10)
        rt2.close()


@pytest.mark.parametrize("state", ["sqlite", "postgresql"])
def test_rewards_due_at_a_crash_are_granted_on_start(
    tmp_path: Path, state: str, request: pytest.FixtureRequest
) -> None:
    """Progress committed, grant not yet made: the outbox row is finished at the next start."""
    url = request.getfixturevalue("fresh_postgres_url") if state == "postgresql" else None
    settings = load_settings(data_dir=tmp_path / "data", state_url=url)
    rt = Runtime.open(settings)
    project = create_project(rt.state, "outbox").project
    act = service.create_activity(
        rt.state,
        project.id,
        {
            "template": "gift",
            "name": "gift",
            "event": "sign_up",
            "reward": {"kind": "points", "amount": 7},
            "risk": NO_RISK,
        },
        "test",
    )
    act = service.transition(rt.state, project.id, act.id, "start", "test")
    live_ev = engine.LiveEvent(str(uuid.uuid4()), "sign_up", "g", None, datetime.now(UTC))
    index = {project.id: {"sign_up": [act]}}
    keys = engine.apply_batch(rt, index, engine.AudienceCache(rt), project.id, [live_ev])
    assert keys == [f"act:{act.id}:gift:g"]  # due, not granted: the process "dies" here
    # the same event again (a replay) is skipped
    assert engine.apply_batch(rt, index, engine.AudienceCache(rt), project.id, [live_ev]) == []
    rt.close()

    rt2 = Runtime.open(settings)
    try:
        proc = engine.live_rules(rt2)
        proc.start()
        assert proc.wait_idle(30)
        assert ledger.wallet(rt2.state, project.id, "g")["points"] == 7
        with rt2.state.connect() as conn:
            assert conn.execute(sa.select(activity_outbox.c.done)).scalars().all() == [True]
        service.drain_outbox(rt2)  # a second attempt is a no-op
        assert ledger.wallet(rt2.state, project.id, "g")["points"] == 7
    finally:
        engine.forget(rt2)
        rt2.close()
