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
def _personal_paths(descriptor: Descriptor) -> dict[str, str]:
    """Fields of ``descriptor`` that are, or may contain, a PersonalField, by name, with how
    to walk each: "map", "value", "list" or "message"."""
    paths = {}
    for field in descriptor.fields:
        kind = field.message_type
        if kind is None or not _reaches_personal(kind, frozenset()):
            continue
        if kind.GetOptions().map_entry:
            paths[field.name] = "map"
        elif kind is _PERSONAL:
            paths[field.name] = "value"
        else:
            paths[field.name] = "list" if field.is_repeated else "message"
    return paths


def personal_fields(message: Message, prefix: str = "") -> Iterator[tuple[str, PersonalField]]:
    """Every set PersonalField under ``message`` with its path, e.g. ``identify.email``,
    ``personal_properties.note``, ``context.ip`` (the name sealed with the value)."""
    wanted = _personal_paths(message.DESCRIPTOR)
    if not wanted:
        return
    # Asking for the few fields that can lead to a personal value is much cheaper than
    # listing every set field (an order's products and prices included).
    for name, how in wanted.items():
        path = f"{prefix}{name}"
        if how == "value":
            if message.HasField(name):
                yield path, getattr(message, name)
        elif how == "message":
            if message.HasField(name):
                yield from personal_fields(getattr(message, name), f"{path}.")
        elif how == "map":
            values = getattr(message, name)
            for key in sorted(values):
                yield f"{path}.{key}", values[key]
        else:
            for index, item in enumerate(getattr(message, name)):
                yield from personal_fields(item, f"{path}[{index}].")
