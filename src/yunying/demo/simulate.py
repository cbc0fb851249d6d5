"""Column-wise simulation of the demo app's users and of every event they cause.

Users are simulated a chunk at a time with numpy: who they are (channel, install time, device),
how long they stay (a first active life, going silent, perhaps a second life), which days they
open the app, and the journey install → sign up → first edit → first export → membership. Times
are local microseconds since the first day's midnight; :mod:`yunying.demo.tables` turns the
arrays into rows. Nothing here loops over events in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from yunying.demo import catalog as cat

Arr = npt.NDArray[Any]

SEC = 1_000_000  # microseconds per second
DAY_US = 86_400 * SEC
LATEST_INSTALL_US = 85_500 * SEC  # installs happen early enough that the day's session fits

EVENT_NAMES = (
    "app_install",
    "app_open",
    "sign_up",
    "$identify",
    "invite_accepted",
    "view_content",
    "edit_video",
    "export_video",
    "check_in",
    "join_community",
    "invite_sent",
    "purchase_membership",
)
(
    INSTALL,
    OPEN,
    SIGN_UP,
    IDENTIFY,
    ACCEPTED,
    VIEW,
    EDIT,
    EXPORT,
    CHECK_IN,
    JOIN,
    INVITE,
    PURCHASE,
) = range(len(EVENT_NAMES))

#: Order of events within one user's day: install first, then the first open, sign-up and its
#: ``$identify``, an accepted invitation, then everything else shuffled, purchases last.
PHASE_INSTALL, PHASE_OPEN, PHASE_SIGN_UP, PHASE_IDENTIFY, PHASE_ACCEPTED = 0, 1, 3, 4, 5
PHASE_FREE, PHASE_PURCHASE = 6, 7

#: Codes of a purchase's detail: plan, renewal flag and pay method packed into one small int.
PURCHASE_CODES_PER_PLAN = 2 * len(cat.PAY_METHODS)


def _choice(rng: np.random.Generator, weights: Any, size: int) -> Arr:
    """Indices drawn with the given relative weights."""
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum())


def _pairs(table: tuple[tuple[str, float], ...]) -> tuple[list[str], list[float]]:
    """Split a ``((name, weight), ...)`` catalog table into names and weights."""
    return [n for n, _ in table], [w for _, w in table]


# -- the calendar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calendar:
    """Day-level facts every chunk shares: busy days, install mix, releases, content."""

    first_day: date
    days: int
    activity: Arr  # per day: multiplier on opening the app (weekday × noise)
    install_p: Arr  # flattened (channel, day): probability a non-invited user installs then
    release_day: Arr  # per version: the day index it ships
    content_p: Arr  # per content item: chance a view goes to it
    content_category: Arr  # per content item: index into CONTENT_CATEGORIES


def make_calendar(seed: int, first_day: date, days: int) -> Calendar:
    """Draw the period's day-level facts from their own stream of the seed."""
    rng = np.random.default_rng([seed, 0])
    d = np.arange(days)
    weekday = (first_day.weekday() + d) % 7
    activity = np.asarray(cat.WEEKDAY_ACTIVITY)[weekday] * rng.lognormal(0.0, 0.08, days)
    base = (
        np.asarray(cat.WEEKDAY_INSTALLS)[weekday]
        * (1.0 + 1.6 * np.exp(-d / 12.0))  # launch burst that fades
        * rng.lognormal(0.0, 0.12, days)
    )
    weights = np.empty((len(cat.CHANNELS), days))
    for i, ch in enumerate(cat.CHANNELS):
        weights[i] = ch.share * base
        if ch.campaign is not None:
            start_frac, length_frac, boost = ch.campaign
            start = int(start_frac * days)
            weights[i, start : start + max(1, round(length_frac * days))] *= boost
    install_p = weights.ravel() / weights.sum()
    release_day = np.round(np.asarray(cat.VERSION_RELEASES) * (days - 1)).astype(np.int64)
    zipf = 1.0 / np.arange(1, cat.CONTENT_ITEMS + 1) ** cat.CONTENT_ZIPF
    category = rng.integers(0, len(cat.CONTENT_CATEGORIES), cat.CONTENT_ITEMS)
    return Calendar(first_day, days, activity, install_p, release_day, zipf / zipf.sum(), category)


# -- users --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Users:
    """Per-user attributes of one group of simulated users (arrays of equal length)."""

    index: Arr  # global user number, 0-based; the user id is ``u-<index + 1>``
    channel: Arr  # index into CHANNELS
    install_day: Arr  # day index of the install
    install_us: Arr  # local microseconds into that day
    os: Arr  # index into OS_NAMES
    engagement: Arr  # latent taste for the app (standard normal): drives use, sign-up, paying
    upgrade_lag: Arr  # days after a release before the user updates the app
    ip: Arr  # IPv4 address as an integer
    city: Arr
    gender: Arr
    age_band: Arr
    inviter: Arr  # global index of the inviting user, -1 when not invited

    def __len__(self) -> int:
        return len(self.index)

    @property
    def invited(self) -> Arr:
        """Whether each user arrived through an accepted invitation."""
        return self.inviter >= 0


def concat_users(a: Users, b: Users) -> Users:
    """Both groups as one, ``a`` first."""
    return Users(
        **{f.name: np.concatenate([getattr(a, f.name), getattr(b, f.name)]) for f in fields(Users)}
    )


def _install_times(rng: np.random.Generator, n: int) -> Arr:
    """Local time of day of installs, following the hourly rhythm of use."""
    hour = _choice(rng, cat.HOUR_WEIGHTS, n)
    us = hour * 3600 * SEC + rng.integers(0, 3600 * SEC, n)
    return np.minimum(us, LATEST_INSTALL_US)


def _ips(rng: np.random.Generator, n: int) -> Arr:
    """Public carrier-block IPv4 addresses (never .0 or .255)."""
    first = np.asarray(cat.IP_FIRST_OCTETS, dtype=np.int64)[
        rng.integers(0, len(cat.IP_FIRST_OCTETS), n)
    ]
    middle = rng.integers(0, 1 << 16, n)
    last = rng.integers(1, 255, n)
    return (first << 24) | (middle << 8) | last


def draw_users(rng: np.random.Generator, cal: Calendar, index: Arr) -> Users:
    """Users acquired through the channels' mix over the period (not yet invited ones)."""
    n = len(index)
    slot = rng.choice(len(cal.install_p), size=n, p=cal.install_p)
    channel, day = np.divmod(slot, cal.days)
    os = _choice(rng, cat.OS_SHARES, n)
    aso = channel == cat.CHANNEL_NAMES.index("app_store")
    os[aso] = _choice(rng, cat.OS_SHARES_APP_STORE, int(aso.sum()))
    lag = np.where(rng.random(n) < 0.1, 10_000, rng.geometric(0.25, n) - 1)
    return Users(
        index=index.astype(np.int64),
        channel=channel,
        install_day=day,
        install_us=_install_times(rng, n),
        os=os,
        engagement=rng.standard_normal(n),
        upgrade_lag=lag,
        ip=_ips(rng, n),
        city=_choice(rng, [w for _, w in cat.CITIES], n),
        gender=_choice(rng, _pairs(cat.GENDERS)[1], n),
        age_band=_choice(rng, _pairs(cat.AGE_BANDS)[1], n),
        inviter=np.full(n, -1, dtype=np.int64),
    )


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Events:
    """Events of one group of users, sorted by user then time (arrays of equal length)."""

    user: Arr  # position of the user in its Users
    etype: Arr  # index into EVENT_NAMES
    day: Arr
    phase: Arr
    time: Arr  # local microseconds since the first day's midnight
    detail: Arr  # per-type code of the event's own properties, -1 for none
    number: Arr  # export duration in seconds, -1 for none
    amount: Arr  # purchase amount in CNY, NaN for none
    version: Arr  # index into VERSIONS
    as_user: Arr  # True when sent with the user id, False with the device id

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: Arr) -> Events:
        """The events at ``idx`` (indices or a mask)."""
        return Events(**{f.name: getattr(self, f.name)[idx] for f in fields(Events)})


def concat_events(a: Events, b: Events, b_user_offset: int) -> Events:
    """``a`` then ``b``, with ``b``'s users numbered after ``a``'s."""
    b = replace(b, user=b.user + b_user_offset)
    return Events(
        **{f.name: np.concatenate([getattr(a, f.name), getattr(b, f.name)]) for f in fields(Events)}
    )


class _Builder:
    """Collects blocks of events of one type before they are ordered and timed."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, Arr]] = []

    def add(
        self,
        etype: int,
        user: Arr,
        day: Arr,
        phase: int | Arr,
        key: Arr,
        detail: Arr | None = None,
        number: Arr | None = None,
        amount: Arr | None = None,
    ) -> None:
        """Add events of type ``etype`` (``key`` orders them within a user's day and phase)."""
        n = len(user)
        self.blocks.append(
            {
                "user": user.astype(np.int64),
                "etype": np.full(n, etype, dtype=np.int8),
                "day": day.astype(np.int64),
                "phase": np.broadcast_to(np.asarray(phase, dtype=np.int8), (n,)),
                "key": key,
                "detail": np.full(n, -1, np.int32) if detail is None else detail.astype(np.int32),
                "number": np.full(n, -1, np.int32) if number is None else number.astype(np.int32),
                "amount": np.full(n, np.nan) if amount is None else amount.astype(np.float64),
            }
        )

    def columns(self, days: int) -> dict[str, Arr]:
        """All blocks as columns, ordered by user, day, phase, then the random key."""
        cols = {k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]}
        slot = (cols["user"] * days + cols["day"]) * 8 + cols["phase"]
        shift = 62 - int(slot.max(initial=1)).bit_length()  # the key fills the low bits
        packed = (slot << shift) | (cols["key"] * float(1 << shift)).astype(np.int64)
        order = np.argsort(packed, kind="stable")
        return {k: v[order] for k, v in cols.items()}


@dataclass(frozen=True)
class _Life:
    """When each user is around: daily open chance and up to two active windows."""

    p_open: Arr
    end1: Arr  # last day of the first active window
    start2: Arr  # first day of the comeback window (past the period if none)
    end2: Arr  # its last day (-1 if none)

    @property
    def last_day(self) -> Arr:
        """Last day the user is still a customer (before churning for good)."""
        return np.where(self.end2 >= self.start2, self.end2, self.end1)


@dataclass(frozen=True)
class _Active:
    """The (user, day) pairs on which users open the app, sorted by user then day."""

    user: Arr
    day: Arr
    rank: Arr  # 0 for the user's first active day (the install day), 1 for the next, ...
    start: Arr  # per user: position of the first pair
    count: Arr  # per user: number of active days
    key: Arr  # user * (days + 1) + day: sorted, for searching per user

    def nth(self, rank: Arr, who: Arr | None = None) -> Arr:
        """Day of each user's ``rank``-th active day (users ``who``, default all); -1 if none."""
        start = self.start if who is None else self.start[who]
        count = self.count if who is None else self.count[who]
        return np.where(rank < count, self.day[start + np.minimum(rank, count - 1)], -1)

    def first_rank_from(self, day: Arr, days: int) -> Arr:
        """Rank of each user's first active day on or after ``day``; ``count`` if none."""
        users = np.arange(len(self.start))
        pos = np.searchsorted(self.key, users * (days + 1) + np.minimum(day, days))
        return np.minimum(pos - self.start, self.count)


def _channel_column(users: Users, attr: str) -> Arr:
    """A channel-table column (activation, retention, paying) per user."""
    return np.asarray([getattr(c, attr) for c in cat.CHANNELS])[users.channel]


def _draw_life(rng: np.random.Generator, users: Users, days: int) -> _Life:
    """Daily use and lifetime: bounce, stay with a daily hazard of going silent, maybe return."""
    n, z = len(users), users.engagement
    ret = _channel_column(users, "retention")
    p_open = np.clip(0.40 * ret**0.7 * np.exp(0.45 * z - 0.1), 0.03, 0.92)
    hazard = np.clip(0.055 / ret * np.exp(-0.5 * z), 0.004, 0.5)
    bounce = rng.random(n) < np.clip(0.40 / ret * np.exp(-0.35 * z), 0.0, 0.8)
    length1 = np.where(bounce, rng.integers(0, 3, n), rng.geometric(hazard) - 1)
    end1 = users.install_day + length1
    comes_back = rng.random(n) < 0.30 * np.sqrt(ret)
    start2 = np.where(comes_back, end1 + 7 + rng.geometric(1 / 18, n), days + 1)
    end2 = np.where(comes_back, start2 + rng.geometric(np.minimum(hazard * 1.5, 0.9)) - 1, -1)
    return _Life(p_open, end1, start2, end2)


def _active_days(rng: np.random.Generator, cal: Calendar, users: Users, life: _Life) -> _Active:
    """Draw which days each user opens the app: always the install day, then by chance."""
    rel = np.arange(cal.days)[None, :]
    inside = ((rel >= users.install_day[:, None]) & (rel <= life.end1[:, None])) | (
        (rel >= life.start2[:, None]) & (rel <= life.end2[:, None])
    )
    p = np.minimum(life.p_open[:, None] * cal.activity[None, :], 0.97).astype(np.float32)
    active = inside & (rng.random((len(users), cal.days), dtype=np.float32) < p)
    active[np.arange(len(users)), users.install_day] = True
    user, day = np.nonzero(active)
    count = active.sum(axis=1)
    start = np.cumsum(count) - count
    rank = np.arange(len(user)) - start[user]
    return _Active(user, day, rank, start, count, user * (cal.days + 1) + day)


@dataclass(frozen=True)
class _Journey:
    """Per-user milestone days (-1 where never reached)."""

    sign_up_rank: Arr
    sign_up_day: Arr
    edit_day: Arr  # first day the user may edit (the first edit happens that day)


def _draw_journey(rng: np.random.Generator, users: Users, act: _Active) -> _Journey:
    """Who signs up and when, and who goes on to edit; invited users sign up on arrival."""
    n, z = len(users), users.engagement
    activation = _channel_column(users, "activation")
    wants = rng.random(n) < np.clip(0.58 * activation * np.exp(0.3 * z), 0.02, 0.97)
    s_rank = np.where(users.invited, 0, _choice(rng, (0.80, 0.12, 0.08), n))
    signed = (wants | users.invited) & (s_rank < act.count)
    s_rank = np.where(signed, s_rank, act.count)
    edits = signed & (rng.random(n) < np.clip(0.72 * activation * np.exp(0.25 * z), 0.02, 0.97))
    e_rank = s_rank + _choice(rng, (0.65, 0.25, 0.10), n)
    edits &= e_rank < act.count
    return _Journey(
        s_rank,
        np.where(signed, act.nth(s_rank), -1),
        np.where(edits, act.nth(np.where(edits, e_rank, 0)), -1),
    )


def _sessions(
    rng: np.random.Generator, b: _Builder, cal: Calendar, users: Users, act: _Active
) -> None:
    """Installs, app opens (one per session) and content views on every active day."""
    n_users, n_rows = len(users), len(act.user)
    install_code = users.channel * len(cat.OS_NAMES) + users.os
    b.add(
        INSTALL,
        np.arange(n_users),
        users.install_day,
        PHASE_INSTALL,
        np.zeros(n_users),
        detail=install_code,
    )
    z = users.engagement[act.user]
    sessions = 1 + rng.poisson(0.45 * np.exp(0.3 * z))
    rows = np.repeat(np.arange(n_rows), sessions)
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    phase = np.where(first, PHASE_OPEN, PHASE_FREE)
    b.add(OPEN, act.user[rows], act.day[rows], phase, rng.random(len(rows)))
    rows = np.repeat(np.arange(n_rows), rng.poisson(2.2 * sessions * np.exp(0.2 * z)))
    content = rng.choice(len(cal.content_p), size=len(rows), p=cal.content_p)
    b.add(VIEW, act.user[rows], act.day[rows], PHASE_FREE, rng.random(len(rows)), detail=content)


def _sign_ups(rng: np.random.Generator, b: _Builder, users: Users, journey: _Journey) -> None:
    """Sign-up (still anonymous), then ``$identify`` from the user id; invitees accept invites."""
    who = np.flatnonzero(journey.sign_up_day >= 0)
    day = journey.sign_up_day[who]
    method = _choice(rng, _pairs(cat.SIGNUP_METHODS)[1], len(who))
    b.add(SIGN_UP, who, day, PHASE_SIGN_UP, np.zeros(len(who)), detail=method)
    b.add(IDENTIFY, who, day, PHASE_IDENTIFY, np.zeros(len(who)))
    invited = np.flatnonzero(users.invited)
    b.add(ACCEPTED, invited, users.install_day[invited], PHASE_ACCEPTED, np.zeros(len(invited)))


def _editing(
    rng: np.random.Generator, b: _Builder, users: Users, act: _Active, journey: _Journey
) -> Arr:
    """Edits from the first-edit day on, and exports of some edits; returns first export days."""
    z = users.engagement
    start = journey.edit_day[act.user]
    rows = np.flatnonzero((start >= 0) & (act.day >= start))
    n_edits = rng.poisson(1.6 * np.exp(0.35 * z[act.user[rows]]))
    n_edits[act.day[rows] == start[rows]] = np.maximum(n_edits[act.day[rows] == start[rows]], 1)
    rows = np.repeat(rows, n_edits)
    user, day, key = act.user[rows], act.day[rows], rng.random(len(rows))
    b.add(EDIT, user, day, PHASE_FREE, key, detail=rng.integers(0, len(cat.EDIT_TOOLS), len(rows)))
    exporter = rng.random(len(users)) < np.clip(0.78 * np.exp(0.2 * z), 0.0, 0.97)
    done = exporter[user] & (rng.random(len(rows)) < 0.6)
    user, day, key = user[done], day[done], key[done]
    key = key + (1.0 - key) * rng.random(len(key))  # an export follows the edit it exports
    resolution = _choice(rng, _pairs(cat.RESOLUTIONS)[1], len(user))
    seconds = np.clip(rng.lognormal(3.6, 0.6, len(user)), 5, 600).astype(np.int32)
    b.add(EXPORT, user, day, PHASE_FREE, key, detail=resolution, number=seconds)
    first_export = np.full(len(users), -1, dtype=np.int64)
    exporters, first = np.unique(user, return_index=True)
    first_export[exporters] = day[first]
    return first_export


def _community(
    rng: np.random.Generator, b: _Builder, users: Users, act: _Active, journey: _Journey
) -> None:
    """Signed-up users check in, join a community and invite friends."""
    z, ret = users.engagement, _channel_column(users, "retention")
    n = len(users)
    after = act.rank >= journey.sign_up_rank[act.user]
    habit = rng.random(n) < np.clip(0.30 * ret * np.exp(0.3 * z), 0.0, 0.9)
    rows = np.flatnonzero(after & habit[act.user] & (rng.random(len(act.user)) < 0.85))
    b.add(
        CHECK_IN,
        act.user[rows],
        act.day[rows],
        PHASE_FREE,
        rng.random(len(rows)),
        detail=np.zeros(len(rows)),
    )
    joins = (journey.sign_up_day >= 0) & (
        rng.random(n) < np.clip(0.18 * ret * np.exp(0.3 * z), 0, 0.9)
    )
    who = np.flatnonzero(joins)
    span = act.count[who] - journey.sign_up_rank[who]
    rank = journey.sign_up_rank[who] + (rng.random(len(who)) * span).astype(np.int64)
    group = rng.integers(0, len(cat.COMMUNITIES), len(who))
    b.add(JOIN, who, act.nth(rank, who), PHASE_FREE, rng.random(len(who)), detail=group)
    rate = 0.05 * np.exp(0.5 * z) * np.where(rng.random(n) < 0.05, 5.0, 1.0)
    rows = np.flatnonzero(after & (rng.random(len(act.user)) < np.minimum(rate, 0.9)[act.user]))
    channel = _choice(rng, _pairs(cat.INVITE_CHANNELS)[1], len(rows))
    b.add(INVITE, act.user[rows], act.day[rows], PHASE_FREE, rng.random(len(rows)), detail=channel)


def _purchases(
    rng: np.random.Generator,
    b: _Builder,
    users: Users,
    act: _Active,
    life: _Life,
    first_export: Arr,
    days: int,
) -> None:
    """Memberships bought after a first export (at the day's end), and auto-renewals."""
    n, z = len(users), users.engagement
    pay = _channel_column(users, "paying")
    payer = (first_export >= 0) & (rng.random(n) < np.clip(0.16 * pay * np.exp(0.45 * z), 0, 0.9))
    rank = act.first_rank_from(first_export, days) + rng.geometric(0.5, n) - 1
    payer &= rank < act.count
    who = np.flatnonzero(payer)
    day = act.nth(rank[who], who)
    plan = _choice(rng, cat.PLAN_WEIGHTS, len(who))
    method = np.where(
        users.os[who] == cat.OS_NAMES.index("iOS"),
        cat.PAY_METHODS.index("apple_iap"),
        _choice(rng, (0.6, 0.4), len(who)),
    )
    price = np.asarray([p[1] for p in cat.PLANS])
    period = np.asarray([p[2] for p in cat.PLANS])
    code = plan * PURCHASE_CODES_PER_PLAN + method
    b.add(PURCHASE, who, day, PHASE_PURCHASE, rng.random(len(who)), detail=code, amount=price[plan])
    renewing = period[plan] > 0
    due = day.copy()
    for _ in range(days // max(int(period[period > 0].min()), 1)):
        due = due + period[plan]
        renewing &= (
            (due < days)
            & (due <= life.last_day[who])
            & (rng.random(len(who)) < cat.RENEWAL_PROBABILITY)
        )
        if not renewing.any():
            break
        r = np.flatnonzero(renewing)
        b.add(
            PURCHASE,
            who[r],
            due[r],
            PHASE_PURCHASE,
            rng.random(len(r)),
            detail=code[r] + len(cat.PAY_METHODS),
            amount=price[plan[r]],
        )


def _times(rng: np.random.Generator, cols: dict[str, Arr], users: Users) -> Arr:
    """Local time of each event: a user's day starts at a sampled hour (the install time on the
    install day) and its events follow in order, seconds to minutes apart, hours between
    sessions, squeezed if needed so the day's events never run past midnight."""
    n = len(cols["user"])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    user, day, etype = cols["user"], cols["day"], cols["etype"]
    new_day = np.ones(n, dtype=bool)
    new_day[1:] = (user[1:] != user[:-1]) | (day[1:] != day[:-1])
    gap = ((2.0 + rng.exponential(40.0, n)) * SEC).astype(np.int64)
    next_session = (etype == OPEN) & (cols["phase"] == PHASE_FREE)
    gap[next_session] = ((1200.0 + rng.exponential(7200.0, int(next_session.sum()))) * SEC).astype(
        np.int64
    )
    gap[etype == IDENTIFY] = SEC
    gap[new_day] = 0
    total = np.cumsum(gap)
    heads = np.flatnonzero(new_day)
    group = np.cumsum(new_day) - 1
    offset = total - total[heads][group]
    span = offset[np.append(heads[1:] - 1, n - 1)]
    g_user, g_day = user[heads], day[heads]
    on_install = g_day == users.install_day[g_user]
    start = _choice(rng, cat.HOUR_WEIGHTS, len(heads)) * 3600 * SEC + rng.integers(
        0, 3600 * SEC, len(heads)
    )
    start = np.where(
        on_install, users.install_us[g_user], np.minimum(start, np.maximum(DAY_US - 1 - span, 0))
    )
    room = DAY_US - 1 - start
    squeeze = np.where(span > room, room / np.maximum(span, 1), 1.0)
    offset = (offset * squeeze[group]).astype(np.int64)
    return (g_day * DAY_US + start)[group] + offset


def _versions(cal: Calendar, users: Users, user: Arr, day: Arr) -> Arr:
    """App version of each event: the newest at install, updated ``upgrade_lag`` days after each
    later release."""
    at_install = np.searchsorted(cal.release_day, users.install_day, side="right") - 1
    updated = np.searchsorted(cal.release_day, day - users.upgrade_lag[user], side="right") - 1
    return np.maximum(at_install[user], updated).astype(np.int8)


def simulate(rng: np.random.Generator, cal: Calendar, users: Users) -> Events:
    """Every event of ``users`` over the period, sorted by user and time."""
    life = _draw_life(rng, users, cal.days)
    act = _active_days(rng, cal, users, life)
    journey = _draw_journey(rng, users, act)
    b = _Builder()
    _sessions(rng, b, cal, users, act)
    _sign_ups(rng, b, users, journey)
    first_export = _editing(rng, b, users, act, journey)
    _community(rng, b, users, act, journey)
    _purchases(rng, b, users, act, life, first_export, cal.days)
    cols = b.columns(cal.days)
    user, day, phase = cols["user"], cols["day"], cols["phase"]
    s_day = journey.sign_up_day[user]
    as_user = (s_day >= 0) & ((day > s_day) | ((day == s_day) & (phase >= PHASE_IDENTIFY)))
    return Events(
        user=user,
        etype=cols["etype"],
        day=day,
        phase=phase,
        time=_times(rng, cols, users),
        detail=cols["detail"],
        number=cols["number"],
        amount=cols["amount"],
        version=_versions(cal, users, user, day),
        as_user=as_user,
    )


# -- invitations and chunks -----------------------------------------------------------------------


def _invitees(
    rng: np.random.Generator, cal: Calendar, inviters: Users, sent: Events, index: Arr
) -> Users:
    """Users for the invited slots: each takes one invitation sent by ``inviters`` and installs
    minutes to hours after it; slots left without an invitation are ordinary users."""
    users = draw_users(rng, cal, index)
    invites = np.flatnonzero(sent.etype == INVITE)
    arrive = sent.time[invites] + (
        (300.0 + rng.exponential(4 * 3600.0, len(invites))) * SEC
    ).astype(np.int64)
    day, tod = np.divmod(arrive, DAY_US)
    late = tod > LATEST_INSTALL_US
    day[late] += 1
    tod[late] = 7 * 3600 * SEC + rng.integers(0, 2 * 3600 * SEC, int(late.sum()))
    usable = np.flatnonzero(day < cal.days)
    take = np.sort(rng.choice(len(usable), size=min(len(usable), len(users)), replace=False))
    pick, k = usable[take], len(take)
    inviter = inviters.index[sent.user[invites[pick]]]
    ip = users.ip.copy()
    same_ip = rng.random(k) < 0.15  # same household or office as the inviter
    ip[:k] = np.where(same_ip, inviters.ip[sent.user[invites[pick]]], ip[:k])
    return replace(
        users,
        channel=np.concatenate([np.full(k, cat.INVITE_CHANNEL), users.channel[k:]]),
        install_day=np.concatenate([day[pick], users.install_day[k:]]),
        install_us=np.concatenate([tod[pick], users.install_us[k:]]),
        ip=ip,
        inviter=np.concatenate([inviter, users.inviter[k:]]),
    )


def simulate_chunk(
    seed: int, cal: Calendar, chunk: int, first_index: int, n: int
) -> tuple[Users, Events]:
    """Users ``first_index`` … ``first_index + n - 1`` and their events, from the chunk's own
    random stream, so a chunk's data depends only on the seed, the period and its position."""
    rng = np.random.default_rng([seed, 1, chunk])
    n_invited = int(round(n * cat.INVITED_SHARE))
    n_base = n - n_invited
    base = draw_users(rng, cal, np.arange(first_index, first_index + n_base))
    base_events = simulate(rng, cal, base)
    invited = _invitees(
        rng, cal, base, base_events, np.arange(first_index + n_base, first_index + n)
    )
    invited_events = simulate(rng, cal, invited)
    return concat_users(base, invited), concat_events(base_events, invited_events, n_base)
