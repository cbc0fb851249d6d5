"""Customer lifetime value: `yunying clv fit` (BG/NBD + Gamma-Gamma)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``yunying`` app."""
