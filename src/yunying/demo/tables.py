"""Arrow tables of one simulated chunk: ``raw_events``, ``raw_persons``, ``raw_person_distinct_ids``.

Columns are assembled without a Python loop per event: per-user strings (ids, IP, the common
properties) are built once per user and gathered with ``take``; event properties are JSON text
joined from fragments, each fragment chosen by a small code; UUIDs are formatted from random
64-bit words with numpy. Persons mirror what ingestion's identity rules would build from the same
events (see :mod:`yunying.ingest.identity`): one person per device, named after the device id
that is seen first, identified by ``$identify``, with the ``$set_once``/``$set`` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from yunying.demo import catalog as cat
from yunying.demo.simulate import (
    ACCEPTED,
    CHECK_IN,
    EDIT,
    EVENT_NAMES,
    EXPORT,
    IDENTIFY,
    INSTALL,
    INVITE,
    JOIN,
    PURCHASE,
    PURCHASE_CODES_PER_PLAN,
    SEC,
    SIGN_UP,
    VIEW,
    Arr,
    Calendar,
    Events,
    Users,
)
from yunying.ingest.identity import person_id_for

_HEX_PAIRS = np.frombuffer(
    b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8
).reshape(256, 2)
_MASK64 = (1 << 64) - 1
LOCAL_OFFSET_US = cat.LOCAL_UTC_OFFSET_HOURS * 3600 * SEC


# -- strings, fast ------------------------------------------------------------------------------


def _fragment(values: dict[str, object]) -> str:
    """JSON members (``"k":v,...`` without braces) for joining into a properties object."""
    return orjson.dumps(values).decode()[1:-1]


def _take(dictionary: list[str | None] | pa.Array, idx: Arr, valid: Arr | None = None) -> pa.Array:
    """``dictionary[idx]`` as an Arrow string array; null where ``valid`` is False."""
    if not isinstance(dictionary, pa.Array):
        dictionary = pa.array(dictionary, pa.string())
    indices = pa.array(idx.astype(np.int64), mask=None if valid is None else ~valid)
    return dictionary.take(indices)


def _fixed_width(chars: Arr) -> pa.Array:
    """Rows of ASCII bytes (an ``(n, width)`` uint8 array) as an Arrow string array."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(chars).ravel()
    return pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    ).cast(pa.string())


def _hex(octets: Arr) -> Arr:
    """Bytes (an ``(n, k)`` uint8 array) as lowercase hex digits (an ``(n, 2k)`` uint8 array)."""
    return _HEX_PAIRS[octets].reshape(len(octets), -1)


def _hex16(words: Arr) -> Arr:
    """Each 64-bit word as 16 lowercase hex digits, most significant first."""
    return _hex(words.astype(">u8").view(np.uint8).reshape(len(words), 8))


def random_uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """Version-4 UUID strings drawn from ``rng`` (so they repeat for the same seed)."""
    octets = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    octets[:, 6] = (octets[:, 6] & 0x0F) | 0x40
    octets[:, 8] = (octets[:, 8] & 0x3F) | 0x80
    digits = _hex(octets)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8], out[:, 9:13], out[:, 14:18] = digits[:, 0:8], digits[:, 8:12], digits[:, 12:16]
    out[:, 19:23], out[:, 24:36] = digits[:, 16:20], digits[:, 20:32]
    return _fixed_width(out)


def _splitmix64(x: Arr) -> Arr:
    """The SplitMix64 finaliser: a bijection on 64-bit words, so distinct inputs stay distinct."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def device_ids(seed: int, index: Arr) -> list[str]:
    """``d-<16 hex>`` device ids, unique per user number and different for each seed."""
    key = _splitmix64(np.asarray([seed & _MASK64], dtype=np.uint64))[0]
    words = _splitmix64(index.astype(np.uint64) ^ key)
    chars = np.concatenate(
        [np.tile(np.frombuffer(b"d-", np.uint8), (len(words), 1)), _hex16(words)], axis=1
    )
    return _fixed_width(chars).to_pylist()


def _ip_text(ip: Arr) -> list[str]:
    """Dotted-quad text of integer IPv4 addresses."""
    return [f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}" for v in ip.tolist()]


# -- per-user text ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserText:
    """The strings of each user of a chunk, built once and gathered per event."""

    device_id: list[str]
    user_id: list[str]
    person_id: list[str]
    ip: list[str]
    common: list[str]  # properties every event of the user carries
    identify: list[str]  # the $identify event's own properties
    accepted: list[str]  # the invite_accepted event's own properties


def _profile(users: Users, i: int) -> dict[str, str]:
    """The profile a user fills in at sign-up (sent as ``$set`` with ``$identify``)."""
    return {
        "city": cat.CITIES[users.city[i]][0],
        "gender": cat.GENDERS[users.gender[i]][0],
        "age_band": cat.AGE_BANDS[users.age_band[i]][0],
    }


def user_text(seed: int, project_id: int, users: Users) -> UserText:
    """Ids, addresses and per-user property fragments of ``users``."""
    devices = device_ids(seed, users.index)
    ips = _ip_text(users.ip)
    common, identify, accepted = [], [], []
    for i, (device, ip) in enumerate(zip(devices, ips, strict=True)):
        ch = cat.CHANNELS[users.channel[i]]
        props: dict[str, object] = {"channel": ch.name}
        if ch.utm_source is not None:
            props["$utm_source"] = ch.utm_source
        props.update({"$os": cat.OS_NAMES[users.os[i]], "$device_id": device, "$ip": ip})
        common.append(_fragment(props))
        identify.append(_fragment({"$anon_distinct_id": device, "$set": _profile(users, i)}))
        inviter = int(users.inviter[i])
        accepted.append(_fragment({"inviter_id": f"u-{inviter + 1}"}) if inviter >= 0 else "")
    return UserText(
        device_id=devices,
        user_id=[f"u-{i + 1}" for i in users.index.tolist()],
        person_id=[person_id_for(project_id, d) for d in devices],
        ip=ips,
        common=common,
        identify=identify,
        accepted=accepted,
    )


# -- events -------------------------------------------------------------------------------------


def purchase_fragment(code: int) -> str:
    """Own properties of a purchase with detail ``code`` (plan, renewal, pay method)."""
    plan, rest = divmod(code, PURCHASE_CODES_PER_PLAN)
    renewal, method = divmod(rest, len(cat.PAY_METHODS))
    name, price, _ = cat.PLANS[plan]
    return _fragment(
        {
            "plan": name,
            "amount": price,
            "currency": "CNY",
            "is_renewal": bool(renewal),
            "pay_method": cat.PAY_METHODS[method],
            "$set": {"membership": name},
        }
    )


def _detail_table(cal: Calendar) -> tuple[list[str], Arr]:
    """Fragments of every event type's own properties, and where each type's codes start."""
    pairs = cat.COMMUNITIES
    per_type: dict[int, list[str]] = {
        INSTALL: [
            _fragment({"$set_once": {"channel": ch.name, "os": os}})
            for ch in cat.CHANNELS
            for os in cat.OS_NAMES
        ],
        SIGN_UP: [_fragment({"method": m}) for m, _ in cat.SIGNUP_METHODS],
        VIEW: [
            _fragment({"content_id": f"c-{i + 1:04d}", "category": cat.CONTENT_CATEGORIES[int(c)]})
            for i, c in enumerate(cal.content_category)
        ],
        EDIT: [_fragment({"tool": t}) for t in cat.EDIT_TOOLS],
        EXPORT: [_fragment({"resolution": r}) for r, _ in cat.RESOLUTIONS],
        CHECK_IN: [_fragment({"reward_points": 10})],
        JOIN: [_fragment({"community_id": k, "community_name": v}) for k, v in pairs],
        INVITE: [_fragment({"invite_channel": c}) for c, _ in cat.INVITE_CHANNELS],
        PURCHASE: [
            purchase_fragment(code) for code in range(len(cat.PLANS) * PURCHASE_CODES_PER_PLAN)
        ],
    }
    fragments: list[str] = []
    start = np.zeros(len(EVENT_NAMES), dtype=np.int64)
    for etype in range(len(EVENT_NAMES)):
        start[etype] = len(fragments)
        fragments.extend(per_type.get(etype, []))
    return fragments, start


def utc_micros(cal: Calendar, local_us: Arr) -> Arr:
    """UTC microseconds since the epoch of local times (microseconds since the first midnight)."""
    midnight = datetime.combine(cal.first_day, time(), tzinfo=UTC)
    epoch_us = int(midnight.timestamp()) * SEC
    return epoch_us + local_us - LOCAL_OFFSET_US


def _properties(cal: Calendar, users: Users, ev: Events, text: UserText) -> pa.Array:
    """Each event's properties as JSON text: common, version, own, per-user and numeric parts."""
    n_users, u, etype = len(users), ev.user, ev.etype
    fragments, start = _detail_table(cal)
    has_detail = ev.detail >= 0
    own = _take(fragments, start[etype] + np.maximum(ev.detail, 0), has_detail)
    personal_idx = np.where(etype == ACCEPTED, n_users + u, u)
    personal = _take(
        text.identify + text.accepted, personal_idx, (etype == IDENTIFY) | (etype == ACCEPTED)
    )
    seconds = pc.cast(pa.array(ev.number, mask=ev.number < 0), pa.string())
    number = pc.binary_join_element_wise('"duration_sec":', seconds, "")
    versions = [_fragment({"$app_version": v}) for v in cat.VERSIONS]
    body = pc.binary_join_element_wise(
        _take(text.common, u),
        _take(versions, ev.version),
        own,
        personal,
        number,
        ",",
        null_handling="skip",
    )
    return pc.binary_join_element_wise("{", body, "}", "")


def received_micros(rng: np.random.Generator, cal: Calendar, ev: Events) -> Arr:
    """When the server receives each event (UTC microseconds): a second or so after it happens,
    hours later for a phone that was offline; an app sends its queue in order, so a user's
    events never arrive before earlier ones."""
    n = len(ev)
    sent = utc_micros(cal, ev.time)
    delay = (0.2 + rng.exponential(1.5, n)) * SEC
    offline = rng.random(n) < 0.03  # sent later, when the phone is back online
    delay[offline] += rng.exponential(3600.0, int(offline.sum())) * SEC
    received = sent + delay.astype(np.int64)
    if n == 0:
        return received
    order = np.lexsort((ev.time, ev.user))  # per user, in time order
    base = int(received.min())
    span = int(received.max()) - base + 1  # users stay in separate bands of ``key``
    key = ev.user[order].astype(np.int64) * span + (received[order] - base)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.maximum.accumulate(key) - ev.user[order] * span + base
    return out


def events_table(
    project_id: int,
    rng: np.random.Generator,
    cal: Calendar,
    users: Users,
    ev: Events,
    received: Arr,
    text: UserText,
) -> pa.Table:
    """The ``raw_events`` rows of a chunk (column names and types of the store's table)."""
    from yunying.store.duckdb_store import ARROW_EVENTS

    n, u = len(ev), ev.user
    ts = utc_micros(cal, ev.time)
    channel = users.channel[u]
    utm = [c.utm_source for c in cat.CHANNELS]
    paid = np.asarray([s is not None for s in utm])[channel]
    columns = {
        "project_id": pa.array(np.full(n, project_id, dtype=np.int32)),
        "uuid": random_uuids(rng, n),
        "event": _take(list(EVENT_NAMES), ev.etype),
        "distinct_id": _take(
            text.device_id + text.user_id, np.where(ev.as_user, len(users) + u, u)
        ),
        "person_id": _take(text.person_id, u),
        "timestamp": pa.array(ts).cast(pa.timestamp("us")),
        "received_at": pa.array(received).cast(pa.timestamp("us")),
        "properties": _properties(cal, users, ev, text),
        "channel": _take(list(cat.CHANNEL_NAMES), channel),
        "utm_source": _take(utm, channel, paid),
        "os": _take(list(cat.OS_NAMES), users.os[u]),
        "app_version": _take(list(cat.VERSIONS), ev.version),
        "device_id": _take(text.device_id, u),
        "ip": _take(text.ip, u),
        "amount": pa.array(ev.amount, from_pandas=True),
    }
    return pa.Table.from_pydict(columns, schema=ARROW_EVENTS)


# -- persons ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonFacts:
    """Per-user facts derived from the events that were kept."""

    present: Arr  # has at least one event
    identified: Arr  # sent $identify
    paying: Arr  # bought a membership
    first_time: Arr  # local microseconds of the first event
    membership: Arr  # plan index of the last purchase, -1 for none
    revenue: Arr  # CNY paid


def person_facts(users: Users, ev: Events) -> PersonFacts:
    """What ingestion would know about each user's person after these events."""
    n = len(users)
    count = np.bincount(ev.user, minlength=n)
    first = np.searchsorted(ev.user, np.arange(n))
    first_time = np.where(count > 0, ev.time[np.minimum(first, max(len(ev) - 1, 0))], 0)
    identified = np.zeros(n, dtype=bool)
    identified[ev.user[ev.etype == IDENTIFY]] = True
    bought = np.flatnonzero(ev.etype == PURCHASE)
    buyer = ev.user[bought]
    last = bought[np.append(buyer[1:] != buyer[:-1], True)] if len(bought) else bought
    membership = np.full(n, -1, dtype=np.int64)
    membership[ev.user[last]] = ev.detail[last] // PURCHASE_CODES_PER_PLAN
    revenue = np.bincount(ev.user[bought], weights=ev.amount[bought], minlength=n)
    return PersonFacts(count > 0, identified, membership >= 0, first_time, membership, revenue)


def persons_tables(
    project_id: int, cal: Calendar, users: Users, facts: PersonFacts, text: UserText
) -> tuple[pa.Table, pa.Table]:
    """The ``raw_persons`` and ``raw_person_distinct_ids`` rows of a chunk's users."""
    who = np.flatnonzero(facts.present).tolist()
    props = []
    for i in who:
        p: dict[str, object] = {
            "channel": cat.CHANNEL_NAMES[users.channel[i]],
            "os": cat.OS_NAMES[users.os[i]],
        }
        if facts.identified[i]:
            p.update(_profile(users, i))
        if facts.membership[i] >= 0:
            p["membership"] = cat.PLANS[facts.membership[i]][0]
        props.append(orjson.dumps(p).decode())
    idx = np.asarray(who, dtype=np.int64)
    persons = pa.table(
        {
            "project_id": pa.array(np.full(len(who), project_id, dtype=np.int32)),
            "id": _take(text.person_id, idx),
            "created_at": pa.array(utc_micros(cal, facts.first_time[idx])).cast(pa.timestamp("us")),
            "properties": pa.array(props, pa.string()),
            "is_identified": pa.array(facts.identified[idx]),
        }
    )
    named = idx[facts.identified[idx]]
    ids = pa.table(
        {
            "project_id": pa.array(np.full(len(idx) + len(named), project_id, dtype=np.int32)),
            "distinct_id": pa.concat_arrays(
                [_take(text.device_id, idx), _take(text.user_id, named)]
            ),
            "person_id": pa.concat_arrays(
                [_take(text.person_id, idx), _take(text.person_id, named)]
            ),
        }
    )
    return persons, ids
