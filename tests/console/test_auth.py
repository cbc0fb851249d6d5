"""Plain HTTP tests of the console: login, CSRF, role limits, languages, CSV, and that the API
and SDK routes next to it keep working."""

from __future__ import annotations

import re

import httpx

from tests.conftest import LiveServer
from tests.console.conftest import PASSWORD, console_of, csrf_of, login

PAGES = (
    "/",
    "/trends",
    "/funnels",
    "/retention",
    "/lifecycle",
    "/settings/project",
    "/settings/team",
)


def test_pages_need_a_login(console_live: LiveServer) -> None:
    for path in PAGES:
        r = httpx.get(console_live.url + path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=")


def test_wrong_password_is_refused(console_live: LiveServer) -> None:
    client = httpx.Client(base_url=console_live.url, follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf_token": token, "username": "admin", "password": "nope"})
    assert r.status_code == 401
    assert "用户名或密码错误" in r.text
    assert "yy_session" not in r.cookies
    r = client.post(
        "/login", data={"csrf_token": csrf_of(r.text), "username": "ghost", "password": PASSWORD}
    )
    assert r.status_code == 401


def test_login_without_csrf_is_403(console_live: LiveServer) -> None:
    client = httpx.Client(base_url=console_live.url, follow_redirects=False)
    client.get("/login")
    r = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert r.status_code == 403
    r = client.post(
        "/login", data={"csrf_token": "forged", "username": "admin", "password": PASSWORD}
    )
    assert r.status_code == 403


def test_session_cookie_flags_and_logout(console_live: LiveServer) -> None:
    client = httpx.Client(base_url=console_live.url, follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login",
        data={"csrf_token": token, "username": "analyst", "password": PASSWORD, "next": "//evil"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("yy_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain http here; set over https
    page = client.get("/")
    assert page.status_code == 200
    assert client.post("/logout", data={}).status_code == 403  # no CSRF token
    assert client.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert client.get("/").status_code == 303  # the session is gone


def test_roles_limit_pages(console_live: LiveServer) -> None:
    expected = {
        "admin": dict.fromkeys(PAGES, 200),
        "operator": {**dict.fromkeys(PAGES, 200), "/settings/project": 403, "/settings/team": 403},
        "analyst": {**dict.fromkeys(PAGES, 200), "/settings/project": 403, "/settings/team": 403},
        "viewer": {"/": 200, "/lifecycle": 200, "/trends": 403, "/funnels": 403,
                   "/retention": 403, "/settings/project": 403, "/settings/team": 403},
    }  # fmt: skip
    for role, pages in expected.items():
        client = login(console_live.url, role)
        got = {path: client.get(path).status_code for path in pages}
        assert got == pages, role


def test_csv_download_and_its_permission(console_live: LiveServer) -> None:
    analyst = login(console_live.url, "analyst")
    for path in ("/", "/trends", "/funnels", "/retention", "/lifecycle"):
        r = analyst.get(path, params={"format": "csv"})
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        text = r.content.decode("utf-8-sig")
        assert len(text.splitlines()) > 2, path
    header = analyst.get("/funnels", params={"format": "csv"}).content.decode("utf-8-sig")
    assert header.splitlines()[0].startswith("breakdown,step,event,persons")
    viewer = login(console_live.url, "viewer")
    assert viewer.get("/", params={"format": "csv"}).status_code == 403
    assert "下载 CSV" not in viewer.get("/").text


def test_forms_need_the_session_csrf_token(console_live: LiveServer) -> None:
    admin = login(console_live.url, "admin")
    r = admin.post("/settings/team", data={"action": "create", "username": "x1", "role": "viewer"})
    assert r.status_code == 403
    page = admin.get("/settings/team")
    r = admin.post(
        "/settings/team",
        data={"csrf_token": csrf_of(page.text), "action": "create", "username": "newbie",
              "role": "analyst"},
    )  # fmt: skip
    assert r.status_code == 200
    password = re.search(r'<code class="password">([^<]+)</code>', r.text)
    assert password
    newbie = login(console_live.url, "newbie", password.group(1))
    assert newbie.get("/trends").status_code == 200
    assert newbie.get("/settings/team").status_code == 403
    operator = login(console_live.url, "operator")
    token = csrf_of(operator.get("/").text)
    r = operator.post(
        "/settings/team",
        data={"csrf_token": token, "action": "role", "username": "viewer", "role": "admin"},
    )
    assert r.status_code == 403


def test_language_switch_and_locale_formats(console_live: LiveServer) -> None:
    client = login(console_live.url, "admin")
    zh = client.get("/")
    assert "数据看板" in zh.text and "新增用户" in zh.text and 'lang="zh-CN"' in zh.text
    assert re.search(r"¥[\d,]+\.\d\d", zh.text)
    en = client.get("/", params={"lang": "en"})
    assert "Dashboard" in en.text and "New users" in en.text and "数据看板" not in en.text
    assert "CN¥" in en.text
    assert client.cookies.get("yy_lang") == "en"
    assert "Trends" in client.get("/trends").text  # the cookie keeps the choice
    client.get("/", params={"lang": "zh_CN"})
    assert "趋势分析" in client.get("/trends").text


def test_bad_parameters_show_an_error_state(console_live: LiveServer) -> None:
    client = login(console_live.url, "analyst")
    r = client.get("/funnels", params={"step": "app_install"})
    assert r.status_code == 400 and 'data-state="error"' in r.text
    r = client.get("/trends", params={"from": "yesterday"})
    assert r.status_code == 200 and "无法识别日期" in r.text
    r = client.get("/trends", params={"event": "no_such_event"})
    assert r.status_code == 200  # an unknown event is a flat line, not an error


def test_api_and_sdk_routes_still_work(console_live: LiveServer) -> None:
    from yunying.state import get_project

    assert httpx.get(console_live.url + "/health").status_code == 200
    project = get_project(console_live.runtime.state, "demo")
    r = console_live.post_events(project.write_key, {"event": "sign_up", "distinct_id": "c-1"})
    assert r.status_code == 200
    r = httpx.post(
        console_live.url + "/capture/",
        json={"api_key": project.write_key, "event": "x", "distinct_id": "c-2"},
    )
    assert r.status_code == 200
    assert httpx.get(console_live.url + "/static/console/plotly.min.js").status_code == 200
    assert httpx.get(console_live.url + "/static/console/nope.js").status_code == 404


def test_a_long_analysis_answers_with_a_computing_page(console_live: LiveServer) -> None:
    import time

    console = console_of(console_live)
    client = login(console_live.url, "analyst")
    console.cache.clear()
    console.compute_wait = 0.0
    try:
        r = client.get("/lifecycle", params={"interval": "week"})
        assert r.status_code == 200 and 'data-state="computing"' in r.text
        assert '<meta http-equiv="refresh"' in r.text and "正在计算" in r.text
        deadline = time.monotonic() + 120
        while 'data-state="computing"' in r.text:  # what the page's reload does
            assert time.monotonic() < deadline
            time.sleep(0.2)
            r = client.get("/lifecycle", params={"interval": "week"})
        assert "lifecycle-chart" in r.text
    finally:
        console.compute_wait = None


def test_pages_send_security_headers(console_live: LiveServer) -> None:
    client = login(console_live.url, "admin")
    for path in ("/", "/settings/team"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        assert "onchange=" not in r.text and "onclick=" not in r.text
    login_page = httpx.get(console_live.url + "/login")
    assert "frame-ancestors 'none'" in login_page.headers["content-security-policy"]
