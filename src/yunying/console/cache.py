"""A small in-process cache for page data, invalidated when a project's events change.

Analyses over a whole demo take hundreds of milliseconds each; a dashboard runs sixteen. Pages
keep their results here keyed by what was asked, together with the project's *data stamp* (event
count and newest timestamp, itself re-read at most every ``STAMP_SECONDS``), so new events show
up within seconds while repeated views cost nothing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

STAMP_SECONDS = 10.0
MAX_AGE_SECONDS = 600.0


class PageCache:
    """LRU of computed values, each valid for one data stamp and at most ``max_age`` seconds."""

    def __init__(self, size: int = 256, max_age: float = MAX_AGE_SECONDS) -> None:
        self.size = size
        self.max_age = max_age
        self._items: OrderedDict[Hashable, tuple[Hashable, float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, stamp: Hashable, compute: Callable[[], T]) -> T:
        """The cached value of ``key`` for ``stamp``, computing (outside the lock) when absent."""
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp and now - hit[1] < self.max_age:
                self._items.move_to_end(key)
                return hit[2]  # type: ignore[no-any-return,unused-ignore]
        value = compute()
        with self._lock:
            self._items[key] = (stamp, now, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget everything (tests, demo regeneration)."""
        with self._lock:
            self._items.clear()
