"""The console's prefilled activity specs validate, and small helpers behave."""

from __future__ import annotations

from yunying.activities.spec import TEMPLATES, parse_spec
from yunying.audience.rules import parse_rule
from yunying.console.pages.activities import EXAMPLES
from yunying.console.pages.audience import EXAMPLE_RULE, parse_rule_text, sparkline


def test_every_template_has_a_valid_example() -> None:
    assert set(EXAMPLES) == set(TEMPLATES)
    for template, text in EXAMPLES.items():
        assert parse_spec(text).template == template


def test_example_rule_and_sparkline() -> None:
    parse_rule(parse_rule_text(EXAMPLE_RULE))
    assert sparkline([1]) == ""
    points = sparkline([1, 3, 2], width=100, height=20).split()
    assert len(points) == 3 and points[0].startswith("0.0,") and points[2].startswith("100.0,")
