"""The demo generator: reproducible, shaped like the seeds' app, and identical in identity to
what the real ingestion pipeline builds from the same events."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from yunying.config import load_settings
from yunying.demo import CHANNELS, InvalidDemo, generate_demo
from yunying.demo.generator import local_today
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import create_project
from yunying.store import run_readonly_sql

END = date(2026, 10, 31)
NOW = datetime(2026, 10, 31, 6, 0, tzinfo=UTC)  # 14:00 on END where the app runs (UTC+8)
PRICES = {30.0, 78.0, 198.0}


def open_runtime(path: Path) -> Runtime:
    return Runtime.open(load_settings(data_dir=path))


def q(rt: Runtime, project_id: int, sql: str) -> list[list[Any]]:
    """Rows of a project-scoped read (the path `yunying sql` takes)."""
    return run_readonly_sql(rt.store, project_id, sql).rows


def raw(rt: Runtime, sql: str) -> list[list[Any]]:
    """Rows of a query straight on the engine's raw tables."""
    return rt.store.query(sql).rows


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    """200 users over 30 days."""
    rt = open_runtime(tmp_path_factory.mktemp("small"))
    summary = generate_demo(rt, "demo", users=200, days=30, seed=11, end=END)
    yield rt, summary
    rt.close()


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    """6,000 users over 63 days: enough to measure rates per channel and per weekday."""
    rt = open_runtime(tmp_path_factory.mktemp("medium"))
    summary = generate_demo(rt, "demo", users=6000, days=63, seed=3, end=END)
    yield rt, summary
    rt.close()


# -- reproducibility ----------------------------------------------------------------------------

DUMP_EVENTS = "SELECT * EXCLUDE (project_id) FROM raw_events ORDER BY uuid"
DUMP_PERSONS = "SELECT * EXCLUDE (project_id) FROM raw_persons ORDER BY id"
DUMP_IDS = "SELECT * EXCLUDE (project_id) FROM raw_person_distinct_ids ORDER BY distinct_id"


def dump(path: Path, seed: int) -> tuple[list[list[Any]], ...]:
    rt = open_runtime(path)
    try:
        generate_demo(rt, "demo", users=150, days=20, seed=seed, end=END)
        return tuple(raw(rt, sql) for sql in (DUMP_EVENTS, DUMP_PERSONS, DUMP_IDS))
    finally:
        rt.close()


def test_same_seed_gives_identical_rows_and_another_seed_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("yunying.demo.generator.CHUNK_USERS", 40)  # 4 chunks, the last short
    first, again, other = dump(tmp_path / "a", 5), dump(tmp_path / "b", 5), dump(tmp_path / "c", 6)
    assert len(first[1]) == 150
    distinct_ids = [r[0] for r in first[2]]
    assert len(set(distinct_ids)) == len(distinct_ids)
    assert {int(d[2:]) for d in distinct_ids if d.startswith("u-")} <= set(range(1, 151))
    assert first == again
    assert first[0] != other[0]
    assert {r[0] for r in first[0]}.isdisjoint({r[0] for r in other[0]})  # uuids differ
    assert first[1] != other[1]


def test_rerun_replaces_the_projects_data(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path)
    try:
        other = generate_demo(rt, "other", users=30, days=15, seed=9, end=END)
        one = generate_demo(rt, "demo", users=120, days=15, seed=1, end=END)
        dumps = [tuple(raw(rt, sql) for sql in (DUMP_EVENTS, DUMP_PERSONS, DUMP_IDS))]
        two = generate_demo(rt, "demo", users=120, days=15, seed=1, end=END)
        dumps.append(tuple(raw(rt, sql) for sql in (DUMP_EVENTS, DUMP_PERSONS, DUMP_IDS)))
        assert dumps[0] == dumps[1]  # emptied and refilled with the same rows
        assert one["secret_key"] and one["secret_key"].startswith("ysk_")
        assert two["secret_key"] is None
        assert two["project_id"] == one["project_id"] and two["write_key"] == one["write_key"]
        assert len(dumps[0][0]) == one["events"] + other["events"]
        smaller = generate_demo(rt, "demo", users=50, days=15, seed=2, end=END)
        per_project = "SELECT project_id, count(*) FROM {} GROUP BY 1 ORDER BY 1"
        assert raw(rt, per_project.format("raw_events")) == [
            [other["project_id"], other["events"]],
            [one["project_id"], smaller["events"]],
        ]
        assert raw(rt, per_project.format("raw_person_distinct_ids")) == [
            [other["project_id"], other["distinct_ids"]],
            [one["project_id"], smaller["distinct_ids"]],
        ]
    finally:
        rt.close()


def test_summary_matches_the_tables(small: tuple[Runtime, dict[str, Any]]) -> None:
    rt, s = small
    pid = s["project_id"]
    assert q(rt, pid, "SELECT count(*) FROM events") == [[s["events"]]]
    assert q(rt, pid, "SELECT count(*) FROM persons") == [[s["persons"]]]
    assert q(rt, pid, "SELECT count(*) FROM person_distinct_ids") == [[s["distinct_ids"]]]
    assert s["persons"] == s["users"] == 200 == sum(s["channels"].values())
    assert s["first_day"] == "2026-10-02" and s["last_day"] == END.isoformat()
    identified = q(rt, pid, "SELECT count(*) FROM persons WHERE is_identified")[0][0]
    assert s["signed_up"] == identified and s["distinct_ids"] == s["persons"] + identified
    assert 60 <= identified <= 170  # most but not all users sign up


def test_progress_bar_and_default_period_end_now(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path)
    out = io.StringIO()
    before = local_today().isoformat()
    try:
        s = generate_demo(rt, "p", users=60, days=5, seed=2, console=Console(file=out, width=120))
        latest = raw(rt, "SELECT max(timestamp) FROM raw_events")[0][0]
    finally:
        rt.close()
    assert "generating demo data" in out.getvalue()
    assert s["last_day"] in {before, local_today().isoformat()}
    assert datetime.fromisoformat(latest) <= datetime.now(UTC).replace(tzinfo=None)


def test_invalid_sizes_are_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidDemo):
        generate_demo(runtime, "demo", users=0, days=10, seed=1)
    with pytest.raises(InvalidDemo):
        generate_demo(runtime, "demo", users=10, days=0, seed=1)


# -- the app's shape ----------------------------------------------------------------------------


def conversion(rt: Runtime, pid: int) -> dict[str, tuple[int, int]]:
    """Per channel: (installs, persons who bought a membership)."""
    rows = q(
        rt,
        pid,
        "SELECT channel, count(DISTINCT person_id), "
        "count(DISTINCT CASE WHEN event = 'purchase_membership' THEN person_id END) "
        "FROM events GROUP BY channel",
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def z_two_proportions(a: tuple[int, int], b: tuple[int, int]) -> float:
    """z statistic of the difference of two conversion rates (pooled variance)."""
    (n1, x1), (n2, x2) = a, b
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (x1 / n1 - x2 / n2) / se


def test_channels_differ_in_install_to_purchase_conversion(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    conv = conversion(rt, s["project_id"])
    acquired = [c.name for c in CHANNELS if c.name != "invite"]
    assert len(acquired) >= 9 and set(acquired) <= set(conv)
    assert all(conv[name][0] >= 150 for name in acquired)
    rate = {name: conv[name][1] / conv[name][0] for name in acquired}
    assert max(rate.values()) > 4 * min(rate.values())
    assert z_two_proportions(conv["zhihu"], conv["feed_ads"]) > 4
    assert z_two_proportions(conv["bilibili"], conv["kuaishou"]) > 3
    # the observed ranking follows the channel table's quality (activation² × paying)
    quality = {c.name: c.activation**2 * c.paying for c in CHANNELS}
    by_quality = sorted(acquired, key=quality.__getitem__)
    by_rate = sorted(acquired, key=rate.__getitem__)
    assert set(by_quality[:3]) & set(by_rate[:3]) and set(by_quality[-3:]) & set(by_rate[-3:])


def test_journey_order_holds_per_person(medium: tuple[Runtime, dict[str, Any]]) -> None:
    rt, s = medium
    firsts = q(
        rt,
        s["project_id"],
        "SELECT person_id, min(timestamp), "
        + ", ".join(
            f"min(CASE WHEN event = '{e}' THEN timestamp END)"
            for e in (
                "app_install",
                "sign_up",
                "$identify",
                "edit_video",
                "export_video",
                "purchase_membership",
                "check_in",
                "join_community",
                "invite_sent",
                "invite_accepted",
            )
        )
        + ", count(*) FILTER (WHERE event = 'app_install'), "
        "count(*) FILTER (WHERE event = 'sign_up') FROM events GROUP BY person_id",
    )
    assert len(firsts) == s["persons"]
    counts = {"signed": 0, "edited": 0, "exported": 0, "paid": 0}
    for row in firsts:
        (_, first, install, sign_up, identify, edit, export, purchase) = row[:8]
        check_in, join, invite, accepted, n_installs, n_sign_ups = row[8:]
        assert n_installs == 1 and install == first  # the install comes first
        assert n_sign_ups <= 1
        if sign_up is None:  # anonymous users only open the app and browse
            assert identify is edit is export is purchase is check_in is join is invite is None
            continue
        counts["signed"] += 1
        assert install <= sign_up < identify
        for later in (edit, check_in, join, invite, accepted):
            assert later is None or later > identify
        if export is not None:
            counts["exported"] += 1
            assert edit is not None and export > edit
        if edit is not None:
            counts["edited"] += 1
        if purchase is not None:
            counts["paid"] += 1
            assert export is not None and purchase > export
    assert len(firsts) > counts["signed"] > counts["edited"] > counts["exported"]
    assert counts["exported"] > counts["paid"] > 50


def test_events_use_the_device_id_until_identify_then_the_user_id(
    small: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = small
    rows = raw(
        rt,
        "SELECT e.distinct_id, e.device_id, e.event, e.timestamp, i.timestamp, i.distinct_id "
        "FROM raw_events e LEFT JOIN raw_events i ON i.event = '$identify' "
        "AND i.device_id = e.device_id",
    )
    assert len(rows) == s["events"]
    for distinct_id, device, event, ts, identify_ts, user_id in rows:
        assert device.startswith("d-") and len(device) == 18
        if identify_ts is None or ts < identify_ts:
            assert distinct_id == device, event
        else:
            assert distinct_id == user_id and user_id.startswith("u-"), event


def test_every_distinct_id_is_mapped_to_its_events_person(
    small: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, _ = small
    unmapped = raw(
        rt,
        "SELECT count(*) FROM raw_events e LEFT JOIN raw_person_distinct_ids d "
        "USING (project_id, distinct_id) WHERE d.person_id IS NULL OR d.person_id <> e.person_id",
    )
    assert unmapped == [[0]]
    orphans = raw(
        rt,
        "SELECT count(*) FROM raw_person_distinct_ids d LEFT JOIN raw_persons p "
        "ON p.project_id = d.project_id AND p.id = d.person_id WHERE p.id IS NULL",
    )
    assert orphans == [[0]]


def test_weekends_are_busier_than_weekdays(medium: tuple[Runtime, dict[str, Any]]) -> None:
    rt, s = medium
    rows = q(
        rt,
        s["project_id"],
        "SELECT isodow(timestamp + INTERVAL 8 HOUR) >= 6, "
        "count(DISTINCT (person_id, CAST(timestamp + INTERVAL 8 HOUR AS DATE))) "
        "/ count(DISTINCT CAST(timestamp + INTERVAL 8 HOUR AS DATE)) "
        "FROM events WHERE timestamp >= TIMESTAMP '2026-10-01' GROUP BY 1",
    )
    dau = {weekend: value for weekend, value in rows}
    assert dau[True] > 1.2 * dau[False]


def test_purchases_carry_amounts_from_the_price_list(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    pid = s["project_id"]
    rows = q(
        rt,
        pid,
        "SELECT amount, properties->>'plan', CAST(properties->>'amount' AS DOUBLE), "
        "CAST(properties->>'is_renewal' AS BOOLEAN) FROM events "
        "WHERE event = 'purchase_membership'",
    )
    assert {r[0] for r in rows} == PRICES
    assert all(r[0] == r[2] for r in rows)
    assert {r[1] for r in rows} == {"monthly", "quarterly", "yearly"}
    assert any(r[3] for r in rows) and not all(r[3] for r in rows)  # some renewals
    others = q(rt, pid, "SELECT count(amount) FROM events WHERE event <> 'purchase_membership'")
    assert others == [[0]]
    revenue = q(rt, pid, "SELECT sum(amount) FROM events")[0][0]
    assert revenue == pytest.approx(s["revenue_cny"])


def test_users_drift_between_active_silent_and_churned(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    end = datetime.combine(END + timedelta(days=1), datetime.min.time()) - timedelta(hours=8)
    per_person = q(
        rt,
        s["project_id"],
        "SELECT person_id, min(timestamp), max(timestamp), "
        "list(DISTINCT CAST(timestamp + INTERVAL 8 HOUR AS DATE) ORDER BY 1) "
        "FROM events WHERE event NOT IN ('purchase_membership') GROUP BY 1",
    )
    old = [r for r in per_person if datetime.fromisoformat(r[1]) < end - timedelta(days=30)]
    silent = [r for r in old if datetime.fromisoformat(r[2]) < end - timedelta(days=30)]
    active = [r for r in old if datetime.fromisoformat(r[2]) >= end - timedelta(days=7)]
    returned = [
        r
        for r in old
        if any(
            (date.fromisoformat(b) - date.fromisoformat(a)).days >= 14
            for a, b in zip(r[3], r[3][1:], strict=False)
        )
    ]
    new = [r for r in per_person if datetime.fromisoformat(r[1]) >= end - timedelta(days=7)]
    assert 0.02 < len(new) / len(per_person) < 0.3  # still arriving at the end of the period
    assert len(old) > 1000
    assert 0.3 < len(silent) / len(old) < 0.9
    assert 0.08 < len(active) / len(old) < 0.6
    assert len(returned) / len(old) > 0.03


def test_first_class_columns_are_filled_and_match_properties(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    pid = s["project_id"]
    paid = {c.name: c.utm_source for c in CHANNELS}
    for channel, utm in q(rt, pid, "SELECT DISTINCT channel, utm_source FROM events"):
        assert utm == paid[channel]
    assert sum(1 for v in paid.values() if v) >= 4
    persons_by_os = dict(q(rt, pid, "SELECT os, count(DISTINCT person_id) FROM events GROUP BY 1"))
    assert persons_by_os["Android"] > persons_by_os["iOS"] > persons_by_os["HarmonyOS"] > 100
    mismatched = q(
        rt,
        pid,
        "SELECT count(*) FROM events WHERE channel IS DISTINCT FROM properties->>'channel' "
        "OR os IS DISTINCT FROM properties->>'$.\"$os\"' "
        "OR app_version IS DISTINCT FROM properties->>'$.\"$app_version\"' "
        "OR device_id IS DISTINCT FROM properties->>'$.\"$device_id\"' "
        "OR ip IS DISTINCT FROM properties->>'$.\"$ip\"' "
        "OR utm_source IS DISTINCT FROM properties->>'$.\"$utm_source\"' "
        "OR NOT regexp_full_match(ip, '\\d{1,3}(\\.\\d{1,3}){3}')",
    )
    assert mismatched == [[0]]
    versions = q(rt, pid, "SELECT count(DISTINCT app_version) FROM events")[0][0]
    assert versions >= 4
    downgrades = q(
        rt,
        pid,
        "SELECT count(*) FROM (SELECT app_version, lag(app_version) OVER "
        "(PARTITION BY person_id ORDER BY timestamp) AS before FROM events) "
        "WHERE app_version < before",
    )
    assert downgrades == [[0]]
    own = q(
        rt,
        pid,
        "SELECT event, count(*) FILTER (WHERE properties->>'content_id' IS NOT NULL "
        "AND properties->>'category' IS NOT NULL), count(*) FILTER (WHERE "
        "properties->>'tool' IS NOT NULL), count(*) FILTER (WHERE "
        "properties->>'duration_sec' IS NOT NULL), count(*) FROM events "
        "WHERE event IN ('view_content', 'edit_video', 'export_video') GROUP BY 1",
    )
    expected_column = {"view_content": 1, "edit_video": 2, "export_video": 3}
    for row in own:
        assert row[expected_column[row[0]]] == row[4] > 0


def test_invited_users_name_an_inviter_who_invited_before(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    rows = q(
        rt,
        s["project_id"],
        "SELECT a.channel, a.properties->>'inviter_id', a.timestamp, "
        "(SELECT max(i.timestamp) FROM events i WHERE i.event = 'invite_sent' "
        " AND i.distinct_id = a.properties->>'inviter_id' AND i.timestamp < a.timestamp) "
        "FROM events a WHERE a.event = 'invite_accepted'",
    )
    assert len(rows) == s["channels"]["invite"] > 100
    assert all(r[0] == "invite" and r[1].startswith("u-") and r[3] is not None for r in rows)


def test_every_catalogue_event_occurs_with_its_own_properties(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    pid = s["project_id"]
    counts = dict(q(rt, pid, "SELECT event, count(*) FROM events GROUP BY 1"))
    catalogue = [
        "app_install", "app_open", "sign_up", "$identify", "edit_video", "export_video",
        "check_in", "invite_sent", "invite_accepted", "join_community", "view_content",
        "purchase_membership",
    ]  # fmt: skip
    assert set(counts) == set(catalogue)
    assert counts["view_content"] > counts["app_open"] > counts["app_install"] == s["persons"]
    assert counts["invite_sent"] > counts["invite_accepted"] > 0
    assert counts["check_in"] > counts["join_community"] > 0
    own = {
        "sign_up": "properties->>'method' IN ('wechat', 'phone', 'douyin', 'apple')",
        "check_in": "CAST(properties->>'reward_points' AS INTEGER) > 0",
        "invite_sent": "properties->>'invite_channel' IN ('wechat', 'moments', 'qq', 'weibo')",
        "join_community": "properties->>'community_id' LIKE 'grp-%' "
        "AND properties->>'community_name' <> ''",
        "purchase_membership": "properties->>'currency' = 'CNY' AND amount > 0 "
        "AND properties->>'pay_method' IN ('wechat_pay', 'alipay', 'apple_iap')",
        "export_video": "properties->>'resolution' IN ('720p', '1080p', '4k') "
        "AND CAST(properties->>'duration_sec' AS INTEGER) BETWEEN 5 AND 600",
    }
    for event, condition in own.items():
        sql = f"SELECT count(*) FILTER (WHERE {condition}) FROM events WHERE event = '{event}'"
        rows = q(rt, pid, sql)
        assert rows == [[counts[event]]], event
    groups = q(rt, pid, "SELECT count(DISTINCT properties->>'community_id') FROM events")
    assert groups[0][0] >= 6


def test_channels_differ_in_cost_per_user_and_per_payer(
    medium: tuple[Runtime, dict[str, Any]],
) -> None:
    rt, s = medium
    installs = dict(
        q(
            rt,
            s["project_id"],
            "SELECT channel, count(*) FROM events WHERE event = 'app_install' GROUP BY 1",
        )
    )
    stats = s["channel_stats"]
    assert {name: c["users"] for name, c in stats.items()} == installs
    cpi = {c.name: c.cpi for c in CHANNELS}
    paid = [name for name in installs if cpi[name] > 0]
    assert len(paid) >= 8 and len({cpi[name] for name in paid}) >= 6
    for name in installs:
        assert stats[name]["spend_cny"] == pytest.approx(installs[name] * cpi[name])
    conv = conversion(rt, s["project_id"])
    per_payer = {name: installs[name] * cpi[name] / conv[name][1] for name in paid}
    assert max(per_payer.values()) > 3 * min(per_payer.values())  # CAC per paying user


# -- identity -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    """250 users over 30 days ending today, generated at 14:00 local time on the last day."""
    rt = open_runtime(tmp_path_factory.mktemp("cut"))
    summary = generate_demo(rt, "demo", users=250, days=30, seed=11, now=NOW)
    yield rt, summary
    rt.close()


def replay_through_ingestion(rt: Runtime, path: Path) -> Runtime:
    """A second installation fed the demo's events as native dicts, in the order received."""
    events = raw(
        rt,
        "SELECT uuid, event, distinct_id, timestamp, properties FROM raw_events "
        "ORDER BY received_at, timestamp, uuid",
    )
    natives = [
        {"uuid": u, "event": e, "distinct_id": d, "timestamp": ts, "properties": orjson.loads(p)}
        for u, e, d, ts, p in events
    ]
    batch = validate_batch(natives, now=datetime(2100, 1, 1))
    assert batch.errors == [] and len(batch.events) == len(events)
    replay = open_runtime(path)
    create_project(replay.state, "demo")
    for i in range(0, len(batch.events), 500):
        result = replay.writer.write(1, batch.events[i : i + 500])
        assert result.duplicates == 0
    return replay


def test_persons_match_what_ingestion_builds_from_the_same_events(
    cut: tuple[Runtime, dict[str, Any]], tmp_path: Path
) -> None:
    rt, s = cut
    assert s["project_id"] == 1  # person ids derive from the project id: the replay's is 1 too
    persons = q(rt, 1, "SELECT count(*), count(*) FILTER (WHERE is_identified) FROM persons")
    ids = q(rt, 1, "SELECT count(*) FROM person_distinct_ids")[0][0]
    members = q(rt, 1, "SELECT count(*) FROM persons WHERE properties->>'membership' IS NOT NULL")
    invited = q(rt, 1, "SELECT count(*) FROM events WHERE event = 'invite_accepted'")[0][0]
    # the comparison covers anonymous and identified persons, members, invitees, cut-off users
    assert 0 < persons[0][1] < persons[0][0] < s["users"] and ids == sum(persons[0])
    assert members[0][0] > 0 and invited > 0

    replay = replay_through_ingestion(rt, tmp_path)
    try:
        for sql in (
            "SELECT id, created_at, properties, is_identified FROM persons ORDER BY id",
            "SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY distinct_id",
            "SELECT uuid, person_id, channel, utm_source, os, app_version, device_id, ip, amount "
            "FROM events ORDER BY uuid",
        ):
            generated, ingested = q(rt, 1, sql), q(replay, 1, sql)
            if "properties" in sql:
                generated = [[*r[:2], orjson.loads(r[2]), r[3]] for r in generated]
                ingested = [[*r[:2], orjson.loads(r[2]), r[3]] for r in ingested]
            assert len(generated) == len(ingested) > 0, sql
            assert generated == ingested, sql
    finally:
        replay.close()


def test_a_later_now_keeps_the_same_rows_and_adds_newer_ones(tmp_path: Path) -> None:
    def rows_at(now: datetime) -> tuple[set[tuple[Any, ...]], dict[str, Any]]:
        generate_demo(rt, "demo", users=150, days=10, seed=8, now=now)
        events = raw(rt, "SELECT * EXCLUDE (project_id) FROM raw_events")
        persons = raw(rt, "SELECT id, created_at FROM raw_persons")
        return {tuple(r) for r in events}, dict(persons)

    rt = open_runtime(tmp_path)
    try:
        early = NOW - timedelta(hours=6)
        (before, persons_before), (after, persons_after) = rows_at(early), rows_at(NOW)
        late_arrivals = raw(
            rt,
            "SELECT count(*) FROM (SELECT received_at < lag(received_at) OVER (PARTITION BY "
            "device_id ORDER BY timestamp, received_at) AS early FROM raw_events) WHERE early",
        )
        bounds = raw(rt, "SELECT min(received_at - timestamp), max(received_at) FROM raw_events")
    finally:
        rt.close()
    assert before < after  # same uuids and values, plus the events received since
    naive = early.replace(tzinfo=None).isoformat()
    assert all(r[5] > naive for r in after - before)  # column 5: received_at
    assert all(r[5] <= naive for r in before)
    assert set(persons_before) <= set(persons_after) and len(persons_after) > len(persons_before)
    assert all(persons_after[p] == t for p, t in persons_before.items())
    assert late_arrivals == [[0]]  # an app sends its queue in order
    assert bounds[0][0] > timedelta(0) and bounds[0][1] <= NOW.replace(tzinfo=None).isoformat()


# -- command line -------------------------------------------------------------------------------


def test_demo_command_generates_and_reports_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from yunying.cli.main import app

    args = ["demo", "--users", "80", "--days", "10", "--seed", "4", "--no-serve", "--json"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["project"] == "demo" and summary["secret_key"].startswith("ysk_")
    assert summary["events"] > 80 and 0 < summary["persons"] <= 80
    rt = open_runtime(tmp_path)
    try:
        assert raw(rt, "SELECT count(*) FROM raw_events") == [[summary["events"]]]
    finally:
        rt.close()


def test_demo_command_prints_keys_channels_and_how_to_serve(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from yunying.cli.main import app

    args = ["demo", "--users", "90", "--days", "12", "--end", "2026-10-31", "--no-serve"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
    second = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 == second.exit_code, first.output + second.output
    rt = open_runtime(tmp_path)
    try:
        persons = q(rt, 1, "SELECT count(*) FROM persons")[0][0]
        events = raw(rt, "SELECT count(*) FROM raw_events")[0][0]
    finally:
        rt.close()
    for out in (first.stdout, second.stdout):
        assert f"persons     {persons:,} (" in out and f"events      {events:,} in" in out
        assert "2026-10-20 … 2026-10-31" in out and "ywk_" in out and "douyin" in out
        assert "yunying serve --data-dir" in out
    assert "ysk_" in first.stdout and "shown only once" in first.stdout
    assert "ysk_" not in second.stdout  # the secret key is never shown again
    bad = runner.invoke(app, [*args, "--data-dir", str(tmp_path), "--end", "31/10/2026"])
    assert bad.exit_code == 1 and "--end" in bad.output


@pytest.mark.slow
def test_demo_command_serves_the_data_it_generated(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    port = free_port()
    exe = Path(sys.executable).with_name("yunying")
    cmd = [str(exe), "demo", "--users", "60", "--days", "7", "--port", str(port), "--json"]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        summary = orjson.loads(proc.stdout.readline())
        assert summary["url"] == f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{summary['url']}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the demo server did not come up"
            time.sleep(0.2)
        sql = subprocess.run(
            [str(exe), "sql", "--json", "--data-dir", str(tmp_path), "SELECT count(*) FROM events"],
            capture_output=True,
            check=True,
        )
        assert orjson.loads(sql.stdout)["rows"] == [[summary["events"]]]
        assert summary["events"] > 60
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    assert not (tmp_path / "server.json").exists()
