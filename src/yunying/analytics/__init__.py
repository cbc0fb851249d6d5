"""Analytics: trends, funnels, retention and lifecycle, built once as SQLGlot trees and rendered
for the events engine (DuckDB or ClickHouse). Each analysis is a frozen query dataclass and a
function ``analysis(source, project_id, query) -> Result``; any EventStore is a source."""

from yunying.analytics.common import (
    AnalyticsError,
    DateRange,
    Field,
    Filter,
    InvalidQuery,
    Period,
    Source,
    UnsupportedEngine,
    col,
    periods,
    prop,
)
from yunying.analytics.funnels import (
    FunnelBreakdown,
    FunnelQuery,
    FunnelResult,
    FunnelStep,
    FunnelStepResult,
    funnel,
)
from yunying.analytics.lifecycle import LifecycleQuery, LifecycleResult, lifecycle
from yunying.analytics.retention import (
    RetentionCohort,
    RetentionQuery,
    RetentionResult,
    retention,
)
from yunying.analytics.trends import Series, TrendSeries, TrendsQuery, TrendsResult, trends

__all__ = [
    "LifecycleQuery",
    "LifecycleResult",
    "RetentionCohort",
    "RetentionQuery",
    "RetentionResult",
    "Series",
    "TrendSeries",
    "TrendsQuery",
    "TrendsResult",
    "lifecycle",
    "retention",
    "trends",
    "AnalyticsError",
    "DateRange",
    "Field",
    "Filter",
    "FunnelBreakdown",
    "FunnelQuery",
    "FunnelResult",
    "FunnelStep",
    "FunnelStepResult",
    "InvalidQuery",
    "Period",
    "Source",
    "UnsupportedEngine",
    "col",
    "funnel",
    "periods",
    "prop",
]
