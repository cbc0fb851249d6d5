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

import uuid
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from sqlglot import exp

from yunying.analytics import funnel_pass
from yunying.analytics.common import (
    DateRange,
    Filter,
    InvalidQuery,
    Source,
    Sql,
    as_int,
    events_from,
    fn,
    lit,
    run,
    uses_person,
)
from yunying.analytics.funnel_pass import ArrowSource, sort_within

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


def _conditions(sql: Sql, q: PathsQuery) -> list[exp.Expr]:
    """Which events take part: the date range, filters, include / exclude lists."""
    start, end = q.date_range.utc_bounds()
    conds: list[exp.Expr] = [sql.time_between(start, end), sql.filters(q.filters)]
    if q.include_events:
        conds.append(exp.In(this=_c("event"), expressions=[lit(e) for e in q.include_events]))
    if q.exclude_events:
        conds.append(
            exp.Not(this=exp.In(this=_c("event"), expressions=[lit(e) for e in q.exclude_events]))
        )
    return conds


def paths_sql(
    source: Source, project_id: int, q: PathsQuery, only: exp.Query | None = None
) -> exp.Select:
    """One query for nodes and edges: rows (step, event, next event, persons), where the next
    event is NULL for persons whose path ends at that step; with ``only``, of the persons it
    selects.

    Each person's events are numbered and paired with the next one in a single window pass (one
    sort); nodes are the sums over next events, edges the rows with one, so no self-join."""
    sql = Sql(source.dialect)
    conds = _conditions(sql, q)
    if only is not None:
        conds.append(exp.In(this=_c("person_id"), query=only.subquery()))
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


#: Events a person's list keeps beyond the steps (DuckDB's quick paths, below).
SLACK = 3
#: Anchors whose windows :func:`path_counts` reads at a time.
CHUNK = 1 << 15
#: At most this many persons whose path :func:`path_counts` cannot tell go to the window query
#: by their ids; with more (timestamps in whole seconds, say), :func:`quick_sql` counts.
MAX_UNSURE = 10_000
#: Event names the quick paths can number (one byte of the sort key, 255 marks an unknown one).
MAX_NAMES = 255


def events_sql(source: Source, project_id: int, q: PathsQuery) -> exp.Select:
    """The distinct event names taking part."""
    sql = Sql(source.dialect)
    return (
        exp.select(_c("event"))
        .distinct()
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(exp.and_(*_conditions(sql, q)))
    )


def quick_sql(
    source: Source, project_id: int, q: PathsQuery, names: list[str]
) -> tuple[exp.Select, exp.Select]:
    """DuckDB's paths without sorting every event: (the counting query, the persons it cannot
    decide).

    An event's key is ``(microseconds since the range start) * 256 + code of its name``, so
    keys order events by time. Grouped by person: the ``steps + SLACK`` smallest keys (a
    bounded ``min(key, n)``, no sort), the anchor's key and the number of events. Where the
    keys show the path for sure it is read off the list: the anchor is in it, the path's
    events and their neighbours have distinct instants (the uuid order of events at one
    instant is not in the key), and every event up to the path's last one is in the list (all
    of the person's events are, or the last one kept is later). The other persons (none, in
    usual data) are counted by :func:`paths_sql` restricted to them. Rows: (step, code, next
    code, persons), and (NULL, NULL, NULL, persons to count by :func:`paths_sql`)."""
    sql = Sql(source.dialect)
    start, _ = q.date_range.utc_bounds()
    code = {name: i for i, name in enumerate(names)}
    steps = q.steps
    keep = steps + SLACK
    codes = exp.Values(
        expressions=[exp.tuple_(lit(n), lit(i)) for n, i in code.items()],
        alias=exp.TableAlias(
            this=exp.to_identifier("k"), columns=[exp.to_identifier("ev"), exp.to_identifier("c")]
        ),
    )
    since = exp.Sub(
        this=fn("epoch_us", _c("timestamp", "e")), expression=fn("epoch_us", sql.ts_literal(start))
    )
    key = exp.Add(
        this=exp.Mul(this=exp.Paren(this=since), expression=lit(256)),
        expression=exp.func("coalesce", _c("c", "k"), lit(MAX_NAMES)),
    )
    aggs: list[exp.Expr] = [
        exp.Count(this=exp.Star()).as_("cnt"),
        fn("min", key.copy(), lit(keep)).as_("l"),
    ]
    anchor = q.start_event if q.start_event is not None else q.end_event
    if anchor is not None:
        is_anchor = _c("c", "k").eq(lit(code[anchor]))
        aggs.append(exp.Min(this=exp.Case(ifs=[exp.If(this=is_anchor, true=key.copy())])).as_("ak"))
    per_person = (
        exp.select(*aggs)
        .from_(events_from(source, project_id, "e", person=uses_person(q)))
        .join(codes, on=_c("ev", "k").eq(_c("event", "e")), join_type="left")
        .where(exp.and_(*_conditions(sql, q)))
        .group_by(_c("person_id", "e"))
    )
    per_person = per_person.select(_c("person_id", "e").as_("person_id"))

    def at(i: exp.Expr) -> exp.Expr:
        return exp.Bracket(this=_c("l"), expressions=[i])

    def ts_at(i: exp.Expr) -> exp.Expr:
        return exp.IntDiv(this=at(i), expression=lit(256))

    a = _c("a")
    pos = fn("list_position", _c("l"), _c("ak")) if anchor is not None else lit(1)
    first: exp.Expr
    last: exp.Expr
    if q.backwards:
        first, last = exp.Sub(this=a.copy(), expression=lit(steps - 1)), a.copy()
        lo, hi = -steps, 1
    else:
        first, last = a.copy(), exp.Add(this=a.copy(), expression=lit(steps - 1))
        lo, hi = -1, steps
    checks: list[exp.Expr] = [exp.Not(this=exp.Is(this=a.copy(), expression=exp.null()))]
    everything = exp.LTE(this=_c("cnt"), expression=lit(keep))
    last_kept = exp.Bracket(this=_c("l"), expressions=[fn("len", _c("l"))])
    sure = exp.LT(
        this=ts_at(last.copy()), expression=exp.IntDiv(this=last_kept, expression=lit(256))
    )
    checks.append(exp.Paren(this=exp.or_(everything, sure)))
    for j in range(lo, hi):  # no two neighbours at one instant from before the path to after it
        i = exp.Add(this=a.copy(), expression=lit(j))
        differ = exp.func(
            "coalesce",
            exp.NEQ(
                this=ts_at(i.copy()), expression=ts_at(exp.Add(this=i.copy(), expression=lit(1)))
            ),
            exp.true(),
        )
        checks.append(exp.Paren(this=exp.or_(exp.LT(this=i, expression=lit(1)), differ)))
    x = exp.to_identifier("x")
    window = exp.Bracket(
        this=_c("l"),
        expressions=[exp.Slice(this=exp.func("greatest", first, lit(1)), expression=last)],
    )
    names_of = exp.Transform(
        this=window,
        expression=exp.Lambda(
            this=exp.Mod(this=exp.column("x"), expression=lit(256)), expressions=[x]
        ),
    )
    path = exp.Case(ifs=[exp.If(this=exp.and_(*checks), true=names_of)])
    where = exp.Not(this=exp.Is(this=_c("ak"), expression=exp.null())) if anchor else exp.true()
    decided = (
        exp.select(_c("person_id"), path.as_("p"))
        .from_(
            exp.select("*", pos.as_("a")).from_(per_person.subquery("pp")).where(where).subquery("q")
        )
    )  # fmt: skip
    if q.between:  # up to the first end event after the start; none within the steps: [],
        assert q.end_event is not None  # not counted (NULL: undecided)
        rest = exp.Bracket(this=_c("p"), expressions=[exp.Slice(this=lit(2))])
        found = fn("list_position", rest, lit(code[q.end_event]))
        upto = exp.func("coalesce", exp.Add(this=found, expression=lit(1)), lit(0))
        cut = exp.Bracket(this=_c("p"), expressions=[exp.Slice(this=lit(1), expression=upto)])
        decided = exp.select(_c("person_id"), cut.as_("p")).from_(decided.subquery("d"))
    undecided = exp.Is(this=_c("p"), expression=exp.null())
    grouped = (
        exp.select(_c("p"), exp.Count(this=exp.Star()).as_("n"))
        .from_(decided.subquery("d"))
        .group_by(_c("p"))
    )
    k = _c("k")
    length = fn("len", _c("p"))
    step: exp.Expr = k.copy()
    if q.backwards:
        step = exp.Sub(
            this=k.copy(), expression=exp.Paren(this=exp.Sub(this=length.copy(), expression=lit(1)))
        )
    nxt = exp.Case(
        ifs=[
            exp.If(
                this=exp.LT(
                    this=exp.Add(this=k.copy(), expression=lit(1)), expression=length.copy()
                ),
                true=exp.Bracket(
                    this=_c("p"), expressions=[exp.Add(this=k.copy(), expression=lit(2))]
                ),
            )
        ]
    )
    offsets = exp.select(_c("range").as_("k")).from_(exp.func("range", lit(steps)).as_("r"))
    tree = (
        exp.select(
            step.as_("step"),
            exp.Bracket(this=_c("p"), expressions=[exp.Add(this=k.copy(), expression=lit(1))]).as_("event"),
            nxt.as_("target"),
            exp.Sum(this=_c("n")).as_("n"),
        )
        .from_("grouped")
        .join(offsets.subquery("o"), on=exp.LT(this=k.copy(), expression=length.copy()), join_type="inner")
        .group_by(_c("step"), _c("event"), _c("target"))
    )  # fmt: skip
    rest_count = (
        exp.select(exp.null(), exp.null(), exp.null(), _c("n")).from_("grouped").where(undecided)
    )
    both = exp.union(tree, rest_count, distinct=False)
    out = exp.select("*").from_(both.subquery("t"))
    out = out.with_("grouped", as_=grouped)
    remaining = exp.select(_c("person_id")).from_(decided.subquery("d")).where(undecided.copy())
    return out, remaining


def keys_sql(source: Source, project_id: int, q: PathsQuery, names: list[str]) -> exp.Select:
    """Every event taking part as (person, key), the key as :func:`quick_sql`'s: microseconds
    since the range start, times 256, plus the code of its name (255: a name not in ``names``)."""
    sql = Sql(source.dialect)
    start, _ = q.date_range.utc_bounds()
    since = exp.Sub(
        this=sql.epoch_us(_c("timestamp")), expression=sql.epoch_us(sql.ts_literal(start))
    )
    position = sql.position(names, _c("event"))
    code = exp.func("coalesce", exp.Sub(this=position, expression=lit(1)), lit(MAX_NAMES))
    key = exp.Add(this=exp.Mul(this=exp.Paren(this=since), expression=lit(256)), expression=code)
    return (
        exp.select(_c("person_id"), key.as_("k"))
        .from_(events_from(source, project_id, person=uses_person(q)))
        .where(exp.and_(*_conditions(sql, q)))
    )


def path_counts(
    offsets: NDArray[np.int64], keys: NDArray[np.int64], q: PathsQuery, code: dict[str, int]
) -> tuple[list[tuple[int, int, int | None, int]], NDArray[np.int64]]:
    """The paths of persons given as lists of :func:`keys_sql` keys (list i is
    ``keys[offsets[i]:offsets[i + 1]]``, in any order): rows (step, code, next code or None,
    persons), and the lists whose path the keys cannot tell -- two events at one instant from
    just before the path to just after it, whose order the uuid decides -- to count exactly."""
    keys = sort_within(offsets, keys)[0]
    begin, end = offsets[:-1], offsets[1:]
    anchor = q.start_event if q.start_event is not None else q.end_event
    if anchor is None:  # the first event
        who = np.flatnonzero(end > begin)
        a = begin[who]
    else:
        rows = np.flatnonzero((keys & 255) == code[anchor])
        owner = np.searchsorted(offsets, rows, side="right") - 1
        firsts = np.ones(len(rows), np.bool_)
        firsts[1:] = owner[1:] != owner[:-1]
        a, who = rows[firsts], owner[firsts]
    begin, end = begin[who], end[who]
    steps = q.steps
    # each anchor's events from just before its path to just after it: the path's are
    # columns 1..steps (after the anchor at column 1, or before it at column ``steps``); in
    # ranges of anchors small enough for the temporaries to stay in the cache
    around = np.arange(-steps if q.backwards else -1, 2 if q.backwards else steps + 1)
    path = np.empty((len(a), steps), np.int32)
    sure = np.empty(len(a), np.bool_)
    last = max(len(keys) - 1, 0)
    for lo in range(0, len(a), CHUNK):
        hi = lo + CHUNK
        pos = a[lo:hi, None] + around
        valid = (pos >= begin[lo:hi, None]) & (pos < end[lo:hi, None])
        near = keys[np.clip(pos, 0, last)]
        # neighbours at one instant: the uuid orders them, the keys do not say how
        ts = near >> 8
        sure[lo:hi] = ~(valid[:, :-1] & valid[:, 1:] & (ts[:, :-1] == ts[:, 1:])).any(axis=1)
        codes = np.where(valid & sure[lo:hi, None], near & 255, -1)
        path[lo:hi] = codes[:, 1 : steps + 1]
    if q.between:  # up to the first end event after the start; none within the steps: none
        assert q.end_event is not None
        ends = path[:, 1:] == code[q.end_event]
        cut = np.where(ends.any(axis=1), ends.argmax(axis=1) + 2, 0)
        path[np.arange(steps) >= cut[:, None]] = -1
    counted: list[tuple[int, int, int | None, int]] = []
    for k in range(steps):
        event = path[:, k]
        target = path[:, k + 1] & 255 if k + 1 < steps else np.full(len(event), 255)
        there = event >= 0
        persons = np.bincount(event[there] * 256 + target[there], minlength=256 * 256)
        step = k - (steps - 1) if q.backwards else k
        for pair in np.flatnonzero(persons).tolist():
            t = pair % 256
            counted.append((step, pair // 256, None if t == 255 else t, int(persons[pair])))
    return counted, who[~sure]


def _quick_by_runs(
    source: Source, project_id: int, q: PathsQuery, names: list[str]
) -> list[list[Any]] | None:
    """Rows as :func:`paths_sql`'s from every event of the persons read as runs of rows (a store
    in person order: ``person_ordered``) and :func:`path_counts`; ``None`` where an event name
    appeared after the names were read, or too many persons have events at one instant (their
    ids would travel as literals)."""
    arrow = cast(ArrowSource, source)
    table = arrow.query_arrow(Sql(source.dialect).render(keys_sql(source, project_id, q, names)))
    keys = table.column(1).to_numpy().astype(np.int64, copy=False)
    if len(keys) and int((keys & 255).max()) >= len(names):
        return None
    runs = funnel_pass.person_runs(table.column(0), keys)
    counted, unsure = path_counts(runs.offsets, runs.values, q, {n: i for i, n in enumerate(names)})
    # a next event 255 is "none": the names' codes stop below MAX_NAMES
    rows: list[list[Any]] = [
        [k, names[e], None if t is None else names[t], n] for k, e, t, n in counted
    ]
    if len(unsure) > MAX_UNSURE:
        return None
    if len(unsure):
        ids = table.column(0).take(pa.array(runs.heads[unsure])).combine_chunks()
        if isinstance(ids, pa.ExtensionArray):
            ids = ids.storage
        persons = exp.Values(
            expressions=[exp.tuple_(lit(str(uuid.UUID(bytes=b)))) for b in ids.to_pylist()],
            alias=exp.TableAlias(this=exp.to_identifier("u"), columns=[exp.to_identifier("id")]),
        )
        only = exp.select(exp.cast(_c("id"), "UUID")).from_(persons)
        rows += run(source, paths_sql(source, project_id, q, only=only))
    return rows


def _quick(source: Source, project_id: int, q: PathsQuery) -> list[list[Any]] | None:
    """Rows as :func:`paths_sql`'s, counted by :func:`quick_sql` (DuckDB) where it applies, or
    from runs of rows where the store keeps events in person order."""
    if source.dialect != "duckdb":
        return None
    names = sorted(str(r[0]) for r in run(source, events_sql(source, project_id, q)))
    if len(names) > MAX_NAMES:
        return None
    if any(e is not None and e not in names for e in (q.start_event, q.end_event)):
        return []  # no anchor (or no end) among the events: no paths
    ordered = getattr(source, "person_ordered", None)
    if callable(ordered) and ordered(project_id):
        by_runs = _quick_by_runs(source, project_id, q, names)
        if by_runs is not None:
            return by_runs
    counting, remaining = quick_sql(source, project_id, q, names)
    rows: list[list[Any]] = []
    rest = 0
    for k, e, t, n in run(source, counting):
        if k is None:
            rest = as_int(n)
            continue
        if as_int(e) >= len(names) or (t is not None and as_int(t) >= len(names)):
            return None  # an event name that appeared after the names were read
        rows.append([k, names[as_int(e)], None if t is None else names[as_int(t)], n])
    if rest:
        rows += run(source, paths_sql(source, project_id, q, only=remaining))
    return rows


def paths(source: Source, project_id: int, query: PathsQuery) -> PathsResult:
    """Run a paths analysis on a store (or any :class:`Source`) for one project."""
    counts: dict[tuple[int, str], int] = {}
    rows = _quick(source, project_id, query)
    if rows is None:
        rows = run(source, paths_sql(source, project_id, query))
    pairs: dict[tuple[int, str, str], int] = {}
    for k, e, t, n in rows:  # the quick rows and the rest's may share (step, event, next)
        step, event, persons = as_int(k), str(e), as_int(n)
        counts[(step, event)] = counts.get((step, event), 0) + persons
        if t is not None:
            pairs[(step, event, str(t))] = pairs.get((step, event, str(t)), 0) + persons
    found = [PathEdge(step, e, t, n) for (step, e, t), n in pairs.items()]
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
