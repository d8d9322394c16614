"""Where personal values sit in a customer event, so ingest can seal every one of them.

Found by type, not by a list of names: any ``PersonalField`` the contract gains later is
sealed without a change here. Which fields can lead to one is worked out once per message
type, so an order's products and prices are never walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from tailor.common.v1.common_pb2 import PersonalField

_PERSONAL = PersonalField.DESCRIPTOR


def _reaches_personal(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor is _PERSONAL:
        return True
    if descriptor.full_name in seen or descriptor.full_name.startswith("google.protobuf."):
        return False
    inner = seen | {descriptor.full_name}
    return any(
        field.message_type is not None and _reaches_personal(field.message_type, inner)
        for field in descriptor.fields
    )


@cache
def _personal_paths(descriptor: Descriptor) -> frozenset[str]:
    """Names of the fields of ``descriptor`` that are, or may contain, a PersonalField."""
    return frozenset(
        field.name
        for field in descriptor.fields
        if field.message_type is not None and _reaches_personal(field.message_type, frozenset())
    )


def personal_fields(message: Message, prefix: str = "") -> Iterator[tuple[str, PersonalField]]:
    """Every set PersonalField under ``message`` with its path, e.g. ``identify.email``,
    ``personal_properties.note``, ``context.ip`` (the name sealed with the value)."""
    wanted = _personal_paths(message.DESCRIPTOR)
    if not wanted:
        return
    for field, value in message.ListFields():
        if field.name not in wanted:
            continue
        kind = field.message_type
        assert kind is not None
        path = f"{prefix}{field.name}"
        if kind.GetOptions().map_entry:
            for key in sorted(value):
                yield f"{path}.{key}", value[key]
        elif kind is _PERSONAL:
            yield path, value
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from personal_fields(item, f"{path}[{index}].")
        else:
            yield from personal_fields(value, f"{path}.")
