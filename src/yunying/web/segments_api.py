"""/api/v1/segments and /api/v1/tags: segment and tag management and membership."""

from __future__ import annotations

from fastapi import APIRouter

from yunying.runtime import Runtime


def segments_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation."""
    return APIRouter()
