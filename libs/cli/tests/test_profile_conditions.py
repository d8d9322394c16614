"""`tailor profile find --where`: conditions read as `trait op value`, bad ones named."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.json_format import MessageToDict

from tailor.common.v1 import common_pb2
from tailor_cli.profiles import ConditionSyntaxError, parse_condition


@pytest.mark.parametrize(
    ("text", "trait", "op", "value"),
    [
        (
            "computed.orders_lifetime >= 10",
            "computed.orders_lifetime",
            common_pb2.COMPARISON_GE,
            10,
        ),
        ("computed.orders_30d>2", "computed.orders_30d", common_pb2.COMPARISON_GT, 2),
        ("demographics.country = GB", "demographics.country", common_pb2.COMPARISON_EQ, "GB"),
        ('demographics.country != "FR"', "demographics.country", common_pb2.COMPARISON_NE, "FR"),
        ("traits.vip == true", "traits.vip", common_pb2.COMPARISON_EQ, True),
        (
            "demographics.country in GB, FR",
            "demographics.country",
            common_pb2.COMPARISON_IN,
            ["GB", "FR"],
        ),
        (
            "demographics.age not in [30, 40]",
            "demographics.age",
            common_pb2.COMPARISON_NOT_IN,
            [30, 40],
        ),
        ("interests contains golf", "interests", common_pb2.COMPARISON_CONTAINS, "golf"),
    ],
)
def test_conditions_with_an_operand_become_trait_conditions(
    text: str, trait: str, op: int, value: object
) -> None:
    condition = parse_condition(text)
    assert (condition.trait, condition.op) == (trait, op)
    assert MessageToDict(condition.value) == value


def test_exists_takes_no_operand_and_within_last_takes_a_duration() -> None:
    exists = parse_condition("demographics.age not exists")
    assert exists.op == common_pb2.COMPARISON_NOT_EXISTS
    assert not exists.HasField("value")
    recent = parse_condition("computed.last_order_at within_last 7d")
    assert recent.op == common_pb2.COMPARISON_WITHIN_LAST
    assert recent.duration.ToTimedelta() == timedelta(days=7)


@pytest.mark.parametrize(
    "text",
    [
        "computed.orders_lifetime",  # no operator
        "computed.orders_lifetime >=",  # no operand
        ">= 10",  # no trait
        "computed.orders_lifetime ~ 10",  # unknown operator
        "computed.orders_lifetime >>= 10",  # unknown operator made of known ones
        "demographics.age exists 3",  # exists takes none
        "computed.last_order_at within_last soon",  # not a duration
        "computed.orders_lifetime = [1, 2]",  # one value expected
        "computed.orders_lifetimein 3",  # word operators need a space before them
    ],
)
def test_bad_syntax_is_refused_with_a_message(text: str) -> None:
    with pytest.raises(ConditionSyntaxError):
        parse_condition(text)
