"""Conversions between protobuf well-known types and plain Python values.

JSON values (Struct, Value) are checked on the way in and out: JSON has no NaN or Infinity, yet a Python float
and a Struct's binary form both carry them, and protobuf's JSON conversion then fails (a ValueError that would
reach a caller as INTERNAL). Every conversion here refuses them with InvalidArgument naming where they are.
"""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from services.common.errors import InvalidArgument
from services.common.json_values import check_json_value


def struct_from_dict(data: dict[str, Any], field: str = "value", max_depth: int | None = None) -> struct_pb2.Struct:
    """A dict of JSON values as a Struct; InvalidArgument naming `field`'s non-finite number (or depth past
    `max_depth`)."""
    check_json_value(data, field, max_depth)
    message = struct_pb2.Struct()
    message.update(data)
    return message


def dict_from_struct(message: struct_pb2.Struct, field: str = "value") -> dict[str, Any]:
    """A Struct as a dict; InvalidArgument naming a non-finite number in it (the binary form can hold one)."""
    return dict_from_message(message, field)


def value_from_python(data: Any, field: str = "value", max_depth: int | None = None) -> struct_pb2.Value:
    """A JSON-compatible Python value as a protobuf Value (numbers become doubles, as in JSON); InvalidArgument
    naming `field`'s non-finite number (or depth past `max_depth`)."""
    check_json_value(data, field, max_depth)
    message = struct_pb2.Value()
    json_format.ParseDict(data, message)
    return message


def python_from_value(message: struct_pb2.Value, field: str = "value") -> Any:
    """A Value as plain Python; InvalidArgument naming a non-finite number in it."""
    return dict_from_message(message, field)


def dict_from_message(message: Message, field: str, **options: Any) -> Any:
    """MessageToDict(message, **options), with a non-finite number in a Struct or Value inside it refused as
    InvalidArgument naming its place (`field.params.x[2]`) instead of protobuf's ValueError."""
    try:
        return json_format.MessageToDict(message, **options)
    except (ValueError, json_format.Error):
        where = _non_finite_in(message, field)
        if where is None:
            raise
        raise InvalidArgument(f"{where} is not a finite number: JSON has no NaN or Infinity") from None


def _non_finite_in(message: Message, field: str) -> str | None:
    """The place of the first non-finite number in a Struct or Value inside `message`, named as in JSON."""
    stack: list[tuple[Message, str]] = [(message, field)]
    while stack:
        item, where = stack.pop()
        name = item.DESCRIPTOR.full_name
        if name == "google.protobuf.Struct":
            stack.extend((child, f"{where}.{key}") for key, child in item.fields.items())  # type: ignore[attr-defined]
        elif name == "google.protobuf.ListValue":
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item.values))  # type: ignore[attr-defined]
        elif name == "google.protobuf.Value":
            kind = item.WhichOneof("kind")
            if kind == "number_value" and not math.isfinite(item.number_value):  # type: ignore[attr-defined]
                return where
            if kind in ("struct_value", "list_value"):
                stack.append((getattr(item, kind), where))
        else:
            for descriptor, value in item.ListFields():
                if descriptor.message_type is None:
                    continue
                path = f"{where}.{descriptor.name}" if where else descriptor.name
                if descriptor.message_type.GetOptions().map_entry:
                    stack.extend((child, f"{path}.{key}") for key, child in value.items() if isinstance(child, Message))
                elif descriptor.is_repeated:
                    stack.extend((child, f"{path}[{index}]") for index, child in enumerate(value))
                else:
                    stack.append((value, path))
    return None


def timestamp_from_datetime(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment.astimezone(UTC))
    return message


def seconds_from_duration(message: duration_pb2.Duration) -> float:
    """A Duration in seconds. Plain arithmetic rather than ToTimedelta, which raises OverflowError (an INTERNAL
    error for the caller) on the huge values a client may send; range checks are the domain's."""
    return message.seconds + message.nanos / 1e9


def duration_from_seconds(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(timedelta(seconds=seconds))
    return message
