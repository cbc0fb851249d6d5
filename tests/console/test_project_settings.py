"""Project settings: an admin renames the project and changes its time zone from the console.

Runs its own demo installation (module fixtures), so the renamed project cannot touch the other
console tests; everything goes through the real server.
"""

from __future__ import annotations

from urllib.parse import unquote

import httpx

from tests.conftest import LiveServer
from tests.console.conftest import csrf_of, login
from yunying.console.web import PROJECT_COOKIE
from yunying.state import create_project, list_projects


def _change(client: httpx.Client, **fields: str) -> httpx.Response:
    token = csrf_of(client.get("/settings/project").text)
    return client.post("/settings/project", data={"csrf_token": token, **fields})


def test_admin_renames_the_project_and_changes_its_time_zone(console_live: LiveServer) -> None:
    state = console_live.runtime.state
    create_project(state, "另一个应用")
    admin = login(console_live.url, "admin")
    page = admin.get("/settings/project").text
    assert "data-project-form" in page and '<option value="Asia/Shanghai">' in page

    # refused changes are shown under their field, nothing is changed
    for fields, field in [
        ({"name": "demo", "timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "  ", "timezone": "UTC"}, "name"),
        ({"name": "另一个应用", "timezone": "UTC"}, "name"),
    ]:
        bad = _change(admin, **fields)
        assert bad.status_code == 400, fields
        assert f'data-field-error="{field}"' in bad.text, fields
    assert [p.timezone for p in list_projects(state) if p.name == "demo"] == ["Asia/Shanghai"]

    ok = _change(admin, name="剪辑 Pro", timezone="America/New_York")
    assert ok.status_code == 303
    assert unquote(ok.cookies[PROJECT_COOKIE]) == "剪辑 Pro"  # still the chosen project
    changed = {p.name: p.timezone for p in list_projects(state)}
    assert changed == {"剪辑 Pro": "America/New_York", "另一个应用": "Asia/Shanghai"}
    again = admin.get("/settings/project").text
    assert "America/New_York" in again and "剪辑 Pro" in again
    assert admin.get("/").status_code == 200  # the dashboard under the new time zone
    # choosing a project by a Chinese name (query string, then the cookie) works
    other = admin.get("/settings/project", params={"project": "另一个应用"})
    assert other.status_code == 200 and 'value="另一个应用"' in other.text
    assert 'value="另一个应用"' in admin.get("/settings/project").text


def test_only_admins_change_the_project(console_live: LiveServer) -> None:
    analyst = login(console_live.url, "analyst")
    token = csrf_of(analyst.get("/").text)
    r = analyst.post(
        "/settings/project", data={"csrf_token": token, "name": "x", "timezone": "UTC"}
    )
    assert r.status_code == 403
    admin = login(console_live.url, "admin")
    no_token = admin.post("/settings/project", data={"name": "x", "timezone": "UTC"})
    assert no_token.status_code == 403
    assert "x" not in {p.name for p in list_projects(console_live.runtime.state)}
