"""HTTP API (and, later, the console) on one FastAPI application."""

from yunying.web.app import create_app

__all__ = ["create_app"]
