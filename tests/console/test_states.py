"""Empty states: an installation without projects, and a project without events."""

from __future__ import annotations

from tests.conftest import LiveServer
from tests.console.conftest import PASSWORD, login
from yunying.console.users import create_user
from yunying.state import create_project


def test_no_project_then_no_events(live: LiveServer) -> None:
    create_user(live.runtime.state, "boss", PASSWORD, "admin")
    client = login(live.url, "boss")
    for path in ("/", "/trends", "/funnels", "/retention", "/lifecycle", "/settings/project"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert 'data-state="no-project"' in r.text and "yunying demo" in r.text, path
    create_project(live.runtime.state, "新应用")
    for path in ("/", "/trends", "/funnels", "/retention", "/lifecycle"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert 'data-state="empty"' in r.text and "yunying import" in r.text, path
        assert "/settings/project" in r.text  # the admin is pointed at the SDK set-up
    assert "ywk_" in client.get("/settings/project").text


def test_login_page_explains_how_to_create_the_first_user(live: LiveServer) -> None:
    import httpx

    r = httpx.get(live.url + "/login")
    assert r.status_code == 200 and "yunying user create admin --role admin" in r.text
