"""Exception classes shared across capabilities; each carries a message meant for users."""

from __future__ import annotations


class YunyingError(Exception):
    """Base class: ``str(err)`` is a message a user can act on."""


class ConfigError(YunyingError):
    """The configuration (data dir, engine URLs) is unusable."""


class NotFound(YunyingError):
    """A named object (project, key) does not exist."""


class Conflict(YunyingError):
    """The object already exists or the change clashes with current state."""


class ReadOnlyViolation(YunyingError):
    """A read-only interface (``yunying sql``) was asked to write."""
