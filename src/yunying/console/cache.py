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
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

STAMP_SECONDS = 10.0
MAX_AGE_SECONDS = 600.0


class PageCache:
    """LRU of computed values, each valid for one data stamp and at most ``max_age`` seconds.

    Two requests for the same missing key compute it once: the second waits for the first
    (a background warm-up and the user's first visit often ask for the same dashboard)."""

    def __init__(self, size: int = 256, max_age: float = MAX_AGE_SECONDS) -> None:
        self.size = size
        self.max_age = max_age
        self._items: OrderedDict[Hashable, tuple[Hashable, float, Any]] = OrderedDict()
        self._running: dict[tuple[Hashable, Hashable], Future[Any]] = {}
        self._lock = threading.Lock()

    def peek(self, key: Hashable, stamp: Hashable) -> bool:
        """Whether a fresh value for ``key`` is cached."""
        with self._lock:
            hit = self._items.get(key)
            return hit is not None and hit[0] == stamp and time.monotonic() - hit[1] < self.max_age

    def get(self, key: Hashable, stamp: Hashable, compute: Callable[[], T]) -> T:
        """The cached value of ``key`` for ``stamp``, computing (outside the lock) when absent."""
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp and now - hit[1] < self.max_age:
                self._items.move_to_end(key)
                return hit[2]  # type: ignore[no-any-return,unused-ignore]
            running = self._running.get((key, stamp))
            mine = running is None
            if running is None:
                running = self._running[(key, stamp)] = Future()
        if not mine:
            return running.result()  # type: ignore[no-any-return,unused-ignore]
        try:
            value = compute()
        except BaseException as exc:
            running.set_exception(exc)
            with self._lock:
                self._running.pop((key, stamp), None)
            raise
        with self._lock:
            self._items[key] = (stamp, now, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            self._running.pop((key, stamp), None)
        running.set_result(value)
        return value

    def clear(self) -> None:
        """Forget everything (tests, demo regeneration)."""
        with self._lock:
            self._items.clear()
