"""Trait conditions of FindProfiles: checked against the catalogue before any query runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from tailor_core.errors import FieldViolation, InvalidArgument
from tailor_profile.domain.catalogue import TraitType, definition_of

MAX_CONDITIONS = 20
MAX_IN_VALUES = 1000


class Op(StrEnum):
    """The tailor.common.v1.Comparison names without their prefix."""

    EQ = "EQ"
    NE = "NE"
    GT = "GT"
    GE = "GE"
    LT = "LT"
    LE = "LE"
    IN = "IN"
    NOT_IN = "NOT_IN"
    CONTAINS = "CONTAINS"
    STARTS_WITH = "STARTS_WITH"
    EXISTS = "EXISTS"
    NOT_EXISTS = "NOT_EXISTS"
    WITHIN_LAST = "WITHIN_LAST"
    BEFORE_LAST = "BEFORE_LAST"


ORDERED = {TraitType.NUMBER, TraitType.INTEGER, TraitType.DECIMAL, TraitType.TIMESTAMP}
NUMERIC = {TraitType.NUMBER, TraitType.INTEGER, TraitType.DECIMAL}
_OPS_BY_TYPE: dict[TraitType, set[Op]] = {
    TraitType.STRING: {Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.CONTAINS, Op.STARTS_WITH},
    TraitType.BOOLEAN: {Op.EQ, Op.NE},
    TraitType.STRING_LIST: {Op.CONTAINS},
    TraitType.OBJECT: {Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.CONTAINS, Op.STARTS_WITH},
    TraitType.TIMESTAMP: {Op.GT, Op.GE, Op.LT, Op.LE, Op.WITHIN_LAST, Op.BEFORE_LAST},
}
for _numeric in NUMERIC:
    _OPS_BY_TYPE[_numeric] = {Op.EQ, Op.NE, Op.GT, Op.GE, Op.LT, Op.LE, Op.IN, Op.NOT_IN}
for _ops in _OPS_BY_TYPE.values():
    _ops.update({Op.EXISTS, Op.NOT_EXISTS})


@dataclass(frozen=True, slots=True)
class Condition:
    trait: str
    type: TraitType
    op: Op
    #: The operand as the query needs it: a number as Decimal, a timestamp as datetime, a
    #: list of those for IN, a duration for WITHIN_LAST / BEFORE_LAST, None for EXISTS.
    operand: Any


def _scalar(value: Any, kind: TraitType, path: str) -> Any:
    """The operand converted for ``kind``; raises ValueError naming what was expected."""
    if kind in NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("a number")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError("a number") from None
        if not number.is_finite():
            raise ValueError("a finite number")
        return number
    if kind == TraitType.TIMESTAMP:
        if not isinstance(value, str):
            raise ValueError("an RFC 3339 timestamp string")
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("an RFC 3339 timestamp string") from None
        if moment.tzinfo is None:
            raise ValueError("a timestamp with a time zone")
        return moment
    if kind == TraitType.BOOLEAN:
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def parse_condition(
    index: int, trait: str, op_name: str, value: Any, duration: timedelta | None
) -> Condition:
    """One condition, or InvalidArgument naming ``conditions[index].<field>``."""
    path = f"conditions[{index}]"
    definition = definition_of(trait) if trait else None
    if definition is None:
        raise InvalidArgument(
            f"unknown trait {trait!r}" if trait else "a condition names no trait",
            [FieldViolation(f"{path}.trait", "not a trait of the catalogue", "UNKNOWN_TRAIT")],
        )
    if definition.personal:
        raise InvalidArgument(
            f"{trait} is personal and cannot be searched",
            [FieldViolation(f"{path}.trait", "personal traits cannot be named", "PERSONAL_TRAIT")],
        )
    try:
        op = Op(op_name)
    except ValueError:
        raise InvalidArgument(
            "a condition needs an operator",
            [FieldViolation(f"{path}.op", "set a comparison", "REQUIRED")],
        ) from None
    kind = definition.type
    if op not in _OPS_BY_TYPE[kind]:
        allowed = ", ".join(sorted(o.value for o in _OPS_BY_TYPE[kind]))
        raise InvalidArgument(
            f"{op.value} does not apply to {trait} ({kind.name.lower()})",
            [FieldViolation(f"{path}.op", f"use one of {allowed}", "OPERATOR_MISMATCH")],
        )
    if op in (Op.EXISTS, Op.NOT_EXISTS):
        return Condition(trait, kind, op, None)
    if op in (Op.WITHIN_LAST, Op.BEFORE_LAST):
        if duration is None or duration <= timedelta(0):
            raise InvalidArgument(
                f"{op.value} needs a positive duration",
                [FieldViolation(f"{path}.duration", "a positive duration", "REQUIRED")],
            )
        return Condition(trait, kind, op, duration)
    expected_kind = TraitType.STRING if kind in (TraitType.STRING_LIST, TraitType.OBJECT) else kind
    try:
        if op in (Op.IN, Op.NOT_IN):
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
                raise ValueError(f"a list of 1..{MAX_IN_VALUES} values")
            operand: Any = [_scalar(v, expected_kind, path) for v in value]
        else:
            if value is None:
                raise ValueError("a value")
            operand = _scalar(value, expected_kind, path)
    except ValueError as exc:
        raise InvalidArgument(
            f"the operand of {trait} {op.value} must be {exc}",
            [FieldViolation(f"{path}.value", f"expected {exc}", "OPERAND_MISMATCH")],
        ) from None
    return Condition(trait, kind, op, operand)


def check_count(count: int) -> None:
    if not 1 <= count <= MAX_CONDITIONS:
        raise InvalidArgument(
            f"give 1..{MAX_CONDITIONS} conditions, not {count}",
            [FieldViolation("conditions", f"1..{MAX_CONDITIONS} conditions", "COUNT")],
        )


def parse_order_by(order_by: str) -> tuple[str, TraitType, bool] | None:
    """``"computed.orders_30d desc"`` -> (trait, type, descending); None for the default."""
    text = order_by.strip()
    if not text:
        return None
    name, _, direction = text.partition(" ")
    direction = direction.strip().lower()
    definition = definition_of(name)
    if definition is None or definition.personal or direction not in ("", "asc", "desc"):
        raise InvalidArgument(
            f"cannot order by {order_by!r}",
            [
                FieldViolation(
                    "order_by",
                    "a non-personal trait, optionally followed by asc or desc",
                    "BAD_ORDER",
                )
            ],
        )
    return name, definition.type, direction == "desc"
