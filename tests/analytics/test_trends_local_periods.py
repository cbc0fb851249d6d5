"""Period numbers by offset arithmetic (``local_periods``) equal DuckDB's time-zone conversion
(``Sql.period``) and :func:`period_number`, across DST changes and month ends."""

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
def test_fast_periods_equal_time_zone_conversion(tz: str) -> None:
    sql = Sql("duckdb")
    lo, hi = datetime(2017, 10, 20, 13), datetime(2019, 4, 8, 7)
    lp = LocalPeriods(sql, tz, lo, hi)
    assert lp.fast
    con = duckdb.connect()
    # every 29 min 59.000007 s from 40 days before the span to 40 days after it
    first = lo - timedelta(days=40)
    con.execute(
        "CREATE TABLE t AS SELECT ?::TIMESTAMP + to_microseconds(i * 1799000007) AS timestamp"
        " FROM range(?) r(i)",
        [first, int((hi - first + timedelta(days=40)) / timedelta(microseconds=1799000007))],
    )
    ts = exp.column("timestamp")
    for interval in ("hour", "day", "week", "month"):
        slow = sql.period(ts.copy(), interval, tz)
        fast = lp.period(ts.copy(), interval)
        guarded = lp.period(ts.copy(), interval, bounded=False)
        inside = exp.and_(
            exp.GTE(this=ts.copy(), expression=sql.ts_literal(lo)),
            exp.LT(this=ts.copy(), expression=sql.ts_literal(hi)),
        )
        q = (
            exp.select(exp.Count(this=exp.Star()))
            .from_("t")
            .where(
                exp.or_(
                    exp.and_(inside, exp.NEQ(this=fast, expression=slow)),
                    exp.NEQ(this=guarded, expression=slow.copy()),
                )
            )
        )
        assert con.execute(sql.render(q)).fetchone() == (0,), (tz, interval)


def test_offsets_find_each_change_to_the_microsecond() -> None:
    parts = offsets("America/New_York", datetime(2024, 1, 1), datetime(2025, 1, 1))
    assert parts is not None
    assert [p[0] for p in parts[1:]] == [datetime(2024, 3, 10, 7), datetime(2024, 11, 3, 6)]
    assert [p[1] // 3_600_000_000 for p in parts] == [-5, -4, -5]
    assert (
        LocalPeriods(Sql("clickhouse"), "UTC", datetime(2024, 1, 1), datetime(2024, 2, 1)).fast
        is False
    )
