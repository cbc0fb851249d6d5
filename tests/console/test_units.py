"""The console's building blocks called directly: catalogs, locale formats, users, snippets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from yunying.console.i18n import LOCALE_DIR, Formatter, pick_locale, translations
from yunying.console.snippets import snippets
from yunying.console.users import (
    InvalidUser,
    authenticate,
    can,
    create_user,
    end_session,
    normalise_role,
    session_for,
    set_password,
    start_session,
    update_user,
)
from yunying.errors import Conflict
from yunying.runtime import Runtime


def test_every_message_has_a_chinese_translation() -> None:
    template = read_po((LOCALE_DIR / "messages.pot").open("rb"))
    zh = read_po((LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb"))
    ids = {m.id for m in template if m.id}
    missing = sorted(m for m in ids if not (zh.get(m) and zh.get(m).string))  # type: ignore[union-attr]
    assert not missing, f"run `make i18n` and translate: {missing}"
    assert translations("zh_CN").gettext("Dashboard") == "数据看板"
    assert translations("en").gettext("Dashboard") == "Dashboard"


def test_templates_strings_are_in_the_catalog() -> None:
    """A string added to a template without `make i18n` would show in English to everyone."""
    import re

    template = read_po((LOCALE_DIR / "messages.pot").open("rb"))
    ids = {m.id for m in template if m.id}
    root = Path(LOCALE_DIR).parent / "templates"
    for path in root.glob("*.html"):
        for text in re.findall(r'_\("([^"]+)"', path.read_text()):
            assert text in ids, f"{path.name}: {text!r} is not extracted: run `make i18n`"


def test_locale_formats() -> None:
    zh, en = Formatter("zh_CN"), Formatter("en")
    assert zh.money(1234.5) == "¥1,234.50"
    assert en.money(1234.5) == "CN¥1,234.50"
    assert zh.percent(0.1234) == "12.3%"
    assert zh.compact(123456) == "12.3万"
    assert en.compact(123456) == "123.5K"
    assert zh.date(date(2026, 11, 22)) == "2026年11月22日"
    assert en.date(date(2026, 11, 22)) == "Nov 22, 2026"
    assert zh.change(0.05) == "+5.0%" and zh.change(-0.05) == "-5.0%"
    # instants are shown in the project's time zone: 16:30 UTC is 00:30 the next day in Shanghai
    instant = datetime(2026, 11, 22, 16, 30, tzinfo=UTC)
    assert "11月23日" in Formatter("zh_CN", "Asia/Shanghai").datetime(instant)
    assert "Nov 22" in Formatter("en", "America/New_York").datetime(instant)
    assert pick_locale("en-US") == "en" and pick_locale("zh-TW") == "zh_CN"
    assert pick_locale("fr") == "zh_CN" and pick_locale(None) == "zh_CN"


def test_users_roles_and_sessions(runtime: Runtime) -> None:
    state = runtime.state
    user = create_user(state, "lin", "long-enough-pw", "director")
    assert user.role == "admin" and can("admin", "keys") and not can("analyst", "keys")
    assert can("operator", "activities") and not can("viewer", "explore")
    with pytest.raises(Conflict):
        create_user(state, "lin", "long-enough-pw")
    with pytest.raises(InvalidUser):
        create_user(state, "short", "pw")
    with pytest.raises(InvalidUser):
        normalise_role("boss")
    with runtime.state.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM console_users").scalar_one()
    assert stored.startswith("$argon2id$") and "long-enough-pw" not in stored
    assert authenticate(state, "lin", "wrong-password") is None
    assert authenticate(state, "nobody", "long-enough-pw") is None
    assert authenticate(state, "lin", "long-enough-pw") is not None
    token, session = start_session(state, user)
    assert session_for(state, token) is not None
    assert session_for(state, token + "x") is None
    with runtime.state.connect() as conn:
        hashes = [r[0] for r in conn.exec_driver_sql("SELECT token_hash FROM console_sessions")]
    assert token not in hashes  # only the digest is stored
    set_password(state, "lin", "another-password")  # ends every session
    assert session_for(state, token) is None
    token, session = start_session(state, user)
    update_user(state, "lin", active=False)
    assert session_for(state, token) is None
    assert authenticate(state, "lin", "another-password") is None
    update_user(state, "lin", active=True)
    token, session = start_session(state, user)
    end_session(state, session.token_hash)
    assert session_for(state, token) is None


def test_snippets_fill_host_and_key() -> None:
    items = snippets("http://127.0.0.1:8000", "ywk_abc", "短视频")
    keys = {s.key for s in items}
    assert {"native", "posthog-python", "segment", "rudderstack", "mixpanel", "amplitude",
            "sensors"} <= keys  # fmt: skip
    for s in items:
        assert "ywk_abc" in s.code, s.key
        assert "127.0.0.1:8000" in s.code, s.key
    sensors = next(s for s in items if s.key == "sensors")
    assert "project=%E7%9F%AD%E8%A7%86%E9%A2%91&token=ywk_abc" in sensors.code
    mixpanel = next(s for s in items if s.key == "mixpanel")
    assert "events_url" in mixpanel.code  # plain http needs full URLs for the Mixpanel SDK
    https = next(s for s in snippets("https://y.example.com", "k", "p") if s.key == "mixpanel")
    assert 'api_host="y.example.com"' in https.code


@pytest.mark.postgres
def test_users_on_postgresql(fresh_postgres_url: str) -> None:
    """Migration 0007 and the user functions on PostgreSQL, the scale-out state engine."""
    from yunying.state import open_state

    state = open_state(fresh_postgres_url)
    try:
        user = create_user(state, "wang", "long-enough-pw", "operator")
        assert authenticate(state, "wang", "long-enough-pw") == user
        token, _ = start_session(state, user)
        found = session_for(state, token)
        assert found is not None and found.user.role == "operator"
    finally:
        state.dispose()


def test_page_cache_serves_stale_values_while_refreshing() -> None:
    import threading
    import time

    from yunying.console.cache import PageCache

    cache = PageCache(stale_seconds=60)
    calls: list[int] = []

    def compute(value: int, delay: float = 0.0) -> int:
        time.sleep(delay)
        calls.append(value)
        return value

    assert cache.get("k", 1, lambda: compute(1)) == 1
    assert cache.get("k", 1, lambda: compute(99)) == 1 and calls == [1]  # fresh hit
    # new data (stamp 2): the old value now, the new one computed in the background
    assert cache.get("k", 2, lambda: compute(2, 0.2)) == 1
    deadline = time.monotonic() + 10
    while cache.get("k", 2, lambda: compute(3)) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert calls == [1, 2]
    # two requests for a missing key compute it once
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("m", 1, lambda: compute(7, 0.3))))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [7, 7, 7] and calls.count(7) == 1
    # too old to serve: computed again right away
    stale = PageCache(stale_seconds=0)
    stale.get("k", 1, lambda: 1)
    assert stale.get("k", 2, lambda: 2) == 2
