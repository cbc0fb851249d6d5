"""Local day, week, month and hour numbers of event timestamps without a time-zone conversion
per event (DuckDB).

``Sql.period`` turns each naive-UTC timestamp into local wall-clock time (DuckDB's ICU
``timezone()``, twice) and then into a day, week, month or hour number. Over millions of events
that conversion is most of a query's time. Within a span of time the zone's UTC offset only
changes at a few known instants, so the local day number is plain integer arithmetic on the
epoch microseconds: ``(epoch_us + offset) // 86_400_000_000`` with ``offset`` a constant (or a
CASE over the span's transitions); weeks follow from days, months from a CASE over the local
day numbers of the months' first days. The numbers are exactly those of :func:`period_number`
(and of ``Sql.period``) for every instant of the span; outside it :class:`LocalPeriods` falls
back to ``Sql.period``. ClickHouse keeps ``Sql.period``: its conversions are already cheap.
Every local-day computation (analytics, metrics, audience) goes through :class:`LocalPeriods`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from sqlglot import exp

from yunying.analytics.common import EPOCH, Sql, fn, lit, period_number

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
#: More offset changes than this inside a span (or a longer span) and the CASE is not worth it.
MAX_TRANSITIONS = 40
MAX_SPAN = timedelta(days=3700)
MAX_MONTHS = 150
#: The earliest instant of a span: day numbers stay non-negative, so ``//`` is a floor.
FLOOR = datetime(1970, 1, 3)
#: How far back an open-ended span (``lo=None``) is made exact and fast.
OPEN_SPAN = timedelta(days=3 * 366)
_STEP = timedelta(hours=6)
_US = timedelta(microseconds=1)


def _offset_us(zone: ZoneInfo, t: datetime) -> int:
    off = t.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    assert off is not None
    return off // _US


@lru_cache(maxsize=512)
def offsets(
    tz: str, lo: datetime, hi: datetime, limit: int = MAX_TRANSITIONS
) -> tuple[tuple[datetime, int], ...] | None:
    """The zone's UTC offsets (microseconds) over ``[lo, hi)`` (naive UTC) as (from, offset)
    pairs, the first from ``lo``; None with more than ``limit`` pairs."""
    zone = ZoneInfo(tz)
    out = [(lo, _offset_us(zone, lo))]
    t = lo
    while t < hi:
        u = min(t + _STEP, hi)
        if _offset_us(zone, u) != out[-1][1]:
            a, b = t, u  # the offset changes in (a, b]: find the first instant with the new one
            while b - a > _US:
                m = a + (b - a) // 2
                if _offset_us(zone, m) == out[-1][1]:
                    a = m
                else:
                    b = m
            out.append((b, _offset_us(zone, b)))
            if len(out) > limit:
                return None
        t = u
    return tuple(out)


def _hour(t: datetime) -> datetime:
    """``t`` rounded down to the hour (so that cached open spans repeat between queries)."""
    return t.replace(minute=0, second=0, microsecond=0)


class LocalPeriods:
    """Local day, week, month and hour numbers of naive-UTC timestamps in ``tz``, cheap for
    those in ``[lo, hi)`` (``lo=None``: the :data:`OPEN_SPAN` before ``hi``)."""

    def __init__(self, sql: Sql, tz: str, lo: datetime | None, hi: datetime) -> None:
        self.sql = sql
        self.tz = tz
        self.lo = max(FLOOR, _hour(hi - OPEN_SPAN)) if lo is None else lo
        self.hi = hi
        self.parts: tuple[tuple[datetime, int], ...] | None = None
        if sql.dialect == "duckdb" and FLOOR <= self.lo < hi and hi - self.lo <= MAX_SPAN:
            self.parts = offsets(tz, self.lo, hi)

    @property
    def fast(self) -> bool:
        """Whether the arithmetic applies (DuckDB and a span with few offset changes)."""
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

    def day(self, ts: exp.Expr, bounded: bool = True) -> exp.Expr:
        """The local day number of ``ts`` (days since 1970-01-01, as ``Sql.day_number``).
        ``bounded``: the caller only passes instants inside the span; else those outside take
        ``Sql.day_number``."""
        if self.parts is None:
            return self.sql.day_number(ts, self.tz)
        return self._guard(ts, self._day(ts), self.sql.day_number(ts.copy(), self.tz), bounded)

    def period(self, ts: exp.Expr, interval: str, bounded: bool = True) -> exp.Expr:
        """The period number of ``ts`` (as ``Sql.period``). ``bounded``: the caller only
        passes instants inside the span; else those outside it take ``Sql.period``."""
        fast = self._fast(ts, interval) if self.parts is not None else None
        if fast is None:
            return self.sql.period(ts, interval, self.tz)
        return self._guard(ts, fast, self.sql.period(ts.copy(), interval, self.tz), bounded)

    def _guard(self, ts: exp.Expr, fast: exp.Expr, slow: exp.Expr, bounded: bool) -> exp.Expr:
        if bounded:
            return fast
        return exp.Case(ifs=[exp.If(this=self.inside(ts), true=fast)], default=slow)

    def _day(self, ts: exp.Expr) -> exp.Expr:
        return exp.Paren(
            this=exp.IntDiv(this=exp.Paren(this=self.local_us(ts)), expression=lit(DAY_US))
        )

    def _fast(self, ts: exp.Expr, interval: str) -> exp.Expr | None:
        if interval == "hour":
            return exp.IntDiv(this=exp.Paren(this=self.local_us(ts)), expression=lit(HOUR_US))
        day = self._day(ts)
        if interval == "day":
            return day
        if interval == "week":
            return exp.IntDiv(
                this=exp.Paren(this=exp.Sub(this=day, expression=lit(4))), expression=lit(7)
            )
        if interval == "month":
            return self._months(day)
        return None

    def _months(self, day: exp.Expr) -> exp.Expr | None:
        first = self._local_date(self.lo)
        last = self._local_date(self.hi)
        starts: list[date] = []
        m = date(first.year, first.month, 1)
        while m <= last:
            m = date(m.year + m.month // 12, m.month % 12 + 1, 1)
            starts.append(m)
            if len(starts) > MAX_MONTHS:
                return None
        ifs = [
            exp.If(
                this=exp.LT(this=day.copy(), expression=lit((s - EPOCH).days)),
                true=lit(period_number(s, "month") - 1),
            )
            for s in starts
        ]
        return exp.Case(ifs=ifs, default=lit(period_number(starts[-1], "month")))

    def _local_date(self, t: datetime) -> date:
        return t.replace(tzinfo=UTC).astimezone(ZoneInfo(self.tz)).date()


def shift_left(sql: Sql, k: exp.Expr) -> exp.Expr:
    """``1 << k`` as a 64-bit integer (ClickHouse evaluates it for rows a CASE leaves out too,
    and refuses negative shifts, so ``k`` is kept within 0..63 there)."""
    if sql.ch:
        k = fn("least", fn("greatest", k, lit(0)), lit(63))
        return fn("bitShiftLeft", fn("toInt64", lit(1)), k)
    return exp.BitwiseLeftShift(this=exp.cast(lit(1), "BIGINT"), expression=exp.Paren(this=k))


def bit(sql: Sql, mask: exp.Expr, k: int) -> exp.Expr:
    """Bit ``k`` (0 or 1) of ``mask``."""
    if sql.ch:
        return fn("bitAnd", fn("bitShiftRight", mask, lit(k)), lit(1))
    shifted = exp.Paren(this=exp.BitwiseRightShift(this=mask, expression=lit(k)))
    return exp.BitwiseAnd(this=shifted, expression=lit(1))
