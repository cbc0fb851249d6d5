"""Segments (用户分群): dynamic ones from a rule tree, static ones from a CSV upload or a snapshot.

Computing a segment runs its rule's single SQL query (:mod:`yunying.audience.rules`) and writes
the members into the ``segment:ID`` scope of ``person_values`` with
``EventStore.replace_person_values``, where analytics (a ``segment`` filter or breakdown), other
rules and the operations engine read them. Each computation is recorded: ``last_computed_at``,
``size`` and a row of the size history.

Recomputing everything (:func:`recompute_all`) first refreshes the lifecycle stages and RFM
classes when those modules are installed, then static segments, then every tag and dynamic
segment by ONE query (:func:`run_batch`; a rule reading a tag or another segment of the batch
gets its definition inlined; cycles are refused when a definition is saved) and one write of all
their members; if that query fails, each is computed alone, in dependency order.
:func:`recompute_due` computes what a schedule (``schedule_minutes``) says is due; the server
calls it from a background task.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa
import sqlalchemy as sa
from sqlglot import exp

from yunying.analytics.common import Sql, lit
from yunying.audience import definitions
from yunying.audience import tags as tagmod
from yunying.audience.definitions import aware, iso
from yunying.audience.rules import (
    InvalidRule,
    SegmentRule,
    TagRule,
    compile_batch,
    compile_rule,
    inline_references,
    parse_rule,
    references,
    rule_json,
    uses_scopes,
)
from yunying.audience.segment_persona import store_personas_quietly
from yunying.audience.segment_tables import segment_members, segment_sizes, segments, tags
from yunying.audience.tags import Tag, check_schedule
from yunying.errors import M_, Conflict, NotFound, YunyingError, message_from_record
from yunying.runtime import Runtime
from yunying.state import Project, list_projects

log = logging.getLogger("yunying.audience")

Kind = Literal["dynamic", "static"]
#: Size history rows kept per segment (older ones are pruned).
HISTORY_KEEP = 1000
#: Members per page at most.
MAX_PAGE = 1000
#: Keys per lookup query when resolving uploaded ids.
LOOKUP_CHUNK = 5000

#: Heavy recomputation is serialised within a process (the scheduler and on-demand calls).
_compute_lock = threading.RLock()


class SegmentError(YunyingError):
    """Base of segment errors."""


class InvalidSegment(SegmentError):
    """A segment definition or upload is not acceptable; ``field`` names the offending field."""

    def __init__(self, message: str, field: str = "", errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.field = field
        self.errors = errors or [{"field": field, "message": message}]


class DependencyCycle(Conflict):
    """Rules would read each other in a circle (segment A uses B which uses A)."""


@dataclass(frozen=True)
class Segment:
    """A segment as stored."""

    id: int
    project_id: int
    name: str
    description: str
    kind: str
    rules: dict[str, Any] | None
    schedule_minutes: int | None
    source: str | None
    last_computed_at: datetime | None
    size: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def scope(self) -> str:
        """Its ``person_values`` scope."""
        return f"segment:{self.id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "rules": self.rules,
            "schedule_minutes": self.schedule_minutes,
            "source": self.source,
            "scope": self.scope,
            "last_computed_at": iso(self.last_computed_at),
            "size": self.size,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def _row(r: Any) -> Segment:
    return Segment(
        r.id,
        r.project_id,
        r.name,
        r.description,
        r.kind,
        r.rules,
        r.schedule_minutes,
        r.source,
        None if r.last_computed_at is None else aware(r.last_computed_at),
        r.size,
        message_from_record(r.last_error_message, r.last_error),  # translatable where marked
        aware(r.created_at),
        aware(r.updated_at),
    )


# -- definitions ------------------------------------------------------------------------------------


def list_segments(engine: sa.Engine, project_id: int) -> list[Segment]:
    """Every segment of a project, by id."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(segments).where(segments.c.project_id == project_id).order_by(segments.c.id)
        )
        return [_row(r) for r in rows]


def get_segment(engine: sa.Engine, project_id: int, ref: int | str) -> Segment:
    """A segment by id or by name (an id wins when a name is also digits)."""
    row = definitions.find(engine, segments, project_id, ref)
    if row is None:
        raise NotFound(M_("no segment {ref!r} in this project", ref=ref))
    return _row(row)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise InvalidSegment(M_("name must be 1 to 200 characters"), "name")
    return name.strip()


def _parse_rules(data: Any) -> Any:
    try:
        return parse_rule(data, "rules")
    except InvalidRule as exc:
        raise InvalidSegment(exc.message, exc.field, exc.errors) from None


def _schedule(minutes: Any) -> int | None:
    try:
        return check_schedule(minutes)
    except tagmod.InvalidTag as exc:
        raise InvalidSegment(exc.message, exc.field) from None


Node = tuple[str, str]  # ("segment", "12") or ("tag", "heavy")


def _paths(rule: Any, path: str = "rules") -> Iterator[tuple[str, Any]]:
    """(dotted path, node) of every node of a rule tree."""
    yield path, rule
    kids = getattr(rule, "rules", None)
    if isinstance(kids, list):
        for i, k in enumerate(kids):
            yield from _paths(k, f"{path}.rules.{i}")
    sub = getattr(rule, "rule", None)
    if sub is not None and not isinstance(rule, SegmentRule | TagRule):
        yield from _paths(sub, f"{path}.rule")


def _graph(engine: sa.Engine, project_id: int) -> dict[Node, set[Node]]:
    """What each stored tag and dynamic segment reads."""
    out: dict[Node, set[Node]] = {}
    with engine.connect() as conn:
        for r in conn.execute(
            sa.select(segments.c.id, segments.c.rules).where(segments.c.project_id == project_id)
        ):
            out[("segment", str(r.id))] = _deps(r.rules)
        for r in conn.execute(
            sa.select(tags.c.name, tags.c.rules).where(tags.c.project_id == project_id)
        ):
            out[("tag", r.name)] = _deps(r.rules)
    return out


def _deps(rules: Any) -> set[Node]:
    if not rules:
        return set()
    segs, tnames = references(parse_rule(rules))
    return {("segment", str(s)) for s in segs} | {("tag", t) for t in tnames}


def _label(node: Node) -> str:
    return f"{node[0]} {node[1]}"


def check_graph(engine: sa.Engine, project_id: int, node: Node, rule: Any) -> None:
    """Refuse a definition of ``node`` whose rule reads something missing from the project
    (:class:`InvalidSegment` naming the field) or that closes a cycle (:class:`DependencyCycle`)."""
    graph = _graph(engine, project_id)
    for path, n in _paths(rule):
        if isinstance(n, SegmentRule) and ("segment", str(n.id)) not in graph:
            raise InvalidSegment(
                M_("{path}.id: no segment {id} in this project", path=path, id=n.id), f"{path}.id"
            )
        if isinstance(n, TagRule) and ("tag", n.name) not in graph:
            raise InvalidSegment(
                M_("{path}.name: no tag {name!r} in this project", path=path, name=n.name),
                f"{path}.name",
            )
    graph[node] = _deps(rule_json(rule))
    cycle = _find_cycle(graph, node)
    if cycle:
        raise DependencyCycle(
            M_("the rules would depend on each other in a cycle: {cycle}",
               cycle=" → ".join(_label(n) for n in cycle))
        )  # fmt: skip


def _find_cycle(graph: dict[Node, set[Node]], start: Node) -> list[Node] | None:
    """A path start → ... → start if one exists."""
    stack: list[tuple[Node, list[Node]]] = [(start, [start])]
    seen: set[Node] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def dependency_order(
    engine: sa.Engine, project_id: int, nodes: set[Node] | None = None
) -> list[Node]:
    """Tags and segments so that each comes after what its rule reads (tags first when free).

    Raises :class:`DependencyCycle` if stored definitions form a cycle.
    """
    graph = _graph(engine, project_id)
    wanted = set(graph) if nodes is None else set(nodes)
    deps = {n: {d for d in graph.get(n, set()) if d in wanted} for n in wanted}
    order: list[Node] = []

    def key(n: Node) -> tuple[int, int, str]:
        return (0 if n[0] == "tag" else 1, int(n[1]) if n[1].isdigit() else 0, n[1])

    ready = sorted((n for n, d in deps.items() if not d), key=key)
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m, d in deps.items():
            if n in d:
                d.discard(n)
                if not d and m not in order and m not in ready:
                    ready.append(m)
        ready.sort(key=key)
    if len(order) < len(wanted):
        left = sorted(set(wanted) - set(order), key=key)
        raise DependencyCycle(
            "stored rules depend on each other in a cycle: " + ", ".join(_label(n) for n in left)
        )
    return order


def create_segment(
    runtime: Runtime,
    project: Project,
    name: str,
    *,
    kind: Kind = "dynamic",
    rules: Any = None,
    description: str = "",
    schedule_minutes: int | None = None,
    source: str | None = None,
) -> Segment:
    """Store a segment (not computed yet). Dynamic segments need ``rules``; static ones get
    members from :func:`upload_members` or :func:`snapshot_segment`."""
    engine = runtime.state
    name = _check_name(name)
    if kind not in ("dynamic", "static"):
        raise InvalidSegment(M_("kind must be 'dynamic' or 'static'"), "kind")
    rule = None
    if kind == "dynamic":
        if rules is None:
            raise InvalidSegment(M_("a dynamic segment needs rules"), "rules")
        rule = _parse_rules(rules)
    elif rules is not None:
        raise InvalidSegment(
            M_("a static segment has no rules: upload its members instead"), "rules"
        )
    schedule = _schedule(schedule_minutes)
    if kind == "static" and schedule is not None:
        raise InvalidSegment(M_("a static segment has no schedule"), "schedule_minutes")
    now = datetime.now(UTC)
    with _compute_lock:
        if rule is not None:
            check_graph(engine, project.id, ("segment", "new"), rule)
        with engine.begin() as conn:
            if definitions.name_taken(conn, segments, project.id, name):
                raise Conflict(
                    M_("a segment named {name!r} already exists in this project", name=name)
                )
            sid = conn.execute(
                segments.insert().values(
                    project_id=project.id,
                    name=name,
                    description=description or "",
                    kind=kind,
                    rules=None if rule is None else rule_json(rule),
                    schedule_minutes=schedule,
                    source=source,
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
    return get_segment(engine, project.id, int(sid))


def update_segment(
    runtime: Runtime, project: Project, ref: int | str, changes: dict[str, Any]
) -> Segment:
    """Change name, description, rules (dynamic) or schedule (dynamic)."""
    engine = runtime.state
    seg = get_segment(engine, project.id, ref)
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    with _compute_lock:
        if "name" in changes:
            values["name"] = _check_name(changes["name"])
            other = [s for s in list_segments(engine, project.id) if s.name == values["name"]]
            if other and other[0].id != seg.id:
                raise Conflict(M_("a segment named {name!r} already exists", name=values["name"]))
        if "description" in changes:
            values["description"] = str(changes["description"] or "")
        if "rules" in changes:
            if seg.kind != "dynamic":
                raise InvalidSegment(M_("a static segment has no rules"), "rules")
            rule = _parse_rules(changes["rules"])
            check_graph(engine, project.id, ("segment", str(seg.id)), rule)
            values["rules"] = rule_json(rule)
        if "schedule_minutes" in changes:
            if seg.kind != "dynamic" and changes["schedule_minutes"] is not None:
                raise InvalidSegment(M_("a static segment has no schedule"), "schedule_minutes")
            values["schedule_minutes"] = _schedule(changes["schedule_minutes"])
        with engine.begin() as conn:
            conn.execute(segments.update().where(segments.c.id == seg.id).values(**values))
    return get_segment(engine, project.id, seg.id)


def _readers(engine: sa.Engine, project_id: int, node: Node) -> list[str]:
    return sorted(_label(n) for n, deps in _graph(engine, project_id).items() if node in deps)


def delete_segment(runtime: Runtime, project: Project, ref: int | str) -> None:
    """Delete a segment and its membership; :class:`Conflict` while another rule reads it."""
    with _compute_lock:
        seg = get_segment(runtime.state, project.id, ref)
        users = _readers(runtime.state, project.id, ("segment", str(seg.id)))
        if users:
            raise Conflict(f"segment {seg.id} is used by {', '.join(users)}: change those first")
        with runtime.state.begin() as conn:
            conn.execute(segments.delete().where(segments.c.id == seg.id))
        runtime.store.replace_person_values(project.id, seg.scope, _ids_table([]))


def delete_tag(runtime: Runtime, project: Project, ref: int | str) -> None:
    """Delete a tag and its stamps; :class:`Conflict` while a rule reads it."""
    with _compute_lock:
        tag = tagmod.get_tag(runtime.state, project.id, ref)
        users = _readers(runtime.state, project.id, ("tag", tag.name))
        if users:
            raise Conflict(f"tag {tag.name!r} is used by {', '.join(users)}: change those first")
        tagmod.delete_tag_row(runtime.state, tag.id)
        runtime.store.replace_person_values(project.id, tag.scope, _ids_table([]))


# -- computing --------------------------------------------------------------------------------------


def _ids_table(ids: list[str] | pa.Array) -> pa.Table:
    return pa.table({"person_id": pa.array(ids, pa.string()) if isinstance(ids, list) else ids})


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC))


def run_rule(
    runtime: Runtime, project: Project, rules: dict[str, Any], now: datetime | None = None
) -> pa.Array:
    """The person ids (Arrow strings) matching a rule tree as of ``now``."""
    store = runtime.store
    tree = compile_rule(store, project.id, parse_rule(rules), project.timezone, _now(now))
    sql = Sql(store.dialect)
    text = sql.render(exp.select(sql.text(exp.column("person_id"))).from_(tree.subquery("m")))
    return _arrow_column(store, text)


def _arrow_table(store: Any, sql: str) -> pa.Table:
    """A query's result as an Arrow table; the engines' Arrow readers when they have one
    (millions of ids), rows otherwise."""
    db = getattr(store, "db", None)
    if db is not None and hasattr(db, "query_arrow"):  # ClickHouse
        return db.query_arrow(sql)
    con = getattr(store, "_reader", None)
    if callable(con):  # DuckDB: its Arrow result, without a Python object per row
        return con().sql(sql).to_arrow_table()
    result = store.query(sql)
    return pa.table({c: [r[i] for r in result.rows] for i, c in enumerate(result.columns)})


def _arrow_column(store: Any, sql: str) -> pa.Array:
    """The first column of a query as Arrow strings."""
    return _arrow_table(store, sql).column(0).combine_chunks().cast(pa.string())


def run_batch(
    runtime: Runtime, project: Project, rules: list[Any], now: datetime | None = None
) -> list[pa.Array]:
    """The person ids (Arrow strings) matching each of several parsed rule trees as of ``now``,
    from ONE query (:func:`~yunying.audience.rules.compile_batch`: one pass over the events for
    all of them)."""
    if not rules:
        return []
    store = runtime.store
    tree = compile_batch(store, project.id, rules, project.timezone, _now(now))
    sql = Sql(store.dialect)
    columns = [f"m{i}" for i in range(len(rules))]
    text = sql.render(
        exp.select(sql.text(exp.column("person_id")).as_("person_id"), *columns).from_(
            tree.subquery("m")
        )
    )
    table = _arrow_table(store, text)
    ids = table.column("person_id").combine_chunks().cast(pa.string())
    out = []
    for c in columns:
        hit = table.column(c).combine_chunks().cast(pa.bool_()).fill_null(False)
        out.append(ids.filter(hit))
    return out


def _record(
    engine: sa.Engine, seg_id: int, at: datetime, size: int | None, error: str | None
) -> None:
    with engine.begin() as conn:
        definitions.record(conn, segments, seg_id, at, size, error)
        if error is None:
            conn.execute(
                segment_sizes.insert().values(segment_id=seg_id, computed_at=at, size=size)
            )
            old = conn.execute(
                sa.select(segment_sizes.c.id)
                .where(segment_sizes.c.segment_id == seg_id)
                .order_by(segment_sizes.c.computed_at.desc(), segment_sizes.c.id.desc())
                .offset(HISTORY_KEEP)
                .limit(1)
            ).first()
            if old:
                conn.execute(
                    segment_sizes.delete().where(
                        segment_sizes.c.segment_id == seg_id, segment_sizes.c.id <= old.id
                    )
                )


def _static_ids(engine: sa.Engine, seg_id: int) -> list[str]:
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.select(segment_members.c.person_id)
                .where(segment_members.c.segment_id == seg_id)
                .order_by(segment_members.c.person_id)
            )
        ]


def compute_segment(
    runtime: Runtime,
    project: Project,
    ref: int | str,
    now: datetime | None = None,
    refresh: bool = True,
) -> Segment:
    """Compute one segment now and store its members (a static one is rewritten from its stored
    members). With ``refresh``, the lifecycle stages / RFM classes its rules read are brought up
    to date first (a batch recompute refreshes them once instead). Failures are recorded in
    ``last_error`` and raised."""
    with _compute_lock:
        seg = get_segment(runtime.state, project.id, ref)
        at = datetime.now(UTC)
        try:
            if seg.kind == "dynamic":
                assert seg.rules is not None
                if refresh:
                    refresh_derived(runtime, project, uses_scopes(parse_rule(seg.rules)))
                ids = run_rule(runtime, project, seg.rules, now)
            else:
                ids = pa.array(_static_ids(runtime.state, seg.id), pa.string())
            runtime.store.replace_person_values(project.id, seg.scope, _ids_table(ids))
        except Exception as exc:
            _record(runtime.state, seg.id, at, None, definitions.failure(exc))
            raise
        _record(runtime.state, seg.id, at, len(ids), None)
        store_personas_quietly(runtime, project, [seg.id], at)
        return get_segment(runtime.state, project.id, seg.id)


def compute_tag(
    runtime: Runtime,
    project: Project,
    ref: int | str,
    now: datetime | None = None,
    refresh: bool = True,
) -> Tag:
    """Compute one tag now and stamp its persons (``tag:NAME``); ``refresh`` as for
    :func:`compute_segment`."""
    with _compute_lock:
        tag = tagmod.get_tag(runtime.state, project.id, ref)
        at = datetime.now(UTC)
        try:
            if refresh:
                refresh_derived(runtime, project, uses_scopes(parse_rule(tag.rules)))
            ids = run_rule(runtime, project, tag.rules, now)
            runtime.store.replace_person_values(project.id, tag.scope, _ids_table(ids))
        except Exception as exc:
            tagmod.record_tag(runtime.state, tag.id, at, None, definitions.failure(exc))
            raise
        tagmod.record_tag(runtime.state, tag.id, at, len(ids), None)
        return tagmod.get_tag(runtime.state, project.id, tag.id)


def preview(
    runtime: Runtime, project: Project, rules: Any, now: datetime | None = None
) -> dict[str, Any]:
    """How many persons a rule tree matches now, and its SQL, without saving anything."""
    rule = _parse_rules(rules)
    check_graph(runtime.state, project.id, ("segment", "preview"), rule)
    tree = compile_rule(runtime.store, project.id, rule, project.timezone, _now(now))
    sql = Sql(runtime.store.dialect)
    count = exp.select(exp.Count(this=exp.Star())).from_(tree.subquery("m"))
    rows = runtime.store.query(sql.render(count)).rows
    return {"size": int(rows[0][0]), "sql": sql.render(tree)}


# -- derived facts ----------------------------------------------------------------------------------

#: Derived scopes refreshed before rules that read them, by (module, function).
DERIVED = {"stage": ("yunying.audience.stages", "store_stages"),
           "rfm": ("yunying.audience.rfm", "store_rfm")}  # fmt: skip


def refresh_derived(runtime: Runtime, project: Project, scopes: set[str]) -> dict[str, str]:
    """Recompute lifecycle stages / RFM classes when installed (``refreshed``, ``unavailable``
    or ``error: ...`` per scope); a failure does not stop the segments."""
    out: dict[str, str] = {}
    for scope in sorted(scopes & set(DERIVED)):
        module_name, func_name = DERIVED[scope]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            out[scope] = "unavailable"
            continue
        func = getattr(module, func_name, None)
        if func is None:
            out[scope] = "unavailable"
            continue
        try:
            func(runtime, project)
            out[scope] = "refreshed"
        except Exception as exc:
            log.exception("refreshing %s failed", scope)
            out[scope] = f"error: {exc}"
    return out


@dataclass
class RecomputeReport:
    """What a recomputation did for one project."""

    project: str
    derived: dict[str, str] = field(default_factory=dict)
    computed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: Seconds of the one query computing the tags and dynamic segments together (None when
    #: they were computed one by one); each item's ``seconds`` is then its write.
    query_seconds: float | None = None
    #: Seconds writing all their members at once (None when written one by one).
    write_seconds: float | None = None
    #: Seconds computing and storing the personas of those segments together (None when none).
    persona_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "derived": self.derived,
            "computed": self.computed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "query_seconds": self.query_seconds,
            "write_seconds": self.write_seconds,
            "persona_seconds": self.persona_seconds,
        }


def _batch_rules(engine: sa.Engine, project_id: int, nodes: list[Node]) -> dict[Node, Any]:
    """The parsed rule of each node that is a tag or a dynamic segment (what a batch computes);
    one whose stored rule does not parse is left out (computed alone, it records the error)."""
    stored: dict[Node, Any] = {}
    wanted = set(nodes)
    for s in list_segments(engine, project_id):
        if s.kind == "dynamic" and s.rules:
            stored[("segment", str(s.id))] = s.rules
    for t in tagmod.list_tags(engine, project_id):
        if t.rules:
            stored[("tag", t.name)] = t.rules
    rules: dict[Node, Any] = {}
    for node, data in stored.items():
        if node in wanted:
            try:
                rules[node] = parse_rule(data)
            except InvalidRule:
                continue
    return rules


def _compute_batch(
    runtime: Runtime,
    project: Project,
    nodes: list[Node],
    now: datetime | None,
    items: dict[Node, dict[str, Any]],
    report: RecomputeReport,
) -> None:
    """Compute the tags and dynamic segments among ``nodes`` with ONE query (a segment or tag
    read by another one of the batch is inlined, not read back), then store each one's members;
    what it computes goes into ``items``. If the query fails, nothing is computed here (the
    caller computes the nodes one by one, recording each one's error)."""
    import time

    defs = _batch_rules(runtime.state, project.id, nodes)
    batch = [n for n in nodes if n in defs]
    if len(batch) < 2:
        return
    at = datetime.now(UTC)
    t = time.perf_counter()
    try:
        found = run_batch(runtime, project, [inline_references(defs[n], defs) for n in batch], now)
    except Exception as exc:
        log.warning("computing %d definitions in one query failed (%s): one by one", len(batch),
                    exc)  # fmt: skip
        return
    report.query_seconds = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    scopes = {_scope(n): _ids_table(ids) for n, ids in zip(batch, found, strict=True)}
    error: str | None = None
    try:  # every scope in one go (one transaction / one delete)
        runtime.store.replace_person_values_many(project.id, scopes)
    except Exception as exc:
        log.warning("storing %d definitions failed: %s", len(batch), exc)
        error = definitions.failure(exc)
    report.write_seconds = round(time.perf_counter() - t, 3)
    for node, ids in zip(batch, found, strict=True):
        t = time.perf_counter()
        items[node] = _record_node(runtime, project, node, at, len(ids), error)
        items[node].setdefault("seconds", round(time.perf_counter() - t, 3))
    if error is None:  # the personas of the batch's segments, by one pass for all of them
        t = time.perf_counter()
        segs = [int(ref) for kind, ref in batch if kind == "segment"]
        store_personas_quietly(runtime, project, segs, at)
        report.persona_seconds = round(time.perf_counter() - t, 3) if segs else None


def _scope(node: Node) -> str:
    return f"{node[0]}:{node[1]}"


def _record_node(
    runtime: Runtime, project: Project, node: Node, at: datetime, size: int, error: str | None
) -> dict[str, Any]:
    """Record a batch computation of a node (its size, or the error storing it); the report
    item."""
    kind, ref = node
    if kind == "tag":
        tag = tagmod.get_tag(runtime.state, project.id, ref)
        tagmod.record_tag(runtime.state, tag.id, at, None if error else size, error)
        item: dict[str, Any] = {"kind": "tag", "id": tag.id, "name": tag.name, "size": size}
    else:
        seg = get_segment(runtime.state, project.id, int(ref))
        _record(runtime.state, seg.id, at, None if error else size, error)
        item = {"kind": "segment", "id": seg.id, "name": seg.name, "size": size}
    if error:
        return {"failed": {"kind": kind, "ref": ref, "error": error}}
    return item


def _compute_nodes(
    runtime: Runtime,
    project: Project,
    nodes: list[Node],
    now: datetime | None,
    batch: bool = True,
) -> RecomputeReport:
    """Compute ``nodes`` (in dependency order). With ``batch``, static segments are rewritten
    first, then every tag and dynamic segment is computed by one query (:func:`run_batch`) — one
    pass over the events for all of them instead of one each; without it (or if that query
    fails), each is computed by its own query, in order."""
    import time

    started = time.perf_counter()
    report = RecomputeReport(project.name)
    items: dict[Node, dict[str, Any]] = {}
    if batch:
        defs = _batch_rules(runtime.state, project.id, nodes)
        if sum(1 for n in nodes if n in defs) >= 2:
            static = [n for n in nodes if n[0] == "segment" and n not in defs]
            rest = [n for n in nodes if n in defs]
            nodes = static + rest  # statics read nothing; the others may read them
            for node in static:
                _compute_one(runtime, project, node, now, items)
            _compute_batch(runtime, project, rest, now, items, report)
    for node in nodes:
        if node not in items:
            _compute_one(runtime, project, node, now, items)
    for node in nodes:
        item = items[node]
        if "failed" in item:
            report.failed.append(item["failed"])
        else:
            report.computed.append(item)
    report.seconds = time.perf_counter() - started
    return report


def _compute_one(
    runtime: Runtime,
    project: Project,
    node: Node,
    now: datetime | None,
    items: dict[Node, dict[str, Any]],
) -> None:
    import time

    kind, ref = node
    t = time.perf_counter()
    try:
        if kind == "tag":
            tag = compute_tag(runtime, project, ref, now, refresh=False)
            item = {"kind": "tag", "id": tag.id, "name": tag.name, "size": tag.size}
        else:
            seg = compute_segment(runtime, project, int(ref), now, refresh=False)
            item = {"kind": "segment", "id": seg.id, "name": seg.name, "size": seg.size}
        item["seconds"] = round(time.perf_counter() - t, 3)
        items[node] = item
    except Exception as exc:  # recorded on the definition; the others go on
        log.warning("computing %s %s failed: %s", kind, ref, exc)
        items[node] = {"failed": {"kind": kind, "ref": ref, "error": str(exc)}}


def _scopes_read(engine: sa.Engine, project_id: int, nodes: list[Node]) -> set[str]:
    out: set[str] = set()
    graph_rules: dict[Node, Any] = {}
    for s in list_segments(engine, project_id):
        graph_rules[("segment", str(s.id))] = s.rules
    for t in tagmod.list_tags(engine, project_id):
        graph_rules[("tag", t.name)] = t.rules
    for n in nodes:
        if graph_rules.get(n):
            out |= uses_scopes(parse_rule(graph_rules[n]))
    return out


def recompute_all(
    runtime: Runtime, project: Project, now: datetime | None = None, derived: bool = True
) -> RecomputeReport:
    """Refresh stages and RFM (when installed and ``derived``), then every tag, then every
    segment, in dependency order."""
    with _compute_lock:
        started = datetime.now(UTC)
        order = dependency_order(runtime.state, project.id)
        facts = refresh_derived(runtime, project, set(DERIVED)) if derived else {}
        report = _compute_nodes(runtime, project, order, now)
        report.derived = facts
        report.seconds = (datetime.now(UTC) - started).total_seconds()
        return report


def due_nodes(engine: sa.Engine, project_id: int, now: datetime) -> list[Node]:
    """Scheduled tags and dynamic segments whose next computation time has come."""

    def due(schedule: int | None, last: datetime | None) -> bool:
        return schedule is not None and (
            last is None or aware(last) + timedelta(minutes=schedule) <= now
        )

    out: list[Node] = [("tag", t.name) for t in tagmod.list_tags(engine, project_id)
                       if due(t.schedule_minutes, t.last_computed_at)]  # fmt: skip
    out += [("segment", str(s.id)) for s in list_segments(engine, project_id)
            if s.kind == "dynamic" and due(s.schedule_minutes, s.last_computed_at)]  # fmt: skip
    return out


def recompute_due(runtime: Runtime, now: datetime | None = None) -> list[RecomputeReport]:
    """Compute every scheduled tag and segment that is due, project by project (derived facts
    their rules read are refreshed first). Returns one report per project that had work."""
    when = _now(now)
    reports = []
    for project in list_projects(runtime.state):
        with _compute_lock:
            nodes = due_nodes(runtime.state, project.id, when)
            if not nodes:
                continue
            try:
                order = dependency_order(runtime.state, project.id, set(nodes))
            except DependencyCycle as exc:
                log.error("project %s: %s", project.name, exc)
                continue
            facts = refresh_derived(
                runtime, project, _scopes_read(runtime.state, project.id, order)
            )
            report = _compute_nodes(runtime, project, order, None if now is None else when)
            report.derived = facts
            reports.append(report)
    return reports


# -- static segments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadReport:
    """What a CSV upload matched."""

    rows: int
    id_type: str
    matched: int
    unmatched: int
    unmatched_sample: list[str]
    segment: Segment

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "id_type": self.id_type,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "unmatched_sample": self.unmatched_sample,
            "segment": self.segment.as_dict(),
        }


def parse_csv(text: str, id_type: str | None = None) -> tuple[str, list[str]]:
    """The ids of a CSV upload and their type (``distinct_id`` or ``person_id``).

    The first row is a header when it names a column ``distinct_id``, ``person_id`` or ``id``
    (that column is read); otherwise the first column of every row is read. Without a header or
    ``id_type``, ids are distinct ids. Blank cells are skipped, duplicates kept once.
    """
    if id_type not in (None, "distinct_id", "person_id"):
        raise InvalidSegment(M_("id_type must be 'distinct_id' or 'person_id'"), "id_type")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    column = 0
    if rows:
        head = [c.strip().lower() for c in rows[0]]
        for name in ("person_id", "distinct_id", "id"):
            if name in head:
                column = head.index(name)
                if id_type is None and name != "id":
                    id_type = name
                rows = rows[1:]
                break
    seen: dict[str, None] = {}
    for r in rows:
        if len(r) > column and r[column].strip():
            seen[r[column].strip()] = None
    if not seen:
        raise InvalidSegment(M_("the CSV holds no ids"), "body")
    return id_type or "distinct_id", list(seen)


def _lookup(runtime: Runtime, project: Project, id_type: str, keys: list[str]) -> dict[str, str]:
    """key -> person id for the keys that are known (distinct ids, or existing person ids)."""
    store = runtime.store
    sql = Sql(store.dialect)
    out: dict[str, str] = {}
    if id_type == "person_id":
        valid = []
        for k in keys:
            try:
                valid.append(str(uuid.UUID(k)))
            except ValueError:
                continue
        relation, key_col, value_col = "persons", "id", "id"
        keys = valid
    else:
        relation, key_col, value_col = "person_distinct_ids", "distinct_id", "person_id"
    for i in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[i : i + LOOKUP_CHUNK]
        key = sql.text(exp.column(key_col))
        q = (
            exp.select(key.as_("k"), sql.text(exp.column(value_col)).as_("p"))
            .from_(store.scoped(relation, project.id).subquery("r"))
            .where(exp.In(this=key.copy(), expressions=[lit(k) for k in chunk]))
        )
        for k, p in store.query(sql.render(q)).rows:
            out[str(k)] = str(p)
    return out


def upload_members(
    runtime: Runtime,
    project: Project,
    ref: int | str,
    text: str,
    id_type: str | None = None,
    mode: Literal["replace", "append"] = "replace",
) -> UploadReport:
    """Set (or extend) a static segment's members from CSV text, then store them."""
    if mode not in ("replace", "append"):
        raise InvalidSegment("mode must be 'replace' or 'append'", "mode")
    seg = get_segment(runtime.state, project.id, ref)
    if seg.kind != "static":
        raise InvalidSegment(
            M_("segment {id} is dynamic: upload members to a static segment", id=seg.id), "kind"
        )
    kind, keys = parse_csv(text, id_type)
    found = _lookup(runtime, project, kind, keys)
    persons = sorted(set(found.values()))
    missing = [k for k in keys if k not in found]
    with _compute_lock:
        set_static_members(runtime.state, seg.id, persons, replace=mode == "replace")
        seg = compute_segment(runtime, project, seg.id)
    return UploadReport(len(keys), kind, len(keys) - len(missing), len(missing), missing[:20], seg)


def set_static_members(engine: sa.Engine, seg_id: int, persons: list[str], replace: bool) -> None:
    """Store a static segment's person ids (its source of truth)."""
    with engine.begin() as conn:
        if replace:
            conn.execute(segment_members.delete().where(segment_members.c.segment_id == seg_id))
            have: set[str] = set()
        else:
            have = {
                r[0]
                for r in conn.execute(
                    sa.select(segment_members.c.person_id).where(
                        segment_members.c.segment_id == seg_id
                    )
                )
            }
        new = [{"segment_id": seg_id, "person_id": p} for p in persons if p not in have]
        for i in range(0, len(new), 50_000):
            conn.execute(segment_members.insert(), new[i : i + 50_000])


def snapshot_segment(
    runtime: Runtime, project: Project, ref: int | str, name: str | None = None
) -> Segment:
    """A new static segment holding the current members of a segment (computed first if it
    never was)."""
    with _compute_lock:
        seg = get_segment(runtime.state, project.id, ref)
        if seg.last_computed_at is None:
            seg = compute_segment(runtime, project, seg.id)
        stamp = datetime.now(ZoneInfo(project.timezone)).strftime("%Y-%m-%d %H:%M")
        snap = create_segment(
            runtime,
            project,
            name or f"{seg.name} @ {stamp}",
            kind="static",
            description=f"snapshot of segment {seg.id} ({seg.name}) at {stamp}",
            source=f"snapshot:{seg.id}",
        )
        ids = _member_ids(runtime, project, seg)
        set_static_members(runtime.state, snap.id, ids, replace=True)
        return compute_segment(runtime, project, snap.id)


def _member_ids(runtime: Runtime, project: Project, seg: Segment | Tag) -> list[str]:
    store = runtime.store
    sql = Sql(store.dialect)
    q = (
        exp.select(sql.text(exp.column("person_id")))
        .from_(store.scoped("person_values", project.id).subquery("pv"))
        .where(exp.column("scope").eq(lit(seg.scope)))
    )
    return sorted(str(v) for v in _arrow_column(store, sql.render(q)).to_pylist())


# -- reading members --------------------------------------------------------------------------------


def members_page(
    runtime: Runtime, project: Project, scope: str, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    """A page of the persons in a ``person_values`` scope: id, distinct ids, created_at and
    current properties, ordered by person id; with the total."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidSegment(f"limit must be 1 to {MAX_PAGE}", "limit")
    if offset < 0:
        raise InvalidSegment("offset must not be negative", "offset")
    store = runtime.store
    sql = Sql(store.dialect)
    pid = sql.text(exp.column("person_id", "pv"))
    base = (
        exp.select(
            pid.as_("person_id"),
            exp.column("created_at", "p").as_("created_at"),
            exp.column("properties", "p").as_("properties"),
        )
        .from_(store.scoped("person_values", project.id).subquery("pv"))
        .join(
            store.scoped("persons", project.id).subquery("p"),
            on=exp.column("id", "p").eq(exp.column("person_id", "pv")),
            join_type="left",
        )
        .where(exp.column("scope", "pv").eq(lit(scope)))
    )
    page = base.order_by(exp.column("person_id")).limit(limit).offset(offset)
    rows = store.query(sql.render(page)).rows
    total_q = (
        exp.select(exp.Count(this=exp.Star()))
        .from_(store.scoped("person_values", project.id).subquery("pv"))
        .where(exp.column("scope").eq(lit(scope)))
    )
    total = int(store.query(sql.render(total_q)).rows[0][0])
    ids = [str(r[0]) for r in rows]
    dids: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        q = (
            exp.select(sql.text(exp.column("person_id")), exp.column("distinct_id"))
            .from_(store.scoped("person_distinct_ids", project.id).subquery("d"))
            .where(
                exp.In(this=sql.text(exp.column("person_id")), expressions=[lit(i) for i in ids])
            )
            .order_by(exp.column("distinct_id"))
        )
        for p, d in store.query(sql.render(q)).rows:
            dids.setdefault(str(p), []).append(str(d))
    persons = []
    for r in rows:
        props = r[2]
        if isinstance(props, str):
            try:
                props = orjson.loads(props) if props else {}
            except orjson.JSONDecodeError:
                props = {}
        persons.append(
            {
                "person_id": str(r[0]),
                "distinct_ids": dids.get(str(r[0]), []),
                "created_at": r[1],
                "properties": props or {},
            }
        )
    return {"total": total, "limit": limit, "offset": offset, "persons": persons}


def export_rows(runtime: Runtime, project: Project, scope: str) -> Iterator[list[str]]:
    """CSV rows (header first) of a scope's members: one row per (person_id, distinct_id); a
    person without a distinct id gets an empty one. Uploading it back matches by person id."""
    store = runtime.store
    sql = Sql(store.dialect)
    q = (
        exp.select(
            sql.text(exp.column("person_id", "pv")).as_("person_id"),
            exp.column("distinct_id", "d").as_("distinct_id"),
        )
        .from_(store.scoped("person_values", project.id).subquery("pv"))
        .join(
            store.scoped("person_distinct_ids", project.id).subquery("d"),
            on=exp.column("person_id", "d").eq(exp.column("person_id", "pv")),
            join_type="left",
        )
        .where(exp.column("scope", "pv").eq(lit(scope)))
        .order_by(exp.column("person_id"), exp.column("distinct_id"))
    )
    yield ["person_id", "distinct_id"]
    for p, d in store.iter_query(sql.render(q)):
        yield [str(p), "" if d is None else str(d)]


def export_csv(runtime: Runtime, project: Project, scope: str) -> Iterator[str]:
    """:func:`export_rows` as CSV text chunks."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for n, row in enumerate(export_rows(runtime, project, scope)):
        writer.writerow(row)
        if n % 5000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def size_history(engine: sa.Engine, seg_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The latest ``limit`` computations of a segment, oldest first: computed_at and size."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(segment_sizes.c.computed_at, segment_sizes.c.size)
            .where(segment_sizes.c.segment_id == seg_id)
            .order_by(segment_sizes.c.computed_at.desc(), segment_sizes.c.id.desc())
            .limit(limit)
        ).all()
    return [{"computed_at": iso(r.computed_at), "size": r.size} for r in reversed(rows)]


def all_node_ids(engine: sa.Engine, project_id: int) -> list[Node]:
    """Every tag and segment of a project as graph nodes (for listing in dependency order)."""
    return list(_graph(engine, project_id))


__all__ = [
    "DependencyCycle",
    "InvalidSegment",
    "RecomputeReport",
    "Segment",
    "SegmentError",
    "UploadReport",
    "compute_segment",
    "compute_tag",
    "create_segment",
    "delete_segment",
    "delete_tag",
    "dependency_order",
    "export_csv",
    "get_segment",
    "list_segments",
    "members_page",
    "parse_csv",
    "preview",
    "recompute_all",
    "recompute_due",
    "run_rule",
    "size_history",
    "snapshot_segment",
    "update_segment",
    "upload_members",
]
