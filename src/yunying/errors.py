"""Exception classes shared across capabilities; each carries a message meant for users.

A message may be a :class:`Message`: a ``str`` (so ``str(err)``, logs and the HTTP API read the
same English text as ever) that also keeps its template and parameters, so the console can show
it in the reader's language through its catalogs. Raise sites mark such texts with :func:`M_`::

    raise InvalidQuery(M_("unknown interval {interval!r}; use one of {choices}",
                          interval=interval, choices=", ".join(INTERVALS)))

``make i18n`` extracts ``M_`` templates into the console catalogs (``-k M_``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Message(str):
    """English text plus the template and parameters it was made of (for translation)."""

    template: str
    params: dict[str, Any]

    def __new__(
        cls, template: str, params: Mapping[str, Any] | None = None, text: str | None = None
    ) -> Message:
        values = dict(params or {})
        if text is None:
            text = template.format(**values) if values else template
        obj = super().__new__(cls, text)
        obj.template = template
        obj.params = values
        return obj

    def with_text(self, text: str) -> Message:
        """The same template and parameters, read as ``text`` in English (where the English
        wording must stay exactly as it was, e.g. Pydantic's own prefixes)."""
        return Message(self.template, self.params, text)

    def __reduce__(self) -> Any:  # pickling keeps the template (process pools, caches)
        return (Message, (self.template, self.params, str(self)))


def M_(template: str, /, **params: Any) -> Message:
    """Mark ``template`` for translation; ``params`` fill its ``{name}`` fields."""
    return Message(template, params)


def message_record(text: str | None) -> dict[str, Any] | None:
    """A marked message as JSON-ready data (template, parameters, English text), to be stored
    beside its text and shown later in the reader's language; None for unmarked text."""
    if not isinstance(text, Message):
        return None

    def value(v: Any) -> Any:
        if isinstance(v, Message):
            return message_record(v)
        return v if v is None or isinstance(v, (bool, int, float)) else str(v)

    params = {k: value(v) for k, v in text.params.items()}
    return {"template": text.template, "params": params, "text": str(text)}


def message_from_record(record: Mapping[str, Any] | None, text: str | None) -> str | None:
    """The :class:`Message` a :func:`message_record` was made of, else ``text`` as it is."""
    if not record or "template" not in record:
        return text

    def value(v: Any) -> Any:
        return message_from_record(v, v.get("text")) if isinstance(v, Mapping) else v

    params = {k: value(v) for k, v in (record.get("params") or {}).items()}
    return Message(str(record["template"]), params, str(record.get("text", text or "")))


def message_of(err: BaseException | str) -> str:
    """The message of an error as given (a :class:`Message` when the raise site marked it)."""
    if isinstance(err, BaseException):
        if len(err.args) == 1 and isinstance(err.args[0], str):
            first = err.args[0]
            return first if str(err) == first else str(err)
        return str(err)
    return err


def pydantic_message(error: Mapping[str, Any]) -> Message | str:
    """One entry of ``ValidationError.errors()`` as a message: the text Pydantic wrote (without
    its ``Value error, `` prefix), keeping a template when one is known — the raise site's
    :class:`Message` for ``ValueError``/custom errors, else Pydantic's own template."""
    text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    ctx = dict(error.get("ctx") or {})
    kind = str(error.get("type", ""))
    cause = ctx.get("error")
    if isinstance(cause, BaseException):
        inner = message_of(cause)
        return inner if isinstance(inner, Message) else text
    for value in ctx.values():  # a custom error carrying its marked message: "{message}"
        if isinstance(value, Message) and str(value) == text:
            return value
    try:
        from pydantic_core import PydanticKnownError

        template = PydanticKnownError(kind, ctx or None).message_template  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return text
    params = {k: v for k, v in ctx.items() if isinstance(v, str | int | float)}
    if "{expected_plural}" in template:  # Pydantic fills this one itself
        count = ctx.get("min_length", ctx.get("max_length", 1))
        params["expected_plural"] = "" if count == 1 else "s"
    return Message(template, params, text)


class YunyingError(Exception):
    """Base class: ``str(err)`` is a message a user can act on (a :class:`Message` when the raise
    site marked it for translation: see :attr:`message`)."""

    @property
    def message(self) -> str:
        """The message as raised: a :class:`Message` (translatable) or plain text."""
        return message_of(self)


class ConfigError(YunyingError):
    """The configuration (data dir, engine URLs) is unusable."""


class NotFound(YunyingError):
    """A named object (project, key) does not exist."""


class Conflict(YunyingError):
    """The object already exists or the change clashes with current state."""


class ReadOnlyViolation(YunyingError):
    """A read-only interface (``yunying sql``) was asked to write."""
