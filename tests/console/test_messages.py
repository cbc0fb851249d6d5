"""Error messages in the reader's language (GitHub issue 7, items 1 and 2).

Feature modules raise errors whose text is a :class:`yunying.errors.Message` (English, what the
HTTP API returns) carrying its template and parameters; console pages render it through the
Babel catalog. Form errors are listed above the form and repeated next to the field they name.
Everything here goes through a real server over HTTP.
"""

from __future__ import annotations

import html
import re
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from pydantic_core import PydanticKnownError

from tests.conftest import LiveServer
from tests.console.conftest import csrf_of, login
from yunying.analytics import DateRange, InvalidQuery
from yunying.audience.rules import InvalidRule, parse_rule
from yunying.console.i18n import LOCALE_DIR, translate, translations
from yunying.console.pydantic_messages import TEMPLATES
from yunying.errors import M_, Message, message_of

SRC = Path(__file__).resolve().parents[2] / "src" / "yunying"
#: Where the console's translatable error messages are raised (the Makefile's MESSAGE_SOURCES).
MESSAGE_SOURCES = ("analytics", "audience", "activities", "risk", "console")


def zh(message: object) -> str:
    return translate(message, translations("zh_CN").gettext)


def en(message: object) -> str:
    return translate(message, translations("en").gettext)


def page(response: httpx.Response) -> str:
    """A page's HTML with entities decoded (quotes in messages are escaped)."""
    return html.unescape(response.text)


def field_error(text: str, field: str) -> str:
    """The text of the inline errors next to ``field`` ('' when there are none)."""
    m = re.search(rf'<ul class="inline-errors" id="error-{re.escape(field)}"[^>]*>(.*?)</ul>',
                  text, re.S)  # fmt: skip
    return re.sub(r"<[^>]+>", " ", m.group(1)) if m else ""


# -- the message objects --------------------------------------------------------------------------


def test_a_message_is_its_english_text_and_keeps_its_template() -> None:
    with pytest.raises(InvalidQuery) as info:
        DateRange(date(2026, 2, 1), date(2026, 1, 1), "UTC")
    err = info.value
    assert str(err) == "date_to 2026-01-01 is before date_from 2026-02-01"  # the API's text
    msg = err.message
    assert (
        isinstance(msg, Message)
        and msg.template == "date_to {date_to} is before date_from {date_from}"
    )
    assert zh(err) == "结束日期 2026-01-01 早于开始日期 2026-02-01"
    assert en(err) == str(err)
    # unmarked text is shown as it is; a translation that does not fit falls back to English
    assert zh("plain text") == "plain text" and zh(ValueError("boom")) == "boom"
    assert zh(Message("{x}", {})) == "{x}"
    assert message_of(InvalidQuery("a", "b")) == str(InvalidQuery("a", "b"))
    nested = M_("{problem}; showing the default range instead.", problem=msg)
    assert zh(nested).startswith("结束日期 2026-01-01")


def test_rule_errors_keep_pydantic_and_custom_templates() -> None:
    with pytest.raises(InvalidRule) as info:
        parse_rule({"type": "event", "event": "x", "count": "at_least", "times": -1,
                    "window": {"last_days": 3, "from": "2026-01-01"}})  # fmt: skip
    errors = {e["field"]: e["message"] for e in info.value.errors}
    assert errors["rules.times"] == "Input should be greater than or equal to 0"  # API text
    assert zh(errors["rules.times"]) == "应大于或等于 0"
    assert zh(errors["rules.window"]) == "last_days 与 from/to/after/before 只能二选一"
    with pytest.raises(InvalidRule) as info:
        parse_rule({"type": "event", "event": "x", "filters": [{"field": {"kind": "column",
                    "name": "city"}}], "window": {"last_days": 3}})  # fmt: skip
    assert "未知字段 'city'" in zh(info.value.errors[0]["message"])


def test_pydantic_templates_are_pydantics_own() -> None:
    for kind, template in TEMPLATES.items():
        ctx = {"min_length": 1, "max_length": 1, "gt": 0, "ge": 0, "lt": 0, "le": 0,
               "expected": "x", "field_type": "x", "actual_length": 1, "error": "e",
               "pattern": "x", "multiple_of": 1, "class_name": "X"}  # fmt: skip
        assert PydanticKnownError(kind, ctx).message_template == template, kind  # type: ignore[arg-type]


def test_every_marked_message_is_in_the_catalog() -> None:
    """An ``M_`` message added without `make i18n` would show in English on Chinese pages."""
    pot = read_po((LOCALE_DIR / "messages.pot").open("rb"))
    zh_po = read_po((LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb"))
    ids = {m.id for m in pot if m.id}
    found = 0
    for folder in MESSAGE_SOURCES:
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            SRC / folder, method_map=[("**.py", "python")], keywords={"M_": None}
        ):
            found += 1
            assert message in ids, f"{folder}: {message!r} is not extracted: run `make i18n`"
            assert zh_po.get(message) and zh_po.get(message).string, message  # type: ignore[union-attr]
    assert found > 50


# -- pages ----------------------------------------------------------------------------------------


def test_analytics_errors_in_both_languages(console_live: LiveServer) -> None:
    client = login(console_live.url, "analyst")
    # an unknown event is a flat line, not an error, with a notice naming it
    r = client.get("/trends", params={"event": "no_such_event", "lang": "zh_CN"})
    assert r.status_code == 200 and "data-notice" in r.text
    assert "本项目从未收到名为 'no_such_event' 的事件" in page(r)
    r = client.get("/trends", params={"event": "no_such_event", "lang": "en"})
    assert "No event named 'no_such_event' was received" in page(r)
    r = client.get("/funnels", params={"window": "abc", "lang": "zh_CN"})
    assert r.status_code == 400 and "转化窗口须为 1 到 90 之间的整数天数" in page(r)
    r = client.get("/funnels", params={"window": "0", "lang": "en"})
    assert "The conversion window is a whole number of days from 1 to 90" in page(r)
    r = client.get("/retention", params={"target": "nope", "lang": "zh_CN"})
    assert "本项目从未收到名为 'nope' 的事件" in page(r)
    r = client.get("/trends", params={"from": "2026-02-01", "to": "2026-01-01", "lang": "zh_CN"})
    assert r.status_code == 200
    assert "结束日期 2026-01-01 早于开始日期 2026-02-01；已改为显示默认日期范围。" in page(r)
    r = client.get("/trends", params={"from": "2026-02-01", "to": "2026-01-01", "lang": "en"})
    assert "date_to 2026-01-01 is before date_from 2026-02-01; showing the default" in page(r)


def test_segment_editor_errors_inline(console_live: LiveServer) -> None:
    client = login(console_live.url, "operator")
    token = csrf_of(client.get("/segments/new").text)
    rule = "type: event\nevent: edit_video\ncount: sometimes\nwindow: {last_days: 3, from: 2026-01-01}\n"
    for lang, window, count in (
        ("zh_CN", "只能二选一", "应为 'at_least'"),
        ("en", "give either last_days or from/to/after/before, not both", "Input should be 'at_least'"),
    ):  # fmt: skip
        r = client.post(f"/segments/save?lang={lang}", data={"csrf_token": token,
                        "action": "save", "name": "bad", "rules": rule})  # fmt: skip
        assert r.status_code == 400
        summary = page(r).split('data-state="invalid"')[1].split("</div>")[0]
        assert "rules.window" in summary and window in summary  # the summary above the form
        inline = field_error(page(r), "rules")
        assert window in inline and count in inline, inline  # and next to the rules field
        assert 'id="field-rules"' in page(r) and 'aria-invalid="true"' in page(r)
        assert field_error(page(r), "name") == ""
    r = client.post("/segments/save?lang=zh_CN", data={"csrf_token": token, "action": "save",
                    "name": "x", "schedule_minutes": "soon", "rules": "type: event\nevent: edit_video\n"})  # fmt: skip
    assert r.status_code == 400 and "请输入整数分钟" in field_error(page(r), "schedule_minutes")
    r = client.post("/segments/save?lang=en", data={"csrf_token": token, "action": "save",
                    "name": "x", "rules": "{not json"})  # fmt: skip
    assert r.status_code == 400 and "not valid YAML or JSON" in field_error(page(r), "rules")


def test_activity_spec_errors_inline(console_live: LiveServer) -> None:
    client = login(console_live.url, "operator")
    token = csrf_of(client.get("/activities/new?template=checkin").text)
    spec = "template: checkin\nname: x\nreward: {kind: coupon}\n"
    r = client.post("/activities/new?lang=zh_CN", data={"csrf_token": token,
                    "template": "checkin", "spec": spec})  # fmt: skip
    assert r.status_code == 400
    inline = field_error(page(r), "spec")
    assert "milestones" in inline and "缺少必填字段" in inline and "不允许出现此字段" in inline
    r = client.post("/activities/new?lang=en", data={"csrf_token": token,
                    "template": "checkin", "spec": spec})  # fmt: skip
    assert "Field required" in field_error(page(r), "spec")
    r = client.post("/activities/new?lang=zh_CN", data={"csrf_token": token,
                    "template": "checkin", "spec": "template: nope\n"})  # fmt: skip
    assert "template 须为以下之一" in field_error(page(r), "spec")
    # the risk section is checked by anti-fraud's own model: its messages are translated too
    gift = ("template: gift\nname: g\nevent: sign_up\nreward: {kind: points, amount: 20}\n"
            "risk: {device: {max_accounts: 0}}\n")  # fmt: skip
    for lang, expected in (
        ("zh_CN", "字段 'risk.device.max_accounts'：应大于或等于 1"),
        ("en", "field 'risk.device.max_accounts': Input should be greater than or equal to 1"),
    ):
        r = client.post(f"/activities/new?lang={lang}", data={"csrf_token": token,
                        "template": "gift", "spec": gift, "action": "validate"})  # fmt: skip
        assert r.status_code == 400 and expected in field_error(page(r), "spec"), page(r)[-3000:]


def test_team_and_blocklist_errors_inline(console_live: LiveServer) -> None:
    admin = login(console_live.url, "admin")
    token = csrf_of(admin.get("/settings/team").text)
    r = admin.post("/settings/team?lang=zh_CN", data={"csrf_token": token, "action": "create",
                   "username": "has space", "role": "viewer"})  # fmt: skip
    assert r.status_code == 400
    assert "用户名须为 1 到 100 个字符" in field_error(page(r), "username")
    assert 'value="has space"' in page(r)  # the form keeps what was typed
    r = admin.post("/settings/team?lang=en", data={"csrf_token": token, "action": "create",
                   "username": "operator", "role": "viewer"})  # fmt: skip
    assert "a user named 'operator' already exists" in field_error(page(r), "username")
    r = admin.post("/settings/team?lang=zh_CN", data={"csrf_token": token, "action": "create",
                   "username": "newbie", "role": "boss"})  # fmt: skip
    assert "未知角色 'boss'" in field_error(page(r), "role")
    operator = login(console_live.url, "operator")
    token = csrf_of(operator.get("/blocklist").text)
    r = operator.post("/blocklist?lang=zh_CN", data={"csrf_token": token, "kind": "subnet",
                      "value": "not-a-subnet", "reason": "x"})  # fmt: skip
    assert r.status_code == 400 and "不是形如 203.0.113.0/24 的网段" in field_error(
        page(r), "value"
    )
    r = operator.post("/blocklist?lang=en", data={"csrf_token": token, "kind": "ip",
                      "value": "1.2.3.4", "reason": ""})  # fmt: skip
    assert "field 'reason' is required" in field_error(page(r), "reason")


def test_review_reasons_in_both_languages(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "viewer")
    text = page(client.get("/reviews?status=all&lang=zh_CN"))
    assert "账号首次出现后" in text and "account_too_new" in text
    text = page(client.get("/reviews?status=all&lang=en"))
    assert "account first seen" in text
