"""Check-in streak end to end: events and app calls through the live server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.activities.conftest import NO_RISK, App


def spec(**kw: object) -> dict[str, object]:
    return {
        "template": "checkin",
        "name": "7 天签到送会员",
        "milestones": [
            {"days": 3, "reward": {"kind": "points", "amount": 50}},
            {"days": 7, "reward": {"kind": "membership_days", "amount": 30}},
        ],
        "risk": NO_RISK,
        **kw,
    }


def test_seven_day_streak_by_events_grants_a_month_once(app: App) -> None:
    act = app.create(spec())
    base = datetime.now(UTC) - timedelta(days=6)
    days = [base + timedelta(days=i) for i in range(7)]
    # two check-ins on the first day count once; the same event sent twice counts once
    evs = [app.event("u1", "check_in") | {"timestamp": d.isoformat()} for d in days]
    evs.insert(
        1, app.event("u1", "check_in") | {"timestamp": (days[0] + timedelta(minutes=5)).isoformat()}
    )
    app.events(evs[:4])
    app.events(evs[4:])
    app.events([dict(evs[-1])])  # a retry of the last one: duplicate uuid, dropped at ingestion
    r = app.as_user("u1", "GET", f"/v1/activities/{act['id']}/progress")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["progress"]["streak"] == 7
    assert [c["status"] for c in body["claims"]] == ["granted", "granted"]
    wallet = app.as_user("u1", "GET", "/v1/rewards").json()
    assert wallet["points"] == 50
    assert wallet["membership_days_granted"] == 30
    assert wallet["membership_until"] is not None


def test_gap_resets_and_grace_forgives(app: App) -> None:
    reset = app.create(spec(name="reset"))
    grace = app.create(spec(name="grace", on_break="grace", grace_days=1))
    base = datetime.now(UTC) - timedelta(days=4)
    stamps = [base, base + timedelta(days=2), base + timedelta(days=3)]  # missed one day
    app.events([app.event("u2", "check_in") | {"timestamp": t.isoformat()} for t in stamps])
    p1 = app.as_user("u2", "GET", f"/v1/activities/{reset['id']}/progress").json()
    p2 = app.as_user("u2", "GET", f"/v1/activities/{grace['id']}/progress").json()
    assert p1["progress"]["streak"] == 2
    assert p2["progress"]["streak"] == 3
    assert [c["status"] for c in p2["claims"]] == ["granted"]  # the 3-day milestone


def test_app_checkin_needs_key_and_token_and_is_idempotent(app: App) -> None:
    act = app.create(spec(milestones=[{"days": 1, "reward": {"kind": "points", "amount": 5}}]))
    path = f"/v1/activities/{act['id']}/checkin"
    assert app.as_user("u3", "POST", path).status_code == 400  # no Idempotency-Key
    r = app.client.post(
        path,
        headers={
            "Authorization": f"Bearer {app.project.project.write_key}",
            "Idempotency-Key": "k",
        },
    )
    assert r.status_code == 403
    r = app.client.post(
        path, headers={"Authorization": "Bearer yut_forged.sig", "Idempotency-Key": "k"}
    )
    assert r.status_code == 401
    first = app.as_user("u3", "POST", path, key="day-1")
    assert first.status_code == 200, first.text
    assert first.json()["results"][0]["status"] == "granted"
    again = app.as_user("u3", "POST", path, key="day-1")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert app.as_user("u3", "GET", "/v1/rewards").json()["points"] == 5
