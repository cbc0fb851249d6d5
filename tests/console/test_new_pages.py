"""Tags, lifetime value, static segments from a CSV file and snapshots (GitHub issue 7, item 3),
over HTTP against a real server: both languages, CSVs, role limits, empty and error states."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.console.conftest import console_of, csrf_of, demo_people, login

LANGS = ("zh_CN", "en")


def text(r: httpx.Response) -> str:
    return html.unescape(r.text)


def field_error(page: str, field: str) -> str:
    m = re.search(rf'<ul class="inline-errors" id="error-{re.escape(field)}"[^>]*>(.*?)</ul>',
                  page, re.S)  # fmt: skip
    return re.sub(r"<[^>]+>", " ", m.group(1)) if m else ""


def rows_of(r: httpx.Response) -> list[list[str]]:
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text[:300]
    return list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


# -- tags -----------------------------------------------------------------------------------------


def test_tags_list_detail_and_csv(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "analyst")
    tag = seeded["tag"]
    for lang, title in (("zh_CN", "标签"), ("en", "Tags")):
        r = client.get(f"/tags?lang={lang}")
        assert r.status_code == 200 and title in r.text and f'data-tag="{tag}"' in r.text
        assert "data-new-tag" not in r.text  # analysts read only
        r = client.get(f"/tags/{tag}?lang={lang}")
        assert r.status_code == 200 and 'id="members"' in r.text and "heavy_editor" in r.text
    rows = rows_of(client.get("/tags?format=csv"))
    assert rows[0][:4] == ["id", "name", "description", "size"] and rows[1][1] == "heavy_editor"
    size = int(rows[1][3])
    members = rows_of(client.get(f"/tags/{tag}?format=csv"))
    assert members[0] == ["person_id", "distinct_id"]
    assert len({r[0] for r in members[1:]}) == size > 0
    assert client.get("/tags/new").status_code == 403
    token = csrf_of(client.get("/tags").text)  # the sign-out form carries one
    for path in ("/tags/save", f"/tags/{tag}/recompute"):
        assert client.post(path, data={"csrf_token": token, "name": "x"}).status_code == 403
    viewer = login(console_live.url, "viewer")
    assert viewer.get("/tags").status_code == 200
    assert 'id="members"' not in viewer.get(f"/tags/{tag}").text  # no exploration
    assert viewer.get("/tags?format=csv").status_code == 403
    r = client.get("/tags/9999")
    assert r.status_code == 404 and 'data-state="not-found"' in r.text


def test_tag_editor(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    page = client.get("/tags/new")
    assert page.status_code == 200 and 'id="tag-form"' in page.text
    token = csrf_of(page.text)
    rule = "type: event\nevent: export_video\ncount: at_least\ntimes: 1\nwindow: {last_days: 30}\n"
    r = client.post("/tags/save", data={"csrf_token": token, "action": "preview",
                                        "name": "exporter", "rules": rule})  # fmt: skip
    assert r.status_code == 200 and "data-preview-size" in r.text
    r = client.post("/tags/save?lang=zh_CN", data={"csrf_token": token, "action": "save",
                    "name": "has space", "rules": rule, "schedule_minutes": "often"})  # fmt: skip
    assert r.status_code == 400 and "请输入整数分钟" in field_error(text(r), "schedule_minutes")
    r = client.post("/tags/save?lang=zh_CN", data={"csrf_token": token, "action": "save",
                    "name": "has space", "rules": rule})  # fmt: skip
    assert r.status_code == 400 and "标签名" in field_error(text(r), "name")
    r = client.post("/tags/save?lang=en", data={"csrf_token": token, "action": "save",
                    "name": "heavy_editor", "rules": rule})  # fmt: skip
    assert r.status_code == 400 and "already exists" in field_error(text(r), "name")
    r = client.post("/tags/save?lang=zh_CN", data={"csrf_token": token, "action": "save",
                    "name": "exporter", "rules": "type: event\nevent: x\ncount: sometimes\n"})  # fmt: skip
    assert r.status_code == 400 and "rules.count" in field_error(text(r), "rules")
    r = client.post("/tags/save", data={"csrf_token": token, "action": "save",
                                        "name": "exporter", "rules": rule})  # fmt: skip
    assert r.status_code == 303
    path = r.headers["location"]
    page = client.get(path)
    assert page.status_code == 200 and 'id="members"' in page.text
    tag_id = path.rsplit("/", 1)[1]
    edit = client.get(f"/tags/{tag_id}/edit")
    assert edit.status_code == 200 and "readonly" in edit.text and "export_video" in edit.text
    r = client.post("/tags/save", data={"csrf_token": token, "action": "save", "tag_id": tag_id,
                                        "name": "exporter", "description": "exports videos",
                                        "schedule_minutes": "60", "rules": rule})  # fmt: skip
    assert r.status_code == 303 and "exports videos" in client.get(path).text
    r = client.post(f"/tags/{tag_id}/recompute", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == path
    # the tag is usable in segment rules right away
    r = client.post("/segments/save", data={"csrf_token": token, "action": "preview",
                    "name": "t", "rules": "type: tag\nname: exporter\n"})  # fmt: skip
    assert r.status_code == 200 and "data-preview-size" in r.text


# -- lifetime value --------------------------------------------------------------------------------


def test_clv_page_and_csv(console_live: LiveServer, clv_model: int) -> None:
    client = login(console_live.url, "analyst")
    for lang, title in (("zh_CN", "客户终身价值"), ("en", "Lifetime value")):
        r = client.get(f"/clv?lang={lang}")
        assert r.status_code == 200 and title in r.text, r.text[:500]
        assert 'id="clv-params"' in r.text and 'id="top-table"' in r.text
        assert 'id="clv-form"' not in r.text  # fitting needs an operator
    model = dict(rows_of(client.get("/clv?format=csv&table=model"))[1:])
    assert model["event"] == "purchase_membership" and float(model["bgnbd.r"]) > 0
    bands = rows_of(client.get("/clv?format=csv&table=bands"))
    assert bands[0] == ["kind", "label", "persons", "lower_bound"]
    persons = int(model["predictions.persons"])
    assert sum(int(r[2]) for r in bands[1:] if r[0] == "churn_risk") == persons
    top = rows_of(client.get("/clv?format=csv&table=top"))
    values = [float(r[3]) for r in top[1:]]
    assert values and values == sorted(values, reverse=True)
    viewer = login(console_live.url, "viewer")
    r = viewer.get("/clv")
    assert r.status_code == 200 and 'id="clv-params"' in r.text and 'id="top-table"' not in r.text
    assert viewer.get("/clv?format=csv").status_code == 403
    token = csrf_of(client.get("/segments").text)
    assert client.post("/clv", data={"csrf_token": token}).status_code == 403


def test_clv_fit_and_its_errors(console_live: LiveServer, clv_model: int) -> None:
    client = login(console_live.url, "operator")
    page = client.get("/clv")
    assert 'id="clv-form"' in page.text
    token = csrf_of(page.text)
    form = {"csrf_token": token, "event": "purchase_membership", "calibration_end": "2100-01-01",
            "unit": "week", "horizon": "soon", "amount_field": "amount", "discount_rate": "0"}  # fmt: skip
    r = client.post("/clv?lang=zh_CN", data=form)
    assert r.status_code == 400 and field_error(text(r), "horizon")
    r = client.post("/clv?lang=zh_CN", data={**form, "horizon": "12"})
    assert r.status_code == 400 and "晚于今天" in field_error(text(r), "calibration_end")
    r = client.post("/clv?lang=en", data={**form, "horizon": "12", "calibration_end": "2000-01-01"})
    assert r.status_code == 400 and "no customers" in field_error(text(r), "event")
    r = client.post(
        "/clv?lang=zh_CN", data={**form, "horizon": "0", "calibration_end": "2000-01-01"}
    )
    assert r.status_code == 400 and "horizon" not in field_error(text(r), "horizon")  # translated
    yesterday = page.text.split('name="calibration_end" id="field-calibration_end" value="')[1][:10]
    r = client.post("/clv", data={**form, "horizon": "8", "calibration_end": yesterday})
    assert r.status_code == 303 and r.headers["location"] == "/clv"
    assert "predictions over the next 8 weeks" in client.get("/clv?lang=en").text


# -- static segments and snapshots -------------------------------------------------------------------


def test_static_segment_from_csv(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    page = client.get("/segments/new")
    assert 'id="upload-form"' in page.text and 'enctype="multipart/form-data"' in page.text
    token = csrf_of(page.text)
    people = demo_people(console_of(console_live).runtime, 3)
    body = "distinct_id\n" + "".join(f"{d}\n" for d, _ in people) + "nobody-here\n"
    files = {"members": ("winners.csv", body.encode(), "text/csv")}
    r = client.post("/segments/upload", data={"csrf_token": token, "static_name": "获奖用户",
                                              "static_description": "contest"}, files=files)  # fmt: skip
    assert r.status_code == 303, r.text[:500]
    path = r.headers["location"]
    assert "uploaded=4" in path and "matched=3" in path and "unmatched=1" in path
    detail = client.get(path + "&lang=zh_CN")
    assert 'data-uploaded="3"' in detail.text and "data-size>3<" in detail.text
    assert 'id="upload-form"' in detail.text and 'id="snapshot-form"' not in detail.text
    seg_id = path.split("/segments/")[1].split("?")[0]
    members = rows_of(client.get(f"/segments/{seg_id}?format=csv"))
    assert {r[1] for r in members[1:]} >= {d for d, _ in people}
    # append one more by person id; replace keeps only the file's
    more = {"members": ("more.csv", b"person_id\n" + people[0][1].encode(), "text/csv")}
    r = client.post(f"/segments/{seg_id}/upload", data={"csrf_token": token, "mode": "replace"},
                    files=more)  # fmt: skip
    assert r.status_code == 303 and "matched=1" in r.headers["location"]
    # errors next to their fields, in both languages
    r = client.post("/segments/upload?lang=zh_CN", data={"csrf_token": token, "static_name": "x"},
                    files={"members": ("empty.csv", b"distinct_id\n", "text/csv")})  # fmt: skip
    assert r.status_code == 400 and "CSV" in field_error(text(r), "members")
    r = client.post("/segments/upload?lang=en", data={"csrf_token": token,
                    "static_name": "获奖用户"}, files=files)  # fmt: skip
    assert r.status_code == 400 and "already exists" in field_error(text(r), "static_name")
    assert 'value="获奖用户"' in text(r)  # what was typed stays
    r = client.post("/segments/upload?lang=zh_CN", data={"csrf_token": token, "static_name": "y"},
                    files={"members": ("bin.csv", b"\xff\xfe\x00", "text/csv")})  # fmt: skip
    assert r.status_code == 400 and "UTF-8" in field_error(text(r), "members")
    analyst = login(console_live.url, "analyst")
    token_a = csrf_of(analyst.get("/segments").text)
    for p in ("/segments/upload", f"/segments/{seg_id}/upload", f"/segments/{seg_id}/snapshot"):
        assert analyst.post(p, data={"csrf_token": token_a}, files=files).status_code == 403, p


def test_snapshot_of_a_dynamic_segment(console_live: LiveServer, seeded: dict[str, Any]) -> None:
    client = login(console_live.url, "operator")
    seg = seeded["segment"]
    page = client.get(f"/segments/{seg}")
    assert 'id="snapshot-form"' in page.text
    token = csrf_of(page.text)
    r = client.post(f"/segments/{seg}/snapshot", data={"csrf_token": token,
                                                        "snapshot_name": "剪辑用户 11月"})  # fmt: skip
    assert r.status_code == 303
    snap = client.get(r.headers["location"] + "?lang=en").text
    assert "剪辑用户 11月" in snap and "Static" in snap
    original = rows_of(client.get(f"/segments/{seg}?format=csv"))
    copy = rows_of(client.get(r.headers["location"] + "?format=csv"))
    assert sorted(original) == sorted(copy)
    r = client.post(f"/segments/{seg}/snapshot?lang=zh_CN", data={"csrf_token": token,
                    "snapshot_name": "剪辑用户 11月"})  # fmt: skip
    assert r.status_code == 400 and "已存在" in field_error(text(r), "snapshot_name")
