"""Person profile (用户档案): who a person is and what they did.

A person is looked up by person id or by any of their distinct ids. The profile holds their
current properties, every distinct id, first-touch channel (the channel of their earliest event
that has one), first and last seen (earliest and latest event of any kind), lifetime revenue
(the revenue settings' purchases, all time), the lifecycle stage as of today (computed for this
person), and the stored per-person values: RFM class, segments, tags and any other scope. The
event timeline is paged newest first with a keyset cursor on (timestamp, uuid).
"""

from __future__ import annotations

import base64
import uuid as uuidlib
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlglot import exp

from yunying.analytics.common import Source, Sql, as_float, as_int, fn, lit, run
from yunying.audience.rfm import CLASS_NAMES, amount_of, purchase_condition
from yunying.audience.settings import AudienceSettings
from yunying.audience.stages import STAGE_NAMES_ZH, person_is, person_stages
from yunying.errors import NotFound, YunyingError

#: Most events one timeline page may hold.
MAX_PAGE = 500


class PersonNotFound(NotFound):
    """No person has this id or distinct id."""


class InvalidCursor(YunyingError):
    """A timeline cursor that this API did not hand out."""


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def utc_text(value: Any) -> str | None:
    """An engine timestamp (naive UTC or aware) as ISO text with an explicit UTC offset."""
    if value is None:
        return None
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.isoformat(timespec="microseconds") + "Z"


def _naive(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _json(value: Any) -> Any:
    if value is None or value == "":
        return {}
    if isinstance(value, dict | list):
        return value
    return orjson.loads(value)


def find_person(source: Source, project_id: int, key: str) -> str:
    """The person id for a person id or distinct id (:class:`PersonNotFound` otherwise)."""
    sql = Sql(source.dialect)
    key = key.strip()
    if not key:
        raise PersonNotFound("a person id or distinct id is required")
    try:
        as_uuid = str(uuidlib.UUID(key))
    except ValueError:
        as_uuid = None
    if as_uuid is not None:
        found = run(
            source,
            exp.select(sql.text(_c("id")))
            .from_(source.scoped("persons", project_id).subquery("p"))
            .where(person_is(sql, _c("id"), as_uuid)),
        )
        if found:
            return str(found[0][0])
    found = run(
        source,
        exp.select(sql.text(_c("person_id")))
        .from_(source.scoped("person_distinct_ids", project_id).subquery("d"))
        .where(_c("distinct_id").eq(lit(key))),
    )
    if found:
        return str(found[0][0])
    raise PersonNotFound(f"no person has the id or distinct id {key!r}")


def _events_of(source: Source, project_id: int, person_id: str) -> exp.Select:
    sql = Sql(source.dialect)
    return (
        exp.select("*")
        .from_(source.scoped("events", project_id).subquery("e"))
        .where(person_is(sql, _c("person_id"), person_id))
    )


def person_profile(
    source: Source,
    project_id: int,
    key: str,
    settings: AudienceSettings,
    timezone: str,
    today: date,
) -> dict[str, Any]:
    """The profile of the person ``key`` names (person id or distinct id)."""
    sql = Sql(source.dialect)
    person_id = find_person(source, project_id, key)
    person = run(
        source,
        exp.select(sql.text(_c("id")), "created_at", "properties", "is_identified")
        .from_(source.scoped("persons", project_id).subquery("p"))
        .where(person_is(sql, _c("id"), person_id)),
    )
    ids = run(
        source,
        exp.select("distinct_id")
        .from_(source.scoped("person_distinct_ids", project_id).subquery("d"))
        .where(person_is(sql, _c("person_id"), person_id))
        .order_by("distinct_id"),
    )
    events = _events_of(source, project_id, person_id)
    revenue_cond = purchase_condition(
        sql, settings.revenue.events, settings.revenue.amount_property
    )
    amount = amount_of(sql, settings.revenue.amount_property)
    uid = sql.text(_c("uuid")) if sql.ch else _c("uuid")  # DuckDB's UUIDs sort like their text
    has_channel = exp.Not(this=exp.Is(this=_c("channel"), expression=exp.null()))
    order_key = exp.Tuple(expressions=[_c("timestamp"), uid])
    first_channel: exp.Expr
    if sql.ch:
        first_channel = fn("argMinIf", _c("channel"), order_key, has_channel)
    else:
        first_channel = exp.Filter(
            this=fn("arg_min", _c("channel"), order_key), expression=exp.Where(this=has_channel)
        )
    # one pass over the person's events: the summary and the first-touch channel
    summary = run(
        source,
        exp.select(
            exp.Min(this=_c("timestamp")),
            exp.Max(this=_c("timestamp")),
            exp.Count(this=exp.Star()),
            exp.Sum(this=exp.Case(ifs=[exp.If(this=revenue_cond, true=amount)], default=lit(0.0))),
            exp.Sum(
                this=exp.Case(ifs=[exp.If(this=revenue_cond.copy(), true=lit(1))], default=lit(0))
            ),
            first_channel,
        ).from_(events.subquery("ev")),
    )[0]
    values = run(
        source,
        exp.select("scope", "label", "value", "computed_at")
        .from_(source.scoped("person_values", project_id).subquery("v"))
        .where(person_is(sql, _c("person_id"), person_id))
        .order_by("scope", "label"),
    )
    stage = person_stages(source, project_id, settings, today, timezone, person_id).get(person_id)
    rfm: dict[str, Any] | None = None
    segments: list[dict[str, Any]] = []
    tags: list[str] = []
    other: list[dict[str, Any]] = []
    for scope, label, value, computed_at in values:
        scope = str(scope)
        entry = {
            "scope": scope,
            "label": label,
            "value": as_float(value),
            "computed_at": utc_text(computed_at),
        }
        if scope == "rfm" and label in CLASS_NAMES:
            score = as_int(value)
            rfm = {
                "class": label,
                "name_zh": CLASS_NAMES[str(label)][0],
                "name_en": CLASS_NAMES[str(label)][1],
                "r": score // 100,
                "f": score // 10 % 10,
                "m": score % 10,
                "computed_at": entry["computed_at"],
            }
        elif scope.startswith("segment:"):
            segments.append({"segment": scope.removeprefix("segment:"), "label": label})
        elif scope.startswith("tag:"):
            tags.append(scope.removeprefix("tag:"))
        else:
            other.append(entry)
    p = person[0] if person else None
    return {
        "person_id": person_id,
        "created_at": utc_text(p[1]) if p else None,
        "is_identified": bool(p[3]) if p else False,
        "properties": _json(p[2]) if p else {},
        "distinct_ids": [str(r[0]) for r in ids],
        "first_touch_channel": summary[5],
        "first_seen": utc_text(summary[0]),
        "last_seen": utc_text(summary[1]),
        "events": as_int(summary[2]),
        "lifetime_revenue": as_float(summary[3]) or 0.0,
        "purchases": as_int(summary[4]),
        "stage": stage,
        "stage_zh": STAGE_NAMES_ZH.get(stage) if stage else None,
        "stage_as_of": today.isoformat(),
        "rfm": rfm,
        "segments": segments,
        "tags": tags,
        "values": other,
    }


def encode_cursor(timestamp: str, uuid: str) -> str:
    """An opaque cursor pointing just past the event (timestamp, uuid)."""
    return base64.urlsafe_b64encode(f"{timestamp}|{uuid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(naive UTC timestamp, uuid text) of a cursor (:class:`InvalidCursor` otherwise)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, uid = raw.partition("|")
        return _naive(ts), str(uuidlib.UUID(uid))
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor(f"cursor {cursor!r} is not one this API handed out") from None


def person_events(
    source: Source,
    project_id: int,
    key: str,
    limit: int = 50,
    cursor: str | None = None,
    event: str | None = None,
) -> dict[str, Any]:
    """One page of the person's events, newest first; ``next_cursor`` fetches the next page
    (None at the end). Keyset pagination: stable while new events arrive."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidCursor(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    sql = Sql(source.dialect)
    person_id = find_person(source, project_id, key)
    # DuckDB's UUIDs sort like their text: compared as they are there
    uid = sql.text(_c("uuid")) if sql.ch else _c("uuid")
    conds: list[exp.Expr] = [person_is(sql, _c("person_id"), person_id)]
    if event is not None:
        conds.append(_c("event").eq(lit(event)))
    if cursor is not None:
        ts, after = decode_cursor(cursor)
        at = sql.ts_literal(ts)
        after_uid = lit(after) if sql.ch else exp.cast(lit(after), "UUID")
        conds.append(
            exp.or_(
                exp.LT(this=_c("timestamp"), expression=at),
                exp.and_(
                    _c("timestamp").eq(at.copy()), exp.LT(this=uid.copy(), expression=after_uid)
                ),
            )
        )
    newest_first = [
        exp.Ordered(this=_c("timestamp"), desc=True),
        exp.Ordered(this=_c("uid"), desc=True),
    ]
    where = exp.and_(*conds)
    if not sql.ch:
        # the person's condition cannot reach the scan (its id is resolved through a join), so
        # the page's uuids come first from the narrow columns, then their whole rows (properties
        # included) by uuid, a condition the scan applies before reading the other columns
        keys = (
            exp.select(exp.alias_(uid.copy(), "uid"), _c("timestamp"))
            .from_(source.scoped("events", project_id).subquery("e"))
            .where(where)
            .order_by(*[o.copy() for o in newest_first])
            .limit(limit + 1)
        )
        found = run(source, keys)
        if not found:
            return {"person_id": person_id, "events": [], "next_cursor": None}
        stamps = [_naive(str(r[1])) if not isinstance(r[1], datetime) else r[1] for r in found]
        where = exp.and_(
            exp.Between(
                this=_c("timestamp"),
                low=sql.ts_literal(min(stamps)),
                high=sql.ts_literal(max(stamps)),
            ),
            exp.In(this=_c("uuid"), expressions=[exp.cast(lit(str(r[0])), "UUID") for r in found]),
        )
    tree = (
        exp.select(
            exp.alias_(uid, "uid"),
            "event",
            "distinct_id",
            "timestamp",
            "properties",
            "channel",
            "os",
            "amount",
        )
        .from_(source.scoped("events", project_id).subquery("e"))
        .where(where)
        .order_by(*newest_first)
        .limit(limit + 1)
    )
    rows = run(source, tree)
    page = rows[:limit]
    out = [
        {
            "uuid": str(r[0]),
            "event": r[1],
            "distinct_id": r[2],
            "timestamp": utc_text(r[3]),
            "properties": _json(r[4]),
            "channel": r[5],
            "os": r[6],
            "amount": as_float(r[7]),
        }
        for r in page
    ]
    next_cursor = None
    if len(rows) > limit and out:
        last = out[-1]
        next_cursor = encode_cursor(str(last["timestamp"]), str(last["uuid"]))
    return {"person_id": person_id, "events": out, "next_cursor": next_cursor}
