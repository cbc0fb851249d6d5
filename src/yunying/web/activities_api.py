"""Activities: management API (/api/v1/activities, ledger) and the app-facing API."""

from __future__ import annotations

from fastapi import APIRouter

from yunying.runtime import Runtime


def activities_router(runtime: Runtime) -> APIRouter:
    """The routes of this capability for one installation."""
    return APIRouter()
