"""Languages of the console: Babel catalogs and locale-aware formatting.

Text is written in English in templates and code (``_("...")``) and translated through the
catalogs in ``locale/<lang>/LC_MESSAGES/messages.po``. The ``.po`` files are the committed
source; they are compiled in memory when the console starts (no ``.mo`` build step, nothing
written into the installed package). ``make i18n`` re-extracts the strings and updates the
catalogs after a template changes.

Errors of the feature modules carry :class:`yunying.errors.Message` texts (marked with ``M_`` where
they are raised): :func:`translate` renders one through the catalog from its template and
parameters, so the HTTP API keeps its English text while console pages speak the reader's
language. Unmarked texts are shown as they are.

Numbers, money (CNY) and dates are formatted per locale with Babel; dates and times are shown in
the project's time zone.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_compact_decimal, format_currency, format_decimal, format_percent
from babel.support import Translations

from yunying.errors import Message, message_of

LOCALES: tuple[str, ...] = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
LOCALE_DIR = Path(__file__).parent / "locale"
#: Names shown in the language switch, each in its own language.
LOCALE_NAMES = {"zh_CN": "中文", "en": "English"}
CURRENCY = "CNY"


def pick_locale(*candidates: str | None) -> str:
    """The first supported locale among ``candidates`` (``zh``, ``zh-CN``, ``en-US``... match),
    else the default."""
    for c in candidates:
        if not c:
            continue
        for part in c.split(","):
            tag = part.split(";")[0].strip().replace("-", "_")
            if tag in LOCALES:
                return tag
            base = tag.split("_")[0].lower()
            if base == "zh":
                return "zh_CN"
            if base == "en":
                return "en"
    return DEFAULT_LOCALE


@cache
def translations(locale: str) -> Translations:
    """The compiled catalog of ``locale`` (English needs none: it is the source language)."""
    po = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return Translations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


@dataclass(frozen=True)
class Formatter:
    """Locale- and time-zone-bound formatting used by templates and CSV-free display."""

    locale: str
    timezone: str = "Asia/Shanghai"

    @property
    def babel_locale(self) -> Locale:
        return Locale.parse(self.locale)

    def number(self, value: float | int | None, digits: int = 0) -> str:
        """``12,345`` (grouping per locale); ``–`` for missing values."""
        if value is None:
            return "–"
        fmt = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=fmt, locale=self.locale)

    def compact(self, value: float | int | None) -> str:
        """Short form for cards: ``1.2万`` in Chinese, ``12K`` in English."""
        if value is None:
            return "–"
        if abs(value) < 10_000:
            return self.number(value, 0 if float(value).is_integer() else 1)
        return format_compact_decimal(value, locale=self.locale, fraction_digits=1)

    def money(self, value: float | int | None, digits: int = 2) -> str:
        """Amount in yuan: ``¥1,234.00`` (``CN¥`` in English, as Babel spells it)."""
        if value is None:
            return "–"
        fmt = "¤#,##0" + ("." + "0" * digits if digits else "")
        return format_currency(
            value, CURRENCY, format=fmt, locale=self.locale, currency_digits=False
        )

    def percent(self, value: float | None, digits: int = 1) -> str:
        """``12.3%``; ``–`` for missing values."""
        if value is None:
            return "–"
        fmt = "#,##0" + ("." + "0" * digits if digits else "") + "%"
        return format_percent(value, format=fmt, locale=self.locale)

    def change(self, value: float | None) -> str:
        """Signed relative change: ``+4.2%`` / ``-1.0%``."""
        if value is None:
            return "–"
        sign = "+" if value > 0 else ""
        return sign + self.percent(value)

    def date(self, value: date | str | None, fmt: str = "medium") -> str:
        """A calendar day per locale (``2026年11月22日`` / ``Nov 22, 2026``)."""
        if value is None:
            return "–"
        if isinstance(value, str):
            value = date.fromisoformat(value[:10])
        return format_date(value, format=fmt, locale=self.locale)

    def datetime(self, value: datetime | None, fmt: str = "medium") -> str:
        """An instant shown in the project's time zone."""
        if value is None:
            return "–"
        return format_datetime(
            value, format=fmt, tzinfo=ZoneInfo(self.timezone), locale=self.locale
        )


def translate(message: object, gettext: Callable[[str], str]) -> str:
    """``message`` (an error, a :class:`Message` or plain text) in the catalog's language: a
    marked message's template is looked up and filled with its parameters (marked parameters
    translated too); anything else, or a translation that does not fit its parameters, is shown
    as the English text."""
    if isinstance(message, BaseException):
        message = message_of(message)
    if not isinstance(message, Message):
        return "" if message is None else str(message)
    params = {
        k: translate(v, gettext) if isinstance(v, Message) else v for k, v in message.params.items()
    }
    try:
        return gettext(message.template).format(**params)
    except (KeyError, IndexError, ValueError, AttributeError):
        return str(message)
