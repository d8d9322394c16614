"""Where personal values sit in a customer event, so ingest can seal every one of them.

Found by type, not by a list of names: any ``PersonalField`` the contract gains later is
sealed without a change here.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tailor.common.v1.common_pb2 import PersonalField

_PERSONAL = PersonalField.DESCRIPTOR
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def personal_fields(message: Message, prefix: str = "") -> Iterator[tuple[str, PersonalField]]:
    """Every set PersonalField under ``message`` with its path, e.g. ``identify.email``,
    ``personal_properties.note``, ``context.ip`` (the name sealed with the value)."""
    for field, value in message.ListFields():
        kind = field.message_type
        if field.type != _MESSAGE or kind is None or kind.full_name.startswith("google.protobuf."):
            continue
        path = f"{prefix}{field.name}"
        if kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].message_type is _PERSONAL:
                for key in sorted(value):
                    yield f"{path}.{key}", value[key]
        elif kind is _PERSONAL:
            yield path, value
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from personal_fields(item, f"{path}[{index}].")
        else:
            yield from personal_fields(value, f"{path}.")
