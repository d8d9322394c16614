"""The text form: the documented examples, canonical printing and error positions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tailor_segment.domain import rules as r
from tailor_segment.domain.rule_text import RuleSyntaxError, parse, render

EXAMPLES: dict[str, r.Rule] = {
    'event "Product Viewed" where product.product_id = "85123A" count >= 1 within 24h': (
        r.EventCondition(
            r.EventMatcher(
                "Product Viewed", (r.PropertyFilter("product.product_id", r.Op.EQ, "85123A"),)
            ),
            r.Aggregate.COUNT,
            r.Op.GE,
            1.0,
            None,
            timedelta(hours=24),
        )
    ),
    'event "Order Completed" sum order.revenue.amount > 100 within 30d': r.EventCondition(
        r.EventMatcher("Order Completed"),
        r.Aggregate.SUM,
        r.Op.GT,
        100.0,
        "order.revenue.amount",
        timedelta(days=30),
    ),
    'sequence "Product Added" then not "Order Completed" within 2h': r.EventSequence(
        r.EventMatcher("Product Added"),
        r.EventMatcher("Order Completed"),
        timedelta(hours=2),
        then_absent=True,
    ),
    'trait computed.orders_lifetime >= 3 and not in segment "vip"': r.All(
        (
            r.TraitComparison("computed.orders_lifetime", r.Op.GE, 3.0),
            r.Not(r.SegmentReference("vip")),
        )
    ),
}


@pytest.mark.parametrize("text", list(EXAMPLES))
def test_documented_examples_parse_and_print_back_exactly(text: str) -> None:
    assert parse(text) == EXAMPLES[text]
    assert render(EXAMPLES[text]) == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("  trait a   =  1.0\n", "trait a = 1"),
        (
            "((trait a = 1)) and (trait b = 2 or trait c = 3)",
            "trait a = 1 and (trait b = 2 or trait c = 3)",
        ),
        (
            "(trait a = 1 and trait b = 2) or trait c = 3",
            "trait a = 1 and trait b = 2 or trait c = 3",
        ),
        (
            "trait a = 1 and (trait b = 2 and trait c = 3)",
            "trait a = 1 and (trait b = 2 and trait c = 3)",
        ),
        ("not (trait a exists or trait b exists)", "not (trait a exists or trait b exists)"),
        ("all(trait a exists)", "all(trait a exists)"),
        ("any(trait a exists, trait b exists)", "trait a exists or trait b exists"),
        ('event "X"', 'event "X" count >= 1'),
        ('absent "Page" within 168h', 'absent "Page" within 7d'),
        ("trait t within last 90s", "trait t within last 90s"),
        ("trait t before last 3600s", "trait t before last 60m"),
        ("trait t before last 120m", "trait t before last 2h"),
        ("trait t within last 28d", "trait t within last 4w"),
        ("trait t within last 15m", "trait t within last 15m"),
        ('trait a = "\\u00e9\\"\\\\\\n"', 'trait a = "é\\"\\\\\\n"'),
        ('trait a in [1, 2.5, true, "x"]', 'trait a in [1, 2.5, true, "x"]'),
        ("trait a not in [1e3]", "trait a not in [1000]"),
        ("trait a = null # no value", "trait a = null"),
        ("trait a != false", "trait a != false"),
        (
            'trait a contains "x" or trait a starts with "y"',
            'trait a contains "x" or trait a starts with "y"',
        ),
        ("trait a not exists", "trait a not exists"),
        ('in cluster "run-7" 3', 'in cluster "run-7" 3'),
        (
            'sequence "Product Added" where product.product_id exists then "Order Completed" '
            "within 2h window 30d correlate on product.product_id, product.variant",
            'sequence "Product Added" where product.product_id exists then "Order Completed" '
            "within 2h window 30d correlate on product.product_id, product.variant",
        ),
        (
            'event "Product Viewed" where product.category = "Home" and context.device_type = '
            '"mobile" count >= 2 and trait a exists',
            'event "Product Viewed" where product.category = "Home" and context.device_type = '
            '"mobile" count >= 2 and trait a exists',
        ),
    ],
)
def test_text_prints_canonically(text: str, canonical: str) -> None:
    assert render(parse(text)) == canonical
    assert parse(canonical) == parse(text)


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    a, b, c = (r.TraitComparison(name, r.Op.EXISTS) for name in "abc")
    assert parse("not trait a exists and trait b exists or trait c exists") == r.Any(
        (r.All((r.Not(a), b)), c)
    )
    assert parse("trait a exists or trait b exists and not trait c exists") == r.Any(
        (a, r.All((b, r.Not(c))))
    )


def test_filters_continue_after_and_until_a_new_rule_starts() -> None:
    rule = parse('event "X" where page.path = "/" and page.title exists and in segment "s"')
    assert isinstance(rule, r.All)
    condition = rule.rules[0]
    assert isinstance(condition, r.EventCondition)
    assert [f.property for f in condition.match.filters] == ["page.path", "page.title"]


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("trait a ~ 1", 1, 9, "unexpected character"),
        ('trait a = 1 and\n  trait b = "open', 2, 13, "unterminated string"),
        ("trait a = 1\ntrait b = 2", 2, 1, "expected and, or"),
        ("trait a =", 1, 10, "expected a string, number"),
        ("trait a within last 5y", 1, 21, "unexpected character"),
        ("trait a within last 3", 1, 21, "expected a duration"),
        ('event "X" count in [1]', 1, 17, "expected = != > >= < or <="),
        ('event "X" sum identify.email > 1', 1, 15, "personal"),
        ('event "Order Completed" sum revenue.amount > 100 within 30d', 1, 29, "event path"),
        ('absent "X" where page.path = "/"', 1, 33, "expected within"),
        ('absent "X" within 401d', 1, 19, "at most 400 days"),
        ('sequence "A" then "B" within 2h window 0s', 1, 40, "positive"),
        ("trait Orders = 1", 1, 7, "trait name"),
        ("trait a in 3", 1, 12, "IN needs a list"),
        ("trait a in [1, null]", 1, 16, "lists hold"),
        ("trait a = 1 and (trait b = 2", 1, 29, "expected )"),
        ('in cluster "r" 1.5', 1, 16, "whole number"),
        ('event "\\x"', 1, 7, "bad escape"),
        ("", 1, 1, "expected a rule"),
        ("not " * 10 + "trait a exists", 1, 41, "nest at most 10"),
    ],
)
def test_errors_point_at_the_offending_token(
    text: str, line: int, column: int, fragment: str
) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse(text)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value.message
    assert fragment in caught.value.message


def test_too_many_children_point_at_the_first_one_too_many() -> None:
    text = " or ".join(f"trait t{i} exists" for i in range(51))
    with pytest.raises(RuleSyntaxError) as caught:
        parse(text)
    assert caught.value.column == text.index("trait t50") + 1
