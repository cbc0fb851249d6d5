"""POST /api/v1/analytics/* over a real loopback server, with events sent through /v1/events.

Expected numbers are computed here, person by person, from the generated journeys; they never
come from the analytics code under test.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import LiveServer
from yunying.runtime import ensure_admin_token
from yunying.state import NewProject, create_project

TZ = ZoneInfo("Asia/Shanghai")  # the `project` fixture's time zone
START, END = date(2026, 3, 2), date(2026, 3, 15)  # a Monday, and 14 local days
WINDOW = timedelta(days=7)
CHANNELS = ("douyin", "xiaohongshu", "bilibili")


def local(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


@dataclass
class Person:
    """One generated journey: install, maybe sign up, maybe export; edits after signing up."""

    distinct_id: str
    channel: str
    install: datetime
    sign_up: datetime | None = None
    export: datetime | None = None
    edits: list[datetime] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        out = [("app_install", self.install)]
        out += [("sign_up", self.sign_up)] if self.sign_up else []
        out += [("export_video", self.export)] if self.export else []
        out += [("edit_video", t) for t in self.edits]
        return [
            {
                "event": name,
                "distinct_id": self.distinct_id,
                "timestamp": ts.isoformat(),
                "properties": {"channel": self.channel},
            }
            for name, ts in out
        ]


def journeys(seed: int = 11, n: int = 80) -> list[Person]:
    rng = random.Random(seed)
    people = []
    for i in range(n):
        install = local(START + timedelta(days=rng.randint(-3, 16)), rng.randint(0, 23))
        install += timedelta(minutes=rng.randint(0, 59))
        p = Person(f"d{i}", rng.choice(CHANNELS), install)
        if rng.random() < 0.75:
            p.sign_up = install + timedelta(hours=rng.randint(0, 220), minutes=rng.randint(0, 59))
            if rng.random() < 0.6:
                p.export = p.sign_up + timedelta(hours=rng.randint(0, 90))
            first = p.sign_up.date()
            p.edits = [local(first + timedelta(days=k), 12) for k in (0, 1, 2, 3, 5, 9)]
            p.edits = [t for t in p.edits if rng.random() < 0.5]
        people.append(p)
    # the window boundary is included: sign up exactly 7 days after installing
    edge = local(START + timedelta(days=2), 9)
    people.append(Person("edge", "douyin", edge, edge + WINDOW, edge + WINDOW))
    return people


@pytest.fixture
def data(live: LiveServer, project: NewProject) -> list[Person]:
    people = journeys()
    events = [e for p in people for e in p.events()]
    r = live.post_events(project.project.write_key, {"batch": events})
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
    return people


def post(live: LiveServer, kind: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{live.url}/api/v1/analytics/{kind}", json=body, headers=headers)


def in_range(t: datetime, first: date = START, last: date = END) -> bool:
    return first <= t.astimezone(TZ).date() <= last


def day(t: datetime) -> date:
    return t.astimezone(TZ).date()


# -- funnels ----------------------------------------------------------------------------------------


def expected_funnel(people: list[Person]) -> tuple[list[int], dict[str, list[int]]]:
    overall = [0, 0, 0]
    by_channel: dict[str, list[int]] = {}
    for p in people:
        if not in_range(p.install):
            continue
        reached = 1
        if p.sign_up and p.install <= p.sign_up <= p.install + WINDOW:
            reached = 2
            if p.export and p.sign_up <= p.export <= p.install + WINDOW:
                reached = 3
        counts = by_channel.setdefault(p.channel, [0, 0, 0])
        for k in range(reached):
            overall[k] += 1
            counts[k] += 1
    return overall, by_channel


def test_funnel_counts_match_the_journeys(
    live: LiveServer, project: NewProject, data: list[Person]
) -> None:
    body = {
        "steps": ["app_install", "sign_up", {"event": "export_video", "name": "exported"}],
        "date_from": START.isoformat(),
        "date_to": END.isoformat(),
        "window": 7,
        "window_unit": "day",
        "breakdown": {"kind": "column", "name": "channel"},
    }
    r = post(live, "funnel", body, project.secret_key)
    assert r.status_code == 200, r.text
    got = r.json()
    overall, by_channel = expected_funnel(data)
    assert overall[2] > 0 and overall[1] > overall[2], "the journeys exercise every step"
    assert [s["count"] for s in got["steps"]] == overall
    assert [s["name"] for s in got["steps"]] == ["app_install", "sign_up", "exported"]
    assert got["steps"][2]["conversion_from_first"] == pytest.approx(overall[2] / overall[0])
    assert got["steps"][2]["conversion_from_previous"] == pytest.approx(overall[2] / overall[1])
    assert {b["value"]: [s["count"] for s in b["steps"]] for b in got["breakdowns"]} == by_channel
    assert set(got["steps"][1]) >= {
        "index", "name", "count", "conversion_from_first", "conversion_from_previous",
        "median_seconds_from_previous", "average_seconds_from_previous",
        "median_seconds_from_first",
    }  # fmt: skip

    # a shorter window loses the slow converters, including the one exactly at 7 days
    one_day = post(
        live, "funnel", {**body, "window": 24, "window_unit": "hour"}, project.secret_key
    )
    expected = [
        p
        for p in data
        if in_range(p.install) and p.sign_up and p.sign_up - p.install <= timedelta(hours=24)
    ]
    assert one_day.json()["steps"][1]["count"] == len(expected) < overall[1]


def test_funnel_views_time_to_convert_and_trends_match_the_journeys(
    live: LiveServer, project: NewProject, data: list[Person]
) -> None:
    body: dict[str, Any] = {
        "steps": ["app_install", "sign_up", "export_video"],
        "date_from": START.isoformat(),
        "date_to": END.isoformat(),
        "window": 7,
    }
    # each person has one install, so their chain is install -> sign up -> export as generated
    done = [
        p for p in data
        if in_range(p.install) and p.sign_up and p.export
        and p.install <= p.sign_up <= p.export <= p.install + WINDOW
    ]  # fmt: skip
    assert len(done) > 3
    for start, bins in [(0, 5), (1, 3)]:
        r = post(live, "funnel", {**body, "view": "time_to_convert", "from_step": start,
                                  "bins": bins}, project.secret_key)  # fmt: skip
        assert r.status_code == 200, r.text
        got = r.json()
        us = [
            (p.export - (p.install if start == 0 else p.sign_up)) // timedelta(microseconds=1)
            for p in done
            if p.export and p.sign_up
        ]
        lo, hi = min(us), max(us)
        width = max(1, -(-(hi - lo) // bins))
        counts = Counter(min(bins - 1, (d - lo) // width) for d in us)
        assert [b["count"] for b in got["bins"]] == [counts[i] for i in range(bins)]
        assert [b["lower_seconds"] for b in got["bins"]] == [(lo + i * width) / 1e6
                                                             for i in range(bins)]  # fmt: skip
        assert got["converted"] == len(us)
        assert got["median_seconds"] == pytest.approx(statistics.median(us) / 1e6)
        assert got["average_seconds"] == pytest.approx(statistics.fmean(us) / 1e6)

    r = post(live, "funnel", {**body, "view": "trends", "interval": "day"}, project.secret_key)
    assert r.status_code == 200, r.text
    got = r.json()
    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    entered = Counter(day(p.install) for p in data if in_range(p.install))
    converted = Counter(day(p.install) for p in done)
    assert got["labels"] == [d.isoformat() for d in days]
    assert got["entered"] == [entered[d] for d in days]
    assert got["converted"] == [converted[d] for d in days]
    assert sum(got["converted"]) == len(done)


# -- retention --------------------------------------------------------------------------------------


def test_retention_matrix_matches_the_journeys(
    live: LiveServer, project: NewProject, data: list[Person]
) -> None:
    first, last = START, START + timedelta(days=6)
    body = {
        "target_event": "sign_up",
        "return_event": "edit_video",
        "period": "day",
        "date_from": first.isoformat(),
        "date_to": last.isoformat(),
    }
    r = post(live, "retention", body, project.secret_key)
    assert r.status_code == 200, r.text
    got = r.json()
    days = [first + timedelta(days=i) for i in range(7)]
    expected = []
    for i, d in enumerate(days):
        cohort = [p for p in data if p.sign_up and day(p.sign_up) == d]
        retained = [len(cohort)]
        for n in range(1, 7 - i):
            retained.append(
                sum(1 for p in cohort if any(day(t) == d + timedelta(days=n) for t in p.edits))
            )
        expected.append({"label": d.isoformat(), "size": len(cohort), "retained": retained})
    assert sum(c["size"] for c in expected) > 10
    assert [{k: c[k] for k in ("label", "size", "retained")} for c in got["cohorts"]] == expected
    assert got["period"] == "day"
    sizes = sum(c["size"] for c in expected)
    assert got["weighted_mean"][0] == pytest.approx(1.0)
    day1 = sum(c["retained"][1] for c in expected if len(c["retained"]) > 1)
    sizes1 = sum(c["size"] for c in expected if len(c["retained"]) > 1)
    assert got["weighted_mean"][1] == pytest.approx(day1 / sizes1) and sizes >= sizes1
    c0 = got["cohorts"][0]
    assert c0["rates"] == [v / c0["size"] for v in c0["retained"]]

    # `periods` instead of date_from: the range holds that many periods, ending at date_to
    r = post(live, "retention", {**body, "date_from": None, "periods": 3}, project.secret_key)
    assert [c["label"] for c in r.json()["cohorts"]] == [d.isoformat() for d in days[4:]]
    weekly = {**body, "period": "week", "date_from": None, "periods": 2, "date_to": "2026-03-11"}
    r = post(live, "retention", weekly, project.secret_key)
    assert [c["label"] for c in r.json()["cohorts"]] == ["2026-03-02", "2026-03-09"]


# -- trends and lifecycle ---------------------------------------------------------------------------


def test_trends_by_channel_and_daily_persons(
    live: LiveServer, project: NewProject, data: list[Person]
) -> None:
    body = {
        "series": ["export_video", {"event": "edit_video", "math": "dau"}],
        "date_from": START.isoformat(),
        "date_to": END.isoformat(),
        "breakdown": {"kind": "column", "name": "channel"},
    }
    r = post(live, "trends", body, project.secret_key)
    assert r.status_code == 200, r.text
    days = [START + timedelta(days=i) for i in range(14)]
    lines = {(s["series_index"], s["breakdown_value"]): s for s in r.json()["series"]}
    for ch in CHANNELS:
        exports = Counter(day(p.export) for p in data if p.export and p.channel == ch)
        line = lines[(0, ch)]
        assert line["labels"] == [d.isoformat() for d in days]
        assert line["values"] == [exports[d] for d in days]
        assert line["total"] == sum(exports[d] for d in days)
        assert line["label"] == "export_video (total)" and line["compare"] is None
        editors = Counter(d for p in data if p.channel == ch for d in {day(t) for t in p.edits})
        assert lines[(1, ch)]["values"] == [editors[d] for d in days]


def test_lifecycle_matches_the_journeys(
    live: LiveServer, project: NewProject, data: list[Person]
) -> None:
    first, last = START + timedelta(days=1), START + timedelta(days=8)
    body = {"event": "edit_video", "date_from": first.isoformat(), "date_to": last.isoformat()}
    r = post(live, "lifecycle", body, project.secret_key)
    assert r.status_code == 200, r.text
    active: dict[date, set[str]] = {}
    first_seen: dict[str, date] = {}
    for p in data:
        for t in p.edits:
            active.setdefault(day(t), set()).add(p.distinct_id)
            first_seen[p.distinct_id] = min(day(t), first_seen.get(p.distinct_id, day(t)))
    expected: dict[str, list[int]] = {s: [] for s in ("new", "returning", "resurrecting")}
    expected["dormant"] = []
    d = first
    while d <= last:
        now, before = active.get(d, set()), active.get(d - timedelta(days=1), set())
        new = {x for x in now if first_seen[x] == d}
        expected["new"].append(len(new))
        expected["returning"].append(len(now & before))
        expected["resurrecting"].append(len(now - before - new))
        expected["dormant"].append(-len(before - now))
        d += timedelta(days=1)
    got = r.json()
    assert got["labels"] == [(first + timedelta(days=i)).isoformat() for i in range(8)]
    assert {k: got[k] for k in expected} == expected
    assert sum(expected["resurrecting"]) > 0 and sum(expected["returning"]) > 0


def test_dates_default_to_the_last_30_local_days_of_the_project(live: LiveServer) -> None:
    tz = "America/Los_Angeles"
    other = create_project(live.runtime.state, "西雅图", timezone=tz)
    zone = ZoneInfo(tz)
    today = datetime.now(zone).date()
    first = today - timedelta(days=29)
    start = datetime.combine(first, time(0), tzinfo=zone)
    times = [
        datetime.now(zone) - timedelta(minutes=1),
        start + timedelta(hours=1),
        start - timedelta(hours=1),  # the day before the range
    ]
    batch = [
        {"event": "open", "distinct_id": f"d{i}", "timestamp": t.isoformat()}
        for i, t in enumerate(times)
    ]
    assert live.post_events(other.project.write_key, {"batch": batch}).status_code == 200
    r = post(live, "trends", {"series": ["open"]}, other.secret_key)
    assert r.status_code == 200, r.text
    line = r.json()["series"][0]
    assert line["labels"][0] == first.isoformat() and line["labels"][-1] == today.isoformat()
    assert len(line["labels"]) == 30 and line["total"] == 2


# -- authentication and errors ----------------------------------------------------------------------


def test_authentication_is_that_of_the_sql_endpoint(live: LiveServer, project: NewProject) -> None:
    body = {"event": "edit_video"}
    assert post(live, "lifecycle", body, None).status_code == 401
    assert "secret key" in post(live, "lifecycle", body, None).json()["error"]
    assert post(live, "lifecycle", body, "ysk_nope").status_code == 401
    assert post(live, "lifecycle", body, project.project.write_key).status_code == 401
    # authentication comes before validation: no hints about the body to strangers
    assert post(live, "funnel", {"steps": 5}, "ysk_nope").status_code == 401

    other = create_project(live.runtime.state, "other")
    own = post(live, "lifecycle", {**body, "project": project.project.name}, project.secret_key)
    assert own.status_code == 200
    r = post(live, "lifecycle", {**body, "project": "other"}, project.secret_key)
    assert r.status_code == 403 and "短视频剪辑" in r.json()["error"]

    admin = ensure_admin_token(live.runtime.settings.admin_token_file)
    r = post(live, "lifecycle", body, admin)
    assert r.status_code == 404 and "several projects" in r.json()["error"]
    assert post(live, "lifecycle", {**body, "project": "nope"}, admin).status_code == 404
    assert post(live, "lifecycle", {**body, "project": "other"}, admin).status_code == 200
    assert post(live, "lifecycle", body, other.secret_key).status_code == 200


BAD_FIELDS: list[tuple[str, Any, str]] = [
    ("funnel", {"steps": ["a", 5]}, "steps.1.event"),
    ("funnel", {"steps": ["a", {"event": "b", "filters": [{"op": "eq"}]}]}, "steps.1.filters.0.field"),
    ("funnel", {"steps": ["a"], "window": 0}, "window"),
    ("funnel", {"steps": ["a"], "order": "sideways"}, "order"),
    ("funnel", {"steps": []}, "steps"),
    ("funnel", {"steps": ["a"], "windw": 3}, "windw"),
    ("funnel", {"steps": ["a"], "breakdown": {"kind": "column", "name": "city"}}, "breakdown"),
    ("funnel", {"steps": ["a"], "date_from": "yesterday"}, "date_from"),
    ("funnel", {"steps": ["a", "b"], "view": "histogram"}, "view"),
    ("funnel", {"steps": ["a", "b"], "view": "time_to_convert", "bins": 0}, "bins"),
    ("funnel", {"steps": ["a", "b"], "view": "trends", "interval": "year"}, "interval"),
    ("retention", {"return_event": "b"}, "target_event"),
    ("retention", {"target_event": "a", "return_event": "b", "periods": 0}, "periods"),
    ("trends", {"series": [{"event": "a", "math": "mode"}]}, "series.0.math"),
    ("trends", {"series": ["a"], "filters": [{"field": {"name": "x"}, "op": "gt", "value": "big"}]}, "filters.0"),
    ("lifecycle", {"event": "a", "interval": "hour"}, "interval"),
]  # fmt: skip


def test_bad_fields_are_422_naming_the_field(live: LiveServer, project: NewProject) -> None:
    for kind, body, name in BAD_FIELDS:
        r = post(live, kind, body, project.secret_key)
        assert r.status_code == 422, (body, r.text)
        got = r.json()
        assert got["field"] == name, (body, got)
        assert f"field {name!r}" in got["error"], got
        assert got["errors"][0]["field"] == name and got["errors"][0]["message"], got


def test_refused_queries_and_unreadable_bodies_are_400(
    live: LiveServer, project: NewProject
) -> None:
    key = project.secret_key
    r = post(
        live, "lifecycle", {"event": "a", "date_from": "2026-03-09", "date_to": "2026-03-01"}, key
    )
    assert r.status_code == 400 and "before date_from" in r.json()["error"]
    r = post(live, "trends", {"series": [{"event": "a", "math": "wau"}], "interval": "week"}, key)
    assert r.status_code == 400 and "interval 'day'" in r.json()["error"]
    both = {"target_event": "a", "return_event": "b", "periods": 3, "date_from": "2026-03-01"}
    r = post(live, "retention", both, key)
    assert r.status_code == 422 and "either periods or date_from" in r.json()["error"]
    r = httpx.post(
        f"{live.url}/api/v1/analytics/funnel",
        content=b'{"steps": [',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.post(
        f"{live.url}/api/v1/analytics/funnel",
        content=b'{"steps": ["' + b"x" * 1_100_000 + b'"]}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = post(live, "funnel", ["a", "b"], key)
    assert r.status_code == 422 and "JSON object" in r.json()["error"]
    ttc = {"steps": ["a", "b"], "view": "time_to_convert", "to_step": 3}
    r = post(live, "funnel", ttc, key)
    assert r.status_code == 400 and "from_step < to_step" in r.json()["error"]
    r = post(live, "funnel", {**ttc, "to_step": None, "order": "unordered"}, key)
    assert (
        r.status_code == 400 and "unordered funnels have no conversion times" in r.json()["error"]
    )


def test_openapi_documents_the_request_fields(live: LiveServer) -> None:
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert {
        "/api/v1/analytics/" + k for k in ("funnel", "retention", "trends", "lifecycle")
    } <= set(spec["paths"])
    funnel_schema = spec["components"]["schemas"]["FunnelRequest"]["properties"]
    assert "description" in funnel_schema["window"] and "description" in funnel_schema["order"]


def test_exclusions_attribution_and_formulas_reach_the_analyses(
    live: LiveServer, project: NewProject
) -> None:
    def ev(name: str, who: str, hour: int, minute: int, screen: str) -> dict[str, Any]:
        at = local(START, hour, minute).isoformat()
        return {"event": name, "distinct_id": who, "timestamp": at, "properties": {"s": screen}}

    batch = [
        # x1 closes the app between installing and signing up; x2 only after signing up
        ev("app_install", "x1", 10, 0, "home"), ev("close_app", "x1", 10, 30, "home"),
        ev("sign_up", "x1", 11, 0, "form"),
        ev("app_install", "x2", 10, 0, "home"), ev("sign_up", "x2", 11, 0, "form"),
        ev("close_app", "x2", 11, 30, "form"),
    ]  # fmt: skip
    assert live.post_events(project.project.write_key, {"batch": batch}).status_code == 200
    key, day1 = project.secret_key, START.isoformat()
    body: dict[str, Any] = {"steps": ["app_install", "sign_up"], "date_from": day1, "date_to": day1}
    plain = post(live, "funnel", body, key).json()
    assert [s["count"] for s in plain["steps"]] == [2, 2]
    excluded = {**body, "exclusions": [{"event": "close_app", "from_step": 0, "to_step": 1}]}
    assert [s["count"] for s in post(live, "funnel", excluded, key).json()["steps"]] == [1, 1]
    by_screen = {**body, "breakdown": {"name": "s"}}
    first = post(live, "funnel", by_screen, key).json()["breakdowns"]
    last = post(live, "funnel", {**by_screen, "breakdown_attribution": "last_touch"}, key).json()
    assert [b["value"] for b in first] == ["home"]
    assert [b["value"] for b in last["breakdowns"]] == ["form"]

    trend = {"series": ["sign_up", "close_app"], "formula": "A + B * 10"}
    r = post(live, "trends", {**trend, "date_from": day1, "date_to": day1}, key)
    assert r.status_code == 200, r.text
    assert [s["values"] for s in r.json()["formula"]] == [[2 + 2 * 10]]
    r = post(live, "trends", {**trend, "formula": "A + C"}, key)
    assert r.status_code == 400 and "C" in r.json()["error"]
