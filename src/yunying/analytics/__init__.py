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

__all__ = [
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
