"""The single ingestion writer: batches submissions from many requests into one transaction.

Request handlers validate their payload, then :meth:`Writer.submit` the good events and wait on the
returned future; the writer thread drains whatever is queued (up to ``max_batch`` events), writes
it in one transaction and resolves every future only after COMMIT. A 200 therefore means durable,
and throughput is not bounded by one transaction per request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

from yunying.ingest.identity import IdentityResolver
from yunying.ingest.model import Event
from yunying.store.base import EventStore

log = logging.getLogger("yunying.ingest")


@dataclass(frozen=True)
class WriteResult:
    """What happened to one submission."""

    stored: int
    duplicates: int


#: Called after COMMIT with (project id, the events newly stored, their ``received_at``); runs on
#: the writer thread, so it must only hand the events over (e.g. put them on a queue).
Subscriber = Callable[[int, list[Event], datetime], None]


class WriterStopped(RuntimeError):
    """The writer is shut down; nothing submitted now will be stored."""


_STOP = object()


class Writer:
    """Owns all writes to an :class:`EventStore`; see the module docstring."""

    def __init__(self, store: EventStore, max_batch: int = 20_000) -> None:
        self.store = store
        self.max_batch = max_batch
        self.resolver = IdentityResolver()
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="yunying-writer", daemon=True)
        self._stopped = False
        self._subscribers: list[Subscriber] = []
        self._thread.start()

    def subscribe(self, callback: Subscriber) -> None:
        """Have ``callback`` told about every newly stored event after its batch commits."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def submit(self, project_id: int, events: Sequence[Event]) -> Future[WriteResult]:
        """Queue events for writing; the future resolves after they are committed."""
        fut: Future[WriteResult] = Future()
        if self._stopped:
            fut.set_exception(WriterStopped("the server is shutting down; retry shortly"))
            return fut
        if not events:
            fut.set_result(WriteResult(0, 0))
            return fut
        self._queue.put((project_id, list(events), fut))
        return fut

    def write(
        self, project_id: int, events: Sequence[Event], timeout: float | None = None
    ) -> WriteResult:
        """Submit and wait (for callers outside an event loop: import, tests)."""
        return self.submit(project_id, events).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything already queued, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            pending = [item]
            size = len(item[1])  # type: ignore[index]
            stop = False
            while size < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                pending.append(nxt)
                size += len(nxt[1])  # type: ignore[index]
            self._write(pending)  # type: ignore[arg-type]
            if stop:
                return

    def _write(self, pending: list[tuple[int, list[Event], Future[WriteResult]]]) -> None:
        started = time.perf_counter()
        received_at = datetime.now(UTC).replace(tzinfo=None)
        by_project: dict[int, list[Event]] = {}
        for project_id, events, _ in pending:
            by_project.setdefault(project_id, []).extend(events)
        try:
            inserted: dict[int, set[str]] = {}
            with self.store.transaction() as tx:
                for project_id, events in by_project.items():
                    inserted[project_id] = self.resolver.ingest(tx, project_id, events, received_at)
        except BaseException as exc:  # report to every waiter; nothing was acknowledged
            self.resolver.forget()
            log.exception("write of %d submissions failed", len(pending))
            for _, _, fut in pending:
                fut.set_exception(exc)
            return
        if self._subscribers:
            self._notify(by_project, inserted, received_at)
        for project_id, events, fut in pending:
            new = inserted[project_id]
            stored = 0
            for ev in events:
                if ev.uuid in new:
                    stored += 1
                    new.discard(ev.uuid)  # a uuid repeated within the batch counts once
            fut.set_result(WriteResult(stored, len(events) - stored))
        log.debug(
            "wrote %d events from %d submissions in %.1f ms",
            sum(len(e) for _, e, _ in pending),
            len(pending),
            (time.perf_counter() - started) * 1000,
        )

    def _notify(
        self,
        by_project: dict[int, list[Event]],
        inserted: dict[int, set[str]],
        received_at: datetime,
    ) -> None:
        """Hand each subscriber the first copy of every event this batch stored."""
        for project_id, events in by_project.items():
            new = inserted[project_id]
            seen: set[str] = set()
            fresh = []
            for ev in events:
                if ev.uuid in new and ev.uuid not in seen:
                    seen.add(ev.uuid)
                    fresh.append(ev)
            if not fresh:
                continue
            for callback in list(self._subscribers):
                try:
                    callback(project_id, fresh, received_at)
                except Exception:  # a subscriber's bug must not fail ingestion
                    log.exception("writer subscriber failed")
