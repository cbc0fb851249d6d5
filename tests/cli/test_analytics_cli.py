"""`yunying funnel | retention | trend | lifecycle`: locally, through an in-process server, and
through a `yunying serve` subprocess; `--json` is the HTTP API's answer in every case.

The journeys are small enough that every expected number below is worked out by hand in the
comments (project time zone Asia/Shanghai; timestamps are written in +08:00).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import LiveServer, free_port
from yunying.cli.main import app
from yunying.state import NewProject

runner = CliRunner()

JOURNEYS = [
    # u1 (douyin): installs, signs up an hour later, exports the next day; edits 3 days running
    ("u1", "douyin", "app_install", "2026-03-02T10:00"),
    ("u1", "douyin", "sign_up", "2026-03-02T11:00"),
    ("u1", "douyin", "export_video", "2026-03-03T09:00"),
    ("u1", "douyin", "edit_video", "2026-03-02T20:00"),
    ("u1", "douyin", "edit_video", "2026-03-03T20:00"),
    ("u1", "douyin", "edit_video", "2026-03-04T20:00"),
    # u2 (bilibili): signs up 8 days after installing (outside a 7-day window)
    ("u2", "bilibili", "app_install", "2026-03-02T12:00"),
    ("u2", "bilibili", "sign_up", "2026-03-10T12:00"),
    ("u2", "bilibili", "edit_video", "2026-03-11T12:00"),
    # u3 (douyin): signs up a day after installing, never exports; edits on the 4th and 6th
    ("u3", "douyin", "app_install", "2026-03-03T08:00"),
    ("u3", "douyin", "sign_up", "2026-03-04T08:00"),
    ("u3", "douyin", "edit_video", "2026-03-04T09:00"),
    ("u3", "douyin", "edit_video", "2026-03-06T09:00"),
    # u4 (bilibili): installed before the range, signs up inside it, never edits
    ("u4", "bilibili", "app_install", "2026-02-20T10:00"),
    ("u4", "bilibili", "sign_up", "2026-03-03T10:00"),
]

RANGE = ["--from", "2026-03-01", "--to", "2026-03-07"]
FUNNEL = ["funnel", "--steps", "app_install,sign_up,export_video", "--window", "7d", *RANGE]
RETENTION = ["retention", "--start-event", "sign_up", "--return-event", "edit_video"]
RETENTION += ["--period", "day", "--from", "2026-03-02", "--to", "2026-03-05"]
TREND = ["trend", "--event", "edit_video", "--from", "2026-03-02", "--to", "2026-03-06"]
LIFECYCLE = ["lifecycle", "--event", "edit_video", "--from", "2026-03-03", "--to", "2026-03-06"]


def events() -> list[dict[str, Any]]:
    return [
        {
            "event": name,
            "distinct_id": who,
            "timestamp": at + ":00+08:00",
            "properties": {"channel": channel},
        }
        for who, channel, name, at in JOURNEYS
    ]


def cli(data_dir: Path, *args: str) -> Any:
    return runner.invoke(app, [*args, "--data-dir", str(data_dir)])


def json_of(data_dir: Path, *args: str) -> Any:
    result = cli(data_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    """A data dir with one project holding JOURNEYS, imported with `yunying import`."""
    d = tmp_path / "d"
    assert cli(d, "project", "create", "剪辑App").exit_code == 0
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(e) for e in events()))
    imported = cli(d, "import", str(f), "--json")
    assert imported.exit_code == 0 and orjson.loads(imported.stdout)["stored"] == len(JOURNEYS)
    return d


def check_answers(run: Any) -> None:
    """The four commands' JSON against the hand-worked numbers; ``run(*args)`` is the JSON."""
    f = run(*FUNNEL)
    # step 1: u1, u2, u3 (u4 installed before the range); step 2: u1, u3; step 3: u1
    assert [s["count"] for s in f["steps"]] == [3, 2, 1]
    assert [s["name"] for s in f["steps"]] == ["app_install", "sign_up", "export_video"]
    assert f["steps"][1]["median_seconds_from_previous"] == (3600 + 86_400) / 2
    assert f["breakdowns"] == []
    by = run(*FUNNEL, "--breakdown", "channel")
    assert {b["value"]: [s["count"] for s in b["steps"]] for b in by["breakdowns"]} == {
        "douyin": [2, 2, 1],
        "bilibili": [1, 0, 0],
    }
    # a 2-hour window keeps only u1's sign-up (an hour after installing)
    assert [s["count"] for s in run(*FUNNEL, "--window", "2h")["steps"]] == [3, 1, 0]
    # time to convert: install -> export only u1, 23 h; install -> sign-up u1 1 h, u3 24 h:
    # two bins of ceil((86,400 - 3,600) / 2) s from 3,600 s
    ttc = run(*FUNNEL, "--view", "time_to_convert")
    assert (ttc["converted"], ttc["median_seconds"], len(ttc["bins"])) == (1, 82_800, 10)
    assert [b["count"] for b in ttc["bins"]] == [1] + [0] * 9
    ttc = run(*FUNNEL, "--view", "time_to_convert", "--to-step", "2", "--bins", "2")
    assert [(b["lower_seconds"], b["count"]) for b in ttc["bins"]] == [(3600, 1), (45_000, 1)]
    assert (ttc["average_seconds"], ttc["median_seconds"]) == (45_000, 45_000)
    # trends: installs on 03-02 (u1, u2: u1 exports) and 03-03 (u3, no export)
    tr = run(*FUNNEL, "--view", "trends")
    assert tr["labels"][:3] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert (tr["entered"], tr["converted"]) == ([0, 2, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0])
    assert tr["conversion_rate"][:3] == [None, 0.5, 0.0]

    r = run(*RETENTION)
    # cohorts by first sign-up: 03-02 u1 (edits on 03-03 and 03-04), 03-03 u4 (never edits),
    # 03-04 u3 (next edit 03-06, after the range), 03-05 nobody
    assert [(c["label"], c["size"], c["retained"]) for c in r["cohorts"]] == [
        ("2026-03-02", 1, [1, 1, 1, 0]),
        ("2026-03-03", 1, [1, 0, 0]),
        ("2026-03-04", 1, [1, 0]),
        ("2026-03-05", 0, [0]),
    ]
    assert r["weighted_mean"] == [1.0, 1 / 3, 0.5, 0.0]

    t = run(*TREND)
    assert [(s["labels"][0], s["values"], s["total"]) for s in t["series"]] == [
        ("2026-03-02", [1, 1, 2, 0, 1], 5)
    ]
    dau = run(*TREND, "--event", "sign_up", "--math", "dau", "--filter", "channel=bilibili")
    assert [s["values"] for s in dau["series"]] == [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]]
    # sign-ups per day: u1 03-02, u4 03-03, u3 03-04 -> edits minus sign-ups
    diff = run(*TREND, "--event", "sign_up", "--formula", "A - B")
    assert [s["values"] for s in diff["formula"]] == [[0, 0, 1, 0, 1]]

    lc = run(*LIFECYCLE)
    # active: 03-02 {u1}, 03-03 {u1}, 03-04 {u1, u3}, 03-05 {}, 03-06 {u3}
    expected = {
        "labels": ["2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"],
        "new": [0, 1, 0, 0],
        "returning": [1, 1, 0, 0],
        "resurrecting": [0, 0, 0, 1],
        "dormant": [0, 0, -2, 0],
    }
    assert {k: lc[k] for k in expected} == expected


def test_commands_print_the_documented_json_locally(local_dir: Path) -> None:
    check_answers(lambda *args: json_of(local_dir, *args))


def test_json_shapes(local_dir: Path) -> None:
    """The keys docs/analytics.md documents for each command's --json output."""
    f = json_of(local_dir, *FUNNEL, "--breakdown", "channel")
    # documented keys are all there (analyses may add keys; scripts ignore what they don't read)
    assert set(f) >= {"steps", "breakdowns"}
    step_keys = {"index", "name", "count", "conversion_from_first", "conversion_from_previous",
                 "median_seconds_from_previous", "average_seconds_from_previous",
                 "median_seconds_from_first"}  # fmt: skip
    assert set(f["steps"][0]) >= step_keys and set(f["breakdowns"][0]) >= {"value", "steps"}
    r = json_of(local_dir, *RETENTION)
    assert set(r) >= {"period", "cohorts", "weighted_mean"}
    assert set(r["cohorts"][0]) >= {"label", "size", "retained", "rates"}
    t = json_of(local_dir, *TREND, "--compare")
    assert set(t) >= {"series"}
    assert set(t["series"][0]) >= {
        "label", "series_index", "breakdown_value", "compare", "labels", "values", "total",
    }  # fmt: skip
    assert [s["compare"] for s in t["series"]] == ["current", "previous"]
    lc = json_of(local_dir, *LIFECYCLE)
    assert set(lc) >= {"labels", "new", "returning", "resurrecting", "dormant"}


def test_tables_for_humans(local_dir: Path) -> None:
    out = cli(local_dir, *FUNNEL)
    assert out.exit_code == 0, out.output
    assert "export_video" in out.stdout and "33.3%" in out.stdout and "66.7%" in out.stdout
    assert "not valid" not in out.stdout and not out.stdout.lstrip().startswith("{")
    out = cli(local_dir, *RETENTION)
    assert out.exit_code == 0 and "2026-03-02" in out.stdout and "100.0%" in out.stdout
    out = cli(local_dir, *TREND, "--breakdown", "channel")
    assert out.exit_code == 0 and "[douyin]" in out.stdout and "total" in out.stdout
    out = cli(local_dir, *LIFECYCLE)
    assert out.exit_code == 0 and "resurrecting" in out.stdout and "-2" in out.stdout
    out = cli(local_dir, *FUNNEL, "--view", "time_to_convert")
    assert out.exit_code == 0 and "median" in out.stdout and "23h" in out.stdout, out.stdout
    out = cli(local_dir, *FUNNEL, "--view", "trends")
    assert out.exit_code == 0 and "2026-03-02" in out.stdout and "50.0%" in out.stdout


def test_option_errors_name_the_option_or_field(local_dir: Path) -> None:
    for args, fragment in [
        ([*FUNNEL, "--window", "7 fortnights"], "--window"),
        ([*FUNNEL, "--order", "sideways"], "field 'order'"),
        ([*FUNNEL, "--from", "March"], "--from"),
        ([*FUNNEL, "--breakdown", "column:city"], "unknown column 'city'"),
        ([*FUNNEL, "--view", "sideways"], "field 'view'"),
        ([*FUNNEL, "--view", "time_to_convert", "--to-step", "9"], "--to-step"),
        ([*FUNNEL, "--view", "time_to_convert", "--from-step", "3"], "from_step < to_step"),
        ([*FUNNEL, "--view", "trends", "--interval", "year"], "field 'interval'"),
        ([*TREND, "--filter", "amount>lots"], "needs a number"),
        ([*TREND, "--math", "wau", "--interval", "week"], "interval 'day'"),
        ([*RETENTION, "--periods", "3"], "either periods or date_from"),
        ([*LIFECYCLE, "--to", "2026-03-01"], "before date_from"),
        ([*LIFECYCLE, "--project", "nope"], "nope"),
    ]:
        result = cli(local_dir, *args)
        assert result.exit_code == 1, (args, result.output)
        assert fragment in result.output, (args, result.output)
    assert cli(local_dir, "project", "create", "other").exit_code == 0
    several = cli(local_dir, *LIFECYCLE)
    assert several.exit_code == 1 and "--project" in several.output
    assert json_of(local_dir, *LIFECYCLE, "--project", "other")["new"] == [0, 0, 0, 0]


def test_commands_go_through_the_advertised_server(live: LiveServer, project: NewProject) -> None:
    """With a server advertised in server.json the CLI asks it (the `live` fixture in-process)."""
    r = live.post_events(project.project.write_key, {"batch": events()})
    assert r.status_code == 200 and r.json()["accepted"] == len(JOURNEYS)
    d = live.runtime.settings.data_dir
    check_answers(lambda *args: json_of(d, *args))
    bad = cli(d, *FUNNEL, "--order", "sideways")
    assert bad.exit_code == 1 and "server answered 422: field 'order'" in bad.output


def _yunying(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yunying", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_json_is_the_api_answer_through_a_serve_subprocess_and_locally(tmp_path: Path) -> None:
    d = str(tmp_path / "d")
    keys = orjson.loads(cli(Path(d), "project", "create", "app", "--json").stdout)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "yunying", "serve", "--port", str(port), "--data-dir", d],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 120  # a loaded machine takes its time importing
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {keys['write_key']}"}
        assert httpx.post(f"{url}/v1/events", json={"batch": events()}, headers=auth).is_success
        # the server holds the DuckDB file: this can only succeed through its API
        remote = _yunying(*FUNNEL, "--json", "--data-dir", d)
        assert remote.returncode == 0, remote.stderr
        api = httpx.post(
            f"{url}/api/v1/analytics/funnel",
            json={
                "steps": ["app_install", "sign_up", "export_video"],
                "window": 7,
                "date_from": "2026-03-01",
                "date_to": "2026-03-07",
            },
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
        )
        assert api.status_code == 200 and orjson.loads(remote.stdout) == api.json()
        assert [s["count"] for s in api.json()["steps"]] == [3, 2, 1]
    finally:
        server.terminate()
        server.communicate(timeout=30)
    # once it has stopped, the CLI opens the files itself and prints the same bytes
    local = cli(Path(d), *FUNNEL, "--json")
    assert local.exit_code == 0, local.output
    assert local.stdout == remote.stdout


def test_funnel_exclusions_attribution_and_per_series_maths(local_dir: Path) -> None:
    def counts(*extra: str) -> list[int]:
        return [s["count"] for s in json_of(local_dir, *FUNNEL, *extra)["steps"]]

    # edits between sign-up (step 2) and export (step 3): u1 edited at 20:00 before exporting the
    # next day, u3 edited after signing up and never exported (open end, within the window):
    # both dropped; u2 never reached step 2
    assert counts("--exclude", "edit_video:2:3") == [1, 0, 0]
    # no edit between install and sign-up; u2's only edit is after its 7-day window
    assert counts("--exclude", "edit_video:1:2") == [3, 2, 1]
    # EVENT alone: between the first and the last step
    assert counts("--exclude", "edit_video") == [1, 0, 0]
    by = json_of(local_dir, *FUNNEL, "--breakdown", "channel", "--attribution", "step:2")
    # u2 did not reach step 2: attributed to no value
    assert {b["value"]: [s["count"] for s in b["steps"]] for b in by["breakdowns"]} == {
        "douyin": [2, 2, 1],
        None: [1, 0, 0],
    }
    t = json_of(local_dir, *TREND, "--event", "sign_up", "--math", "total", "--math", "dau")
    # edits per day as before; sign-ups by distinct persons: u1 03-02, u4 03-03, u3 03-04
    assert [s["values"] for s in t["series"]] == [[1, 1, 2, 0, 1], [1, 1, 1, 0, 0]]
    assert [s["label"] for s in t["series"]] == ["edit_video (total)", "sign_up (dau)"]
    for args, fragment in [
        ([*FUNNEL, "--exclude", "edit_video:3:2"], "1 <= FROM < TO <= 3"),
        ([*FUNNEL, "--exclude", "edit_video:x"], "EVENT:1:3"),
        ([*FUNNEL, "--attribution", "step:4"], "from 1 to 3"),
        ([*FUNNEL, "--attribution", "linear"], "first_touch, last_touch or step:N"),
        ([*TREND, "--event", "a", "--math", "dau", "--math", "dau", "--math", "dau"], "--math"),
    ]:
        result = cli(local_dir, *args)
        assert result.exit_code == 1, (args, result.output)
        assert fragment in result.output, (args, result.output)


def test_paths_from_a_start_to_an_end_event(local_dir: Path) -> None:
    args = ["paths", "--start-event", "app_install", "--end-event", "export_video", *RANGE]
    p = json_of(local_dir, *args)
    # only u1 exports: install 03-02 10:00 -> sign_up 11:00 -> edit 20:00 -> export 03-03
    assert {(n["step"], n["event"]): n["persons"] for n in p["nodes"]} == {
        (0, "app_install"): 1,
        (1, "sign_up"): 1,
        (2, "edit_video"): 1,
        (3, "export_video"): 1,
    }
    assert [(e["step"], e["source"], e["target"]) for e in p["edges"]] == [
        (0, "app_install", "sign_up"),
        (1, "sign_up", "edit_video"),
        (2, "edit_video", "export_video"),
    ]
    # three steps are too few for u1's four events
    assert json_of(local_dir, *args, "--steps", "3")["nodes"] == []
    # from install alone: u1, u2, u3 (u4 installed before the range)
    starts = json_of(local_dir, "paths", "--start-event", "app_install", *RANGE)
    assert {(n["step"], n["event"]): n["persons"] for n in starts["nodes"]}[(0, "app_install")] == 3
    out = cli(local_dir, *args)
    assert out.exit_code == 0 and "edit_video" in out.stdout and "export_video" in out.stdout
    bad = cli(local_dir, *args, "--exclude", "export_video")
    assert bad.exit_code == 1 and "filtered out" in bad.output


def test_filter_and_breakdown_fields_name_segments_and_person_values() -> None:
    from yunying.cli.analytics import parse_field, parse_filter

    assert parse_filter("segment:12=true") == {
        "field": {"kind": "segment", "name": "12"},
        "op": "eq",
        "value": "true",
    }
    assert parse_field("value:tag:heavy_editor") == {"kind": "value", "name": "tag:heavy_editor"}
    assert parse_field("value:stage") == {"kind": "value", "name": "stage"}
