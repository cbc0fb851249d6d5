"""Pieces every analysis shares: the source of relations, date ranges in the project's time zone,
periods, filters and the few engine-specific SQL functions, all as SQLGlot expression trees.

User input (event names, property keys, filter values) only ever enters SQL as SQLGlot literals,
never by string concatenation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlglot import exp

from yunying.errors import M_, YunyingError
from yunying.store.base import QueryResult


class AnalyticsError(YunyingError):
    """An analysis could not be computed."""


class InvalidQuery(AnalyticsError):
    """The analysis query is malformed (unknown field, bad window, empty funnel...)."""


class UnsupportedEngine(AnalyticsError):
    """The events engine's SQL dialect is not one the analytics can render."""


class Source(Protocol):
    """Where analyses read from: any :class:`~yunying.store.base.EventStore` qualifies."""

    dialect: str

    def scoped(self, relation: str, project_id: int) -> exp.Query:
        """The SELECT exposing ``relation`` (``events``...) of one project."""
        ...

    def query(self, sql: str) -> QueryResult:
        """Run read-only SQL in :attr:`dialect`."""
        ...


Interval = Literal["hour", "day", "week", "month"]
INTERVALS: tuple[str, ...] = ("hour", "day", "week", "month")

#: First-class columns of ``events`` that filters and breakdowns may name directly.
COLUMNS = (
    "event", "distinct_id", "channel", "utm_source", "os", "app_version", "device_id", "ip",
    "amount",
)  # fmt: skip

DIALECTS = ("duckdb", "clickhouse")
EPOCH = date(1970, 1, 1)


# -- date ranges and periods ----------------------------------------------------------------------


@dataclass(frozen=True)
class DateRange:
    """Local calendar days ``date_from`` .. ``date_to`` (both included) in ``timezone``."""

    date_from: date
    date_to: date
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidQuery(
                M_("unknown time zone {timezone!r}", timezone=self.timezone)
            ) from None
        if self.date_to < self.date_from:
            raise InvalidQuery(
                M_("date_to {date_to} is before date_from {date_from}",
                   date_to=self.date_to, date_from=self.date_from)
            )  # fmt: skip

    @property
    def days(self) -> int:
        """Number of local days in the range."""
        return (self.date_to - self.date_from).days + 1

    def local_to_utc(self, day: date) -> datetime:
        """Naive UTC instant of local midnight starting ``day``."""
        local = datetime.combine(day, time(0), tzinfo=ZoneInfo(self.timezone))
        return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)

    def utc_bounds(self) -> tuple[datetime, datetime]:
        """``[start, end)`` of the range as naive UTC instants (what ``timestamp`` holds)."""
        return self.local_to_utc(self.date_from), self.local_to_utc(
            self.date_to + timedelta(days=1)
        )

    def previous(self) -> DateRange:
        """The range of the same length that ends the day before this one starts."""
        return DateRange(
            self.date_from - timedelta(days=self.days),
            self.date_from - timedelta(days=1),
            self.timezone,
        )

    def extended_back(self, days: int) -> DateRange:
        """This range with ``days`` more days before it."""
        return DateRange(self.date_from - timedelta(days=days), self.date_to, self.timezone)


@dataclass(frozen=True)
class Period:
    """One bucket of an interval: its label (local start) and engine-independent number."""

    label: str
    number: int


def period_number(day: date, interval: str, hour: int = 0) -> int:
    """The number SQL computes for a local day (and hour) in ``interval`` (see :func:`sql_period`)."""
    d = (day - EPOCH).days
    if interval == "hour":
        return d * 24 + hour
    if interval == "day":
        return d
    if interval == "week":
        return (d - 4) // 7  # 1970-01-05 was a Monday: weeks start on Monday
    if interval == "month":
        return day.year * 12 + day.month - 1
    raise InvalidQuery(M_("unknown interval {interval!r}; use one of {choices}",
                          interval=interval, choices=", ".join(INTERVALS)))  # fmt: skip


def periods(date_range: DateRange, interval: str) -> list[Period]:
    """Every bucket that overlaps the range, in order, labelled by its local start."""
    out: list[Period] = []
    seen: set[int] = set()
    day = date_range.date_from
    while day <= date_range.date_to:
        if interval == "hour":
            for h in range(24):
                out.append(Period(f"{day.isoformat()} {h:02d}:00", period_number(day, "hour", h)))
        else:
            n = period_number(day, interval)
            if n not in seen:
                seen.add(n)
                if interval == "week":
                    start = day - timedelta(days=day.weekday())
                elif interval == "month":
                    start = day.replace(day=1)
                else:
                    start = day
                out.append(Period(start.isoformat(), n))
        day += timedelta(days=1)
    return out


# -- fields and filters -----------------------------------------------------------------------------


FIELD_KINDS = ("column", "property", "person", "segment", "value")


@dataclass(frozen=True)
class Field:
    """A value of an event: a first-class column (``channel``), an event property (``plan``),
    a property of the event's person as it is now (``person``: see docs/analytics.md), or a
    derived fact of the person read from ``person_values``: membership of a segment
    (``segment``, name = segment id; text ``true``/``false``) or the label of any scope
    (``value``, name = scope such as ``stage``, ``rfm``, ``clv:churn_risk``, ``tag:NAME``)."""

    name: str
    kind: Literal["column", "property", "person", "segment", "value"] = "property"

    def __post_init__(self) -> None:
        if self.kind == "column" and self.name not in COLUMNS:
            raise InvalidQuery(M_("unknown column {name!r}; columns are {columns}",
                                  name=self.name, columns=", ".join(COLUMNS)))  # fmt: skip
        if self.kind not in FIELD_KINDS:
            raise InvalidQuery(
                M_(
                    "field kind must be one of {kinds}, not {kind!r}",
                    kinds=", ".join(FIELD_KINDS),
                    kind=self.kind,
                )
            )
        if not self.name:
            raise InvalidQuery(M_("a property name must not be empty"))
        if self.kind == "segment" and not (self.name.isascii() and self.name.isdigit()):
            raise InvalidQuery(
                M_("a segment field's name is the segment id, not {name!r}", name=self.name)
            )

    @property
    def scope(self) -> str | None:
        """The ``person_values`` scope a segment or value field reads."""
        if self.kind == "segment":
            return f"segment:{int(self.name)}"
        if self.kind == "value":
            return self.name
        return None


def col(name: str) -> Field:
    """A first-class column of ``events``."""
    return Field(name, "column")


def prop(name: str) -> Field:
    """A top-level key of the event's ``properties``."""
    return Field(name, "property")


def person_prop(name: str) -> Field:
    """A top-level key of the current ``properties`` of the event's person."""
    return Field(name, "person")


def segment_field(segment_id: int) -> Field:
    """Membership of a segment (text ``true``/``false``) for filters and breakdowns."""
    return Field(str(segment_id), "segment")


@dataclass(frozen=True)
class Joins:
    """What the events relation must carry for a query: the person's properties, and the
    ``person_values`` scopes its segment/value fields read. True when anything is needed."""

    person: bool = False
    scopes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.person or bool(self.scopes)


def uses_person(obj: Any) -> Joins:
    """Whether a query (or any part of it) names a person property or a person value (segment
    membership...): the :class:`Joins` to pass to :func:`events_from` as ``person``."""
    person = False
    scopes: dict[str, None] = {}

    def visit(o: Any) -> None:
        nonlocal person
        if isinstance(o, Field):
            person = person or o.kind == "person"
            if o.scope is not None:
                scopes[o.scope] = None
        elif is_dataclass(o) and not isinstance(o, type):
            for f in fields(o):
                visit(getattr(o, f.name))
        elif isinstance(o, list | tuple):
            for x in o:
                visit(x)

    visit(obj)
    return Joins(person, tuple(scopes))


def value_column(scope: str, part: Literal["label", "value", "member"]) -> str:
    """Name of the column :func:`events_from` adds for a ``person_values`` scope (a hash, so
    any scope text makes a plain identifier)."""
    return f"pv_{hashlib.sha1(scope.encode()).hexdigest()[:12]}_{part}"


FilterOp = Literal[
    "eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "is_set", "is_not_set"
]
FILTER_OPS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "is_set",
              "is_not_set")  # fmt: skip


@dataclass(frozen=True)
class Filter:
    """A condition on one field: text comparisons for eq/neq/in/not_in/contains, numeric for
    gt/gte/lt/lte, presence for is_set/is_not_set."""

    field: Field
    op: FilterOp = "eq"
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise InvalidQuery(M_("unknown filter operator {op!r}; use {ops}",
                                  op=self.op, ops=", ".join(FILTER_OPS)))  # fmt: skip
        if self.op in ("in", "not_in"):
            if not isinstance(self.value, list | tuple) or not self.value:
                raise InvalidQuery(M_("filter {op} needs a non-empty list of values", op=self.op))
        elif self.op in ("gt", "gte", "lt", "lte"):
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise InvalidQuery(
                    M_("filter {op} needs a number, got {value!r}", op=self.op, value=self.value)
                )
        elif self.op not in ("is_set", "is_not_set") and self.value is None:
            raise InvalidQuery(
                M_("filter {op} on {name!r} needs a value", op=self.op, name=self.field.name)
            )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- engine-specific SQL ----------------------------------------------------------------------------


def fn(name: str, *args: exp.Expr) -> exp.Expr:
    """A function call rendered verbatim (for engine functions SQLGlot does not model)."""
    return exp.Anonymous(this=name, expressions=list(args))


def lit(value: Any) -> exp.Expr:
    """A SQL literal of a Python value (strings are escaped by SQLGlot)."""
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


class Sql:
    """Builders for the few expressions whose spelling differs between engines."""

    def __init__(self, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise UnsupportedEngine(
                f"analytics cannot run on the {dialect!r} engine; supported: {', '.join(DIALECTS)}"
            )
        self.dialect = dialect
        self.ch = dialect == "clickhouse"

    def render(self, tree: exp.Expr) -> str:
        """SQL text of ``tree`` in this dialect."""
        return tree.sql(dialect=self.dialect)

    def ts_literal(self, value: datetime) -> exp.Expr:
        """A naive-UTC instant comparable with ``events.timestamp``."""
        text = exp.Literal.string(value.strftime("%Y-%m-%d %H:%M:%S.%f"))
        if self.ch:
            return fn("toDateTime64", text, exp.Literal.number(6), exp.Literal.string("UTC"))
        return exp.cast(text, "TIMESTAMP")

    def epoch_us(self, ts: exp.Expr) -> exp.Expr:
        """Microseconds since the Unix epoch of a naive-UTC timestamp."""
        if self.ch:
            return fn("toUnixTimestamp64Micro", fn("toDateTime64", ts, lit(6), lit("UTC")))
        return fn("epoch_us", ts)

    def position(self, names: list[str], value: exp.Expr) -> exp.Expr:
        """Where ``value`` is in ``names``, from 1; where it is not, 0 on ClickHouse and NULL
        on DuckDB (one lookup instead of a ``CASE`` of comparisons)."""
        return exp.Anonymous(
            this="indexOf" if self.ch else "list_position",
            expressions=[exp.Array(expressions=[lit(v) for v in names]), value.copy()],
        )

    def local(self, ts: exp.Expr, tz: str) -> exp.Expr:
        """The wall-clock time in ``tz`` of a naive-UTC timestamp."""
        if self.ch:
            return fn("toTimeZone", fn("toDateTime64", ts, lit(6), lit("UTC")), lit(tz))
        return fn("timezone", lit(tz), fn("timezone", lit("UTC"), ts))

    def day_number(self, ts: exp.Expr, tz: str) -> exp.Expr:
        """Days since 1970-01-01 of the local date of ``ts``."""
        local = self.local(ts, tz)
        if self.ch:
            return fn("toInt64", fn("toRelativeDayNum", fn("toDate", local)))
        return fn(
            "date_diff", lit("day"), exp.cast(lit("1970-01-01"), "DATE"), exp.cast(local, "DATE")
        )

    def period(self, ts: exp.Expr, interval: str, tz: str) -> exp.Expr:
        """The period number of ``ts`` (matching :func:`period_number` of its local time)."""
        if interval == "day":
            return self.day_number(ts, tz)
        if interval == "week":
            days = exp.Paren(this=exp.Sub(this=self.day_number(ts, tz), expression=lit(4)))
            return self.int_div(days, 7)
        local = self.local(ts, tz)
        if interval == "hour":
            hour = fn("toHour", local) if self.ch else fn("hour", local)
            return exp.Add(
                this=exp.Mul(this=self.day_number(ts, tz), expression=lit(24)), expression=hour
            )
        if interval == "month":
            year = fn("toYear", local) if self.ch else fn("year", local)
            month = fn("toMonth", local) if self.ch else fn("month", local)
            return exp.Sub(
                this=exp.Add(this=exp.Mul(this=year, expression=lit(12)), expression=month),
                expression=lit(1),
            )
        raise InvalidQuery(M_("unknown interval {interval!r}; use one of {choices}",
                              interval=interval, choices=", ".join(INTERVALS)))  # fmt: skip

    def int_div(self, a: exp.Expr, b: int) -> exp.Expr:
        """Floor division of an integer expression by a positive constant."""
        if self.ch:
            return fn("toInt64", fn("floor", exp.Div(this=a, expression=lit(b))))
        return exp.cast(fn("floor", exp.Div(this=a, expression=lit(b))), "BIGINT")

    def text(self, e: exp.Expr) -> exp.Expr:
        """``e`` as text (uuids compare the same on every engine this way)."""
        if self.ch:
            return fn("toString", e)
        return exp.cast(e, "VARCHAR")

    def prop_text(self, key: str, column: str = "properties") -> exp.Expr:
        """Text of a top-level property: strings as-is, numbers/booleans as JSON text, else NULL."""
        props = exp.column(column)
        k = lit(key)
        if self.ch:
            kind = fn("JSONType", props, k)
            return exp.Case(
                ifs=[
                    exp.If(this=kind.eq(lit("String")), true=fn("JSONExtractString", props, k)),
                    exp.If(
                        this=exp.In(
                            this=kind.copy(), expressions=[lit("Null"), lit("Array"), lit("Object")]
                        ),
                        true=exp.cast(exp.null(), "TEXT"),
                    ),
                ],
                default=fn("JSONExtractRaw", props, k),
            )
        path = lit("$." + _json_path_key(key))
        kind = fn("json_type", props, path)
        return exp.Case(
            ifs=[
                exp.If(
                    this=exp.In(this=kind, expressions=[lit("ARRAY"), lit("OBJECT"), lit("NULL")]),
                    true=exp.cast(exp.null(), "VARCHAR"),
                )
            ],
            default=fn("json_extract_string", props, path),
        )

    def prop_number(self, key: str, column: str = "properties") -> exp.Expr:
        """A property as a double when it is a JSON number, else NULL."""
        props = exp.column(column)
        k = lit(key)
        if self.ch:
            kind = fn("JSONType", props, k)
            return exp.Case(
                ifs=[
                    exp.If(
                        this=exp.In(
                            this=kind, expressions=[lit("Int64"), lit("UInt64"), lit("Double")]
                        ),
                        true=fn("JSONExtractFloat", props, k),
                    )
                ],
                default=exp.cast(exp.null(), "DOUBLE"),
            )
        path = lit("$." + _json_path_key(key))
        kind = fn("json_type", props, path)
        return exp.Case(
            ifs=[
                exp.If(
                    this=exp.In(
                        this=kind, expressions=[lit("BIGINT"), lit("UBIGINT"), lit("DOUBLE")]
                    ),
                    true=exp.cast(fn("json_extract", props, path), "DOUBLE"),
                )
            ],
            default=exp.cast(exp.null(), "DOUBLE"),
        )

    def field_text(self, field: Field) -> exp.Expr:
        """A field as text (breakdowns, text filters)."""
        if field.scope is not None:
            return self.value_text(field, field.scope)
        if field.kind == "column":
            c = exp.column(field.name)
            return self.number_text(c) if field.name == "amount" else c
        if field.kind == "person":
            return self.prop_text(field.name, PERSON_PROPERTIES)
        return self.prop_text(field.name)

    def number_text(self, e: exp.Expr) -> exp.Expr:
        """A double rendered the same way on every engine (``12.5``, ``3``)."""
        if self.ch:
            return fn("toString", e)
        whole = exp.cast(exp.cast(e, "BIGINT"), "VARCHAR")
        return exp.Case(
            ifs=[exp.If(this=e.eq(fn("floor", e.copy())), true=whole)],
            default=exp.cast(e.copy(), "VARCHAR"),
        )

    def value_text(self, field: Field, scope: str) -> exp.Expr:
        """A person value as text: ``true``/``false`` for segment membership, else the label
        (or the number when a scope has no label)."""
        if field.kind == "segment":
            member = exp.func("coalesce", exp.column(value_column(scope, "member")), lit(0))
            return exp.Case(ifs=[exp.If(this=member.eq(lit(1)), true=lit("true"))],
                            default=lit("false"))  # fmt: skip
        return exp.func(
            "coalesce",
            exp.column(value_column(scope, "label")),
            self.number_text(exp.column(value_column(scope, "value"))),
        )

    def field_number(self, field: Field) -> exp.Expr:
        """A field as a double (aggregations, numeric filters)."""
        if field.kind == "value" and field.scope is not None:
            return exp.column(value_column(field.scope, "value"))
        if field.kind == "segment":
            raise InvalidQuery(M_("a segment field is not numeric: compare it with eq true/false"))
        if field.kind == "column":
            if field.name != "amount":
                raise InvalidQuery(
                    M_("column {name!r} is not numeric; only amount is", name=field.name)
                )
            return exp.column("amount")
        if field.kind == "person":
            return self.prop_number(field.name, PERSON_PROPERTIES)
        return self.prop_number(field.name)

    def quantile(self, e: exp.Expr, q: float) -> exp.Expr:
        """Exact quantile with linear interpolation (numpy's default) of ``e``."""
        if self.ch:
            return exp.ParameterizedAgg(
                this="quantileExactInclusive", expressions=[lit(q)], params=[e]
            )
        return fn("quantile_cont", e, lit(q))

    def filter(self, f: Filter) -> exp.Expr:
        """The condition of one filter."""
        op = f.op
        if op in ("gt", "gte", "lt", "lte"):
            left = self.field_number(f.field)
            right = lit(float(f.value))
            cls = {"gt": exp.GT, "gte": exp.GTE, "lt": exp.LT, "lte": exp.LTE}[op]
            return exp.Paren(this=cls(this=left, expression=right))
        text = self.field_text(f.field)
        if op == "is_set":
            return exp.Paren(this=exp.Not(this=exp.Is(this=text, expression=exp.null())))
        if op == "is_not_set":
            return exp.Paren(this=exp.Is(this=text, expression=exp.null()))
        if op == "eq":
            return exp.Paren(this=exp.EQ(this=text, expression=lit(_text(f.value))))
        if op == "neq":
            # a missing value is "not equal" too
            cond = exp.NEQ(this=text, expression=lit(_text(f.value)))
            return exp.Paren(this=exp.or_(cond, exp.Is(this=text.copy(), expression=exp.null())))
        if op in ("in", "not_in"):
            inn = exp.In(this=text, expressions=[lit(_text(v)) for v in f.value])
            if op == "in":
                return exp.Paren(this=inn)
            return exp.Paren(
                this=exp.or_(exp.Not(this=inn), exp.Is(this=text.copy(), expression=exp.null()))
            )
        # contains: case-sensitive substring
        found: exp.Expr
        if self.ch:
            found = exp.GT(this=fn("position", text, lit(_text(f.value))), expression=lit(0))
        else:
            found = fn("contains", text, lit(_text(f.value)))
        return exp.Paren(
            this=exp.and_(exp.Not(this=exp.Is(this=text.copy(), expression=exp.null())), found)
        )

    def filters(self, filters: tuple[Filter, ...] | list[Filter]) -> exp.Expr:
        """All filters ANDed (TRUE when there are none)."""
        if not filters:
            return exp.true()
        return exp.and_(*[self.filter(f) for f in filters])

    def event_is(self, event: str | None) -> exp.Expr:
        """``event = name`` (TRUE for "any event")."""
        if event is None:
            return exp.true()
        return exp.column("event").eq(lit(event))

    def time_between(self, start: datetime, end: datetime) -> exp.Expr:
        """``start <= timestamp < end``."""
        ts = exp.column("timestamp")
        return exp.and_(
            exp.GTE(this=ts, expression=self.ts_literal(start)),
            exp.LT(this=ts.copy(), expression=self.ts_literal(end)),
        )


def _json_path_key(key: str) -> str:
    """A JSONPath member for DuckDB: quoted so any key (dots, spaces, quotes) is one member."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: The column holding the person's current properties when an analysis joins ``persons``.
PERSON_PROPERTIES = "person_properties"


def events_from(
    source: Source, project_id: int, alias: str = "events", person: bool | Joins = False
) -> exp.Expr:
    """The project's ``events`` relation as a FROM item; with ``person``, each event also
    carries ``person_properties``: the current properties of its (merged) person; with
    :class:`Joins` naming scopes, the person's values of each (see :func:`value_column`)."""
    joins = person if isinstance(person, Joins) else Joins(person=bool(person))
    if not joins:
        return source.scoped("events", project_id).subquery(alias)
    columns: list[exp.Expr] = [exp.Column(this=exp.Star(), table=exp.to_identifier("ev0"))]
    if joins.person:
        columns.append(exp.column("properties", "pp").as_(PERSON_PROPERTIES))
    for n, scope in enumerate(joins.scopes):
        parts: tuple[tuple[Literal["label", "value", "member"], str], ...] = (
            ("label", "l"), ("value", "v"), ("member", "m"))  # fmt: skip
        for part, column in parts:
            columns.append(exp.column(column, f"pv{n}").as_(value_column(scope, part)))
    joined = exp.select(*columns).from_(source.scoped("events", project_id).subquery("ev0"))
    if joins.person:
        joined = joined.join(
            source.scoped("persons", project_id).subquery("pp"),
            on=exp.column("person_id", "ev0").eq(exp.column("id", "pp")),
            join_type="left",
        )
    for n, scope in enumerate(joins.scopes):
        values = (
            exp.select(
                exp.column("person_id").as_("k"),
                exp.Max(this=exp.column("label")).as_("l"),
                exp.Max(this=exp.column("value")).as_("v"),
                lit(1).as_("m"),
            )
            .from_(source.scoped("person_values", project_id).subquery("pvs"))
            .where(exp.column("scope").eq(lit(scope)))
            .group_by(exp.column("person_id"))
        )
        joined = joined.join(
            values.subquery(f"pv{n}"),
            on=exp.column("person_id", "ev0").eq(exp.column("k", f"pv{n}")),
            join_type="left",
        )
    return joined.subquery(alias)


def run(source: Source, tree: exp.Expr, copy: bool = True) -> list[list[Any]]:
    """Render ``tree`` for the source's engine, run it, return the rows. ``copy=False`` renders
    the tree itself (it may be changed): for a large tree built for this one query, whose copy
    costs milliseconds."""
    sql = Sql(source.dialect)  # refuses an engine analytics cannot run on
    return source.query(tree.sql(dialect=sql.dialect, copy=copy)).rows


def as_int(value: Any) -> int:
    """An engine's integer (some engines quote 64-bit integers as text)."""
    return 0 if value is None else int(value)


def as_float(value: Any) -> float | None:
    """An engine's number as float; NULL/NaN become None."""
    if value is None:
        return None
    f = float(value)
    return None if f != f else f
