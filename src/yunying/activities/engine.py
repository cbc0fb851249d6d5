"""Live rules: every committed event reaches the rules of running activities within moments.

The ingestion writer tells :class:`LiveRules` about each committed batch (``Writer.subscribe``);
the callback only queues it, and one processor thread applies the rules. For each (activity,
event) pair one state transaction records the event uuid in ``activity_seen_events`` (primary
key: a second delivery is skipped), updates the participant's progress and writes the rewards
now due to ``activity_outbox``; the rewards are then claimed through anti-fraud, each under a
key derived from activity, user and rule, so a claim is granted once however often it is tried.

Restarts: the processor keeps a per-project watermark (the ``received_at`` of the last batch it
finished). On start it replays the events store from a little before the watermark (seen uuids
are skipped) and finishes any outbox rows left, so nothing is lost and nothing granted twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlglot import exp

from yunying.activities import rules, service
from yunying.activities.ledger import aware, insert_ignore, insert_ignore_many, utcnow
from yunying.activities.rules import Due
from yunying.activities.service import Activity
from yunying.activities.tables import (
    activities,
    activity_progress,
    activity_seen_events,
    activity_watermarks,
)
from yunying.errors import YunyingError

if TYPE_CHECKING:
    from yunying.ingest.model import Event
    from yunying.runtime import Runtime

log = logging.getLogger("yunying.activities")

#: Catch-up replays events received this long before the watermark (clock skew, slow commits).
REPLAY_MARGIN = timedelta(minutes=2)
#: How long an audience answer (person property / segment match) is reused.
AUDIENCE_TTL = 60.0


@dataclass(frozen=True)
class LiveEvent:
    """The fields of an event the rules read."""

    uuid: str
    event: str
    distinct_id: str
    person_id: str | None
    timestamp: datetime  # aware UTC
    properties: dict[str, Any] = field(default_factory=dict)
    device_id: str | None = None
    ip: str | None = None

    @classmethod
    def of(cls, ev: Event) -> LiveEvent:
        ts = ev.timestamp if ev.timestamp.tzinfo else ev.timestamp.replace(tzinfo=UTC)
        return cls(
            str(ev.uuid),
            ev.event,
            ev.distinct_id,
            ev.person_id,
            ts,
            ev.properties,
            ev.device_id,
            ev.ip,
        )

    def context(self) -> dict[str, Any]:
        """What a claim records about its trigger."""
        return {
            "event_uuid": self.uuid,
            "event": self.event,
            "at": self.timestamp.isoformat(),
            "device_id": self.device_id,
            "ip": self.ip,
        }


# -- audience ---------------------------------------------------------------------------------


def person_of(runtime: Runtime, project_id: int, distinct_id: str) -> str | None:
    """The person a distinct id belongs to now (None if never seen)."""
    q = (
        exp.select("person_id")
        .from_(runtime.store.scoped("person_distinct_ids", project_id).subquery("d"))
        .where(exp.column("distinct_id").eq(exp.Literal.string(distinct_id)))
    )
    rows = runtime.store.query(q.sql(dialect=runtime.store.dialect)).rows
    return str(rows[0][0]) if rows else None


def person_record(
    runtime: Runtime, project_id: int, person_id: str
) -> tuple[dict[str, Any], datetime | None]:
    """A person's properties and first-seen time from the events store."""
    q = (
        exp.select("properties", "created_at")
        .from_(runtime.store.scoped("persons", project_id).subquery("p"))
        .where(exp.cast(exp.column("id"), "VARCHAR").eq(exp.Literal.string(person_id)))
    )
    rows = runtime.store.query(q.sql(dialect=runtime.store.dialect)).rows
    if not rows:
        return {}, None
    props, created = rows[0]
    if isinstance(props, str | bytes):
        props = orjson.loads(props) if props else {}
    return dict(props or {}), _ts(created)


def in_segment(runtime: Runtime, project_id: int, person_id: str, segment_id: int) -> bool:
    q = (
        exp.select(exp.Literal.number(1))
        .from_(runtime.store.scoped("person_values", project_id).subquery("v"))
        .where(
            exp.and_(
                exp.column("scope").eq(exp.Literal.string(f"segment:{segment_id}")),
                exp.cast(exp.column("person_id"), "VARCHAR").eq(exp.Literal.string(person_id)),
            )
        )
        .limit(1)
    )
    return bool(runtime.store.query(q.sql(dialect=runtime.store.dialect)).rows)


def _ts(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v if v.tzinfo else v.replace(tzinfo=UTC)


class AudienceCache:
    """Whether a person is in an activity's audience, asked once a minute at most."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache: dict[tuple[int, str], tuple[float, bool]] = {}

    def allows(self, act: Activity, person_id: str | None, at: datetime) -> bool:
        aud = act.spec.audience
        new_within = getattr(act.spec, "new_users_within_days", None)
        if not aud.properties and aud.segment_id is None and new_within is None:
            return True
        if person_id is None:
            return False
        key = (act.id, person_id)
        hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        ok = True
        if aud.properties or new_within is not None:
            props, created = person_record(self.runtime, act.project_id, person_id)
            ok = rules.filters_match(aud.properties, props)
            if ok and new_within is not None:
                ok = created is not None and at - created <= timedelta(days=new_within)
        if ok and aud.segment_id is not None:
            ok = in_segment(self.runtime, act.project_id, person_id, aud.segment_id)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + AUDIENCE_TTL, ok)
        return ok


# -- applying events ------------------------------------------------------------------------------


def events_of(act: Activity) -> set[str]:
    """Event names an activity's rules listen to."""
    s = act.spec
    if act.template == "checkin":
        return {s.event}
    if act.template == "referral":
        return {s.accept_event, s.activation_event}
    if act.template == "task":
        return {st.event for st in s.stages}
    if act.template == "gift":
        return {s.event}
    if act.template == "promotion":
        return {s.event} if s.event else set()
    return set()


def may_apply(act: Activity, ev: LiveEvent) -> bool:
    """Cheap test before any database work: can this event change this activity's state?"""
    spec = act.spec
    if act.template == "checkin":
        return True
    if act.template == "task":
        return any(
            st.event == ev.event and rules.filters_match(st.filters, ev.properties)
            for st in spec.stages
        )
    if act.template in ("gift", "promotion"):
        return rules.filters_match(spec.filters, ev.properties)
    if act.template == "referral":
        return bool(
            (ev.event == spec.accept_event and ev.properties.get(spec.code_property))
            or (
                ev.event == spec.activation_event
                and rules.filters_match(spec.activation_filters, ev.properties)
            )
        )
    return False


def compute(
    act: Activity, ev: LiveEvent, data: dict[str, Any]
) -> tuple[dict[str, Any], list[Due], bool] | None:
    """New progress, rewards due and completed-now of a progress-only template (None: no change).

    Check-in, task, gift and promotion keep all their state in the progress document, so the
    processor can load and store many participants at once; referral needs the invites table.
    """
    spec = act.spec
    user = ev.distinct_id
    if act.template == "checkin":
        day: date = ev.timestamp.astimezone(act.tz).date()
        new, dues = rules.checkin(spec, act.id, user, data, day)
        if new == data:
            return None
        return new, dues, bool(dues) and not data.get("milestones")
    if act.template == "task":
        new, dues, done = rules.task(spec, act.id, user, data, ev.event, ev.properties)
        return None if new == data else (new, dues, done)
    if act.template == "gift":
        if not rules.filters_match(spec.filters, ev.properties) or data.get("granted"):
            return None
        return (
            {**data, "granted": ev.timestamp.isoformat()},
            [Due(f"act:{act.id}:gift:{user}", spec.reward)],
            True,
        )
    if act.template == "promotion":
        if not rules.filters_match(spec.filters, ev.properties):
            return None
        n = int(data.get("claimed", 0))
        if n >= spec.claim_limit:
            return None
        return (
            {**data, "claimed": n + 1},
            [Due(f"act:{act.id}:promo:{user}:{n}", spec.reward)],
            True,
        )
    return None


def apply_one(conn: sa.Connection, act: Activity, ev: LiveEvent) -> list[Due]:
    """Apply one event to one activity inside the caller's transaction; rewards due."""
    spec = act.spec
    user = ev.distinct_id
    if act.template != "referral":
        data = service.load_progress(conn, act, user, ev.person_id)
        out = compute(act, ev, data)
        if out is None:
            return []
        new, due_now, completed = out
        service.save_progress(conn, act, user, new, completed=completed)
        return due_now
    dues: list[Due] = []
    code = ev.properties.get(spec.code_property)
    if ev.event == spec.accept_event and code:
        try:
            service.accept_invite(conn, act, user, ev.person_id, str(code), ev.timestamp)
            service.load_progress(conn, act, user, ev.person_id)
        except YunyingError as exc:
            log.info("invite code %r of event %s not accepted: %s", code, ev.uuid, exc)
    if ev.event == spec.activation_event and rules.filters_match(
        spec.activation_filters, ev.properties
    ):
        dues = service.activate_invite(conn, act, user, ev.person_id, ev.timestamp)
        if dues:
            data = service.load_progress(conn, act, user, ev.person_id)
            service.save_progress(
                conn, act, user, {**data, "activated": ev.timestamp.isoformat()}, completed=True
            )
    return dues


def promotion_claim(
    conn: sa.Connection, act: Activity, user: str, person_id: str | None
) -> list[Due]:
    """The next coupon of a promotion for this user, while under ``claim_limit``."""
    data = service.load_progress(conn, act, user, person_id)
    n = int(data.get("claimed", 0))
    if n >= act.spec.claim_limit:
        return []
    service.save_progress(conn, act, user, {**data, "claimed": n + 1}, completed=True)
    return [Due(f"act:{act.id}:promo:{user}:{n}", act.spec.reward)]


def apply_batch(
    runtime: Runtime,
    index: dict[int, dict[str, list[Activity]]],
    audience: AudienceCache,
    project_id: int,
    events: list[LiveEvent],
) -> list[str]:
    """Apply a batch to the running activities listening to its events; keys of rewards due.

    One transaction per batch: the seen uuids and the participants' progress are read in one
    statement each (locked on PostgreSQL), updated in memory in event order, and written back
    with one statement per kind, so the cost per event is small next to a transaction per event.
    """
    by_event = index.get(project_id)
    if not by_event:
        return []
    matched = []
    for ev in events:
        for act in by_event.get(ev.event, ()):
            if (
                act.live_at(ev.timestamp)
                and may_apply(act, ev)
                and audience.allows(act, ev.person_id, ev.timestamp)
            ):
                matched.append((act, ev))
    if not matched:
        return []
    keys: list[str] = []
    s = activity_seen_events.c
    p = activity_progress.c
    now = utcnow()
    with runtime.state.begin() as conn:
        aids = sorted({a.id for a, _ in matched})
        seen: set[tuple[int, str]] = set()
        uuids = sorted({ev.uuid for _, ev in matched})
        for k in range(0, len(uuids), 5000):
            seen.update(
                (int(a), str(u))
                for a, u in conn.execute(
                    sa.select(s.activity_id, s.event_uuid).where(
                        s.activity_id.in_(aids), s.event_uuid.in_(uuids[k : k + 5000])
                    )
                )
            )
        fresh = []
        for act, ev in matched:
            if (act.id, ev.uuid) not in seen:
                seen.add((act.id, ev.uuid))
                fresh.append((act, ev))
        if not fresh:
            return []
        rows = [{"activity_id": a.id, "event_uuid": ev.uuid} for a, ev in fresh]
        if conn.dialect.name == "postgresql":
            # several processes may replay the same events: only what this one inserted is its
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = (
                pg_insert(activity_seen_events)
                .on_conflict_do_nothing()
                .returning(s.activity_id, s.event_uuid)
            )
            mine = {(int(a), str(u)) for a, u in conn.execute(stmt, rows)}
            fresh = [(a, ev) for a, ev in fresh if (a.id, ev.uuid) in mine]
        else:  # SQLite: this transaction holds the only write lock, the read above is current
            conn.execute(activity_seen_events.insert(), rows)
        users = sorted({ev.distinct_id for a, ev in fresh if a.template != "referral"})
        progress: dict[tuple[int, str], dict[str, Any]] = {}
        completed_before: set[tuple[int, str]] = set()
        for k in range(0, len(users), 5000):
            q = sa.select(p.activity_id, p.user_id, p.data, p.completed_at).where(
                p.activity_id.in_(aids), p.user_id.in_(users[k : k + 5000])
            )
            if conn.dialect.name == "postgresql":
                q = q.with_for_update()
            for aid, uid, data, done_at in conn.execute(q):
                progress[(int(aid), str(uid))] = dict(data or {})
                if done_at is not None:
                    completed_before.add((int(aid), str(uid)))
        existing = set(progress)
        dirty: set[tuple[int, str]] = set()
        completed: set[tuple[int, str]] = set()
        persons: dict[tuple[int, str], str | None] = {}
        for act, ev in fresh:
            if act.template == "referral":
                dues = apply_one(conn, act, ev)
            else:
                key = (act.id, ev.distinct_id)
                out = compute(act, ev, progress.get(key, {}))
                persons.setdefault(key, ev.person_id)
                if key not in progress:
                    progress[key] = {}
                    dirty.add(key)
                if out is None:
                    continue
                progress[key], dues, done = out
                dirty.add(key)
                if done:
                    completed.add(key)
            if dues:
                service.enqueue_dues(conn, act, dues, ev.distinct_id, ev.person_id, ev.context())
                keys.extend(d.key for d in dues)
        new_rows = [k for k in dirty if k not in existing]
        if new_rows:
            insert_ignore_many(
                conn,
                activity_progress,
                [
                    {
                        "activity_id": aid,
                        "user_id": uid,
                        "person_id": persons.get((aid, uid)),
                        "data": progress[(aid, uid)],
                        "joined_at": now,
                        "updated_at": now,
                        "completed_at": now if (aid, uid) in completed else None,
                    }
                    for aid, uid in new_rows
                ],
            )
        changed = [k for k in dirty if k in existing]
        if changed:
            conn.execute(
                activity_progress.update()
                .where(p.activity_id == sa.bindparam("k_aid"), p.user_id == sa.bindparam("k_uid"))
                .values(data=sa.bindparam("k_data"), updated_at=now),
                [{"k_aid": a, "k_uid": u, "k_data": progress[(a, u)]} for a, u in changed],
            )
        newly_done = [k for k in completed if k in existing and k not in completed_before]
        if newly_done:
            conn.execute(
                activity_progress.update()
                .where(p.activity_id == sa.bindparam("k_aid"), p.user_id == sa.bindparam("k_uid"))
                .values(completed_at=now),
                [{"k_aid": a, "k_uid": u} for a, u in newly_done],
            )
    return keys


def drain_keys(runtime: Runtime, project_id: int, keys: list[str]) -> list[service.ClaimResult]:
    """Claim the outbox rows with these keys (the ones this caller just wrote)."""
    if not keys:
        return []
    return service.drain_outbox(runtime, project_id, keys=keys)


# -- the processor ----------------------------------------------------------------------------------

_STOP = object()


class LiveRules:
    """The processor thread of one installation (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.audience = AudienceCache(runtime)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._index: dict[int, dict[str, list[Activity]]] = {}
        self._index_at = 0.0
        self._busy = threading.Event()
        self._ready = threading.Event()
        self.processed = 0
        self.errors = 0
        #: Seconds spent applying rules and claiming rewards (benchmarks read these).
        self.apply_s = 0.0
        self.claims_s = 0.0

    # lifecycle
    def start(self) -> None:
        """Subscribe to the writer, then catch up and run in a thread."""
        if self._thread is not None:
            return
        self.runtime.writer.subscribe(self._on_commit)
        self._thread = threading.Thread(target=self._run, name="yunying-live-rules", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        self.runtime.writer.unsubscribe(self._on_commit)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def invalidate(self) -> None:
        """Activities changed: rebuild the rule index before the next batch."""
        self._index_at = 0.0

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until everything queued so far is processed (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        self._ready.wait(timeout)
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and not self._busy.is_set():
                return True
            time.sleep(0.01)
        return False

    def _on_commit(self, project_id: int, events: list[Event], received_at: datetime) -> None:
        self._queue.put((project_id, [LiveEvent.of(e) for e in events], received_at))

    # work
    def _refresh(self) -> None:
        if time.monotonic() - self._index_at < 1.0:
            return
        service.advance_schedules(self.runtime.state)
        index: dict[int, dict[str, list[Activity]]] = {}
        for act in service.list_activities(self.runtime.state, state="running"):
            if act.killed:
                continue
            for name in events_of(act):
                index.setdefault(act.project_id, {}).setdefault(name, []).append(act)
        self._index = index
        self._index_at = time.monotonic()

    def _run(self) -> None:
        try:
            self._refresh()
            self.catch_up()
            service.drain_outbox(self.runtime)
        except Exception:
            log.exception("live rules catch-up failed")
        self._ready.set()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                try:
                    self._refresh()
                except Exception:
                    log.exception("live rules refresh failed")
                continue
            if item is _STOP:
                self._queue.task_done()
                return
            self._busy.set()
            try:
                project_id, events, received_at = item
                self.process(project_id, events, received_at)
            except Exception:
                self.errors += 1
                log.exception("live rules failed on a batch (it is replayed on restart)")
            finally:
                self._busy.clear()
                self._queue.task_done()

    def process(
        self, project_id: int, events: list[LiveEvent], received_at: datetime | None
    ) -> None:
        self._refresh()
        t0 = time.perf_counter()
        keys = apply_batch(self.runtime, self._index, self.audience, project_id, events)
        t1 = time.perf_counter()
        drain_keys(self.runtime, project_id, keys)
        self.apply_s += t1 - t0
        self.claims_s += time.perf_counter() - t1
        self.processed += len(events)
        if received_at is not None:
            self._advance_watermark(project_id, received_at)

    def _advance_watermark(self, project_id: int, received_at: datetime) -> None:
        w = activity_watermarks.c
        with self.runtime.state.begin() as conn:
            if not insert_ignore(
                conn, activity_watermarks, {"project_id": project_id, "received_at": received_at}
            ):
                conn.execute(
                    activity_watermarks.update()
                    .where(w.project_id == project_id, w.received_at < received_at)
                    .values(received_at=received_at)
                )

    def catch_up(self) -> int:
        """Replay events received since (a little before) each project's watermark."""
        state = self.runtime.state
        with state.connect() as conn:
            marks: dict[int, datetime] = {
                r.project_id: r.received_at for r in conn.execute(sa.select(activity_watermarks))
            }
            firsts = dict(
                conn.execute(
                    sa.select(activities.c.project_id, sa.func.min(activities.c.created_at))
                    .where(activities.c.state != "ended")
                    .group_by(activities.c.project_id)
                ).all()
            )
        replayed = 0
        for project_id, first in firsts.items():
            mark = marks.get(project_id)
            if mark is not None:
                since = mark - REPLAY_MARGIN
            else:
                since = (aware(first) or utcnow()).astimezone(UTC).replace(tzinfo=None)
            replayed += self._replay(project_id, since)
        return replayed

    def _replay(self, project_id: int, since: datetime, chunk: int = 5000) -> int:
        store = self.runtime.store
        q = (
            exp.select(
                "uuid",
                "event",
                "distinct_id",
                "person_id",
                "timestamp",
                "received_at",
                "properties",
                "device_id",
                "ip",
            )  # fmt: skip
            .from_(store.scoped("events", project_id).subquery("e"))
            .where(
                exp.column("received_at")
                >= exp.cast(exp.Literal.string(since.isoformat(sep=" ")), "TIMESTAMP")
            )
            .order_by("received_at", "timestamp")
        )
        batch: list[LiveEvent] = []
        last: datetime | None = None
        n = 0
        for row in store.iter_query(q.sql(dialect=store.dialect)):
            uuid, name, did, pid, ts, rec, props, dev, ip = row
            if isinstance(props, str | bytes):
                props = orjson.loads(props) if props else {}
            batch.append(
                LiveEvent(
                    str(uuid),
                    name,
                    did,
                    str(pid) if pid else None,
                    _ts(ts) or utcnow(),
                    dict(props or {}),
                    dev,
                    ip,
                )
            )
            last = _ts(rec)
            if len(batch) >= chunk:
                self.process(project_id, batch, last.replace(tzinfo=None) if last else None)
                n += len(batch)
                batch = []
        if batch:
            self.process(project_id, batch, last.replace(tzinfo=None) if last else None)
            n += len(batch)
        return n


_processors: dict[int, LiveRules] = {}
_lock = threading.Lock()


def live_rules(runtime: Runtime) -> LiveRules:
    """The processor of this runtime (one per open installation)."""
    with _lock:
        proc = _processors.get(id(runtime))
        if proc is None or proc.runtime is not runtime:
            proc = LiveRules(runtime)
            _processors[id(runtime)] = proc
        return proc


def forget(runtime: Runtime) -> None:
    with _lock:
        proc = _processors.pop(id(runtime), None)
    if proc is not None:
        proc.stop()


def act_now(
    runtime: Runtime,
    act: Activity,
    user_id: str,
    key: str,
    *,
    device_id: str | None = None,
    ip: str | None = None,
    event: str | None = None,
    properties: dict[str, Any] | None = None,
) -> list[service.ClaimResult]:
    """An app call that counts like an event (check-in, promotion claim), idempotent on ``key``.

    The call is recorded as seen event ``api:KEY``, so a retry with the same Idempotency-Key
    changes nothing; rewards it makes due are claimed before this returns.
    """
    if not act.live_at(utcnow()):
        raise service.NotEligible(f"activity {act.id} is not running (it is {act.state})")
    person = person_of(runtime, act.project_id, user_id)
    if not AudienceCache(runtime).allows(act, person, utcnow()):
        raise service.NotEligible("this user is not in the activity's audience")
    ev = LiveEvent(
        f"api:{key}",
        event or next(iter(sorted(events_of(act))), "api"),
        user_id,
        person,
        utcnow(),
        properties or {},
        device_id,
        ip,
    )
    dues: list[Due] = []
    with runtime.state.begin() as conn:
        fresh = insert_ignore(
            conn, activity_seen_events, {"activity_id": act.id, "event_uuid": ev.uuid}
        )
        if fresh:
            if act.template == "promotion":
                dues = promotion_claim(conn, act, user_id, person)
            else:
                dues = apply_one(conn, act, ev)
            service.enqueue_dues(conn, act, dues, user_id, person, ev.context())
    drain_keys(runtime, act.project_id, [d.key for d in dues])
    if not fresh:
        raise service.AlreadyDone(f"this Idempotency-Key was used before: {key}")
    keys = [d.key for d in dues]
    out = []
    for k in keys:
        found = service.claim_by_key(runtime.state, act.project_id, k)
        if found is not None:
            out.append(found)
    return out
