"""Audience reports: `yunying lifecycle-stages`, `yunying rfm`, `yunying persona`, `yunying profile`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``yunying`` app."""
