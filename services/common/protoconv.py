"""Conversions between protobuf well-known types and plain Python values."""

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2


def struct_from_dict(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def dict_from_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def value_from_python(data: Any) -> struct_pb2.Value:
    """A JSON-compatible Python value as a protobuf Value (numbers become doubles, as in JSON)."""
    message = struct_pb2.Value()
    json_format.ParseDict(data, message)
    return message


def python_from_value(message: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(message)


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
