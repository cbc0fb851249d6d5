"""The funnel page's step order and views (time to convert, conversion over time) over HTTP
against a real server: what it shows and downloads is what the analysis gives for the same
query, in both languages, and a time to convert for steps in any order is refused."""

from __future__ import annotations

import csv
import html
import io
from datetime import date, timedelta
from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.console.conftest import DEMO_DAYS, console_of, login
from yunying.analytics import (
    DateRange,
    FunnelQuery,
    FunnelStep,
    FunnelTimeToConvertQuery,
    FunnelTrendsQuery,
    funnel,
    funnel_time_to_convert,
    funnel_trends,
)
from yunying.state import list_projects

STEPS = ("app_install", "sign_up", "edit_video")
END = date.today() - timedelta(days=1)
START = END - timedelta(days=DEMO_DAYS - 1)


def params(**extra: str) -> list[tuple[str, str]]:
    base = [("step", s) for s in STEPS] + [("window", "7"), ("from", START.isoformat()),
                                           ("to", END.isoformat())]  # fmt: skip
    return base + list(extra.items())


def csv_rows(r: httpx.Response) -> list[list[str]]:
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text[:300]
    return list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


def query(console_live: LiveServer, order: Any) -> tuple[Any, int, FunnelQuery]:
    rt = console_of(console_live).runtime
    project = list_projects(rt.state)[0]
    dr = DateRange(START, END, project.timezone)
    q = FunnelQuery(tuple(FunnelStep(s) for s in STEPS), dr, window=7, window_unit="day",
                    order=order)  # fmt: skip
    return rt.store, project.id, q


def test_step_order_changes_the_counts(console_live: LiveServer) -> None:
    client = login(console_live.url, "analyst")
    store, pid, q = query(console_live, "strict")
    want = funnel(store, pid, q).counts
    rows = csv_rows(client.get("/funnels", params=params(order="strict", format="csv")))
    assert [int(r[3]) for r in rows[1:] if r[0] == ""] == want
    ordered = csv_rows(client.get("/funnels", params=params(format="csv")))
    assert [int(r[3]) for r in ordered[1:] if r[0] == ""] != want  # strict counts fewer
    page = client.get("/funnels", params=params(order="strict", lang="zh_CN"))
    assert "步骤顺序" in page.text and 'value="strict" selected' in page.text


def test_time_to_convert_view(console_live: LiveServer) -> None:
    client = login(console_live.url, "analyst")
    store, pid, q = query(console_live, "ordered")
    want = funnel_time_to_convert(store, pid, FunnelTimeToConvertQuery(q))
    assert want.converted > 0
    for lang, words in (("en", "Hours from the first step"), ("zh_CN", "距第一步的小时数")):
        page = client.get("/funnels", params=params(view="time", lang=lang))
        text = html.unescape(page.text)
        assert page.status_code == 200 and 'id="funnel-times"' in text and words in text
        assert 'id="funnel-chart"' in text
    rows = csv_rows(client.get("/funnels", params=params(view="time", format="csv")))
    assert rows[0] == ["from_seconds", "to_seconds", "persons"]
    assert [int(r[2]) for r in rows[1:]] == [b.count for b in want.bins]
    assert sum(int(r[2]) for r in rows[1:]) == want.converted


def test_conversion_over_time_view(console_live: LiveServer) -> None:
    client = login(console_live.url, "analyst")
    store, pid, q = query(console_live, "ordered")
    want = funnel_trends(store, pid, FunnelTrendsQuery(q, "day"))
    rows = csv_rows(client.get("/funnels", params=params(view="trends", format="csv")))
    assert rows[0] == ["day", "entered", "converted", "conversion_rate"]
    assert [r[0] for r in rows[1:]] == list(want.labels)
    assert [int(r[1]) for r in rows[1:]] == list(want.entered)
    assert [int(r[2]) for r in rows[1:]] == list(want.converted)
    assert sum(want.converted) > 0
    page = client.get("/funnels", params=params(view="trends", lang="zh_CN"))
    assert page.status_code == 200 and 'id="funnel-trend"' in page.text and "转化趋势" in page.text


def test_any_order_has_no_time_to_convert(console_live: LiveServer) -> None:
    client = login(console_live.url, "analyst")
    for lang, words in (("en", "have no time to convert"), ("zh_CN", "没有转化时长")):
        page = client.get("/funnels", params=params(order="unordered", view="time", lang=lang))
        assert words in html.unescape(page.text) and 'id="funnel-times"' not in page.text
