"""Anti-fraud (风控): signals, per-activity policy, review queue, blocklist.

Public surface used by the activities engine: :class:`Claim` in, :class:`RiskDecision` out.
"""

from yunying.risk.model import Claim, InviteEdge, InviteGraph, Outcome, RiskDecision, RiskReason

__all__ = ["Claim", "InviteEdge", "InviteGraph", "Outcome", "RiskDecision", "RiskReason"]
