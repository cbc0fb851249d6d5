"""Local day numbers by offset arithmetic (``LocalPeriods``, open-ended or not) equal DuckDB's
time-zone conversion (``Sql.day_number`` / ``Sql.period``) across DST changes, inside the span
and, guarded, outside."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pytest
from sqlglot import exp

from yunying.analytics.common import Sql
from yunying.analytics.local_periods import LocalPeriods, offsets

ZONES = ("Asia/Shanghai", "UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe",
         "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham")  # fmt: skip


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("open_ended", [False, True])
def test_day_numbers_equal_time_zone_conversion(tz: str, open_ended: bool) -> None:
    sql = Sql("duckdb")
    lo, hi = datetime(2017, 10, 20, 13), datetime(2019, 4, 8, 7)
    days = LocalPeriods(sql, tz, None if open_ended else lo, hi)
    assert days.fast
    con = duckdb.connect()
    # every 29 min 59.000007 s from 40 days before the span to 40 days after it
    first = (days.lo if open_ended else lo) - timedelta(days=40)
    step = 1799000007 if not open_ended else 17990000071
    con.execute(
        "CREATE TABLE t AS SELECT ?::TIMESTAMP + to_microseconds(i * ?) AS timestamp"
        " FROM range(?) r(i)",
        [first, step, int((hi - first + timedelta(days=40)) / timedelta(microseconds=step))],
    )
    ts = exp.column("timestamp")
    for interval in ("hour", "day", "week", "month"):
        slow = sql.period(ts.copy(), interval, tz)
        fast = days.period(ts.copy(), interval)
        guarded = days.period(ts.copy(), interval, bounded=False)
        q = (
            exp.select(exp.Count(this=exp.Star()))
            .from_("t")
            .where(
                exp.or_(
                    exp.and_(days.inside(ts), exp.NEQ(this=fast, expression=slow)),
                    exp.NEQ(this=guarded, expression=slow.copy()),
                )
            )
        )
        assert con.execute(sql.render(q)).fetchone() == (0,), (tz, interval)
    q = (
        exp.select(exp.Count(this=exp.Star()))
        .from_("t")
        .where(exp.NEQ(this=days.day(ts.copy(), bounded=False), expression=sql.day_number(ts, tz)))
    )
    assert con.execute(sql.render(q)).fetchone() == (0,), tz


def test_offsets_and_engines() -> None:
    parts = offsets("America/New_York", datetime(2024, 1, 1), datetime(2025, 1, 1))
    assert parts is not None
    assert [p[0] for p in parts[1:]] == [datetime(2024, 3, 10, 7), datetime(2024, 11, 3, 6)]
    assert [p[1] // 3_600_000_000 for p in parts] == [-5, -4, -5]
    ch = LocalPeriods(Sql("clickhouse"), "UTC", datetime(2024, 1, 1), datetime(2024, 2, 1))
    assert not ch.fast
    ts = exp.column("timestamp")
    assert ch.day(ts).sql("clickhouse") == Sql("clickhouse").day_number(ts, "UTC").sql("clickhouse")
