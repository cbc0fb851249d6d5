"""Anti-fraud (风控): signals, per-activity policy, review queue, blocklist.

Public surface used by the activities engine: :class:`Claim` in, :class:`RiskDecision` out of
:func:`assess` under a :class:`RiskPolicy` (the activity spec's ``risk:`` section); held claims
come back through the handler registered with :func:`on_review_decided`.
"""

from yunying.risk.blocklist import (
    BlockEntry,
    InvalidBlockEntry,
    add_block,
    get_block,
    list_blocks,
    remove_block,
)
from yunying.risk.engine import assess
from yunying.risk.model import Claim, InviteEdge, InviteGraph, Outcome, RiskDecision, RiskReason
from yunying.risk.policy import InvalidPolicy, RiskPolicy
from yunying.risk.review import (
    InvalidReviewQuery,
    Review,
    ReviewAlreadyDecided,
    ReviewHandler,
    ReviewHandlerFailed,
    activity_summary,
    decide,
    get_review,
    list_reviews,
    on_review_decided,
)

__all__ = [
    "BlockEntry",
    "Claim",
    "InvalidBlockEntry",
    "InvalidPolicy",
    "InvalidReviewQuery",
    "InviteEdge",
    "InviteGraph",
    "Outcome",
    "Review",
    "ReviewAlreadyDecided",
    "ReviewHandler",
    "ReviewHandlerFailed",
    "RiskDecision",
    "RiskPolicy",
    "RiskReason",
    "activity_summary",
    "add_block",
    "assess",
    "decide",
    "get_block",
    "get_review",
    "list_blocks",
    "list_reviews",
    "on_review_decided",
    "remove_block",
]
