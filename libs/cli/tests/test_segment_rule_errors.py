"""`tailor segment`: a refused rule is shown like a compiler error, the caret under the
column the service named, whatever the line holds (tabs, wide characters, several lines)."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from tailor_cli.segments import (
    RuleProblem,
    RuleSource,
    caret_excerpt,
    print_rule_refusal,
    problem_from_violation,
    problem_lines,
    refuses_rule,
)

MISSING_UNIT = 'event "Product Viewed" count >= 1 within 24'


def _caret_column(excerpt: list[str]) -> int:
    """1-based column of the caret in the rendered line under the rule."""
    return excerpt[1].index("^") + 1


def test_the_caret_sits_under_the_column_named() -> None:
    excerpt = caret_excerpt(MISSING_UNIT, 1, 42)

    assert excerpt[0] == MISSING_UNIT
    assert _caret_column(excerpt) == 42
    assert MISSING_UNIT[41:] == "24"  # the caret is under the offending token
    assert excerpt[1].strip() == "^"


def test_the_caret_points_into_the_line_named_of_a_rule_of_several() -> None:
    text = 'trait computed.orders_lifetime >= 3 and\n  not in segmnt "vip"'

    excerpt = caret_excerpt(text, 2, 10)

    assert excerpt[0] == '  not in segmnt "vip"'
    assert excerpt[0][_caret_column(excerpt) - 1 :].startswith("segmnt")


def test_windows_line_endings_do_not_shift_or_show_in_the_excerpt() -> None:
    excerpt = caret_excerpt('event "A"\r\nevent "B" within 2x\r\n', 2, 18)

    assert excerpt == ['event "B" within 2x', " " * 17 + "^"]


def test_a_tab_before_the_column_stays_a_tab_under_it() -> None:
    excerpt = caret_excerpt('\tevent "Product Viewed" within 24', 1, 32)

    assert excerpt[1] == "\t" + " " * 30 + "^"
    assert excerpt[1].expandtabs(8).index("^") == excerpt[0].expandtabs(8).index("24")


def test_wide_characters_before_the_column_take_two_cells() -> None:
    wide = "商品を見た"  # five characters, each two cells wide
    text = f'event "{wide}" cont >= 1'

    excerpt = caret_excerpt(text, 1, text.index("cont") + 1)

    assert excerpt[1] == " " * (text.index("cont") + len(wide)) + "^"


def test_a_column_past_the_end_points_just_after_the_last_character() -> None:
    text = 'event "Product Viewed" count >='

    assert _caret_column(caret_excerpt(text, 1, len(text) + 1)) == len(text) + 1


@pytest.mark.parametrize(("line", "column"), [(0, 1), (2, 1), (1, 0)])
def test_a_position_outside_the_text_gives_no_excerpt(line: int, column: int) -> None:
    assert caret_excerpt('event "A"', line, column) == []


def test_a_violation_reads_as_line_column_and_message() -> None:
    found = problem_from_violation("rule.text", "2:10: expected segment or cluster, found 'x'")

    assert found == RuleProblem(2, 10, "expected segment or cluster, found 'x'")
    assert problem_from_violation("rule.text", "unknown segment 'vip'") == RuleProblem(
        0, 0, "unknown segment 'vip'", "rule.text"
    )


def test_a_problem_prints_its_position_then_the_line_then_the_caret() -> None:
    problem = RuleProblem(1, 42, "expected a duration such as 24h")

    assert problem_lines(RuleSource(MISSING_UNIT), problem) == [
        "1:42: expected a duration such as 24h",
        f"  {MISSING_UNIT}",
        "  " + " " * 41 + "^",
    ]
    from_file = problem_lines(RuleSource(MISSING_UNIT, "rules/vip.rule"), problem)
    assert from_file[0] == "rules/vip.rule:1:42: expected a duration such as 24h"
    assert problem_lines(RuleSource(MISSING_UNIT), RuleProblem(0, 0, "bad", "all")) == ["all: bad"]


def _invalid_argument(field: str, description: str) -> grpc.aio.AioRpcError:
    """An INVALID_ARGUMENT as a Tailor service sends it: a google.rpc.Status in the trailers
    with a BadRequest naming the field."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field, description=description, reason="RULE_SYNTAX"
                )
            ]
        )
    )
    status = status_pb2.Status(code=3, message="rule text: refused", details=[detail])
    return grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details=status.message,
    )


def test_a_refused_rule_is_printed_with_its_caret_even_past_the_terminal_width(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long_rule = (
        'event "Product Viewed" where product.product_id = "85123A" ' + "count >= 1 within 24"
    )
    error = _invalid_argument("rule.text", f"1:{len(long_rule) - 1}: expected a duration")

    assert refuses_rule(error)
    print_rule_refusal(error, RuleSource(long_rule), as_json=False)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "INVALID_ARGUMENT: rule text: refused"
    assert lines[1] == f"1:{len(long_rule) - 1}: expected a duration"
    assert lines[2] == f"  {long_rule}"  # one line, however wide
    assert lines[3].index("^") == lines[2].index("24")


def test_a_refused_rule_as_json_carries_the_problems(capsys: pytest.CaptureFixture[str]) -> None:
    error = _invalid_argument("rule.text", "1:42: expected a duration")

    print_rule_refusal(error, RuleSource(MISSING_UNIT), as_json=True)

    printed = json.loads(capsys.readouterr().out)
    assert printed["error"] == "INVALID_ARGUMENT"
    assert printed["problems"] == [
        {"line": 1, "column": 42, "message": "expected a duration", "path": ""}
    ]


def test_only_violations_about_the_rule_count_as_a_refused_rule() -> None:
    assert not refuses_rule(_invalid_argument("segment_id", "1..64 characters"))
