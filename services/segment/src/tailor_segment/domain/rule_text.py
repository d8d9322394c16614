"""The readable text form of segment rules: ``parse`` and its inverse ``render``.

Examples (rules.proto's header; a sum names a path of the customer event)::

    event "Product Viewed" where product.product_id = "85123A" count >= 1 within 24h
    event "Order Completed" sum order.revenue.amount > 100 within 30d
    sequence "Product Added" then not "Order Completed" within 2h
    trait computed.orders_lifetime >= 3 and not in segment "vip"

Grammar (``not`` binds tighter than ``and``, ``and`` tighter than ``or``)::

    rule       := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" rule ")" | ("all" | "any") "(" rule ("," rule)* ")"
                | "trait" NAME comparison
                | "event" matcher [("count" | "sum" PATH) CMP NUMBER] ["within" DURATION]
                | "absent" matcher "within" DURATION
                | "sequence" matcher "then" ["not"] matcher "within" DURATION
                  ["window" DURATION] ["correlate" "on" PATH ("," PATH)*]
                | "in" "segment" STRING | "in" "cluster" STRING INTEGER
    matcher    := STRING ["where" PATH comparison ("and" PATH comparison)*]
    comparison := CMP value | ["not"] "in" list | "contains" value | "starts" "with" value
                | ["not"] "exists" | ("within" | "before") "last" DURATION
    CMP        := "=" | "!=" | ">" | ">=" | "<" | "<="

``event "X"`` alone means ``count >= 1``. Durations are whole numbers of s, m, h, d or w;
``#`` starts a comment. A rule that parses but breaks a limit of the protobuf form is
reported at the token of the offending part.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from tailor_core.errors import InvalidArgument
from tailor_segment.domain.rules import (
    MAX_FILTERS,
    MAX_OPERAND_DURATION,
    Aggregate,
    All,
    Any,
    ClusterAssignment,
    EventAbsence,
    EventCondition,
    EventMatcher,
    EventSequence,
    Not,
    Op,
    Operand,
    PropertyFilter,
    Rule,
    SegmentReference,
    TraitComparison,
    validate,
)

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_SYMBOL_OPS = {"=": Op.EQ, "!=": Op.NE, ">": Op.GT, ">=": Op.GE, "<": Op.LT, "<=": Op.LE}
_OP_SYMBOLS = {op: symbol for symbol, op in _SYMBOL_OPS.items()}
_RULE_STARTS = frozenset({"not", "all", "any", "trait", "event", "absent", "sequence", "in"})
#: Parentheses deeper than this are refused before Python's recursion limit is near; the
#: rule's own nesting limit (rules.MAX_DEPTH) is checked afterwards.
_MAX_PARSE_NESTING = 100
_MAX_INT32 = 2**31 - 1

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*")
    |(?P<duration>\d+[smhdw](?![A-Za-z0-9_.]))
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.]))
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    |(?P<symbol>!=|>=|<=|[=<>()\[\],])
    """,
    re.VERBOSE,
)


class RuleSyntaxError(InvalidArgument):
    """A rule text that cannot be read; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}", reason="RULE_SYNTAX")
        self.description = message
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, duration, number, word, symbol, end
    text: str
    value: str | float | timedelta
    line: int
    column: int


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    offset = 0
    while offset < len(text):
        line, column = _position(text, offset)
        matched = _TOKEN.match(text, offset)
        if matched is None:
            message = "unterminated string" if text[offset] == '"' else "unexpected character"
            raise RuleSyntaxError(message, line, column)
        kind = matched.lastgroup or ""
        lexeme = matched.group()
        offset = matched.end()
        if kind == "space":
            continue
        value: str | float | timedelta = lexeme
        if kind == "string":
            value = _string_value(lexeme, line, column)
        elif kind == "duration":
            seconds = int(lexeme[:-1]) * _UNIT_SECONDS[lexeme[-1]]
            if seconds > MAX_OPERAND_DURATION.total_seconds():
                raise RuleSyntaxError("duration too long", line, column)
            value = timedelta(seconds=seconds)
        elif kind == "number":
            value = float(lexeme)
            if not math.isfinite(value):
                raise RuleSyntaxError("number out of range", line, column)
        found.append(_Token(kind, lexeme, value, line, column))
    line, column = _position(text, len(text))
    found.append(_Token("end", "", "", line, column))
    return found


def _string_value(lexeme: str, line: int, column: int) -> str:
    try:
        value = json.loads(lexeme)
        value.encode("utf-8")  # a lone surrogate escape cannot travel in protobuf
    except (ValueError, UnicodeEncodeError):
        raise RuleSyntaxError("bad escape or control character in string", line, column) from None
    assert isinstance(value, str)
    return value


#: Where each part of a parsed rule was written: protobuf-style paths relative to the node
#: ("" is the node itself, ".event.window" its window), so that a validation problem can be
#: reported at its token.
_Spans = dict[str, _Token]


def _nest(prefix: str, spans: _Spans) -> _Spans:
    return {prefix + key: token for key, token in spans.items()}


def _leaf(kind: str, spans: _Spans) -> _Spans:
    """A leaf's spans under its kind (".event"), its first token staying the node's."""
    return {"": spans[""], **_nest(kind, spans)}


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._nesting = 0

    # --- token helpers ---

    def peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self._index = min(self._index + 1, len(self._tokens) - 1)
        return token

    def at(self, text: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind in ("word", "symbol") and token.text == text

    def fail(self, message: str, token: _Token | None = None) -> RuleSyntaxError:
        token = token or self.peek()
        found = "end of text" if token.kind == "end" else repr(token.text)
        return RuleSyntaxError(f"{message}, found {found}", token.line, token.column)

    def expect(self, text: str, message: str) -> _Token:
        if not self.at(text):
            raise self.fail(message)
        return self.advance()

    def expect_kind(self, kind: str, message: str) -> _Token:
        if self.peek().kind != kind:
            raise self.fail(message)
        return self.advance()

    def expect_end(self) -> None:
        if self.peek().kind != "end":
            raise self.fail("expected and, or, or the end of the rule")

    # --- boolean structure ---

    def rule(self) -> tuple[Rule, _Spans]:
        return self._chain("or", self._term, Any, ".any")

    def _term(self) -> tuple[Rule, _Spans]:
        return self._chain("and", self._factor, All, ".all")

    def _chain(
        self,
        keyword: str,
        operand: Callable[[], tuple[Rule, _Spans]],
        build: Callable[[tuple[Rule, ...]], Rule],
        field: str,
    ) -> tuple[Rule, _Spans]:
        parts = [operand()]
        while self.at(keyword):
            self.advance()
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        return build(tuple(rule for rule, _ in parts)), _list_spans(field, parts)

    def _factor(self) -> tuple[Rule, _Spans]:
        self._nesting += 1
        if self._nesting > _MAX_PARSE_NESTING:
            raise self.fail("rule nested too deeply")
        try:
            return self._factor_inner()
        finally:
            self._nesting -= 1

    def _factor_inner(self) -> tuple[Rule, _Spans]:
        token = self.peek()
        if self.at("not"):
            self.advance()
            child, spans = self._factor()
            return Not(child), {"": token, **_nest(".not", spans)}
        if self.at("("):
            self.advance()
            rule, spans = self.rule()
            self.expect(")", "expected )")
            return rule, spans
        if (self.at("all") or self.at("any")) and self.at("(", 1):
            return self._explicit_list()
        keyword = token.text if token.kind == "word" else ""
        if keyword == "trait":
            return self._trait()
        if keyword == "event":
            return self._event()
        if keyword == "absent":
            return self._absent()
        if keyword == "sequence":
            return self._sequence()
        if keyword == "in":
            return self._membership()
        raise self.fail("expected a rule (trait, event, absent, sequence, in, not or ()")

    def _explicit_list(self) -> tuple[Rule, _Spans]:
        keyword = self.advance().text
        self.advance()  # (
        parts = [self.rule()]
        while self.at(","):
            self.advance()
            parts.append(self.rule())
        self.expect(")", "expected , or )")
        rules = tuple(rule for rule, _ in parts)
        field = f".{keyword}"
        return (All(rules) if keyword == "all" else Any(rules)), _list_spans(field, parts)

    # --- leaves ---

    def _trait(self) -> tuple[Rule, _Spans]:
        start = self.advance()
        name = self.expect_kind("word", "expected a trait name")
        op, value, duration, spans = self._comparison()
        spans = {"": start, ".trait": name, **spans}
        return TraitComparison(name.text, op, value, duration), _leaf(".trait", spans)

    def _event(self) -> tuple[Rule, _Spans]:
        start = self.advance()
        match, match_spans = self._matcher()
        spans: _Spans = {"": start, **_nest(".match", match_spans)}
        aggregate, prop, op, threshold = Aggregate.COUNT, None, Op.GE, 1.0
        if self.at("count") or self.at("sum"):
            spans[".aggregate"] = keyword = self.advance()
            if keyword.text == "sum":
                spans[".property"] = path = self.expect_kind("word", "expected the summed path")
                aggregate, prop = Aggregate.SUM, path.text
            symbol = self.peek()
            if symbol.kind != "symbol" or symbol.text not in _SYMBOL_OPS:
                raise self.fail("expected = != > >= < or <=")
            spans[".op"] = self.advance()
            op = _SYMBOL_OPS[symbol.text]
            spans[".threshold"] = number = self.expect_kind("number", "expected a number")
            assert isinstance(number.value, float)
            threshold = number.value
        window = None
        if self.at("within"):
            self.advance()
            spans[".window"] = token = self._duration()
            assert isinstance(token.value, timedelta)
            window = token.value
        rule = EventCondition(match, aggregate, op, threshold, prop, window)
        return rule, _leaf(".event", spans)

    def _absent(self) -> tuple[Rule, _Spans]:
        start = self.advance()
        match, match_spans = self._matcher()
        self.expect("within", "expected within and the window of the absence")
        window = self._duration()
        assert isinstance(window.value, timedelta)
        spans = {"": start, ".window": window, **_nest(".match", match_spans)}
        return EventAbsence(match, window.value), _leaf(".absence", spans)

    def _sequence(self) -> tuple[Rule, _Spans]:
        start = self.advance()
        first, first_spans = self._matcher()
        self.expect("then", "expected then")
        then_absent = self.at("not")
        if then_absent:
            self.advance()
        then, then_spans = self._matcher()
        self.expect("within", "expected within and the time allowed")
        within = self._duration()
        assert isinstance(within.value, timedelta)
        spans: _Spans = {"": start, ".within": within}
        spans.update(_nest(".first", first_spans) | _nest(".then", then_spans))
        window = None
        if self.at("window"):
            self.advance()
            spans[".window"] = token = self._duration()
            assert isinstance(token.value, timedelta)
            window = token.value
        correlate: list[str] = []
        if self.at("correlate"):
            self.advance()
            self.expect("on", "expected on")
            while True:
                path = self.expect_kind("word", "expected a path to correlate on")
                spans[f".correlate_on[{len(correlate)}]"] = path
                correlate.append(path.text)
                if not self.at(","):
                    break
                self.advance()
        rule = EventSequence(first, then, within.value, then_absent, window, tuple(correlate))
        return rule, _leaf(".sequence", spans)

    def _membership(self) -> tuple[Rule, _Spans]:
        start = self.advance()
        if self.at("segment"):
            self.advance()
            segment = self.expect_kind("string", "expected the segment id in double quotes")
            spans = {"": start, ".segment_id": segment}
            return SegmentReference(str(segment.value)), _leaf(".segment", spans)
        self.expect("cluster", "expected segment or cluster")
        run = self.expect_kind("string", "expected the discovery run id in double quotes")
        index = self.peek()
        if index.kind != "number" or not re.fullmatch(r"\d+", index.text):
            raise self.fail("expected the cluster index, a whole number")
        if int(index.text) > _MAX_INT32:
            raise self.fail("cluster index too large")
        self.advance()
        spans = {"": start, ".run_id": run, ".cluster_id": index}
        return ClusterAssignment(str(run.value), int(index.text)), _leaf(".cluster", spans)

    # --- parts ---

    def _matcher(self) -> tuple[EventMatcher, _Spans]:
        name = self.expect_kind("string", "expected the event name in double quotes")
        spans: _Spans = {"": name, ".event": name}
        filters: list[PropertyFilter] = []
        if self.at("where"):
            self.advance()
            while True:
                path = self.expect_kind("word", "expected a path such as product.product_id")
                op, value, duration, comparison_spans = self._comparison()
                prefix = f".filters[{len(filters)}]"
                spans.update(_nest(prefix, {"": path, ".property": path, **comparison_spans}))
                if len(filters) == MAX_FILTERS:
                    spans[".filters"] = path
                filters.append(PropertyFilter(path.text, op, value, duration))
                # "and" continues the filters unless a new rule starts after it.
                next_word = self.peek(1)
                if not (
                    self.at("and")
                    and next_word.kind == "word"
                    and next_word.text not in _RULE_STARTS
                ):
                    break
                self.advance()
        return EventMatcher(str(name.value), tuple(filters)), spans

    def _duration(self) -> _Token:
        return self.expect_kind("duration", "expected a duration such as 90s, 15m, 2h, 7d or 4w")

    def _comparison(self) -> tuple[Op, Operand, timedelta | None, _Spans]:
        token = self.peek()
        spans: _Spans = {".op": token}
        if token.kind == "symbol" and token.text in _SYMBOL_OPS:
            self.advance()
            return _SYMBOL_OPS[token.text], self._operand(spans), None, spans
        if self.at("not"):
            self.advance()
            if self.at("exists"):
                self.advance()
                return Op.NOT_EXISTS, None, None, spans
            self.expect("in", "expected in or exists after not")
            return Op.NOT_IN, self._operand(spans), None, spans
        keyword = token.text if token.kind == "word" else ""
        if keyword in ("in", "contains"):
            self.advance()
            op = Op.IN if keyword == "in" else Op.CONTAINS
            return op, self._operand(spans), None, spans
        if keyword == "starts":
            self.advance()
            self.expect("with", "expected with")
            return Op.STARTS_WITH, self._operand(spans), None, spans
        if keyword == "exists":
            self.advance()
            return Op.EXISTS, None, None, spans
        if keyword in ("within", "before"):
            self.advance()
            self.expect("last", "expected last")
            spans[".duration"] = duration = self._duration()
            assert isinstance(duration.value, timedelta)
            op = Op.WITHIN_LAST if keyword == "within" else Op.BEFORE_LAST
            return op, None, duration.value, spans
        raise self.fail(
            "expected an operator (= != > >= < <= in, not in, contains, starts with, exists, "
            "not exists, within last, before last)"
        )

    def _operand(self, spans: _Spans) -> Operand:
        spans[".value"] = self.peek()
        if not self.at("["):
            return self._scalar()
        self.advance()
        items: list[str | float | bool] = []
        while not self.at("]"):
            if items:
                self.expect(",", "expected , or ]")
            spans[f".value.list_value.values[{len(items)}]"] = self.peek()
            item = self._scalar()
            if item is None:
                raise self.fail(
                    "lists hold strings, numbers and booleans", self._tokens[self._index - 1]
                )
            items.append(item)
        self.advance()
        return tuple(items)

    def _scalar(self) -> str | float | bool | None:
        token = self.peek()
        if token.kind in ("string", "number"):
            self.advance()
            assert isinstance(token.value, str | float)
            return token.value
        literals: dict[str, bool | None] = {"true": True, "false": False, "null": None}
        if token.kind == "word" and token.text in literals:
            self.advance()
            return literals[token.text]
        raise self.fail("expected a string, number, true, false or null")


def _list_spans(field: str, parts: list[tuple[Rule, _Spans]]) -> _Spans:
    first = parts[0][1][""]
    spans: _Spans = {"": first, f"{field}.rules": parts[min(len(parts) - 1, 50)][1][""]}
    for index, (_, part_spans) in enumerate(parts):
        spans.update(_nest(f"{field}.rules[{index}]", part_spans))
    return spans


def _token_at(path: str, spans: _Spans) -> _Token:
    """The token written for ``path``, or for its nearest enclosing part."""
    while path not in spans and path:
        path = path[: path.rindex("[")] if path.endswith("]") else path[: path.rfind(".")]
    return spans[path]


def parse(text: str) -> Rule:
    """The rule written in ``text``, or RuleSyntaxError at the offending token."""
    parser = _Parser(_tokens(text))
    rule, spans = parser.rule()
    parser.expect_end()
    try:
        validate(rule, path="")
    except InvalidArgument as problem:
        first = problem.field_violations[0]
        token = _token_at(first.field, spans)
        part = first.field.rsplit(".", 1)[-1] or "rule"
        raise RuleSyntaxError(f"{part}: {first.description}", token.line, token.column) from None
    return rule


# --- rendering ---------------------------------------------------------------------------


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def format_operand(value: Operand) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(format_operand(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return _number(value)


def format_duration(value: timedelta) -> str:
    """The largest unit giving a whole count of at least 2 (so 24h, 7d and 4w read as
    people write them), else the largest whole one (1s)."""
    seconds = int(value.total_seconds())
    if seconds != value.total_seconds() or seconds <= 0:
        raise ValueError(f"{value} is not a positive whole number of seconds")
    whole = [(seconds // size, unit) for unit, size in _UNIT_SECONDS.items() if seconds % size == 0]
    count, unit = next(((c, u) for c, u in whole if c >= 2), whole[0])
    return f"{count}{unit}"


def format_comparison(op: Op, value: Operand, duration: timedelta | None) -> str:
    if op in _OP_SYMBOLS:
        return f"{_OP_SYMBOLS[op]} {format_operand(value)}"
    if op in (Op.WITHIN_LAST, Op.BEFORE_LAST):
        assert duration is not None
        word = "within" if op == Op.WITHIN_LAST else "before"
        return f"{word} last {format_duration(duration)}"
    words = {
        Op.IN: "in",
        Op.NOT_IN: "not in",
        Op.CONTAINS: "contains",
        Op.STARTS_WITH: "starts with",
        Op.EXISTS: "exists",
        Op.NOT_EXISTS: "not exists",
    }
    if op in (Op.EXISTS, Op.NOT_EXISTS):
        return words[op]
    return f"{words[op]} {format_operand(value)}"


def _matcher_text(matcher: EventMatcher) -> str:
    text = json.dumps(matcher.event, ensure_ascii=False)
    if matcher.filters:
        conditions = (
            f"{f.property} {format_comparison(f.op, f.value, f.duration)}" for f in matcher.filters
        )
        text += " where " + " and ".join(conditions)
    return text


def _is_chain(rule: Rule) -> bool:
    return isinstance(rule, All | Any) and len(rule.rules) > 1


def _grouped(rule: Rule, needs_parentheses: bool) -> str:
    return f"({render(rule)})" if needs_parentheses else render(rule)


def render(rule: Rule) -> str:
    """The canonical text of ``rule``: ``parse(render(rule)) == rule``."""
    match rule:
        case All(rules=children) | Any(rules=children) if len(children) == 1:
            keyword = "all" if isinstance(rule, All) else "any"
            return f"{keyword}({render(children[0])})"
        case All(rules=children):
            return " and ".join(_grouped(child, _is_chain(child)) for child in children)
        case Any(rules=children):
            return " or ".join(
                _grouped(child, _is_chain(child) and isinstance(child, Any)) for child in children
            )
        case Not(rule=child):
            return "not " + _grouped(child, _is_chain(child))
        case TraitComparison():
            return f"trait {rule.trait} {format_comparison(rule.op, rule.value, rule.duration)}"
        case EventCondition():
            aggregate = "count" if rule.aggregate == Aggregate.COUNT else f"sum {rule.property}"
            text = f"event {_matcher_text(rule.match)} {aggregate} "
            text += f"{_OP_SYMBOLS[rule.op]} {_number(rule.threshold)}"
            if rule.window is not None:
                text += f" within {format_duration(rule.window)}"
            return text
        case EventAbsence():
            return f"absent {_matcher_text(rule.match)} within {format_duration(rule.window)}"
        case EventSequence():
            then = ("not " if rule.then_absent else "") + _matcher_text(rule.then)
            text = f"sequence {_matcher_text(rule.first)} then {then}"
            text += f" within {format_duration(rule.within)}"
            if rule.window is not None:
                text += f" window {format_duration(rule.window)}"
            if rule.correlate_on:
                text += " correlate on " + ", ".join(rule.correlate_on)
            return text
        case SegmentReference():
            return f"in segment {json.dumps(rule.segment_id, ensure_ascii=False)}"
        case ClusterAssignment():
            return f"in cluster {json.dumps(rule.run_id, ensure_ascii=False)} {rule.cluster_id}"
    raise TypeError(f"not a rule: {rule!r}")
