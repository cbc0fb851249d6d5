"""Deprecated name of :class:`~yunying.analytics.local_periods.LocalPeriods` (one class serves
days, weeks, months and hours); kept while callers move."""

from yunying.analytics.local_periods import LocalPeriods as LocalDays
from yunying.analytics.local_periods import offsets

__all__ = ["LocalDays", "offsets"]
