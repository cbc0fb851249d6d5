"""Audience and activity pages over plain HTTP: every page answers, role limits (403 on POST for
analyst and viewer), CSRF on the new forms, the rule editor's preview and validation, creating
and starting an activity, the kill switch confirmation and deciding a held review."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.conftest import LiveServer
from tests.console.conftest import console_of, csrf_of, demo_people, login
from yunying.audience import definitions
from yunying.audience import segments as S
from yunying.audience.rules import InvalidRule
from yunying.audience.segment_tables import segment_personas
from yunying.errors import M_
from yunying.state import get_project

RULE = "type: event\nevent: edit_video\ncount: at_least\ntimes: 1\nwindow: {last_days: 30}\n"


def pages(seeded: dict[str, Any]) -> list[str]:
    seg, act = seeded["segment"], seeded["activity"]
    return [
        "/segments",
        f"/segments/{seg}",
        "/segments/new",
        f"/segments/{seg}/edit",
        "/audience/layers",
        "/persons",
        "/activities",
        "/activities/new?template=referral",
        f"/activities/{act}",
        f"/activities/{act}/report",
        "/reviews",
        "/blocklist",
    ]


def test_pages_and_csv(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "admin")
    for lang in ("zh_CN", "en"):
        for path in pages(seeded):
            sep = "&" if "?" in path else "?"
            r = client.get(f"{path}{sep}lang={lang}")
            assert r.status_code == 200, (path, r.text[:300])
            assert 'data-state="error"' not in r.text and "persona could not" not in r.text, path
    for path in ("/segments", f"/segments/{seeded['segment']}", "/audience/layers",
                 "/audience/layers?table=stages", "/activities", f"/activities/{seeded['activity']}",
                 f"/activities/{seeded['activity']}/report", "/reviews"):  # fmt: skip
        sep = "&" if "?" in path else "?"
        r = client.get(f"{path}{sep}format=csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), path
    person = demo_people(console_of(console_live).runtime, 1)[0][0]
    r = client.get("/persons", params={"q": person})
    assert r.status_code == 200 and 'id="profile"' in r.text
    r = client.get("/persons", params={"q": "nobody-has-this-id"})
    assert 'data-state="not-found"' in r.text


def test_roles(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    seg, act = seeded["segment"], seeded["activity"]
    for role in ("analyst", "viewer"):
        client = login(console_live.url, role)
        token = csrf_of(client.get("/segments").text)
        for path, data in (
            ("/segments/save", {"name": "x", "rules": RULE}),
            (f"/segments/{seg}/recompute", {}),
            ("/activities/new", {"spec": "template: gift"}),
            (f"/activities/{act}/state", {"action": "pause"}),
            (f"/reviews/{seeded['reviews'][1]}", {"decision": "approve"}),
            ("/blocklist", {"kind": "device", "value": "emu-1", "reason": "farm"}),
        ):
            r = client.post(path, data={"csrf_token": token, **data})
            assert r.status_code == 403, (role, path)
        assert client.get("/segments/new").status_code == 403
        assert client.get("/activities/new").status_code == 403
        assert client.get("/activities").status_code == 200
        if role == "viewer":
            assert client.get("/activities?format=csv").status_code == 403
            assert client.get("/audience/layers?format=csv").status_code == 403
    viewer = login(console_live.url, "viewer")
    assert viewer.get("/persons").status_code == 403
    assert "data-new-activity" not in viewer.get("/activities").text


def test_forms_need_csrf(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    for path in ("/segments/save", f"/segments/{seeded['segment']}/recompute", "/activities/new",
                 f"/activities/{seeded['activity']}/state", f"/reviews/{seeded['reviews'][1]}"):  # fmt: skip
        assert client.post(path, data={"action": "pause"}).status_code == 403, path
        assert client.post(path, data={"csrf_token": "forged"}).status_code == 403, path


def test_segment_editor(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    token = csrf_of(client.get("/segments/new").text)
    r = client.post("/segments/save", data={"csrf_token": token, "action": "preview",
                                            "name": "editors", "rules": RULE})  # fmt: skip
    assert r.status_code == 200 and "data-preview-size" in r.text
    bad = "type: event\nevent: edit_video\ncount: sometimes\n"
    r = client.post("/segments/save", data={"csrf_token": token, "action": "save",
                                            "name": "bad", "rules": bad})  # fmt: skip
    assert r.status_code == 400 and "rules.count" in r.text
    r = client.post("/segments/save", data={"csrf_token": token, "action": "save",
                                            "name": "editors", "rules": RULE})  # fmt: skip
    assert r.status_code == 303
    detail = client.get(r.headers["location"])
    assert detail.status_code == 200 and 'id="members"' in detail.text
    # the persona stored with the computation, over the 30 days up to it
    assert 'id="persona"' in detail.text and "用户画像（" in detail.text


def test_activity_lifecycle_and_review(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    token = csrf_of(client.get("/activities/new?template=checkin").text)
    r = client.post("/activities/new", data={"csrf_token": token, "template": "checkin",
                                             "spec": "template: checkin\nname: x\n"})  # fmt: skip
    assert r.status_code == 400 and "milestones" in r.text
    form = client.get("/activities/new?template=task").text
    import html
    import re

    spec = html.unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", form, re.S).group(1))  # type: ignore[union-attr]
    r = client.post("/activities/new", data={"csrf_token": token, "template": "task",
                                             "spec": spec, "action": "validate"})  # fmt: skip
    assert r.status_code == 200 and "data-valid" in r.text
    r = client.post("/activities/new", data={"csrf_token": token, "template": "task",
                                             "spec": spec, "action": "start"})  # fmt: skip
    assert r.status_code == 303
    path = r.headers["location"]
    assert 'data-state-label="running"' in client.get(path).text
    r = client.post(path + "/state", data={"csrf_token": token, "action": "kill"})
    assert r.headers["location"].endswith("error=confirm")
    r = client.post(
        path + "/state", data={"csrf_token": token, "action": "kill", "confirm": "KILL"}
    )
    page = client.get(path).text
    assert 'data-state-label="ended"' in page and "frozen" in page.lower() or "冻结" in page
    review = seeded["reviews"][1]
    r = client.post(f"/reviews/{review}", data={"csrf_token": token, "decision": "deny"})
    assert r.status_code == 303 and r.headers["location"] == "/reviews"
    r = client.post(f"/reviews/{review}", data={"csrf_token": token, "decision": "deny"})
    assert r.headers["location"].endswith("error=decided")


def test_slow_pages_show_the_computing_state(
    console_live: LiveServer, seeded: dict[str, Any]
) -> None:
    """With no time to wait, a cold 用户分层 page and a segment's persona (none stored with its
    computation, as after an upgrade) answer "computing"."""
    console = console_of(console_live)
    client = login(console_live.url, "analyst")
    with console_live.runtime.state.begin() as conn:
        conn.execute(segment_personas.delete())
    console.cache.clear()
    console.compute_wait = 0.0
    try:
        for path in ("/audience/layers?interval=month", f"/segments/{seeded['segment']}"):
            r = client.get(path)
            assert r.status_code == 200 and 'data-state="computing"' in r.text, path
            assert 'http-equiv="refresh"' in r.text
    finally:
        console.compute_wait = None
    for path in ("/audience/layers?interval=month", f"/segments/{seeded['segment']}"):
        assert 'data-state="computing"' not in client.get(path).text


def test_unknown_ids_answer_404(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    for path in ("/segments/999", "/segments/999/edit", "/activities/999",
                 "/activities/999/report"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404 and 'data-state="not-found"' in r.text, path
    token = csrf_of(client.get("/segments").text)
    r = client.post("/segments/999/recompute", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/segments"


def test_blocklist(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    token = csrf_of(client.get("/blocklist").text)
    r = client.post("/blocklist", data={"csrf_token": token, "kind": "subnet",
                                        "value": "not-a-subnet", "reason": "x"})  # fmt: skip
    assert r.status_code == 400 and 'data-state="invalid"' in r.text
    r = client.post("/blocklist", data={"csrf_token": token, "kind": "subnet",
                                        "value": "203.0.113.77/24", "reason": "proxy pool"})  # fmt: skip
    assert r.status_code == 303
    page = client.get("/blocklist").text
    assert "203.0.113.0/24" in page and "console:operator" in page
    entry = page.split('data-entry="')[1].split('"')[0]
    assert client.get("/blocklist?format=csv").text.count("203.0.113.0/24") == 1
    r = client.post("/blocklist", data={"csrf_token": token, "action": "remove", "entry_id": entry})
    assert r.status_code == 303 and "203.0.113.0/24" not in client.get("/blocklist").text


def test_refused_saves_name_their_field(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    """A taken name is reported under the name, a rule reading its own segment under the rules,
    in the segment and the tag editor alike."""
    client = login(console_live.url, "operator")
    rule = "type: event\nevent: edit_video\n"
    token = csrf_of(client.get("/segments/new").text)
    r = client.post("/segments/save", data={"csrf_token": token, "action": "save",
                                            "name": "剪辑用户", "rules": rule})  # fmt: skip
    assert r.status_code == 400 and 'data-field-error="name"' in r.text
    assert 'data-field-error="rules"' not in r.text
    seg = seeded["segment"]
    own = f"type: segment\nid: {seg}\n"
    r = client.post("/segments/save", data={"csrf_token": token, "action": "save", "segment_id":
                                            str(seg), "name": "剪辑用户", "rules": own})  # fmt: skip
    assert r.status_code == 400 and 'data-field-error="rules"' in r.text
    token = csrf_of(client.get("/tags/new").text)
    r = client.post("/tags/save", data={"csrf_token": token, "action": "save",
                                        "name": "heavy_editor", "rules": rule})  # fmt: skip
    assert r.status_code == 400 and 'data-field-error="name"' in r.text


def test_a_failed_computation_reads_in_the_page_language(
    console_live: LiveServer, seeded: dict[str, Any]
) -> None:
    """The stored failure of a segment keeps its message's template: the Chinese page shows
    the Chinese message, the English page and the API the English one."""
    rt = console_live.runtime
    seg_id = int(seeded["segment"])
    failure = definitions.failure(
        InvalidRule(M_("give either last_days or from/to/after/before, not both"))
    )
    S._record(rt.state, seg_id, datetime.now(UTC), None, failure)
    try:
        client = login(console_live.url, "analyst")
        page = client.get(f"/segments/{seg_id}").text
        assert "last_days 与 from/to/after/before 只能二选一" in page
        assert "give either last_days" not in page
        listing = client.get("/segments").text
        assert 'title="last_days 与 from/to/after/before 只能二选一"' in listing
        english = client.get(f"/segments/{seg_id}?lang=en").text
        assert "give either last_days or from/to/after/before, not both" in english
    finally:
        seg = S.get_segment(rt.state, get_project(rt.state).id, seg_id)
        S._record(rt.state, seg_id, datetime.now(UTC), seg.size or 0, None)


def test_the_persona_downloads_as_csv(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    """The persona on a segment's page comes as CSV too: every dimension value, top event,
    active-day bucket and revenue figure shown, segment next to everyone."""
    import csv
    import io

    seg_id = int(seeded["segment"])
    client = login(console_live.url, "analyst")
    r = client.get(f"/segments/{seg_id}?format=csv&table=persona")
    assert r.status_code == 200 and "persona.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    sections = {row["section"] for row in rows}
    assert {"distribution", "active_days", "revenue"} <= sections
    seg = S.get_segment(console_live.runtime.state, get_project(console_live.runtime.state).id,
                        seg_id)  # fmt: skip
    persons = next(row for row in rows if row["section"] == "revenue" and row["name"] == "persons")
    assert int(persons["segment"]) == seg.size
    buckets = [row for row in rows if row["section"] == "active_days" and row["name"] == "bucket"]
    assert sum(int(b["segment"]) for b in buckets) == seg.size
    assert sum(int(b["everyone"]) for b in buckets) == int(persons["everyone"])
    # viewers download nothing
    viewer = login(console_live.url, "viewer")
    assert "segment,everyone" not in viewer.get(f"/segments/{seg_id}?format=csv&table=persona").text
