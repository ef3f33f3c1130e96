"""Hypothesis strategies for any protobuf message, built from its descriptor: every field may be set or not, to
ordinary values, edge values and hostile ones (NaN and infinities, out-of-range durations and timestamps, deep and
non-finite JSON in Structs, huge and odd unicode strings, unknown enum numbers).

`ids` are strings worth trying in string fields besides random text: ids of resources that exist, so that
generated requests reach past the "not found" checks into the code behind them.
"""

import base64
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct, Value
from hypothesis import strategies as st

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
_ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "../../etc/passwd",
    "\u202e\u0301\ufeff",
    "\U0001d518\U0001d52b \U0001f600",  # mathematical letters and an emoji: beyond the BMP
    "'; DROP TABLE runs; --",
    "%s%n{0}${x}",
]
MAX_DEPTH = 4


def _integers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[field.type]
    edges = [v for v in (low, high, -1, 0, 1, 2, 10**9) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(max(low, -100), min(high, 100)))


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """JSON-like values as a Struct can hold them, NaN, infinities and deep nesting included."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**53), 2**53).map(float),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves,
    )


def _deep_list(depth: int) -> Value:
    value = Value(string_value="bottom")
    for _ in range(depth):
        value = Value(list_value=ListValue(values=[value]))
    return value


def _struct(value: Any) -> Struct:
    struct = Struct()
    struct.update(value)
    return struct


def _structs() -> st.SearchStrategy[Struct]:
    # Deep, but within what protobuf itself parses (100 levels in all; a list is two: Value and ListValue).
    deep = st.integers(10, 40).map(lambda depth: Struct(fields={"deep": _deep_list(depth)}))
    return st.one_of(st.dictionaries(st.text(max_size=8), json_values(), max_size=5).map(_struct), deep)


def _time_values(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Durations and Timestamps, most of them outside what the protobuf rules allow."""
    return st.builds(
        cls,
        seconds=st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-400_000_000_000, 400_000_000_000),
                          st.integers(-5, 5)),
        nanos=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-1_000_000_001, 1_000_000_001)),
    )


def messages(descriptor: Descriptor, ids: Sequence[str] = (), depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of this type, any field set or not."""
    cls = message_factory.GetMessageClass(descriptor)
    name = descriptor.full_name
    if name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        return _time_values(cls)
    if name == "google.protobuf.Struct":
        return _structs()
    if name == "google.protobuf.Value":
        return json_values().map(lambda value: _struct({"v": value}).fields["v"])
    if name == "google.protobuf.FieldMask":
        known = [f.name for f in descriptor.containing_type.fields] if descriptor.containing_type else []
        paths = st.one_of(st.text(max_size=30), st.sampled_from(known or ["name"]))
        return st.lists(paths, max_size=3).map(lambda items: cls(paths=items))
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional = {field.name: _field_values(field, ids, depth) for field in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
        and field.is_repeated
    )


def _field_values(field: FieldDescriptor, ids: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    if _is_map(field):
        key = _scalar(field.message_type.fields_by_name["key"], ids)
        value = _single(field.message_type.fields_by_name["value"], ids, depth + 1)
        return st.dictionaries(key, value, max_size=3)
    single = _single(field, ids, depth + 1)
    if field.is_repeated:
        return st.lists(single, max_size=3)
    return single


#: Keys the services' page tokens have held, so that forged tokens get past the first lookups.
_TOKEN_KEYS = ["created_at", "updated_at", "id", "state", "thread", "turn", "before", "agent", "workflow", "offset"]
_EXTREME_TIMES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-01-01T00:00:00", "nonsense"]


def page_tokens(ids: Sequence[str]) -> st.SearchStrategy[str]:
    """Tokens a client forged: text, and base64 of JSON in the shape of the services' tokens, with hostile values
    (timestamps whose offset overflows, integers past any column, deep nesting)."""
    values = st.one_of(
        json_values(max_leaves=6),
        st.integers(-(10**30), 10**30),
        st.sampled_from(_EXTREME_TIMES + list(ids)),
        st.integers(1, 300).map(lambda depth: json.loads("[" * depth + "]" * depth)),
    )
    payload = st.dictionaries(st.sampled_from(_TOKEN_KEYS) | st.text(max_size=5), values, max_size=4)
    encoded = payload.map(lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).decode())
    return st.one_of(st.text(max_size=60), encoded)


def _single(field: FieldDescriptor, ids: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, ids, depth)
    if field.name == "page_token":
        return page_tokens(ids)
    return _scalar(field, ids)


def _scalar(field: FieldDescriptor, ids: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        return _integers(field)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-3, 100))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    huge = st.integers(10_000, 300_000).map(lambda n: "x" * n)  # built per example, so a failure prints it short
    return st.one_of(
        st.text(max_size=40), st.sampled_from(_ODD_TEXT), huge, *([st.sampled_from(list(ids))] if ids else [])
    )
