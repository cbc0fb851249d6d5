"""Paths: what persons do after a start event (or before an end event), step by step.

Each person's events inside the date range (after ``filters`` and the include / exclude lists)
are ordered by timestamp, then uuid. The anchor is the person's first ``start_event`` (events
after it are steps 1, 2, …), or their first ``end_event`` (events before it are steps -1, -2, …),
or, with neither, their first event. Persons without an anchor are not counted. Step 0 is the
anchor; at most ``steps`` events per person (the anchor included) are counted.

With both a start and an end event, a person's path runs from their first ``start_event`` to
the first ``end_event`` after it (both included: steps 0 .. m); persons with no such end event,
or whose end event is more than ``steps - 1`` events after the start, are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlglot import exp

from yunying.analytics.common import (
    DateRange,
    Filter,
    InvalidQuery,
    Source,
    Sql,
    as_int,
    events_from,
    lit,
    run,
    uses_person,
)

MAX_STEPS = 20


@dataclass(frozen=True)
class PathsQuery:
    """Paths from ``start_event``, to ``end_event``, or from the one to the other, up to
    ``steps`` events; ``limit`` keeps the most frequent transitions per step."""

    date_range: DateRange
    start_event: str | None = None
    end_event: str | None = None
    steps: int = 5
    filters: tuple[Filter, ...] = ()
    include_events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()
    limit: int = 20

    def __post_init__(self) -> None:
        for name in ("filters", "include_events", "exclude_events"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.steps, int) or not 2 <= self.steps <= MAX_STEPS:
            raise InvalidQuery(f"steps must be an integer from 2 to {MAX_STEPS}")
        if self.limit < 1:
            raise InvalidQuery("limit must be at least 1")
        for anchor in (self.start_event, self.end_event):
            if anchor is not None and (
                anchor in self.exclude_events
                or (self.include_events and anchor not in self.include_events)
            ):
                raise InvalidQuery(f"the anchor event {anchor!r} is filtered out of the paths")

    @property
    def backwards(self) -> bool:
        """Whether steps go back in time from an end event (an end event alone)."""
        return self.end_event is not None and self.start_event is None

    @property
    def between(self) -> bool:
        """Whether paths run from a start event to an end event."""
        return self.start_event is not None and self.end_event is not None


@dataclass(frozen=True)
class PathNode:
    """Persons whose step ``step`` was ``event``."""

    step: int
    event: str
    persons: int


@dataclass(frozen=True)
class PathEdge:
    """Persons who did ``source`` at step ``step`` and ``target`` right after it (in time)."""

    step: int
    source: str
    target: str
    persons: int


@dataclass(frozen=True)
class PathsResult:
    """Nodes per step and transitions between consecutive steps, most persons first."""

    nodes: tuple[PathNode, ...]
    edges: tuple[PathEdge, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def paths_sql(source: Source, project_id: int, q: PathsQuery) -> exp.Select:
    """One query for nodes and edges: rows (step, event, next event, persons), where the next
    event is NULL for persons whose path ends at that step.

    Each person's events are numbered and paired with the next one in a single window pass (one
    sort); nodes are the sums over next events, edges the rows with one, so no self-join."""
    sql = Sql(source.dialect)
    start, end = q.date_range.utc_bounds()
    conds: list[exp.Expr] = [sql.time_between(start, end), sql.filters(q.filters)]
    if q.include_events:
        conds.append(exp.In(this=_c("event"), expressions=[lit(e) for e in q.include_events]))
    if q.exclude_events:
        conds.append(
            exp.Not(this=exp.In(this=_c("event"), expressions=[lit(e) for e in q.exclude_events]))
        )
    # DuckDB orders UUIDs as their text (it stores them with the top bit flipped for that):
    # sorting the 16-byte values is cheaper than casting every uuid to text
    uid = sql.text(_c("uuid")) if sql.ch else _c("uuid")
    order = exp.Order(expressions=[exp.Ordered(this=_c("timestamp")), exp.Ordered(this=uid)])

    # the next event, NULL after a person's last one (ClickHouse gives '' for a String)
    nullable: exp.Expr = _c("event")
    if sql.dialect == "clickhouse":
        nullable = exp.Anonymous(this="toNullable", expressions=[nullable])

    def over(fn: exp.Expr) -> exp.Window:
        return exp.Window(this=fn, partition_by=[_c("person_id")], order=order.copy())

    seq = (
        exp.select(
            _c("person_id"),
            _c("event"),
            exp.alias_(over(exp.RowNumber()), "i"),
            exp.alias_(over(exp.Anonymous(this="LEAD", expressions=[nullable])), "nxt"),
        )
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(exp.and_(*conds))
    )  # fmt: skip
    anchor_event = q.start_event if q.start_event is not None else q.end_event
    anchor_cond = exp.true() if anchor_event is None else _c("event").eq(lit(anchor_event))
    anchors = (
        exp.select(_c("person_id"), exp.alias_(exp.Min(this=_c("i")), "i0"))
        .from_("seq")
        .where(anchor_cond)
        .group_by(_c("person_id"))
    )
    k = exp.Sub(this=_c("i", "s"), expression=_c("i0", "a"))
    k1 = exp.Add(this=k.copy(), expression=lit(1))  # the next event's step
    bound = lit(q.steps - 1)

    def inside(step: exp.Expr) -> exp.Expr:
        if q.backwards:
            return exp.and_(
                exp.LTE(this=step, expression=lit(0)),
                exp.GTE(this=step.copy(), expression=exp.Neg(this=bound.copy())),
            )
        return exp.and_(
            exp.GTE(this=step, expression=lit(0)),
            exp.LTE(this=step.copy(), expression=bound.copy()),
        )

    within, next_within = inside(k.copy()), inside(k1)
    if q.between:
        # the first end event after the start, no more than steps - 1 events later
        assert q.end_event is not None
        i1 = exp.Min(this=_c("i", "s"))
        starts = anchors
        anchors = (
            exp.select(
                exp.alias_(_c("person_id", "a"), "person_id"),
                exp.alias_(_c("i0", "a"), "i0"),
                exp.alias_(i1, "i1"),
            )
            .from_(exp.to_table("seq").as_("s"))
            .join(
                exp.to_table("starts").as_("a"),
                on=_c("person_id", "a").eq(_c("person_id", "s")),
                join_type="inner",
            )
            .where(
                exp.and_(
                    _c("event", "s").eq(lit(q.end_event)),
                    exp.GT(this=_c("i", "s"), expression=_c("i0", "a")),
                )
            )
            .group_by(_c("person_id", "a"), _c("i0", "a"))
            .having(exp.LTE(this=exp.Sub(this=i1.copy(), expression=_c("i0", "a")), expression=bound.copy()))
        )  # fmt: skip
        within = exp.and_(
            exp.GTE(this=k.copy(), expression=lit(0)),
            exp.LTE(this=_c("i", "s"), expression=_c("i1", "a")),
        )
        next_within = exp.LT(this=_c("i", "s"), expression=_c("i1", "a"))
    target = exp.If(this=next_within, true=_c("nxt", "s"))
    stepped = (
        exp.select(
            exp.alias_(k.copy(), "k"),
            _c("event", "s"),
            exp.alias_(exp.Case(ifs=[target]), "target"),
        )
        .from_(exp.to_table("seq").as_("s"))
        .join(
            exp.to_table("anchors").as_("a"),
            on=_c("person_id", "a").eq(_c("person_id", "s")),
            join_type="inner",
        )
        .where(within)
    )
    tree = (
        exp.select("k", "event", "target", exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_("steps")
        .group_by("k", "event", "target")
    )
    tree = tree.with_("seq", as_=seq)
    if q.between:
        tree = tree.with_("starts", as_=starts)
    return tree.with_("anchors", as_=anchors).with_("steps", as_=stepped)


def paths(source: Source, project_id: int, query: PathsQuery) -> PathsResult:
    """Run a paths analysis on a store (or any :class:`Source`) for one project."""
    counts: dict[tuple[int, str], int] = {}
    found: list[PathEdge] = []
    for k, e, t, n in run(source, paths_sql(source, project_id, query)):
        step, event, persons = as_int(k), str(e), as_int(n)
        counts[(step, event)] = counts.get((step, event), 0) + persons
        if t is not None:
            found.append(PathEdge(step, event, str(t), persons))
    nodes = sorted(
        (PathNode(step, event, n) for (step, event), n in counts.items()),
        key=lambda x: (x.step, -x.persons, x.event),
    )
    edges = sorted(found, key=lambda x: (x.step, -x.persons, x.source, x.target))
    kept: list[PathEdge] = []
    per_step: dict[int, int] = {}
    for e in edges:
        per_step[e.step] = per_step.get(e.step, 0) + 1
        if per_step[e.step] <= query.limit:
            kept.append(e)
    return PathsResult(tuple(nodes), tuple(kept))
