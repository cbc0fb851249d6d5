"""Person profile and timeline against the raw events, on DuckDB and ClickHouse."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from tests.analytics.conftest import Dataset, make_dataset
from tests.audience.reports_data import TZ, at_local, person_ids, raw
from tests.conftest import chdb_url
from yunying.audience.profile import (
    InvalidCursor,
    PersonNotFound,
    find_person,
    person_events,
    person_profile,
)
from yunying.audience.settings import AudienceSettings
from yunying.config import load_settings
from yunying.runtime import Runtime

TODAY = date(2024, 6, 30)
S = AudienceSettings()


def journey() -> list[dict[str, Any]]:
    """An anonymous device (first touch douyin) that signs up and is merged into its user, who
    buys twice (one refund), with timestamp ties; another person alongside."""
    rng = random.Random(9)
    out = []

    def on(days_before: int, secs: int) -> str:
        return at_local(TODAY - timedelta(days=days_before), secs)

    out.append(raw("app_install", "dev-1", on(20, 100), rng, **{"$os": "iOS"}))
    out.append(raw("view_content", "dev-1", on(20, 200), rng, **{"$channel": "douyin"}))
    out.append(raw("edit_video", "dev-1", on(19, 300), rng, **{"$channel": "zhihu"}))
    out.append(raw("sign_up", "user-1", on(3, 50), rng, **{"$set": {"plan": "pro"}}))
    out.append(raw("$identify", "user-1", on(3, 50), rng, **{"$anon_distinct_id": "dev-1"}))
    for i in range(7):  # ties: same instant, order by uuid
        out.append(raw("edit_video", "user-1", on(2, 600), rng, step=i))
    out.append(raw("purchase_membership", "user-1", on(1, 700), rng, **{"$amount": 30}))
    out.append(raw("purchase_membership", "user-1", on(1, 800), rng, **{"$amount": -30}))
    out.append(raw("purchase_membership", "user-1", on(0, 900), rng, **{"$amount": 68}))
    out.append(raw("edit_video", "other", on(0, 100), rng))
    return out


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    pytest.importorskip("chdb")
    root = tmp_path_factory.mktemp("ch")
    ch = Runtime.open(load_settings(data_dir=root / "data", events_url=chdb_url(root)))
    data = make_dataset(tmp_path_factory.mktemp("p"), ch, journey())
    yield data
    data.runtime.close()
    ch.close()


def test_profile_of_merged_person(ds: Dataset) -> None:
    for store, pid in ds.both():
        ids = person_ids(store, pid)
        person = ids["user-1"]
        assert ids["dev-1"] == person
        # by any distinct id or the person id
        assert {find_person(store, pid, k) for k in ("dev-1", "user-1", person)} == {person}
        store.replace_person_values(
            pid, "segment:7", pa.table({"person_id": [person, ids["other"]]})
        )
        store.replace_person_values(pid, "tag:heavy_editor", pa.table({"person_id": [person]}))
        store.replace_person_values(
            pid, "rfm", pa.table({"person_id": [person], "label": ["important_value"],
                                  "value": [534.0]}),
        )  # fmt: skip
        p = person_profile(store, pid, "dev-1", S, TZ, TODAY)
        mine = [
            e for e in ds.events if e["person_id"] == person_ids(ds.duck, ds.project_id)["user-1"]
        ]
        assert p["person_id"] == person
        assert p["distinct_ids"] == ["dev-1", "user-1"]
        assert p["properties"] == {"plan": "pro"}
        assert p["first_touch_channel"] == "douyin"
        first = min(e["timestamp"] for e in mine)
        last = max(e["timestamp"] for e in mine)
        assert p["first_seen"] == first.isoformat(timespec="microseconds") + "Z"
        assert p["last_seen"] == last.isoformat(timespec="microseconds") + "Z"
        assert p["events"] == len(mine) == 15
        assert p["lifetime_revenue"] == 98.0 and p["purchases"] == 2
        # active on days -20, -19, -3, -2, -1, 0: 4 of the last 7 days
        assert p["stage"] == "active" and p["stage_zh"] == "活跃"
        assert p["rfm"] == {"class": "important_value", "name_zh": "重要价值客户",
                            "name_en": "important value", "r": 5, "f": 3, "m": 4,
                            "computed_at": p["rfm"]["computed_at"]}  # fmt: skip
        assert p["segments"] == [{"segment": "7", "label": None}]
        assert p["tags"] == ["heavy_editor"]
        with pytest.raises(PersonNotFound):
            person_profile(store, pid, "nobody", S, TZ, TODAY)


def test_timeline_pages_newest_first(ds: Dataset) -> None:
    duck_person = person_ids(ds.duck, ds.project_id)["user-1"]
    mine = [e for e in ds.events if e["person_id"] == duck_person]
    want = [(e["timestamp"], str(e["uuid"])) for e in mine]
    want.sort(reverse=True)
    for store, pid in ds.both():
        got: list[tuple[datetime, str]] = []
        cursor = None
        pages = 0
        while True:
            page = person_events(store, pid, "user-1", limit=4, cursor=cursor)
            got += [
                (datetime.fromisoformat(e["timestamp"]).astimezone(UTC).replace(tzinfo=None),
                 e["uuid"])
                for e in page["events"]
            ]  # fmt: skip
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert got == want, store.dialect
        assert pages == 4  # 15 events, 4 per page
        only = person_events(store, pid, "dev-1", limit=50, event="purchase_membership")
        assert [e["amount"] for e in only["events"]] == [68.0, -30.0, 30.0]
        assert only["events"][0]["properties"] == {"$amount": 68}
    with pytest.raises(InvalidCursor):
        person_events(ds.duck, ds.project_id, "user-1", cursor="not-a-cursor")
    with pytest.raises(InvalidCursor):
        person_events(ds.duck, ds.project_id, "user-1", limit=0)
