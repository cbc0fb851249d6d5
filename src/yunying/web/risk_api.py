"""/api/v1/risk: anti-fraud review queue and blocklist."""

from __future__ import annotations

from fastapi import APIRouter

from yunying.runtime import Runtime


def risk_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation."""
    return APIRouter()
