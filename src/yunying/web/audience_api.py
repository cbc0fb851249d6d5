"""/api/v1/audience: person profiles, lifecycle stages, RFM, personas."""

from __future__ import annotations

from fastapi import APIRouter

from yunying.runtime import Runtime


def audience_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation."""
    return APIRouter()
