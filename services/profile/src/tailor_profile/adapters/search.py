"""FindProfiles as SQL over the flat ``search`` map of each profile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tailor_core.db import Connection
from tailor_profile.adapters.repository import _COLUMNS, StoredProfile, _profile
from tailor_profile.domain.catalogue import TraitType
from tailor_profile.domain.conditions import NUMERIC, Condition, Op


def _value_expr(kind: TraitType, name_param: str) -> str:
    text = f"(search->>{name_param})"
    if kind in NUMERIC:
        return (
            f"(CASE WHEN jsonb_typeof(search->{name_param}) IN ('number', 'string') "
            f"AND {text} ~ '^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$' THEN {text}::numeric END)"
        )
    if kind == TraitType.TIMESTAMP:
        return f"{text}::timestamptz"
    if kind == TraitType.BOOLEAN:
        return f"{text}::boolean"
    return text


def condition_sql(condition: Condition, args: list[Any]) -> str:
    args.append(condition.trait)
    name = f"${len(args)}"
    present = f"(jsonb_typeof(search->{name}) IS DISTINCT FROM 'null' AND search ? {name})"
    if condition.op == Op.EXISTS:
        return present
    if condition.op == Op.NOT_EXISTS:
        return f"NOT {present}"
    expr = _value_expr(condition.type, name)
    args.append(condition.operand)
    operand = f"${len(args)}"
    match condition.op:
        case Op.EQ:
            return f"{expr} = {operand}"
        case Op.NE:
            return f"{expr} <> {operand}"
        case Op.GT:
            return f"{expr} > {operand}"
        case Op.GE:
            return f"{expr} >= {operand}"
        case Op.LT:
            return f"{expr} < {operand}"
        case Op.LE:
            return f"{expr} <= {operand}"
        case Op.IN:
            return f"{expr} = ANY({operand})"
        case Op.NOT_IN:
            return f"NOT ({expr} = ANY({operand}))"
        case Op.CONTAINS if condition.type == TraitType.STRING_LIST:
            return f"(search->{name}) ? {operand}"
        case Op.CONTAINS:
            return f"strpos({expr}, {operand}) > 0"
        case Op.STARTS_WITH:
            return f"starts_with({expr}, {operand})"
        case Op.WITHIN_LAST:
            return f"{expr} >= now() - {operand}::interval"
        case Op.BEFORE_LAST:
            return f"{expr} < now() - {operand}::interval"
    raise ValueError(f"unhandled operator {condition.op}")


async def find(
    conn: Connection,
    conditions: Sequence[Condition],
    *,
    order: tuple[str, TraitType, bool] | None,
    cursor: list[Any] | None,
    limit: int,
) -> tuple[list[StoredProfile], list[Any] | None]:
    """Up to ``limit`` matching profiles after ``cursor``, and the cursor of the next page."""
    args: list[Any] = []
    where = [condition_sql(c, args) for c in conditions]
    if order is None:
        if cursor:
            args.append(str(cursor[0]))
            where.append(f"profile_id > ${len(args)}")
        order_sql = "profile_id"
        offset = 0
    else:
        args.append(order[0])
        expr = _value_expr(order[1], f"${len(args)}")
        order_sql = f"{expr} {'DESC' if order[2] else 'ASC'} NULLS LAST, profile_id"
        offset = int(cursor[0]) if cursor else 0
    args.append(limit + 1)
    sql = (
        f"SELECT {_COLUMNS} FROM profiles WHERE {' AND '.join(where) or 'true'} "
        f"ORDER BY {order_sql} LIMIT ${len(args)} OFFSET {offset}"
    )
    rows = await conn.fetch(sql, *args)
    profiles = [_profile(row) for row in rows[:limit]]
    if len(rows) <= limit:
        return profiles, None
    if order is None:
        return profiles, [profiles[-1].profile_id]
    return profiles, [offset + limit]
