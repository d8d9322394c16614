"""Random and malformed protobuf requests for fuzzing any RPC (hypothesis strategies).

``messages(descriptor)`` builds messages of any type by walking its descriptor: strings with
control characters and huge lengths, integers at their limits, NaN and infinities, unknown
enum numbers, timestamps far outside any calendar, deep Structs, repeated fields and maps.
``raw_bodies()`` adds bytes that are not a valid message at all.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T = TypeVar("T")

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a\nb", "GBP", "-1", "1e309", "NaN", "../../etc", "é" * 3]),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=8),
    st.integers(min_value=200, max_value=20_000).map(lambda n: "x" * n),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53).map(float)
)


def struct_values(depth: int) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
    if depth <= 0:
        return leaves
    inner = struct_values(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=4),
        st.dictionaries(texts, inner, max_size=4),
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, -1 if low else 0]))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return numbers
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return texts
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 1000))
    raise ValueError(f"no strategy for field type {kind}")


@st.composite
def _fill(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    message = GetMessageClass(descriptor)()
    if descriptor.full_name == "google.protobuf.Struct":
        value = draw(st.dictionaries(texts, struct_values(3), max_size=6))
        with contextlib.suppress(ValueError, TypeError):  # values Struct cannot hold
            message.update(value)  # type: ignore[attr-defined]
        return message
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(-(2**40), 2**40))  # type: ignore[attr-defined]
        message.nanos = draw(st.integers(-(2**31), 2**31 - 1))  # type: ignore[attr-defined]
        return message
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        _set(draw, message, field, depth)
    return message


def _set(draw: st.DrawFn, message: Message, field: FieldDescriptor, depth: int) -> None:
    target = getattr(message, field.name)
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_scalar(key_field))
            if value_field.message_type is not None:
                if depth > 0:
                    target[key].CopyFrom(draw(_fill(value_field.message_type, depth - 1)))
            else:
                target[key] = draw(_scalar(value_field))
        return
    if field.is_repeated:
        for _ in range(draw(st.integers(0, 3))):
            if entry is not None:
                if depth > 0:
                    target.add().CopyFrom(draw(_fill(entry, depth - 1)))
            else:
                target.append(draw(_scalar(field)))
        return
    if entry is not None:
        if depth > 0:
            target.CopyFrom(draw(_fill(entry, depth - 1)))
        return
    setattr(message, field.name, draw(_scalar(field)))


def messages(descriptor: Descriptor, depth: int = 6) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with random, often malformed, contents."""
    return _fill(descriptor, depth)


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Bytes that are mostly not a valid protobuf encoding."""
    return st.one_of(st.binary(max_size=256), st.just(b"\xff" * 32), st.just(b"\x0a\xff\xff\xff"))


def draw_examples(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` deterministic examples of ``strategy``, for tests that send them over gRPC
    from an event loop (where hypothesis cannot drive the test itself)."""
    found: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        found.append(value)

    collect()
    return found


#: One value per kind of field for each boundary message (see :func:`boundary_messages`):
#: the inputs that slip past a quick check (a negative page size past ``or default``,
#: "²" past ``str.isdigit``, a 40-digit number past a text check into a bigint column,
#: LIKE wildcards, negative nanos that no calendar converts).
_BOUNDARIES: tuple[dict[str, Any], ...] = (
    {"int": -1, "float": float("nan"), "str": "\u00b2", "bytes": b"\xff", "bool": True,
     "enum": 999, "time": (-1, -1)},
    {"int": "min", "float": float("-inf"), "str": "9" * 40, "bytes": b"", "bool": False,
     "enum": -1, "time": (-(2**40), 0)},
    {"int": "max", "float": float("inf"), "str": "-1", "bytes": b"\x00" * 64, "bool": True,
     "enum": 1, "time": (2**40, 2**31 - 1)},
    {"int": 0, "float": 1e308, "str": "x" * 20_000, "bytes": b"\x0a\xff", "bool": False,
     "enum": 0, "time": (0, 10**9)},
    {"int": 2**31 - 1, "float": -0.0, "str": "%_\\' OR 1=1 --", "bytes": b"%",
     "bool": True, "enum": 2, "time": (253402300800, 0)},
)  # fmt: skip


def _boundary_scalar(field: FieldDescriptor, flavour: dict[str, Any]) -> Any:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        wanted = {"min": low, "max": high}.get(flavour["int"], flavour["int"])
        return min(max(wanted, low), high)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = flavour["float"]
        # A float field cannot hold 1e308: use its own largest value instead.
        return 3.4e38 if kind == FieldDescriptor.TYPE_FLOAT and value == 1e308 else value
    if kind == FieldDescriptor.TYPE_BOOL:
        return flavour["bool"]
    if kind == FieldDescriptor.TYPE_STRING:
        return flavour["str"]
    if kind == FieldDescriptor.TYPE_BYTES:
        return flavour["bytes"]
    if kind == FieldDescriptor.TYPE_ENUM:
        return flavour["enum"]
    raise ValueError(f"no boundary value for field type {kind}")


def _boundary_fill(message: Message, flavour: dict[str, Any], depth: int) -> None:
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds, message.nanos = flavour["time"]  # type: ignore[attr-defined]
        return
    for field in descriptor.fields:
        target = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key = _boundary_scalar(entry.fields_by_name["key"], flavour)
            value_field = entry.fields_by_name["value"]
            if value_field.message_type is None:
                target[key] = _boundary_scalar(value_field, flavour)
            elif depth > 0:
                _boundary_fill(target[key], flavour, depth - 1)
        elif field.is_repeated:
            if entry is None:
                target.append(_boundary_scalar(field, flavour))
            elif depth > 0:
                _boundary_fill(target.add(), flavour, depth - 1)
        elif entry is not None:
            if depth > 0:
                _boundary_fill(target, flavour, depth - 1)
                target.SetInParent()
        else:
            setattr(message, field.name, _boundary_scalar(field, flavour))


def boundary_messages(descriptor: Descriptor, depth: int = 4) -> list[Message]:
    """Deterministic messages of ``descriptor``'s type, one per boundary flavour, with every
    field (to ``depth`` levels of nesting, one element per repeated field or map) set to
    that flavour's edge value: what random drawing rarely hits all at once."""
    found = []
    for flavour in _BOUNDARIES:
        message = GetMessageClass(descriptor)()
        _boundary_fill(message, flavour, depth)
        found.append(message)
    return found
