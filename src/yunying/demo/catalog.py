"""The demo app's world: channels, prices, devices, versions, places and content.

Every number here is a modelling choice for the seeds' short-video editing app, kept in one place
so the generator reads as behaviour and the tables can be tuned (or shown in docs) on their own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Channel:
    """One acquisition channel: how many users it brings, what they cost and how good they are."""

    name: str
    share: float  # share of installs that do not come from an invitation
    cpi: float  # cost per install in CNY (ad spend, vendor fees, KOL deals, content production)
    activation: float  # multiplier on signing up and starting to edit
    retention: float  # multiplier on daily use and on staying before going silent
    paying: float  # multiplier on buying a membership
    utm_source: str | None  # tracking-link source carried on events (paid channels only)
    campaign: tuple[float, float, float] | None  # (start, length: fractions of the period; boost)


#: Acquisition channels of the demo app. Paid feeds bring volume of weak quality; content and
#: community channels (Zhihu, Bilibili) bring fewer, better users; KOL deals are expensive but
#: convert; ``invite`` users arrive only through an accepted invitation (referral fission), so
#: their share is 0 here and their cost is the referral red packet.
CHANNELS: tuple[Channel, ...] = (
    Channel("douyin", 0.22, 18.0, 1.00, 0.90, 0.85, "oceanengine", (0.30, 0.08, 2.5)),
    Channel("kuaishou", 0.14, 12.0, 0.85, 0.70, 0.55, "kuaishou_ads", None),
    Channel("zhihu", 0.05, 8.0, 1.20, 1.30, 1.70, None, None),
    Channel("weibo", 0.06, 6.0, 0.75, 0.60, 0.50, None, (0.50, 0.035, 3.0)),
    Channel("bilibili", 0.09, 10.0, 1.15, 1.35, 1.30, None, None),
    Channel("app_store", 0.12, 9.0, 1.05, 1.10, 1.20, None, None),
    Channel("kol", 0.07, 28.0, 1.10, 1.00, 1.45, "kol", (0.60, 0.055, 3.0)),
    Channel("sem", 0.06, 22.0, 1.10, 0.95, 1.10, "baidu_sem", None),
    Channel("feed_ads", 0.11, 15.0, 0.65, 0.50, 0.40, "gdt", (0.75, 0.11, 1.8)),
    Channel("organic", 0.08, 0.0, 1.10, 1.20, 1.10, None, None),
    Channel("invite", 0.00, 30.0, 1.25, 1.20, 1.05, None, None),
)
CHANNEL_NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
INVITE_CHANNEL = CHANNEL_NAMES.index("invite")
ORGANIC_CHANNEL = CHANNEL_NAMES.index("organic")

#: Share of each chunk's users who arrive through an invitation (when enough invites were sent).
INVITED_SHARE = 0.06

#: Membership plans: (name, price in CNY, days until it renews; 0 = no renewal in the period).
PLANS: tuple[tuple[str, float, int], ...] = (
    ("monthly", 30.0, 30),
    ("quarterly", 78.0, 90),
    ("yearly", 198.0, 0),
)
PLAN_WEIGHTS = (0.55, 0.27, 0.18)
RENEWAL_PROBABILITY = 0.8
PAY_METHODS = ("wechat_pay", "alipay", "apple_iap")

#: Operating systems and their install shares; app-store (ASO) users lean towards iOS.
OS_NAMES = ("iOS", "Android", "HarmonyOS")
OS_SHARES = (0.28, 0.62, 0.10)
OS_SHARES_APP_STORE = (0.50, 0.35, 0.15)

#: App versions and when each ships, as a fraction of the period (the first ships at launch).
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.2.1", "1.3.0")
VERSION_RELEASES = (0.0, 0.22, 0.45, 0.55, 0.80)

#: Where users live, weighted like a consumer app's audience (first-tier cities lead).
CITIES = (
    ("北京", 9), ("上海", 9), ("广州", 7), ("深圳", 7), ("杭州", 5), ("成都", 6), ("武汉", 5),
    ("西安", 4), ("南京", 4), ("重庆", 5), ("长沙", 4), ("郑州", 4), ("苏州", 3), ("天津", 3),
    ("青岛", 2), ("沈阳", 2), ("昆明", 2), ("厦门", 2), ("合肥", 3), ("哈尔滨", 2),
)  # fmt: skip
GENDERS = (("female", 0.52), ("male", 0.44), ("unknown", 0.04))
AGE_BANDS = (("18-24", 0.34), ("25-30", 0.31), ("31-40", 0.24), ("41+", 0.11))

#: Leading octets of public IPv4 blocks of Chinese carriers, for plausible client addresses.
IP_FIRST_OCTETS = (
    36, 39, 42, 58, 59, 60, 61, 101, 106, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120,
    121, 122, 123, 124, 125, 171, 175, 180, 182, 183, 202, 210, 211, 218, 219, 220, 221, 222, 223,
)  # fmt: skip

#: Content library (tutorials, templates, ...): size and categories; popularity is Zipf-like.
CONTENT_ITEMS = 240
CONTENT_CATEGORIES = ("tutorial", "template", "music", "effect", "case_study", "activity")
CONTENT_ZIPF = 1.1

#: Editing tools used in an edit session, export resolutions and sign-up methods.
EDIT_TOOLS = ("trim", "subtitle", "filter", "music", "transition", "template", "speed", "sticker")
RESOLUTIONS = (("720p", 0.30), ("1080p", 0.58), ("4k", 0.12))
SIGNUP_METHODS = (("wechat", 0.46), ("phone", 0.30), ("douyin", 0.14), ("apple", 0.10))
INVITE_CHANNELS = (("wechat", 0.62), ("moments", 0.20), ("qq", 0.10), ("weibo", 0.08))

#: User communities (社群) that users join from the app.
COMMUNITIES = (
    ("grp-vlog", "Vlog 新手营"),
    ("grp-travel", "旅行剪辑交流群"),
    ("grp-food", "美食视频创作群"),
    ("grp-pets", "萌宠剪辑群"),
    ("grp-kids", "亲子记录群"),
    ("grp-pro", "进阶调色与转场"),
    ("grp-ecom", "带货短视频实战"),
    ("grp-campus", "校园创作者联盟"),
)

#: Relative chance that a session starts in each local hour (evening peak, lunch bump).
HOUR_WEIGHTS = (
    0.6, 0.3, 0.15, 0.1, 0.1, 0.2, 0.6, 1.4, 2.0, 2.0, 2.1, 2.4,
    3.2, 2.8, 2.2, 2.1, 2.2, 2.6, 3.0, 3.8, 4.6, 5.0, 4.4, 2.6,
)  # fmt: skip

#: How much busier each weekday is (Monday first): weekends are when people edit videos.
WEEKDAY_ACTIVITY = (0.92, 0.90, 0.92, 0.95, 1.05, 1.32, 1.30)
WEEKDAY_INSTALLS = (0.90, 0.90, 0.92, 0.96, 1.05, 1.25, 1.22)

#: Hours the demo's local time is ahead of UTC (the app operates in China, UTC+8, no DST).
LOCAL_UTC_OFFSET_HOURS = 8
