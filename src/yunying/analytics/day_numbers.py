"""Local day numbers of event timestamps by integer arithmetic instead of a time-zone conversion
per event (DuckDB).

``Sql.day_number`` turns each naive-UTC timestamp into local wall-clock time with DuckDB's ICU
``timezone()`` (twice) before taking its date: over a million events that is about a quarter of
a second per pass, most of what the audience and metrics queries cost. Within a span of time a
zone's UTC offset only changes at a few known instants, so the local day is
``(epoch_us + offset) // 86_400_000_000`` with ``offset`` a constant, or a CASE over the span's
offset changes (found here with :mod:`zoneinfo`). The numbers are exactly those of
``Sql.day_number`` (and :func:`~yunying.analytics.common.period_number`) for every instant of the
span; outside it the expression falls back to ``Sql.day_number``. ClickHouse keeps
``Sql.day_number``: its conversion is cheap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlglot import exp

from yunying.analytics import local_periods
from yunying.analytics.common import Sql, fn, lit

DAY_US = 86_400_000_000
#: With more offset changes than this in the span the CASE is not worth it.
MAX_CHANGES = 40
#: The earliest instant of a span: day numbers stay non-negative, so ``//`` is a floor.
FLOOR = datetime(1970, 1, 3)
#: How far back an open-ended span (``lo=None``) is made exact and fast.
OPEN_SPAN = timedelta(days=3 * 366)


def offsets(tz: str, lo: datetime, hi: datetime) -> tuple[tuple[datetime, int], ...] | None:
    """The zone's UTC offsets (µs) over ``[lo, hi)`` (naive UTC) as (from, offset) pairs, the
    first from ``lo``; None with more than :data:`MAX_CHANGES` changes."""
    return local_periods.offsets(tz, lo, hi, MAX_CHANGES + 1)


def _hour(t: datetime) -> datetime:
    """``t`` rounded down to the hour (so that cached spans repeat between queries)."""
    return t.replace(minute=0, second=0, microsecond=0)


class LocalDays:
    """Local day numbers in ``tz`` of naive-UTC timestamps, cheap for those in ``[lo, hi)``
    (``lo=None``: the :data:`OPEN_SPAN` before ``hi``)."""

    def __init__(self, sql: Sql, tz: str, lo: datetime | None, hi: datetime) -> None:
        self.sql = sql
        self.tz = tz
        self.hi = hi
        self.lo = max(FLOOR, _hour(hi - OPEN_SPAN) if lo is None else lo)
        self.parts: tuple[tuple[datetime, int], ...] | None = None
        if sql.dialect == "duckdb" and self.lo < hi:
            self.parts = offsets(tz, self.lo, hi)

    @property
    def fast(self) -> bool:
        """Whether the arithmetic applies (DuckDB and few offset changes in the span)."""
        return self.parts is not None

    def local_us(self, ts: exp.Expr) -> exp.Expr:
        """Microseconds since the local epoch of ``ts`` (inside the span only)."""
        assert self.parts is not None
        off: exp.Expr = lit(self.parts[-1][1])
        if len(self.parts) > 1:  # newest first: most events take the first branch
            ifs = [
                exp.If(
                    this=exp.GTE(this=ts.copy(), expression=self.sql.ts_literal(start)),
                    true=lit(value),
                )
                for start, value in reversed(self.parts[1:])
            ]
            off = exp.Case(ifs=ifs, default=lit(self.parts[0][1]))
        return exp.Add(this=fn("epoch_us", ts.copy()), expression=off)

    def inside(self, ts: exp.Expr) -> exp.Expr:
        """``lo <= ts < hi``."""
        return exp.and_(
            exp.GTE(this=ts.copy(), expression=self.sql.ts_literal(self.lo)),
            exp.LT(this=ts.copy(), expression=self.sql.ts_literal(self.hi)),
        )

    def _guard(self, ts: exp.Expr, fast: exp.Expr, slow: exp.Expr, bounded: bool) -> exp.Expr:
        if bounded:
            return fast
        return exp.Case(ifs=[exp.If(this=self.inside(ts), true=fast)], default=slow)

    def _day(self, ts: exp.Expr) -> exp.Expr:
        return exp.Paren(
            this=exp.IntDiv(this=exp.Paren(this=self.local_us(ts)), expression=lit(DAY_US))
        )

    def day(self, ts: exp.Expr, bounded: bool = True) -> exp.Expr:
        """The local day number of ``ts`` (as ``Sql.day_number``). ``bounded``: the caller
        only passes instants inside the span; else those outside take ``Sql.day_number``."""
        if self.parts is None:
            return self.sql.day_number(ts, self.tz)
        return self._guard(ts, self._day(ts), self.sql.day_number(ts.copy(), self.tz), bounded)

    def period(self, ts: exp.Expr, interval: str, bounded: bool = True) -> exp.Expr:
        """The period number of ``ts`` (as ``Sql.period``): days and weeks by arithmetic,
        months and hours by ``Sql.period``."""
        if self.parts is None or interval not in ("day", "week"):
            return self.sql.period(ts, interval, self.tz)
        fast = self._day(ts)
        if interval == "week":
            fast = exp.Paren(
                this=exp.IntDiv(
                    this=exp.Paren(this=exp.Sub(this=fast, expression=lit(4))), expression=lit(7)
                )
            )
        return self._guard(ts, fast, self.sql.period(ts.copy(), interval, self.tz), bounded)
