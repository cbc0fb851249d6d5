"""A small in-process cache for page data, invalidated when a project's events change.

Analyses over a whole demo take hundreds of milliseconds each; a dashboard runs sixteen. Pages
keep their results here keyed by what was asked, together with the project's *data stamp* (event
count and newest timestamp, itself re-read at most every ``STAMP_SECONDS``), so new events show
up within seconds while repeated views cost nothing. Under steady ingestion the stamp changes all
the time: a page then gets the previous value (at most ``STALE_SECONDS`` old) while it is
recomputed in the background, and the next view shows the new one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

STAMP_SECONDS = 10.0
MAX_AGE_SECONDS = 600.0
#: How old a value computed before the latest events may be while a fresh one is computed.
STALE_SECONDS = 900.0


class PageCache:
    """LRU of computed values, each valid for one data stamp and at most ``max_age`` seconds.

    Two requests for the same missing key compute it once: the second waits for the first
    (a background warm-up and the user's first visit often ask for the same dashboard)."""

    def __init__(
        self,
        size: int = 256,
        max_age: float = MAX_AGE_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        self.size = size
        self.max_age = max_age
        self.stale_seconds = stale_seconds
        self._refresher = ThreadPoolExecutor(1, thread_name_prefix="yunying-console-refresh")
        self._items: OrderedDict[Hashable, tuple[Hashable, float, Any]] = OrderedDict()
        self._running: dict[tuple[Hashable, Hashable], Future[Any]] = {}
        self._lock = threading.Lock()

    def peek(self, key: Hashable, stamp: Hashable) -> bool:
        """Whether a fresh value for ``key`` is cached."""
        with self._lock:
            hit = self._items.get(key)
            return hit is not None and hit[0] == stamp and time.monotonic() - hit[1] < self.max_age

    def get(self, key: Hashable, stamp: Hashable, compute: Callable[[], T]) -> T:
        """The value of ``key`` for ``stamp``.

        A fresh value is returned as is. A value computed for an older stamp (new events came
        in) and less than ``stale_seconds`` old is returned too, while a background thread
        recomputes it: under steady ingestion the stamp changes every few seconds, and pages must
        not pay the full computation on every view. Anything else is computed now (once, however
        many requests ask)."""
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                age = now - hit[1]
                if hit[0] == stamp and age < self.max_age:
                    self._items.move_to_end(key)
                    return hit[2]  # type: ignore[no-any-return,unused-ignore]
                if age < self.stale_seconds:
                    if (key, stamp) not in self._running:
                        self._running[(key, stamp)] = Future()
                        self._refresher.submit(self._compute, key, stamp, compute, now)
                    return hit[2]  # type: ignore[no-any-return,unused-ignore]
            running = self._running.get((key, stamp))
            mine = running is None
            if running is None:
                running = self._running[(key, stamp)] = Future()
        if not mine:
            return running.result()  # type: ignore[no-any-return,unused-ignore]
        return self._compute(key, stamp, compute, now)

    def _compute(self, key: Hashable, stamp: Hashable, compute: Callable[[], T], now: float) -> T:
        """Compute, store and hand the value to whoever waits for it."""
        with self._lock:
            running = self._running[(key, stamp)]
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                self._running.pop((key, stamp), None)
            running.set_exception(exc)
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
