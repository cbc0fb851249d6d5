"""Persona (用户画像) of a group of persons next to the whole population, with the lift.

The group is everyone, a segment's members (``person_values`` scope ``segment:<id>``), the
persons in a lifecycle stage, or an RFM class (both computed as of the last day of the window,
so no stored values are needed). The population is every person of the project.

Reported for both (see docs/audience-reports.md for exact definitions):

- distributions of chosen person properties and of first-touch channel, OS, device type and city
  (channel: of the person's earliest event with one; OS: the ``os`` column, device: property
  ``$device_type``, city: property ``$city``, each of the latest event with one), each value with
  its share in the group and in the population and ``lift = group share / population share``;
- top events in the window by group events: events per person (rate) in group and population,
  the share of persons who did it (reach) and ``lift = group rate / population rate``;
- active days in the window (distinct local days with an activity event) per person;
- revenue in the window (revenue settings' purchases): paying rate, ARPU, ARPPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlglot import exp

from yunying.analytics.common import (
    DateRange,
    InvalidQuery,
    Source,
    Sql,
    as_float,
    as_int,
    fn,
    lit,
    run,
)
from yunying.analytics.local_periods import LocalPeriods
from yunying.audience.rfm import CLASS_CODES, CLASSES, amount_of, purchase_condition, rfm_sql
from yunying.audience.settings import AudienceSettings
from yunying.audience.stages import (
    STAGES,
    activity_condition,
    day_number,
    person_key,
    stage_rows_sql,
)

GroupKind = Literal["everyone", "segment", "stage", "rfm"]
GROUP_KINDS = ("everyone", "segment", "stage", "rfm")
#: Event-derived dimensions: (name, what, source, pick): source is a column or ``$`` property.
DIMENSIONS = (
    ("channel", "first-touch channel", "channel", "first"),
    ("os", "OS", "os", "last"),
    ("device", "device type", "$device_type", "last"),
    ("city", "city", "$city", "last"),
)
#: Active-day buckets: (label, lowest, highest or None).
ACTIVE_BUCKETS = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2-3", 2, 3),
    ("4-7", 4, 7),
    ("8-14", 8, 14),
    ("15+", 15, None),
)


@dataclass(frozen=True)
class PersonaQuery:
    """Which persons, over which local days, and which person properties to break down."""

    group: GroupKind
    date_range: DateRange
    value: str | None = None
    properties: tuple[str, ...] = ()
    top_events: int = 10
    values_limit: int = 20
    dimensions: tuple[str, ...] = field(default=tuple(d[0] for d in DIMENSIONS))

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", tuple(self.properties))
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        if self.group not in GROUP_KINDS:
            raise InvalidQuery(f"group must be one of {', '.join(GROUP_KINDS)}, not {self.group!r}")
        if self.group == "everyone":
            if self.value is not None:
                raise InvalidQuery("group 'everyone' takes no value")
        elif not self.value:
            raise InvalidQuery(f"group {self.group!r} needs a value")
        if self.group == "stage" and self.value not in STAGES:
            raise InvalidQuery(f"unknown stage {self.value!r}; use one of {', '.join(STAGES)}")
        if self.group == "rfm" and self.value not in CLASS_CODES:
            raise InvalidQuery(
                f"unknown RFM class {self.value!r}; use one of {', '.join(CLASS_CODES)}"
            )
        known = {d[0] for d in DIMENSIONS}
        for d in self.dimensions:
            if d not in known:
                raise InvalidQuery(f"unknown dimension {d!r}; use {', '.join(sorted(known))}")
        for p in self.properties:
            if not p:
                raise InvalidQuery("a person property name must not be empty")
        if not 0 <= self.top_events <= 100:
            raise InvalidQuery("top_events must be between 0 and 100")
        if not 1 <= self.values_limit <= 1000:
            raise InvalidQuery("values_limit must be between 1 and 1000")


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def members_sql(
    source: Source, project_id: int, q: PersonaQuery, settings: AudienceSettings
) -> exp.Select | None:
    """Person ids (column ``person_id``, as :func:`~yunying.audience.stages.person_key`) of the
    group; None for everyone."""
    sql = Sql(source.dialect)
    tz = q.date_range.timezone
    if q.group == "everyone":
        return None
    if q.group == "segment":
        return (
            exp.select(
                exp.alias_(person_key(sql, _c("person_id")), "person_id", copy=False), copy=False
            )
            .from_(source.scoped("person_values", project_id).subquery("v", copy=False), copy=False)
            .where(_c("scope").eq(lit(f"segment:{q.value}")), copy=False)
        )
    if q.group == "stage":
        rows = stage_rows_sql(source, project_id, settings, [day_number(q.date_range.date_to)], tz)
        return (
            exp.select(_c("person_id"), copy=False)
            .from_(rows.subquery("s", copy=False), copy=False)
            .where(_c("stage").eq(lit(str(q.value))), copy=False)
        )
    highs = next(k for k, v in CLASSES.items() if v[0] == q.value)
    scored = rfm_sql(source, project_id, settings, q.date_range.date_to, tz)
    return (
        exp.select(_c("person_id"), copy=False)
        .from_(scored.subquery("r", copy=False), copy=False)
        .where(
            exp.and_(
                *[_c(f"{s}_high").eq(lit(int(h))) for s, h in zip("rfm", highs, strict=True)],
                copy=False,
            ),
            copy=False,
        )
    )


def _in_group(sql: Sql, members: exp.Select | None, person: exp.Expr) -> exp.Expr:
    """1 when the person is in the group, else 0."""
    if members is None:
        return lit(1)
    return exp.Case(
        ifs=[exp.If(this=person_key(sql, person).isin(query=members.copy()), true=lit(1))],
        default=lit(0),
    )


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or not b else a / b


def _pick(sql: Sql, value: exp.Expr, first: bool) -> exp.Expr:
    """The value on the person's earliest (``first``) or latest event that has one, ties
    broken by uuid (in its text order: DuckDB's UUID type sorts that way as it is)."""
    key = exp.Tuple(expressions=[_c("timestamp"), sql.text(_c("uuid")) if sql.ch else _c("uuid")])
    has = exp.Not(this=exp.Is(this=value.copy(), expression=exp.null()))
    if sql.ch:
        return fn("argMinIf" if first else "argMaxIf", value, key, has)
    agg = fn("arg_min" if first else "arg_max", value, key)
    return exp.Filter(this=agg, expression=exp.Where(this=has))


def _when(cond: exp.Expr, value: exp.Expr, default: exp.Expr | None = None) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=cond, true=value)], default=default)


def _pid(sql: Sql, person: exp.Expr) -> exp.Expr:
    """A person id as the key persons are matched on: the UUID itself on DuckDB, its text on
    ClickHouse (see :func:`~yunying.audience.stages.person_key`)."""
    return person_key(sql, person)


#: Most window days whose active days are counted with a bit mask per person (one BIGINT).
MASK_DAYS = 62


def _active_days(sql: Sql, day: exp.Expr, first_day: int, n_days: int) -> exp.Expr:
    """Distinct non-NULL ``day`` values of a group (days ``first_day`` .. of the window): a bit
    per day OR-ed together and counted, which needs no DISTINCT (a second pass over the
    events); COUNT(DISTINCT) for windows longer than :data:`MASK_DAYS`."""
    if n_days > MASK_DAYS:
        return exp.Count(this=exp.Distinct(expressions=[day]))
    offset = exp.Sub(this=day, expression=lit(first_day))
    if sql.ch:
        has = exp.Not(this=exp.Is(this=day.copy(), expression=exp.null()))
        shift = fn("toUInt8", fn("ifNull", offset, lit(0)))
        bit = fn("bitShiftLeft", fn("toUInt64", lit(1)), shift)
        mask = fn("groupBitOr", fn("if", has, bit, fn("toUInt64", lit(0))))
        return fn("bitCount", mask)
    bit = exp.BitwiseLeftShift(this=exp.cast(lit(1), "BIGINT", copy=False), expression=offset)
    mask = fn(
        "bit_or",
        _when(
            exp.Not(this=exp.Is(this=day.copy(), expression=exp.null())),
            bit,
            exp.cast(lit(0), "BIGINT", copy=False),
        ),
    )
    return fn("bit_count", mask)


def _json_path_key(key: str) -> str:
    """A JSONPath member for DuckDB (as :meth:`Sql.prop_text` quotes it)."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json_texts(sql: Sql, keys: list[str]) -> tuple[list[exp.Expr], list[exp.Expr]]:
    """(columns to add to each event, the text of each property ``key`` over them): on DuckDB
    all the keys come from one parse of ``properties`` (a list of JSON values, each then typed
    and unquoted like :meth:`Sql.prop_text`), on ClickHouse each is ``prop_text``."""
    if not keys or sql.ch:
        return [], [sql.prop_text(k) for k in keys]
    paths = exp.Array(expressions=[lit("$." + _json_path_key(k)) for k in keys])
    extra = [exp.alias_(fn("json_extract", _c("properties"), paths), "pj", copy=False)]
    texts: list[exp.Expr] = []
    for i in range(len(keys)):
        value = fn("list_extract", _c("pj"), lit(i + 1))
        kind = fn("json_type", value)
        texts.append(
            _when(
                exp.In(this=kind, expressions=[lit("ARRAY"), lit("OBJECT"), lit("NULL")]),
                exp.cast(exp.null(), "VARCHAR", copy=False),
                fn("json_extract_string", value.copy(), lit("$")),
            )
        )
    return extra, texts


def facts_sql(
    source: Source,
    project_id: int,
    q: PersonaQuery,
    settings: AudienceSettings,
    groups: list[PersonaQuery] | None = None,
) -> exp.Select:
    """Persons counted by their combination of facts: (g0.., p0.., d_<dimension>.., bucket,
    payer, n, days, revenue). ``g<i>`` is 1 in the i-th of ``groups`` (default: ``q``'s own
    group), which share ``q``'s window and fields; one scan of persons and one of events for
    all of them, each group's member query appearing once. Each event's values are computed
    once (one parse of its properties on DuckDB, its local day by arithmetic) before the
    per-person aggregation, and active days are counted without a DISTINCT."""
    sql = Sql(source.dialect)
    tz = q.date_range.timezone
    start, end = q.date_range.utc_bounds()
    days = LocalPeriods(sql, tz, start, end)
    in_window = sql.time_between(start, end)
    dims = [d for d in DIMENSIONS if d[0] in q.dimensions]
    props = [f"p{i}" for i in range(len(q.properties))]
    text_null = exp.cast(exp.null(), "TEXT", copy=False)
    json_keys = [src for _name, _label, src, _pick in dims if src.startswith("$")]
    json_extra, json_values = _json_texts(sql, json_keys)
    values = iter(json_values)
    dim_values = {
        name: (next(values) if src.startswith("$") else _c(src)) for name, _l, src, _p in dims
    }
    # each event's values, computed once
    inner = exp.select(
        "*", *json_extra, exp.alias_(in_window, "inw", copy=False), copy=False
    ).from_(source.scoped("events", project_id).subquery("e", copy=False), copy=False)
    bought = exp.and_(
        _c("inw"),
        purchase_condition(sql, settings.revenue.events, settings.revenue.amount_property),
        copy=False,
    )
    per_event = exp.select(
        exp.alias_(_pid(sql, _c("person_id")), "pid", copy=False),
        _c("timestamp"),
        _c("uuid"),
        *[exp.alias_(v, f"v_{name}", copy=False) for name, v in dim_values.items()],
        exp.alias_(
            _when(exp.and_(_c("inw"), activity_condition(settings.activity), copy=False),
                  days.day(_c("timestamp"))),
            "aday",
        copy=False),
        exp.alias_(_when(bought, amount_of(sql, settings.revenue.amount_property), lit(0.0)),
                   "amt", copy=False),
        exp.alias_(_when(bought.copy(), lit(1), lit(0)), "buy", copy=False),
    copy=False).from_(inner.subquery("i", copy=False), copy=False)  # fmt: skip
    from_persons = exp.select(
        exp.alias_(_pid(sql, _c("id")), "pid", copy=False),
        *[
            exp.alias_(sql.prop_text(k), a, copy=False)
            for k, a in zip(q.properties, props, strict=True)
        ],
        *[exp.alias_(text_null.copy(), f"d_{name}", copy=False) for name, *_ in dims],
        exp.alias_(lit(0), "adays", copy=False),
        exp.alias_(lit(0.0), "spent", copy=False),
        exp.alias_(lit(0), "buys", copy=False),
        exp.alias_(lit(1), "is_person", copy=False),
        copy=False,
    ).from_(source.scoped("persons", project_id).subquery("p", copy=False), copy=False)
    first_day = day_number(q.date_range.date_from)
    from_events = (
        exp.select(
            _c("pid"),
            *[exp.alias_(text_null.copy(), a, copy=False) for a in props],
            *[
                exp.alias_(_pick(sql, _c(f"v_{name}"), pick == "first"), f"d_{name}", copy=False)
                for name, _label, _src, pick in dims
            ],
            exp.alias_(_active_days(sql, _c("aday"), first_day, q.date_range.days), "adays", copy=False),
            exp.alias_(exp.Sum(this=_c("amt")), "spent", copy=False),
            exp.alias_(exp.Sum(this=_c("buy")), "buys", copy=False),
            exp.alias_(lit(0), "is_person", copy=False),
        copy=False)
        .from_(per_event.subquery("e", copy=False), copy=False)
        .group_by(_c("pid"), copy=False)
    )  # fmt: skip
    both = exp.union(from_persons, from_events, distinct=False, copy=False)
    columns = [*props, *[f"d_{name}" for name, *_ in dims], "adays", "spent", "buys"]
    per_person = (
        exp.select(
            _c("pid"),
            *[exp.alias_(exp.Max(this=_c(c)), f"m_{c}", copy=False) for c in columns],
            copy=False,
        )
        .from_(both.subquery("u", copy=False), copy=False)
        .group_by(_c("pid"), copy=False)
        .having(exp.Max(this=_c("is_person")).eq(1), copy=False)
    )
    flags = [
        exp.alias_(
            _in_group(sql, members_sql(source, project_id, g, settings), _c("pid")),
            f"g{i}",
            copy=False,
        )
        for i, g in enumerate(groups or [q])
    ]
    bucket = exp.Case(
        ifs=[
            exp.If(
                this=exp.and_(
                    exp.GTE(this=_c("m_adays"), expression=lit(lo)),
                    exp.true() if hi is None else exp.LTE(this=_c("m_adays"), expression=lit(hi)),
                    copy=False,
                ),
                true=lit(label),
            )
            for label, lo, hi in ACTIVE_BUCKETS
        ]
    )
    keys = [f"m_{c}" for c in [*props, *[f"d_{name}" for name, *_ in dims]]]
    tagged = exp.select(
        "*",
        *flags,
        exp.alias_(bucket, "bucket", copy=False),
        exp.alias_(
            _when(exp.GT(this=_c("m_buys"), expression=lit(0)), lit(1), lit(0)), "payer", copy=False
        ),
        copy=False,
    ).from_(per_person.subquery("pp", copy=False), copy=False)
    gs = [str(f.alias) for f in flags]
    return (
        exp.select(
            *gs, *keys, "bucket", "payer",
            exp.alias_(exp.Count(this=exp.Star()), "n", copy=False),
            exp.alias_(exp.Sum(this=_c("m_adays")), "days", copy=False),
            exp.alias_(exp.Sum(this=_c("m_spent")), "revenue", copy=False),
        copy=False)
        .from_(tagged.subquery("t", copy=False), copy=False)
        .group_by(*gs, *keys, "bucket", "payer", copy=False)
    )  # fmt: skip


def persona(
    source: Source, project_id: int, q: PersonaQuery, settings: AudienceSettings
) -> dict[str, Any]:
    """The persona report of ``q`` (JSON-ready)."""
    return personas(source, project_id, [q], settings)[0]


def personas(
    source: Source, project_id: int, qs: list[PersonaQuery], settings: AudienceSettings
) -> list[dict[str, Any]]:
    """The persona reports of several groups over the same window and fields (the groups and
    their values differ): one facts query and one top-events query for all of them, instead of
    reading every event once per group (a batch of segments computed together)."""
    if not qs:
        return []
    q = qs[0]
    shared = ("date_range", "properties", "top_events", "values_limit", "dimensions")
    for other in qs[1:]:
        if any(getattr(other, f) != getattr(q, f) for f in shared):
            raise InvalidQuery("personas computed together must share window and fields")
    k = len(qs)
    rows = run(source, facts_sql(source, project_id, q, settings, qs))
    counted = _event_counts(source, project_id, qs, settings)
    return [_report(qs[i], [[row[i], *row[k:]] for row in rows], counted, i) for i in range(k)]


def _report(
    q: PersonaQuery,
    rows: list[list[Any]],
    events: list[tuple[str, int, int, list[int], list[int]]],
    index: int,
) -> dict[str, Any]:
    """The report of group ``q`` from its facts rows (g, values.., bucket, payer, n, days,
    revenue) and the event counts of all the groups (``q`` is the ``index``-th)."""
    dims = [d for d in DIMENSIONS if d[0] in q.dimensions]
    fields = [(f"person.{k}", f"person property {k}") for k in q.properties]
    fields += [(name, label) for name, label, *_ in dims]
    counts: list[dict[tuple[str | None, int], int]] = [{} for _ in fields]
    size = {0: 0, 1: 0}
    buckets = {(label, g): 0 for label, _lo, _hi in ACTIVE_BUCKETS for g in (0, 1)}
    days = {0: 0, 1: 0}
    payers = {0: 0, 1: 0}
    revenue = {0: 0.0, 1: 0.0}
    for row in rows:
        g = as_int(row[0])
        values = row[1 : 1 + len(fields)]
        bucket, payer, n, d, rev = row[1 + len(fields) :]
        n = as_int(n)
        size[g] += n
        for i, v in enumerate(values):
            key = (None if v is None else str(v), g)
            counts[i][key] = counts[i].get(key, 0) + n
        buckets[(str(bucket), g)] += n
        days[g] += as_int(d)
        if as_int(payer):
            payers[g] += n
        revenue[g] += as_float(rev) or 0.0
    pop_n, grp_n = size[0] + size[1], size[1]

    def distribution(i: int) -> dict[str, Any]:
        name, label = fields[i]
        per: dict[str | None, list[int]] = {}
        for (v, g), n in counts[i].items():
            per.setdefault(v, [0, 0])[g] += n
        counted = sorted(
            ((v, pop[0] + pop[1], pop[1]) for v, pop in per.items() if v is not None),
            key=lambda t: (-t[2], -t[1], t[0]),
        )
        listed: list[tuple[str | None, int, int]] = list(counted[: q.values_limit])
        if None in per:
            listed.append((None, per[None][0] + per[None][1], per[None][1]))
        values = []
        for v, n, ng in listed:
            gs, ps = _ratio(ng, grp_n), _ratio(n, pop_n)
            values.append(
                {
                    "value": v,
                    "group": ng,
                    "group_share": gs,
                    "population": n,
                    "population_share": ps,
                    "lift": _ratio(gs, ps),
                }
            )
        more = len(counted) > q.values_limit
        return {"field": name, "label": label, "values": values, "more": more}

    distributions = [distribution(f) for f in range(len(fields))]
    top = _top_events(q, events, index, grp_n, pop_n)

    def active(n: int, g: tuple[int, ...], total_days: int) -> dict[str, Any]:
        return {
            "average": _ratio(total_days, n),
            "buckets": [
                {
                    "bucket": label,
                    "persons": sum(buckets[(label, x)] for x in g),
                    "share": _ratio(sum(buckets[(label, x)] for x in g), n),
                }
                for label, _lo, _hi in ACTIVE_BUCKETS
            ],
        }

    def money(n: int, paying: int, rev: float) -> dict[str, Any]:
        return {
            "persons": n,
            "payers": paying,
            "revenue": rev,
            "paying_rate": _ratio(paying, n),
            "arpu": _ratio(rev, n),
            "arppu": _ratio(rev, paying),
        }

    return {
        "group": {"kind": q.group, "value": q.value, "persons": grp_n},
        "population": {"persons": pop_n},
        "date_from": q.date_range.date_from.isoformat(),
        "date_to": q.date_range.date_to.isoformat(),
        "distributions": distributions,
        "top_events": top,
        "active_days": {
            "group": active(grp_n, (1,), days[1]),
            "population": active(pop_n, (0, 1), days[0] + days[1]),
        },
        "revenue": {
            "group": money(grp_n, payers[1], revenue[1]),
            "population": money(pop_n, payers[0] + payers[1], revenue[0] + revenue[1]),
        },
    }


def _event_counts(
    source: Source, project_id: int, qs: list[PersonaQuery], settings: AudienceSettings
) -> list[tuple[str, int, int, list[int], list[int]]]:
    """Per event of the window (platform ``$`` events left out): events, persons, and for each
    group its events and persons; one query for all the groups. Empty without top events."""
    q = qs[0]
    if not q.top_events:
        return []
    sql = Sql(source.dialect)
    start, end = q.date_range.utc_bounds()
    flags = [
        exp.alias_(
            _in_group(sql, members_sql(source, project_id, g, settings), _c("person_id")),
            f"g{i}",
            copy=False,
        )
        for i, g in enumerate(qs)
    ]
    tagged = (
        exp.select(_c("event"), exp.alias_(person_key(sql, _c("person_id")), "pid", copy=False),
                   *flags, copy=False)
        .from_(source.scoped("events", project_id).subquery("e", copy=False), copy=False)
        .where(exp.and_(sql.time_between(start, end),
                        exp.Not(this=exp.Like(this=_c("event"), expression=lit("$%"))), copy=False), copy=False)
    )  # fmt: skip
    per_group: list[exp.Expr] = []
    for i in range(len(qs)):
        g = _c(f"g{i}")
        per_group.append(exp.alias_(exp.Sum(this=g), f"ng{i}", copy=False))
        per_group.append(
            exp.alias_(
                exp.Count(this=exp.Distinct(expressions=[_when(g.copy().eq(1), _c("pid"))])),
                f"npg{i}",
                copy=False,
            )
        )
    tree = (
        exp.select(
            _c("event"),
            exp.alias_(exp.Count(this=exp.Star()), "n", copy=False),
            exp.alias_(exp.Count(this=exp.Distinct(expressions=[_c("pid")])), "np", copy=False),
            *per_group,
            copy=False,
        )
        .from_(tagged.subquery("t", copy=False), copy=False)
        .group_by(_c("event"), copy=False)
    )
    return [
        (
            str(row[0]),
            as_int(row[1]),
            as_int(row[2]),
            [as_int(v) for v in row[3::2]],
            [as_int(v) for v in row[4::2]],
        )
        for row in run(source, tree)
    ]


def _top_events(
    q: PersonaQuery,
    counted: list[tuple[str, int, int, list[int], list[int]]],
    i: int,
    grp_n: int,
    pop_n: int,
) -> list[dict[str, Any]]:
    """The events of the window by the i-th group's events, with rates, reach and lift."""
    ranked = sorted(
        ((e, n, np_, ng[i], npg[i]) for e, n, np_, ng, npg in counted),
        key=lambda t: (-t[3], -t[1], t[0]),
    )
    top = []
    for e, n, np_, ng_i, npg_i in ranked[: q.top_events]:
        gr, pr = _ratio(ng_i, grp_n), _ratio(n, pop_n)
        top.append(
            {
                "event": e,
                "group_events": ng_i,
                "group_persons": npg_i,
                "group_rate": gr,
                "group_reach": _ratio(npg_i, grp_n),
                "population_events": n,
                "population_persons": np_,
                "population_rate": pr,
                "population_reach": _ratio(np_, pop_n),
                "lift": _ratio(gr, pr),
            }
        )
    return top


def default_range(today: Any, timezone: str, days: int = 30) -> DateRange:
    """The last ``days`` local days ending ``today``."""
    return DateRange(today - timedelta(days=days - 1), today, timezone)
