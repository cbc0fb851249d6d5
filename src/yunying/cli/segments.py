"""Segments and tags: `yunying segment create|list|show|members|export`, `yunying tag ...`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``yunying`` app."""
