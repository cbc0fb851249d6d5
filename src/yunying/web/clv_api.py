"""/api/v1/clv: fit and read customer lifetime value models."""

from __future__ import annotations

from fastapi import APIRouter

from yunying.runtime import Runtime


def clv_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation."""
    return APIRouter()
