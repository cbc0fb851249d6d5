"""Segment rule trees (用户分群规则): a typed, JSON/YAML-able model and its compiler to one SQL query.

A rule is a tree of ``and`` / ``or`` / ``not`` nodes over conditions on a person:

- ``property``: a current person property (eq, neq, in, not_in, gt, gte, lt, lte, contains,
  is_set, is_not_set — the analytics :class:`~yunying.analytics.Filter` semantics);
- ``event``: did (or, with ``did: false``, did not) do an event, with event-property filters,
  ``at_least`` / ``at_most`` / ``exactly`` N times within a window;
- ``first_time`` / ``last_time``: the person's first (last) matching event falls in a window;
- ``aggregate``: sum / avg / min / max of a numeric field over the matching events of a window
  compared with a number (e.g. spent ≥ 100 in the last 30 days);
- ``stage``, ``rfm``, ``clv``, ``tag``, ``segment``: derived facts read from ``person_values``
  (lifecycle stage, RFM class, CLV bands, tags and other segments' membership).

Windows are local calendar days of the project's time zone (see :class:`Window`); every rule is
evaluated "as of" a moment ``now``: events at or after it are never seen.

:func:`compile_rule` turns a tree into ONE SQLGlot SELECT of ``person_id`` over the project's
``persons``, one pass over ``events`` (all behavioural conditions as conditional aggregates per
person) and one over ``person_values``; it renders for DuckDB and ClickHouse. User input only
enters the SQL as literals built by SQLGlot. :func:`compile_batch` compiles many trees through the
same compiler into ONE SELECT with a boolean column per tree (one events pass for all of them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic import Field as Doc
from pydantic_core import PydanticCustomError
from sqlglot import exp

from yunying.analytics.common import (
    COLUMNS,
    Field,
    Filter,
    FilterOp,
    InvalidQuery,
    Source,
    Sql,
    lit,
)
from yunying.errors import M_, Message, YunyingError, pydantic_message

#: Labels of the ``stage`` scope (written by :mod:`yunying.audience.stages`).
STAGES = ("new", "active", "retained", "silent", "churned", "returned")
#: The two CLV bands and their labels (written by :mod:`yunying.audience.clv`).
CLV_BANDS = {"churn_risk": "clv:churn_risk", "value_band": "clv:value_band"}
CLV_LABELS = ("low", "medium", "high")
#: Names of tags: letters (any script), digits, ``_``, ``-``, ``.``; 1 to 100 characters.
TAG_NAME = re.compile(r"^[\w.-]{1,100}$")
#: Longest window accepted (days).
MAX_DAYS = 36_600
#: Deepest rule tree accepted (a bound on what a client can make the compiler recurse into).
MAX_DEPTH = 32


def _error(kind: str, message: Message | str) -> PydanticCustomError:
    """A Pydantic error whose text is ``message``; a marked :class:`Message` rides along in the
    context, so :func:`errors_of` keeps its template for translation."""
    return PydanticCustomError(kind, "{message}", {"message": message})


class InvalidRule(YunyingError):
    """A rule tree is malformed; ``errors`` lists each problem as ``{"field", "message"}`` with
    the dotted path of the offending field (``rules.1.window.last_days``)."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [{"field": "", "message": message}]

    @property
    def field(self) -> str:
        """The path of the first problem."""
        return self.errors[0]["field"]


# -- the model --------------------------------------------------------------------------------------


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _field_shorthand(value: Any) -> Any:
    """``"channel"`` is short for ``{"kind": "column", "name": "channel"}`` (a first-class
    column) and ``"plan"`` for ``{"kind": "property", "name": "plan"}``."""
    if isinstance(value, str):
        return {"kind": "column" if value in COLUMNS else "property", "name": value}
    return value


class EventField(_Node):
    """A value of an event: a first-class column of ``events`` or a top-level property."""

    kind: Literal["column", "property"] = Doc(
        "property", description="column (channel, os, amount...) or property."
    )
    name: str = Doc(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _check(self) -> EventField:
        if self.kind == "column" and self.name not in COLUMNS:
            raise _error(
                "unknown_column",
                M_("unknown column {name!r}; columns are {columns}",
                   name=self.name, columns=", ".join(COLUMNS)),
            )  # fmt: skip
        return self

    def to_field(self) -> Field:
        return Field(self.name, self.kind)


class EventFilter(_Node):
    """A condition on one value of each event considered (the analytics filter semantics)."""

    field: Annotated[EventField, BeforeValidator(_field_shorthand)]
    op: FilterOp = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> EventFilter:
        try:
            self.to_filter()
        except InvalidQuery as exc:
            raise _error("invalid_filter", exc.message) from None
        return self

    def to_filter(self) -> Filter:
        value = tuple(self.value) if isinstance(self.value, list) else self.value
        return Filter(self.field.to_field(), self.op, value)


class Window(_Node):
    """Local calendar days of the project's time zone, always ending no later than ``now``.

    - ``last_days: D``: the D days ending today (today included), up to ``now``;
    - ``from`` / ``to``: from local midnight starting ``from`` to the end of ``to`` (both days
      included; either may be left out);
    - ``after`` / ``before``: strictly after the day ``after`` (from the next local midnight) /
      strictly before the day ``before`` (up to its local midnight);
    - no window at all: every event before ``now``.
    """

    last_days: int | None = Doc(None, ge=1, le=MAX_DAYS)
    from_: date | None = Doc(None, alias="from")
    to: date | None = None
    after: date | None = None
    before: date | None = None

    @model_validator(mode="after")
    def _check(self) -> Window:
        given = [k for k in ("from_", "to", "after", "before") if getattr(self, k) is not None]
        if self.last_days is not None and given:
            raise _error("window", M_("give either last_days or from/to/after/before, not both"))
        if self.last_days is None and not given:
            raise _error(
                "window", M_("a window needs last_days, or at least one of from, to, after, before")
            )
        if self.from_ is not None and self.after is not None:
            raise _error("window", M_("give either from or after, not both"))
        if self.to is not None and self.before is not None:
            raise _error("window", M_("give either to or before, not both"))
        first, last = self.first_day(), self.last_day()
        if first is not None and last is not None and last < first:
            raise _error(
                "window", M_("the window is empty: it ends ({last}) before it starts ({first})",
                             first=first.isoformat(), last=last.isoformat()),
            )  # fmt: skip
        return self

    def first_day(self) -> date | None:
        """First local day included (None: unbounded; ``last_days`` depends on today)."""
        if self.from_ is not None:
            return self.from_
        if self.after is not None:
            return self.after + timedelta(days=1)
        return None

    def last_day(self) -> date | None:
        """Last local day included (None: up to now)."""
        if self.to is not None:
            return self.to
        if self.before is not None:
            return self.before - timedelta(days=1)
        return None

    def bounds(self, now: datetime, timezone: str) -> tuple[datetime | None, datetime]:
        """``[start, end)`` as naive UTC instants (start None: unbounded), end at most ``now``."""
        tz = ZoneInfo(timezone)
        now_utc = _naive_utc(now)

        def midnight(day: date) -> datetime:
            return _naive_utc(datetime.combine(day, time(0), tzinfo=tz))

        if self.last_days is not None:
            today = now.astimezone(tz).date()
            return midnight(today - timedelta(days=self.last_days - 1)), now_utc
        first, last = self.first_day(), self.last_day()
        start = None if first is None else midnight(first)
        end = now_utc if last is None else min(now_utc, midnight(last + timedelta(days=1)))
        return start, end


def _naive_utc(ts: datetime) -> datetime:
    """A datetime as the naive UTC instant ``events.timestamp`` holds (naive input is UTC)."""
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


Filters = Annotated[list[EventFilter], Doc(default_factory=list, max_length=50)]
EventName = Annotated[
    str | None, Doc(description="Event name; null means any event.", max_length=200)
]


class And(_Node):
    """Every sub-rule holds."""

    type: Literal["and"]
    rules: list[Rule] = Doc(min_length=1, max_length=100)


class Or(_Node):
    """At least one sub-rule holds."""

    type: Literal["or"]
    rules: list[Rule] = Doc(min_length=1, max_length=100)


class Not(_Node):
    """The sub-rule does not hold."""

    type: Literal["not"]
    rule: Rule


class PersonProperty(_Node):
    """A top-level key of the person's current properties compared with a value."""

    type: Literal["property"]
    name: str = Doc(min_length=1, max_length=200)
    op: FilterOp = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> PersonProperty:
        try:
            self.to_filter()
        except InvalidQuery as exc:
            raise _error("invalid_filter", exc.message) from None
        return self

    def to_filter(self) -> Filter:
        """The condition as a filter on the persons relation's ``properties`` column."""
        value = tuple(self.value) if isinstance(self.value, list) else self.value
        return Filter(Field(self.name, "property"), self.op, value)


class EventCount(_Node):
    """Did the event (matching ``filters``) ``at_least`` / ``at_most`` / ``exactly`` ``times``
    times within ``window``; ``did: false`` negates the whole condition."""

    type: Literal["event"]
    event: EventName
    filters: Filters
    count: Literal["at_least", "at_most", "exactly"] = "at_least"
    times: int = Doc(1, ge=0, le=1_000_000_000)
    window: Window | None = None
    did: bool = True


class EventTime(_Node):
    """The person's first (``first_time``) or last (``last_time``) matching event before now
    lies within ``window``; a person who never did it does not match."""

    type: Literal["first_time", "last_time"]
    event: EventName
    filters: Filters
    window: Window


class EventAggregate(_Node):
    """``math`` (sum, avg, min, max) of a numeric field over the matching events of ``window``,
    compared with ``value``. A sum over no events is 0; avg/min/max over none have no value and
    do not match."""

    type: Literal["aggregate"]
    event: EventName
    filters: Filters
    math: Literal["sum", "avg", "min", "max"] = "sum"
    field: Annotated[EventField, BeforeValidator(_field_shorthand)] = EventField(
        kind="column", name="amount"
    )
    op: Literal["eq", "neq", "gt", "gte", "lt", "lte"] = "gte"
    value: float
    window: Window | None = None

    @model_validator(mode="after")
    def _check(self) -> EventAggregate:
        if self.field.kind == "column" and self.field.name != "amount":
            raise _error(
                "not_numeric",
                M_("column {name!r} is not numeric; only amount is", name=self.field.name),
            )
        return self


class StageRule(_Node):
    """The person's current lifecycle stage is one of ``in``."""

    type: Literal["stage"]
    values: list[Literal["new", "active", "retained", "silent", "churned", "returned"]] = Doc(
        alias="in", min_length=1
    )


class RfmRule(_Node):
    """The person's RFM class code is one of ``in``."""

    type: Literal["rfm"]
    values: list[Annotated[str, Doc(min_length=1, max_length=100)]] = Doc(alias="in", min_length=1)


class ClvRule(_Node):
    """The person's CLV ``band`` (churn_risk or value_band) is one of ``in``."""

    type: Literal["clv"]
    band: Literal["churn_risk", "value_band"]
    values: list[Literal["low", "medium", "high"]] = Doc(alias="in", min_length=1)


class TagRule(_Node):
    """The person carries the tag ``name``."""

    type: Literal["tag"]
    name: str = Doc(pattern=TAG_NAME.pattern)


class SegmentRule(_Node):
    """The person is a member of segment ``id`` (as last computed)."""

    type: Literal["segment"]
    id: int = Doc(ge=1)


Condition = (
    PersonProperty | EventCount | EventTime | EventAggregate | StageRule | RfmRule | ClvRule
    | TagRule | SegmentRule
)  # fmt: skip
Rule = Annotated[
    And | Or | Not | PersonProperty | EventCount | EventTime | EventAggregate | StageRule
    | RfmRule | ClvRule | TagRule | SegmentRule,
    Doc(discriminator="type"),
]  # fmt: skip

for _m in (And, Or, Not):
    _m.model_rebuild()

RULE_TYPES = ("and", "or", "not", "property", "event", "first_time", "last_time", "aggregate",
              "stage", "rfm", "clv", "tag", "segment")  # fmt: skip
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Rule)


def error_path(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """A dotted field path from a Pydantic location, without the union tags it inserts (the
    ``type`` of a node appears right after a list index, after ``rule`` or at the root)."""
    parts: list[str] = []
    prev: Any = None
    for i, p in enumerate(loc):
        tag = isinstance(p, str) and p in RULE_TYPES
        if tag and (i == 0 or isinstance(prev, int) or prev == "rule"):
            prev = None
            continue
        if isinstance(p, str) and p.startswith("function-"):
            continue
        parts.append(str(p))
        prev = p
    path = ".".join(parts)
    if prefix:
        return f"{prefix}.{path}" if path else prefix
    return path


def errors_of(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic's errors as ``{"field", "message"}`` with clean dotted paths."""
    out = []
    for e in exc.errors():
        message: str = pydantic_message(e)
        if e.get("type") == "union_tag_invalid":
            message = M_("unknown rule type; use one of {types}", types=", ".join(RULE_TYPES))
        elif e.get("type") == "union_tag_not_found":
            message = M_("a rule needs a 'type': one of {types}", types=", ".join(RULE_TYPES))
        out.append({"field": error_path(tuple(e.get("loc", ())), prefix), "message": message})
    return out


def parse_rule(data: Any, prefix: str = "rules") -> Any:
    """Validate a rule tree given as JSON-like data; :class:`InvalidRule` naming the field."""
    try:
        rule = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        errors = errors_of(exc, prefix)
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidRule(f"invalid rule: {text}", errors) from None
    depth = _depth(rule)
    if depth > MAX_DEPTH:
        raise InvalidRule(
            M_("the rule tree is {depth} levels deep; at most {max} are allowed",
               depth=depth, max=MAX_DEPTH),
            [{"field": prefix, "message": M_("too deep")}],
        )  # fmt: skip
    return rule


def rule_json(rule: Any) -> dict[str, Any]:
    """The rule as JSON-ready data (what :func:`parse_rule` reads back)."""
    return dict(_ADAPTER.dump_python(rule, mode="json", by_alias=True, exclude_defaults=True))


def _children(rule: Any) -> list[Any]:
    if isinstance(rule, And | Or):
        return list(rule.rules)
    if isinstance(rule, Not):
        return [rule.rule]
    return []


def _depth(rule: Any) -> int:
    kids = _children(rule)
    return 1 + (max(_depth(k) for k in kids) if kids else 0)


def walk(rule: Any) -> Iterator[Any]:
    """Every node of the tree, depth first."""
    yield rule
    for k in _children(rule):
        yield from walk(k)


def references(rule: Any) -> tuple[set[int], set[str]]:
    """Segment ids and tag names the rule reads (its dependencies)."""
    segments = {n.id for n in walk(rule) if isinstance(n, SegmentRule)}
    tags = {n.name for n in walk(rule) if isinstance(n, TagRule)}
    return segments, tags


def uses_scopes(rule: Any) -> set[str]:
    """The derived-fact scopes (``stage``, ``rfm``, ``clv:...``) the rule reads."""
    out: set[str] = set()
    for n in walk(rule):
        if isinstance(n, StageRule):
            out.add("stage")
        elif isinstance(n, RfmRule):
            out.add("rfm")
        elif isinstance(n, ClvRule):
            out.add(CLV_BANDS[n.band])
    return out


# -- the compiler -----------------------------------------------------------------------------------


class _EventSql(Sql):
    """The event-side builders of a compilation: a top-level event property is read from a
    column of the events scan that extracts it ONCE per event (``_t0``, ``_n0``...), however many
    conditions (of however many rules) test it; the columns are collected in ``extracted``."""

    def __init__(self, dialect: str, prefix: str = "_") -> None:
        super().__init__(dialect)
        self.prefix = prefix
        self.extracted: dict[tuple[str, str], tuple[str, exp.Expr]] = {}
        #: The event names of the conditions reading each extracted property (None: any event).
        self.readers: dict[tuple[str, str], set[str | None]] = {}
        #: The event name of the condition being compiled.
        self.event: str | None = None

    def _once(self, kind: str, key: str, column: str, build: exp.Expr) -> exp.Expr:
        if column != "properties":  # not an event property: as usual
            return build
        if (kind, key) not in self.extracted:
            self.extracted[(kind, key)] = (f"{self.prefix}{kind}{len(self.extracted)}", build)
        self.readers.setdefault((kind, key), set()).add(self.event)
        return exp.column(self.extracted[(kind, key)][0])

    def columns(self) -> list[exp.Expr]:
        """The extraction columns of the events scan. A property read only by conditions on
        some event names (each ANDed with ``event = name``) is extracted from those events only:
        on the others its value is never looked at."""
        out: list[exp.Expr] = []
        for key, (alias, build) in self.extracted.items():
            names = self.readers.get(key, {None})
            if None not in names:
                event = exp.column("event")
                only = exp.In(
                    this=event, expressions=[lit(n) for n in sorted(n for n in names if n)]
                )
                build = exp.Case(ifs=[exp.If(this=only, true=build)])
            out.append(build.as_(alias))
        return out

    def prop_text(self, key: str, column: str = "properties") -> exp.Expr:
        return self._once("t", key, column, super().prop_text(key, column))

    def prop_number(self, key: str, column: str = "properties") -> exp.Expr:
        return self._once("n", key, column, super().prop_number(key, column))


@dataclass
class _Compiler:
    """State of one compilation (of one rule tree or of a batch of them): the per-person
    aggregates and person-value lookups collected while each tree is turned into a condition on
    them. Identical aggregates of different trees are computed once."""

    sql: Sql
    now: datetime
    timezone: str
    aggregates: dict[str, tuple[str, exp.Expr]] = field(default_factory=dict)  # key -> alias, agg
    lookups: dict[tuple[str, str], str] = field(default_factory=dict)  # (scope, kind) -> alias
    starts: list[datetime | None] = field(default_factory=list)  # window starts of event scans
    events: set[str | None] = field(default_factory=set)
    esql: _EventSql = field(init=False)
    psql: _EventSql = field(init=False)  # the same for person properties (``_pt0``...)

    def __post_init__(self) -> None:
        self.esql = _EventSql(self.sql.dialect)
        self.psql = _EventSql(self.sql.dialect, "_p")

    def aggregate(self, agg: exp.Expr) -> exp.Expr:
        """A column of the per-person events aggregate computing ``agg`` (deduplicated)."""
        key = self.sql.render(agg)
        if key not in self.aggregates:
            self.aggregates[key] = (f"a{len(self.aggregates)}", agg)
        return exp.column(self.aggregates[key][0], "e")

    def lookup(self, scope: str, kind: Literal["label", "present"]) -> exp.Expr:
        """A column of the per-person person-values pivot: the label of ``scope`` or whether the
        person has a row in it."""
        if (scope, kind) not in self.lookups:
            self.lookups[(scope, kind)] = f"v{len(self.lookups)}"
        return exp.column(self.lookups[(scope, kind)], "v")

    def matches(self, event: str | None, filters: list[EventFilter]) -> exp.Expr:
        self.events.add(event)
        self.esql.event = event
        return exp.and_(
            self.sql.event_is(event), self.esql.filters([f.to_filter() for f in filters])
        )

    def in_window(self, window: Window | None, ts: exp.Expr) -> tuple[exp.Expr, datetime | None]:
        start, end = (
            (None, _naive_utc(self.now))
            if window is None
            else window.bounds(self.now, self.timezone)
        )
        cond: exp.Expr = exp.LT(this=ts, expression=self.sql.ts_literal(end))
        if start is not None:
            cond = exp.and_(exp.GTE(this=ts.copy(), expression=self.sql.ts_literal(start)), cond)
        return cond, start

    def condition(self, rule: Any) -> exp.Expr:
        """A NULL-free boolean condition on the outer query's columns."""
        if isinstance(rule, And):
            return exp.Paren(this=exp.and_(*[self.condition(r) for r in rule.rules]))
        if isinstance(rule, Or):
            return exp.Paren(this=exp.or_(*[self.condition(r) for r in rule.rules]))
        if isinstance(rule, Not):
            return exp.Paren(this=exp.Not(this=self.condition(rule.rule)))
        return self._false_if_null(self._leaf(rule))

    def _false_if_null(self, cond: exp.Expr) -> exp.Expr:
        false = lit(0) if self.sql.ch else exp.false()
        return exp.func("coalesce", cond, false)

    def _leaf(self, rule: Any) -> exp.Expr:
        ts = exp.column("timestamp")
        if isinstance(rule, PersonProperty):
            return self.psql.filter(rule.to_filter())
        if isinstance(rule, EventCount):
            window, start = self.in_window(rule.window, ts)
            self.starts.append(start)
            cond = exp.and_(self.matches(rule.event, rule.filters), window)
            n = exp.func("coalesce", self.aggregate(exp.CountIf(this=cond)), lit(0))
            cls = {"at_least": exp.GTE, "at_most": exp.LTE, "exactly": exp.EQ}[rule.count]
            out: exp.Expr = cls(this=n, expression=lit(rule.times))
            return out if rule.did else exp.Not(this=exp.Paren(this=out))
        if isinstance(rule, EventTime):
            self.starts.append(None)  # first/last ever: the whole history matters
            hit = self.matches(rule.event, rule.filters)
            agg = exp.Min if rule.type == "first_time" else exp.Max
            when = exp.Case(ifs=[exp.If(this=hit, true=ts.copy())])
            at = self.aggregate(agg(this=when))
            window, _ = self.in_window(rule.window, at)
            return window
        if isinstance(rule, EventAggregate):
            window, start = self.in_window(rule.window, ts)
            self.starts.append(start)
            cond = exp.and_(self.matches(rule.event, rule.filters), window)
            self.esql.event = rule.event
            value = self.esql.field_number(rule.field.to_field())
            when = exp.Case(ifs=[exp.If(this=cond, true=value)])
            fn_cls = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[rule.math]
            got: exp.Expr = self.aggregate(fn_cls(this=when))
            if rule.math == "sum":
                got = exp.func("coalesce", got, lit(0.0))
            cmp = {"eq": exp.EQ, "neq": exp.NEQ, "gt": exp.GT, "gte": exp.GTE, "lt": exp.LT,
                   "lte": exp.LTE}[rule.op]  # fmt: skip
            return cmp(this=got, expression=lit(float(rule.value)))
        if isinstance(rule, StageRule):
            return exp.In(
                this=self.lookup("stage", "label"), expressions=[lit(v) for v in rule.values]
            )
        if isinstance(rule, RfmRule):
            return exp.In(
                this=self.lookup("rfm", "label"), expressions=[lit(v) for v in rule.values]
            )
        if isinstance(rule, ClvRule):
            return exp.In(
                this=self.lookup(CLV_BANDS[rule.band], "label"),
                expressions=[lit(v) for v in rule.values],
            )
        if isinstance(rule, TagRule):
            return exp.EQ(this=self.lookup(f"tag:{rule.name}", "present"), expression=lit(1))
        if isinstance(rule, SegmentRule):
            return exp.EQ(this=self.lookup(f"segment:{rule.id}", "present"), expression=lit(1))
        raise InvalidRule(f"unknown rule node {type(rule).__name__}")


def _aware(now: datetime | None) -> datetime:
    when = now or datetime.now(UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def compile_rule(
    source: Source, project_id: int, rule: Any, timezone: str, now: datetime | None = None
) -> exp.Select:
    """ONE SELECT of the ``person_id`` of every person of the project matching ``rule``.

    ``now`` (default: the current time) is the moment the rule is evaluated at: relative windows
    end there and later events are ignored; its date in ``timezone`` is "today".
    """
    c = _Compiler(Sql(source.dialect), _aware(now), timezone)
    where = c.condition(rule)
    query = _persons_query(source, project_id, c, [exp.column("id", "p").as_("person_id")])
    return query.where(where)


def compile_batch(
    source: Source,
    project_id: int,
    rules: list[Any],
    timezone: str,
    now: datetime | None = None,
) -> exp.Select:
    """ONE SELECT computing many rule trees together: per person of the project, ``person_id``
    and one boolean column ``m0``, ``m1``... per tree (in order), true where the tree matches —
    each column is exactly the condition :func:`compile_rule` filters on.

    All trees share one pass over ``events`` (every aggregate any of them needs, identical ones
    once, over the union of their event names and their widest window, each event property
    extracted once per event) and one over ``person_values``. Use :func:`inline_references` first
    so that trees reading each other's results do not need them stored.
    """
    c = _Compiler(Sql(source.dialect), _aware(now), timezone)
    conds = [c.condition(r) for r in rules]
    columns = [exp.column("id", "p").as_("person_id")]
    columns += [cond.as_(f"m{i}") for i, cond in enumerate(conds)]
    return _persons_query(source, project_id, c, columns)


def inline_references(rule: Any, defs: dict[tuple[str, str], Any]) -> Any:
    """``rule`` with every ``segment`` / ``tag`` condition whose target is in ``defs`` (keyed
    ``("segment", "12")`` / ``("tag", "name")``) replaced by the target's own rule tree (itself
    inlined): computed at the same ``now`` over the same data, it holds for exactly the persons
    whose stored membership the condition would read once the target is computed. Targets must
    not form a cycle (definitions are checked when saved)."""
    if isinstance(rule, SegmentRule | TagRule):
        key = ("segment", str(rule.id)) if isinstance(rule, SegmentRule) else ("tag", rule.name)
        if key in defs:
            return inline_references(defs[key], defs)
        return rule
    if isinstance(rule, And | Or):
        return rule.model_copy(update={"rules": [inline_references(r, defs) for r in rule.rules]})
    if isinstance(rule, Not):
        return rule.model_copy(update={"rule": inline_references(rule.rule, defs)})
    return rule


def _persons_query(
    source: Source, project_id: int, c: _Compiler, columns: list[exp.Expr]
) -> exp.Select:
    persons = source.scoped("persons", project_id).subquery("p")
    if c.psql.extracted:  # each person property used, extracted once per person
        persons = (
            exp.select(exp.column("id"), *c.psql.columns())
            .from_(source.scoped("persons", project_id).subquery("p0"))
            .subquery("p")
        )
    query = exp.select(*columns).from_(persons)
    if c.aggregates:
        query = query.join(_events_pivot(source, project_id, c), on=exp.column("pid", "e").eq(
            exp.column("id", "p")), join_type="left")  # fmt: skip
    if c.lookups:
        query = query.join(_values_pivot(source, project_id, c), on=exp.column("vid", "v").eq(
            exp.column("id", "p")), join_type="left")  # fmt: skip
    return query


def _events_pivot(source: Source, project_id: int, c: _Compiler) -> exp.Expr:
    """Per person, every aggregate the conditions need, in one pass over their events."""
    sql = c.sql
    ts = exp.column("timestamp")
    scan: list[exp.Expr] = [exp.LT(this=ts, expression=sql.ts_literal(_naive_utc(c.now)))]
    if c.starts and all(s is not None for s in c.starts):
        earliest = min(s for s in c.starts if s is not None)
        scan.append(exp.GTE(this=ts.copy(), expression=sql.ts_literal(earliest)))
    if None not in c.events:
        names = sorted(e for e in c.events if e is not None)
        scan.append(exp.In(this=exp.column("event"), expressions=[lit(n) for n in names]))
    relation: exp.Expr = source.scoped("events", project_id).subquery("ev")
    if c.esql.extracted:  # each event property used, extracted once per scanned event
        relation = (
            exp.select(exp.Star(), *c.esql.columns())
            .from_(relation)
            .where(exp.and_(*scan))
            .subquery("ex")
        )
        scan = []
    pivot = exp.select(
        exp.column("person_id").as_("pid"),
        *[agg.as_(alias) for alias, agg in c.aggregates.values()],
    ).from_(relation)
    if scan:
        pivot = pivot.where(exp.and_(*scan))
    return pivot.group_by(exp.column("person_id")).subquery("e")


def _values_pivot(source: Source, project_id: int, c: _Compiler) -> exp.Expr:
    """Per person, the label of (or presence in) each ``person_values`` scope the rule reads."""
    scope = exp.column("scope")
    columns: list[exp.Expr] = [exp.column("person_id").as_("vid")]
    for (name, kind), alias in c.lookups.items():
        hit = scope.copy().eq(lit(name))
        if kind == "label":
            agg: exp.Expr = exp.Max(this=exp.Case(ifs=[exp.If(this=hit, true=exp.column("label"))]))
        else:
            agg = exp.Max(this=exp.Case(ifs=[exp.If(this=hit, true=lit(1))], default=lit(0)))
        columns.append(agg.as_(alias))
    scopes = sorted({name for name, _ in c.lookups})
    return (
        exp.select(*columns)
        .from_(source.scoped("person_values", project_id).subquery("pv"))
        .where(exp.In(this=scope, expressions=[lit(s) for s in scopes]))
        .group_by(exp.column("person_id"))
        .subquery("v")
    )


def rule_sql(
    source: Source, project_id: int, rule: Any, timezone: str, now: datetime | None = None
) -> str:
    """The SQL text of :func:`compile_rule` for the source's engine."""
    return Sql(source.dialect).render(compile_rule(source, project_id, rule, timezone, now))


def matching_persons(
    source: Source, project_id: int, rule: Any, timezone: str, now: datetime | None = None
) -> list[str]:
    """The person ids matching ``rule`` (sorted), by running the compiled query."""
    sql = rule_sql(source, project_id, rule, timezone, now)
    return sorted(str(r[0]) for r in source.query(sql).rows)


def matching_persons_batch(
    source: Source, project_id: int, rules: list[Any], timezone: str, now: datetime | None = None
) -> list[list[str]]:
    """The person ids matching each of ``rules`` (sorted), by running :func:`compile_batch`."""
    sql = Sql(source.dialect).render(compile_batch(source, project_id, rules, timezone, now))
    out: list[list[str]] = [[] for _ in rules]
    for row in source.query(sql).rows:
        for i, hit in enumerate(row[1:]):
            if hit:
                out[i].append(str(row[0]))
    return [sorted(ids) for ids in out]
