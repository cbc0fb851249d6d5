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
    lit,
    run,
)
from yunying.audience.rfm import CLASS_CODES, CLASSES, amount_of, purchase_condition, rfm_sql
from yunying.audience.settings import AudienceSettings
from yunying.audience.stages import STAGES, activity_condition, day_number, stage_rows_sql

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
    """Person ids (as text, column ``person_id``) of the group; None for everyone."""
    sql = Sql(source.dialect)
    tz = q.date_range.timezone
    if q.group == "everyone":
        return None
    if q.group == "segment":
        return (
            exp.select(exp.alias_(sql.text(_c("person_id")), "person_id"))
            .from_(source.scoped("person_values", project_id).subquery("v"))
            .where(_c("scope").eq(lit(f"segment:{q.value}")))
        )
    if q.group == "stage":
        rows = stage_rows_sql(source, project_id, settings, [day_number(q.date_range.date_to)], tz)
        return (
            exp.select(_c("person_id"))
            .from_(rows.subquery("s"))
            .where(_c("stage").eq(lit(str(q.value))))
        )
    highs = next(k for k, v in CLASSES.items() if v[0] == q.value)
    scored = rfm_sql(source, project_id, settings, q.date_range.date_to, tz)
    return (
        exp.select(_c("person_id"))
        .from_(scored.subquery("r"))
        .where(
            exp.and_(*[_c(f"{s}_high").eq(lit(int(h))) for s, h in zip("rfm", highs, strict=True)])
        )
    )


def _in_group(sql: Sql, members: exp.Select | None, person: exp.Expr) -> exp.Expr:
    """1 when the person is in the group, else 0."""
    if members is None:
        return lit(1)
    return exp.Case(
        ifs=[exp.If(this=sql.text(person).isin(query=members.copy()), true=lit(1))],
        default=lit(0),
    )


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or not b else a / b


def persona(
    source: Source, project_id: int, q: PersonaQuery, settings: AudienceSettings
) -> dict[str, Any]:
    """The persona report of ``q`` (JSON-ready)."""
    sql = Sql(source.dialect)
    members = members_sql(source, project_id, q, settings)
    tz = q.date_range.timezone
    start, end = q.date_range.utc_bounds()
    flag = _in_group(sql, members, _c("id"))
    sizes = run(
        source,
        exp.select(exp.Count(this=exp.Star()), exp.Sum(this=flag)).from_(
            source.scoped("persons", project_id).subquery("p")
        ),
    )[0]
    pop_n, grp_n = as_int(sizes[0]), as_int(sizes[1])

    def distribution(rows: exp.Select, name: str, label: str) -> dict[str, Any]:
        tree = (
            exp.select(
                _c("v"),
                exp.alias_(exp.Count(this=exp.Star()), "n"),
                exp.alias_(exp.Sum(this=_c("g")), "ng"),
            )
            .from_(rows.subquery("x"))
            .where(exp.Not(this=exp.Is(this=_c("v"), expression=exp.null())))
            .group_by(_c("v"))
        )
        counted = [(str(v), as_int(n), as_int(ng)) for v, n, ng in run(source, tree)]
        counted.sort(key=lambda t: (-t[2], -t[1], t[0]))
        unset = (None, pop_n - sum(t[1] for t in counted), grp_n - sum(t[2] for t in counted))
        listed = counted[: q.values_limit]
        if unset[1] > 0:
            listed.append(unset)  # type: ignore[arg-type]
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

    distributions = []
    for key in q.properties:
        rows = exp.select(exp.alias_(sql.prop_text(key), "v"), exp.alias_(flag.copy(), "g")).from_(
            source.scoped("persons", project_id).subquery("p")
        )
        distributions.append(distribution(rows, f"person.{key}", f"person property {key}"))
    events = source.scoped("events", project_id).subquery("e")
    ev_flag = _in_group(sql, members, _c("person_id"))
    for name, label, src, pick in DIMENSIONS:
        if name not in q.dimensions:
            continue
        value = _c(src) if not src.startswith("$") else sql.prop_text(src)
        ranked = (
            exp.select(
                exp.alias_(sql.text(_c("person_id")), "pid"),
                exp.alias_(value, "v"),
                exp.alias_(
                    exp.Window(
                        this=exp.RowNumber(),
                        partition_by=[_c("person_id")],
                        order=exp.Order(
                            expressions=[
                                exp.Ordered(this=_c("timestamp"), desc=pick == "last"),
                                exp.Ordered(this=sql.text(_c("uuid")), desc=pick == "last"),
                            ]
                        ),
                    ),
                    "rn",
                ),
            )
            .from_(events.copy())
            .where(exp.Not(this=exp.Is(this=value.copy(), expression=exp.null())))
        )
        rows = (
            exp.select(_c("v"), exp.alias_(_in_group(sql, members, _c("pid")), "g"))
            .from_(ranked.subquery("r"))
            .where(_c("rn").eq(1))
        )
        distributions.append(distribution(rows, name, label))

    window = sql.time_between(start, end)
    top: list[dict[str, Any]] = []
    if q.top_events:
        tree = (
            exp.select(
                _c("event"),
                exp.alias_(exp.Count(this=exp.Star()), "n"),
                exp.alias_(exp.Count(this=exp.Distinct(expressions=[_c("person_id")])), "np"),
                exp.alias_(exp.Sum(this=ev_flag.copy()), "ng"),
                exp.alias_(
                    exp.Count(
                        this=exp.Distinct(
                            expressions=[
                                exp.Case(
                                    ifs=[exp.If(this=ev_flag.copy().eq(1),
                                                true=sql.text(_c("person_id")))]
                                )
                            ]
                        )
                    ),
                    "npg",
                ),
            )
            .from_(events.copy())
            .where(exp.and_(window.copy(), exp.Not(this=exp.Like(this=_c("event"),
                                                                    expression=lit("$%")))))
            .group_by(_c("event"))
        )  # fmt: skip
        counted = [
            (str(e), as_int(n), as_int(np_), as_int(ng), as_int(npg))
            for e, n, np_, ng, npg in run(source, tree)
        ]
        counted.sort(key=lambda t: (-t[3], -t[1], t[0]))
        for e, n, np_, ng, npg in counted[: q.top_events]:
            gr, pr = _ratio(ng, grp_n), _ratio(n, pop_n)
            top.append(
                {
                    "event": e,
                    "group_events": ng,
                    "group_persons": npg,
                    "group_rate": gr,
                    "group_reach": _ratio(npg, grp_n),
                    "population_events": n,
                    "population_persons": np_,
                    "population_rate": pr,
                    "population_reach": _ratio(np_, pop_n),
                    "lift": _ratio(gr, pr),
                }
            )

    # active days per person in the window
    per_day = (
        exp.select(
            exp.alias_(sql.text(_c("person_id")), "pid"),
            exp.alias_(sql.day_number(_c("timestamp"), tz), "day"),
        )
        .from_(events.copy())
        .where(exp.and_(window.copy(), activity_condition(settings.activity)))
        .group_by(_c("pid"), _c("day"))
    )
    per_person = (
        exp.select(_c("pid"), exp.alias_(exp.Count(this=exp.Star()), "days"))
        .from_(per_day.subquery("d"))
        .group_by(_c("pid"))
    )
    bucket = exp.Case(
        ifs=[
            exp.If(
                this=exp.and_(
                    exp.GTE(this=_c("days"), expression=lit(lo)),
                    exp.true() if hi is None else exp.LTE(this=_c("days"), expression=lit(hi)),
                ),
                true=lit(label),
            )
            for label, lo, hi in ACTIVE_BUCKETS[1:]
        ]
    )
    tree = (
        exp.select(
            exp.alias_(bucket, "b"),
            exp.alias_(_in_group(sql, members, _c("pid")), "g"),
            exp.alias_(exp.Count(this=exp.Star()), "n"),
            exp.alias_(exp.Sum(this=_c("days")), "total_days"),
        )
        .from_(per_person.subquery("pp"))
        .group_by(_c("b"), _c("g"))
    )
    buckets = {(label, g): 0 for label, _lo, _hi in ACTIVE_BUCKETS for g in (0, 1)}
    day_sums = {0: 0, 1: 0}
    for b, g, n, days in run(source, tree):
        buckets[(str(b), as_int(g))] += as_int(n)
        day_sums[as_int(g)] += as_int(days)

    def active(size: int, counts: dict[str, int], total_days: int) -> dict[str, Any]:
        counts["0"] = size - sum(v for k, v in counts.items() if k != "0")
        return {
            "average": _ratio(total_days, size),
            "buckets": [
                {"bucket": label, "persons": counts[label], "share": _ratio(counts[label], size)}
                for label, _lo, _hi in ACTIVE_BUCKETS
            ],
        }

    everyone = {label: buckets[(label, 0)] + buckets[(label, 1)] for label, *_ in ACTIVE_BUCKETS}
    in_group = {label: buckets[(label, 1)] for label, *_ in ACTIVE_BUCKETS}
    if members is None:
        in_group = dict(everyone)
    active_days = {
        "group": active(grp_n, in_group, day_sums[1]),
        "population": active(pop_n, everyone, day_sums[0] + day_sums[1]),
    }

    # revenue in the window
    amount = amount_of(sql, settings.revenue.amount_property)
    spend = (
        exp.select(
            exp.alias_(sql.text(_c("person_id")), "pid"),
            exp.alias_(exp.Sum(this=amount), "spent"),
        )
        .from_(events.copy())
        .where(
            exp.and_(
                window.copy(),
                purchase_condition(sql, settings.revenue.events, settings.revenue.amount_property),
            )
        )
        .group_by(_c("pid"))
    )
    tree = (
        exp.select(
            exp.alias_(_in_group(sql, members, _c("pid")), "g"),
            exp.alias_(exp.Count(this=exp.Star()), "payers"),
            exp.alias_(exp.Sum(this=_c("spent")), "revenue"),
        )
        .from_(spend.subquery("s"))
        .group_by(_c("g"))
    )
    payers = {0: 0, 1: 0}
    revenue = {0: 0.0, 1: 0.0}
    for g, n, rev in run(source, tree):
        payers[as_int(g)] += as_int(n)
        revenue[as_int(g)] += as_float(rev) or 0.0

    def money(size: int, n: int, rev: float) -> dict[str, Any]:
        return {
            "persons": size,
            "payers": n,
            "revenue": rev,
            "paying_rate": _ratio(n, size),
            "arpu": _ratio(rev, size),
            "arppu": _ratio(rev, n),
        }

    return {
        "group": {"kind": q.group, "value": q.value, "persons": grp_n},
        "population": {"persons": pop_n},
        "date_from": q.date_range.date_from.isoformat(),
        "date_to": q.date_range.date_to.isoformat(),
        "distributions": distributions,
        "top_events": top,
        "active_days": active_days,
        "revenue": {
            "group": money(grp_n, payers[1], revenue[1]),
            "population": money(pop_n, payers[0] + payers[1], revenue[0] + revenue[1]),
        },
    }


def default_range(today: Any, timezone: str, days: int = 30) -> DateRange:
    """The last ``days`` local days ending ``today``."""
    return DateRange(today - timedelta(days=days - 1), today, timezone)
