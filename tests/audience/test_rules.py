"""Rule trees: validation naming the field, and membership from the compiled SQL on DuckDB and
ClickHouse equal to a plain-Python evaluation of the same rules over the same generated data."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.audience.conftest import (
    BANDS,
    CITIES,
    EVENTS,
    NOW,
    PLANS,
    RFM_LABELS,
    STAGE_LABELS,
    TZ,
    Loaded,
    reference_members,
)
from yunying.analytics.common import Sql
from yunying.audience.rules import (
    InvalidRule,
    compile_batch,
    inline_references,
    matching_persons,
    matching_persons_batch,
    parse_rule,
    references,
    rule_json,
    rule_sql,
)

EXAMPLES: list[dict[str, Any]] = [
    {"type": "property", "name": "city", "op": "eq", "value": "北京"},
    {"type": "property", "name": "city", "op": "neq", "value": "北京"},
    {"type": "property", "name": "city", "op": "in", "value": ["上海", "深圳"]},
    {"type": "property", "name": "city", "op": "not_in", "value": ["上海", "深圳"]},
    {"type": "property", "name": "age", "op": "gte", "value": 30},
    {"type": "property", "name": "score", "op": "lt", "value": 5},
    {"type": "property", "name": "score", "op": "eq", "value": 2.25},
    {"type": "property", "name": "vip", "op": "eq", "value": True},
    {"type": "property", "name": "nickname", "op": "contains", "value": "video"},
    {"type": "property", "name": "hobbies", "op": "is_set"},
    {"type": "property", "name": "city", "op": "is_not_set"},
    {"type": "event", "event": "edit_video"},
    {"type": "event", "event": "edit_video", "did": False},
    {"type": "event", "event": "edit_video", "count": "at_least", "times": 3,
     "window": {"last_days": 14}},
    {"type": "event", "event": "export_video", "count": "exactly", "times": 2,
     "window": {"from": "2024-03-01", "to": "2024-03-20"}},
    {"type": "event", "event": None, "count": "at_most", "times": 2, "window": {"last_days": 7}},
    {"type": "event", "event": "edit_video", "times": 1,
     "filters": [{"field": "plan", "op": "eq", "value": "pro"},
                 {"field": {"kind": "property", "name": "duration_s"}, "op": "gt", "value": 60}]},
    {"type": "event", "event": "purchase_membership", "filters": [
        {"field": "channel", "op": "in", "value": ["douyin", "zhihu"]}]},
    {"type": "event", "event": "sign_up", "window": {"before": "2024-03-10"}},
    {"type": "event", "event": "sign_up", "window": {"after": "2024-03-10"}},
    {"type": "first_time", "event": "sign_up", "window": {"last_days": 10}},
    {"type": "first_time", "event": "edit_video", "window": {"before": "2024-03-05"}},
    {"type": "last_time", "event": "edit_video", "window": {"after": "2024-03-20"}},
    {"type": "last_time", "event": None, "window": {"from": "2024-03-10", "to": "2024-03-15"}},
    {"type": "aggregate", "event": "purchase_membership", "math": "sum", "op": "gte",
     "value": 50, "window": {"last_days": 30}},
    {"type": "aggregate", "event": "purchase_membership", "math": "sum", "op": "lt", "value": 10},
    {"type": "aggregate", "event": "purchase_membership", "math": "avg", "op": "gt", "value": 20},
    {"type": "aggregate", "event": "edit_video", "math": "max", "field": "duration_s",
     "op": "gte", "value": 200, "window": {"last_days": 20}},
    {"type": "aggregate", "event": None, "math": "min", "field": "duration_s", "op": "lte",
     "value": 10},
    {"type": "stage", "in": ["churned", "silent"]},
    {"type": "rfm", "in": ["重要价值客户"]},
    {"type": "clv", "band": "churn_risk", "in": ["high"]},
    {"type": "clv", "band": "value_band", "in": ["high", "medium"]},
    {"type": "tag", "name": "剪辑"},
    {"type": "segment", "id": 901},
    {"type": "not", "rule": {"type": "segment", "id": 902}},
    {"type": "and", "rules": [
        {"type": "property", "name": "city", "op": "eq", "value": "北京"},
        {"type": "not", "rule": {"type": "first_time", "event": "sign_up",
                                 "window": {"last_days": 30}}},
        {"type": "or", "rules": [
            {"type": "tag", "name": "heavy"},
            {"type": "aggregate", "event": "purchase_membership", "value": 30},
        ]},
    ]},
]  # fmt: skip


@pytest.mark.parametrize("rule", EXAMPLES, ids=lambda r: r["type"])
def test_examples_match_the_reference_on_both_engines(loaded: Loaded, rule: dict[str, Any]) -> None:
    want = reference_members(loaded.world, rule)
    parsed = parse_rule(rule)
    for rt, pid in loaded.both():
        assert matching_persons(rt.store, pid, parsed, TZ, NOW) == want, rt.store.dialect


def test_examples_are_not_trivial(loaded: Loaded) -> None:
    """Most examples pick some persons but not all (so agreement means something)."""
    total = len(loaded.world.persons)
    sizes = [len(reference_members(loaded.world, r)) for r in EXAMPLES]
    assert sum(1 for s in sizes if 0 < s < total) >= len(EXAMPLES) - 2, sizes


def test_now_moves_relative_windows(loaded: Loaded) -> None:
    rule = {"type": "event", "event": "edit_video", "window": {"last_days": 3}}
    for now in (NOW - timedelta(days=5), NOW + timedelta(hours=20)):
        want = reference_members(loaded.world, rule, now)
        for rt, pid in loaded.both():
            assert matching_persons(rt.store, pid, parse_rule(rule), TZ, now) == want


def test_one_query_one_events_scan(loaded: Loaded) -> None:
    rule = parse_rule(EXAMPLES[-1])
    for rt, pid in loaded.both():
        sql = rule_sql(rt.store, pid, rule, TZ, NOW)
        assert sql.count("raw_events") == 1, sql
        assert sql.lower().count("group by") == 2


def test_user_text_is_a_literal(loaded: Loaded) -> None:
    """Quotes and SQL in names and values stay data."""
    evil = "x' OR 1=1 --"
    rule = {"type": "and", "rules": [
        {"type": "property", "name": evil, "op": "neq", "value": evil},
        {"type": "event", "event": evil, "did": False,
         "filters": [{"field": evil, "op": "eq", "value": evil}]},
        {"type": "not", "rule": {"type": "tag", "name": "a.b-c"}},
    ]}  # fmt: skip
    want = reference_members(loaded.world, rule)
    for rt, pid in loaded.both():
        assert matching_persons(rt.store, pid, parse_rule(rule), TZ, NOW) == want


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "field", "text"),
    [
        ({"type": "event", "event": "x", "times": -1}, "rules.times", "greater than or equal"),
        (
            {
                "type": "and",
                "rules": [
                    {"type": "tag", "name": "ok"},
                    {
                        "type": "event",
                        "event": "x",
                        "window": {"last_days": 3, "from": "2024-01-01"},
                    },
                ],
            },
            "rules.rules.1.window",
            "either last_days",
        ),
        ({"type": "nope"}, "rules", "unknown rule type"),
        ({"rules": []}, "rules", "needs a 'type'"),
        ({"type": "not", "rule": {"type": "stage", "in": ["zombie"]}}, "rules.rule.in.0", "new"),
        ({"type": "property", "name": "age", "op": "gt", "value": "old"}, "rules", "number"),
        (
            {
                "type": "event",
                "event": "x",
                "filters": [{"field": {"kind": "column", "name": "nope"}}],
            },
            "rules.filters.0.field",
            "unknown column",
        ),
        (
            {"type": "event", "event": "x", "window": {"from": "2024-02-01", "to": "2024-01-01"}},
            "rules.window",
            "empty",
        ),
        (
            {"type": "aggregate", "event": "x", "field": "channel", "value": 1},
            "rules",
            "not numeric",
        ),
        ({"type": "segment", "id": 0}, "rules.id", "greater than"),
        ({"type": "tag", "name": "a b"}, "rules.name", "pattern"),
        ({"type": "first_time", "event": "x"}, "rules.window", "required"),
    ],
)
def test_invalid_rules_name_the_field(rule: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(InvalidRule) as info:
        parse_rule(rule)
    assert info.value.field == field, info.value.errors
    assert text in str(info.value)


def test_round_trip_and_references() -> None:
    rule = parse_rule(EXAMPLES[-1])
    assert parse_rule(rule_json(rule)) == rule
    both = parse_rule({"type": "or", "rules": [{"type": "segment", "id": 3},
                                                {"type": "tag", "name": "vip"}]})  # fmt: skip
    assert references(both) == ({3}, {"vip"})
    assert rule_json(parse_rule({"type": "stage", "in": ["new"]})) == {
        "type": "stage",
        "in": ["new"],
    }


def test_depth_is_bounded() -> None:
    rule: dict[str, Any] = {"type": "tag", "name": "x"}
    for _ in range(40):
        rule = {"type": "not", "rule": rule}
    with pytest.raises(InvalidRule, match="levels deep"):
        parse_rule(rule)


# -- random trees ----------------------------------------------------------------------------------

DAY = st.dates(min_value=datetime(2024, 2, 10).date(), max_value=datetime(2024, 3, 28).date())


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any] | None:
    kind = draw(st.sampled_from(["none", "last", "range", "after", "before"]))
    if kind == "none":
        return None
    if kind == "last":
        return {"last_days": draw(st.integers(1, 40))}
    a, b = sorted([draw(DAY), draw(DAY)])
    if kind == "range":
        return {"from": a.isoformat(), "to": b.isoformat()}
    return {kind: a.isoformat()}


def event_filters() -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.one_of(
        st.builds(lambda v: {"field": "plan", "op": "eq", "value": v}, st.sampled_from(PLANS)),
        st.builds(
            lambda v: {"field": "duration_s", "op": "gte", "value": v}, st.integers(0, 300)
        ),  # fmt: skip
        st.just({"field": "ok", "op": "is_set"}),
        st.builds(
            lambda v: {"field": "channel", "op": "neq", "value": v},
            st.sampled_from(["douyin", "zhihu"]),
        ),  # fmt: skip
    )
    return st.lists(one, max_size=2)


def leaves() -> st.SearchStrategy[dict[str, Any]]:
    event = st.sampled_from([*EVENTS, None])
    return st.one_of(
        st.builds(lambda c: {"type": "property", "name": "city", "op": "eq", "value": c},
                  st.sampled_from(CITIES)),  # fmt: skip
        st.builds(lambda op, v: {"type": "property", "name": "age", "op": op, "value": v},
                  st.sampled_from(["gt", "lte"]), st.integers(15, 60)),  # fmt: skip
        st.builds(
            lambda e, f, c, n, w, d: {"type": "event", "event": e, "filters": f, "count": c,
                                      "times": n, "did": d, **({"window": w} if w else {})},
            event, event_filters(), st.sampled_from(["at_least", "at_most", "exactly"]),
            st.integers(0, 4), windows(), st.booleans(),
        ),  # fmt: skip
        st.builds(
            lambda t, e, f, w: {"type": t, "event": e, "filters": f, "window": w},
            st.sampled_from(["first_time", "last_time"]), event, event_filters(),
            windows().filter(lambda w: w is not None),
        ),  # fmt: skip
        st.builds(
            lambda m, op, v, w: {"type": "aggregate", "event": "purchase_membership", "math": m,
                                 "op": op, "value": v, **({"window": w} if w else {})},
            st.sampled_from(["sum", "avg", "min", "max"]), st.sampled_from(["gte", "lt", "eq"]),
            st.sampled_from([0, 6, 12.5, 30, 60]), windows(),
        ),  # fmt: skip
        st.builds(lambda v: {"type": "stage", "in": v},
                  st.lists(st.sampled_from(STAGE_LABELS), min_size=1, max_size=3)),
        st.builds(lambda v: {"type": "rfm", "in": [v]}, st.sampled_from(RFM_LABELS)),
        st.builds(lambda b, v: {"type": "clv", "band": b, "in": [v]},
                  st.sampled_from(["churn_risk", "value_band"]), st.sampled_from(BANDS)),
        st.builds(lambda n: {"type": "tag", "name": n}, st.sampled_from(["heavy", "剪辑"])),
        st.builds(lambda i: {"type": "segment", "id": i}, st.sampled_from([901, 902])),
    )  # fmt: skip


trees = st.recursive(
    leaves(),
    lambda kids: st.one_of(
        st.builds(lambda rs: {"type": "and", "rules": rs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda rs: {"type": "or", "rules": rs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda r: {"type": "not", "rule": r}, kids),
    ),
    max_leaves=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rule=trees)
def test_random_trees_match_the_reference(loaded: Loaded, rule: dict[str, Any]) -> None:
    want = reference_members(loaded.world, rule)
    parsed = parse_rule(rule)
    for rt, pid in loaded.both():
        assert matching_persons(rt.store, pid, parsed, TZ, NOW) == want, rt.store.dialect


# -- batches: many trees in one query --------------------------------------------------------------


def test_examples_together_match_each_reference(loaded: Loaded) -> None:
    """All examples computed by ONE query (one events scan) give each one's reference."""
    want = [reference_members(loaded.world, r) for r in EXAMPLES]
    parsed = [parse_rule(r) for r in EXAMPLES]
    for rt, pid in loaded.both():
        sql = Sql(rt.store.dialect).render(compile_batch(rt.store, pid, parsed, TZ, NOW))
        assert sql.count("raw_events") == 1, sql
        got = matching_persons_batch(rt.store, pid, parsed, TZ, NOW)
        for rule, g, w in zip(EXAMPLES, got, want, strict=True):
            assert g == w, (rt.store.dialect, rule)


def test_inlined_references_read_the_batch_not_the_stored_values(loaded: Loaded) -> None:
    """A tree reading tag ``heavy`` / segment 901, with their definitions inlined, matches the
    reference where the stored ``heavy`` / 901 members are replaced by those definitions'."""
    heavy = {"type": "event", "event": "edit_video", "times": 3}
    s901 = {"type": "and", "rules": [{"type": "tag", "name": "heavy"},
                                     {"type": "property", "name": "city", "op": "eq",
                                      "value": "北京"}]}  # fmt: skip
    reader = {"type": "or", "rules": [{"type": "segment", "id": 901},
                                      {"type": "not", "rule": {"type": "tag", "name": "heavy"}},
                                      {"type": "tag", "name": "剪辑"}]}  # fmt: skip
    defs = {("tag", "heavy"): parse_rule(heavy), ("segment", "901"): parse_rule(s901)}
    inlined = inline_references(parse_rule(reader), defs)
    expanded = {"type": "or", "rules": [
        {"type": "and", "rules": [heavy, s901["rules"][1]]},  # type: ignore[index]
        {"type": "not", "rule": heavy}, {"type": "tag", "name": "剪辑"}]}  # fmt: skip
    assert inlined == parse_rule(expanded)
    want = reference_members(loaded.world, expanded)
    for rt, pid in loaded.both():
        assert matching_persons_batch(rt.store, pid, [inlined], TZ, NOW) == [want]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rules=st.lists(trees, min_size=2, max_size=8))
def test_random_trees_together_match_each_reference(
    loaded: Loaded, rules: list[dict[str, Any]]
) -> None:
    want = [reference_members(loaded.world, r) for r in rules]
    parsed = [parse_rule(r) for r in rules]
    for rt, pid in loaded.both():
        got = matching_persons_batch(rt.store, pid, parsed, TZ, NOW)
        assert got == want, rt.store.dialect
