"""The one place for conversions shared by the services' edges (servicers and clients of other services):
protobuf well-known types <-> plain Python values, and the runs API's enums and RunLimits <-> the runs'
vocabulary (services.common.run_vocabulary) and RunLimits (services.common.limits), which the engine, the run store
and the agents service all speak.

JSON values (Struct, Value) are checked on the way in and out: JSON has no NaN or Infinity, yet a Python float
and a Struct's binary form both carry them, and protobuf's JSON conversion then fails (a ValueError that would
reach a caller as INTERNAL). Every conversion here refuses them with InvalidArgument naming where they are.
"""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from agentplatform.runs.v1 import runs_pb2
from services.common.errors import InvalidArgument
from services.common.json_values import check_json_value
from services.common.limits import RunLimits
from services.common.run_vocabulary import (
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    WAITING,
    MultitaskStrategy,
)

#: google.protobuf.Duration's range (duration.proto): about +-10,000 years, in seconds.
MAX_DURATION_SECONDS = 315_576_000_000
MAX_NANOS = 999_999_999
#: google.protobuf.Timestamp's range (timestamp.proto): 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


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
        # Which well-known type `item` is, by its descriptor's name: that holds for a message of any descriptor
        # pool, where isinstance(item, struct_pb2.Struct) would not. mypy sees only the Message base class, hence
        # the three `type: ignore[attr-defined]` on the fields read below.
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


def check_duration(message: duration_pb2.Duration, field: str) -> None:
    """InvalidArgument naming `field` (as on the wire: `agent.limits.max_duration`) for a Duration protobuf's own
    rules refuse: seconds beyond +-315,576,000,000, nanos beyond +-999,999,999, or seconds and nanos of opposite
    signs. The binary wire format carries any two integers, and grpcio does not check them; normalising them
    instead would run a value the client did not mean."""
    seconds, nanos = message.seconds, message.nanos
    if not -MAX_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS:
        raise InvalidArgument(
            f"{field}.seconds must be within +-{MAX_DURATION_SECONDS:,} (google.protobuf.Duration), got {seconds}"
        )
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        raise InvalidArgument(f"{field}.nanos must be within +-{MAX_NANOS:,} (google.protobuf.Duration), got {nanos}")
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise InvalidArgument(
            f"{field}: seconds ({seconds}) and nanos ({nanos}) must have the same sign (google.protobuf.Duration)"
        )


def seconds_from_duration(message: duration_pb2.Duration, field: str) -> float:
    """A Duration in seconds, once check_duration passed it. Plain arithmetic rather than ToTimedelta, which raises
    OverflowError (an INTERNAL error for the caller) past timedelta's range; range checks are the domain's."""
    check_duration(message, field)
    return message.seconds + message.nanos / 1e9


def datetime_from_timestamp(message: timestamp_pb2.Timestamp, field: str) -> datetime:
    """An aware UTC datetime; InvalidArgument naming `field` for a Timestamp outside protobuf's rules (years 1 to
    9999, nanos 0 to 999,999,999), which ToDatetime would answer with an INTERNAL error or normalise."""
    if not MIN_TIMESTAMP_SECONDS <= message.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            f"{field}.seconds must be within {MIN_TIMESTAMP_SECONDS:,} and {MAX_TIMESTAMP_SECONDS:,} "
            f"(years 1 to 9999, google.protobuf.Timestamp), got {message.seconds}"
        )
    if not 0 <= message.nanos <= MAX_NANOS:
        raise InvalidArgument(
            f"{field}.nanos must be within 0 and {MAX_NANOS:,} (google.protobuf.Timestamp), got {message.nanos}"
        )
    return message.ToDatetime(UTC)


def duration_from_seconds(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(timedelta(seconds=seconds))
    return message


#: MultitaskStrategy numbers -> the strategy (unspecified is the default, reject).
MULTITASK_BY_PROTO: dict[int, MultitaskStrategy] = {
    runs_pb2.MULTITASK_STRATEGY_UNSPECIFIED: MultitaskStrategy.REJECT,
    runs_pb2.MULTITASK_STRATEGY_REJECT: MultitaskStrategy.REJECT,
    runs_pb2.MULTITASK_STRATEGY_ENQUEUE: MultitaskStrategy.ENQUEUE,
    runs_pb2.MULTITASK_STRATEGY_INTERRUPT: MultitaskStrategy.INTERRUPT,
}
PROTO_BY_MULTITASK: dict[MultitaskStrategy, "runs_pb2.MultitaskStrategy"] = {
    MultitaskStrategy.REJECT: runs_pb2.MULTITASK_STRATEGY_REJECT,
    MultitaskStrategy.ENQUEUE: runs_pb2.MULTITASK_STRATEGY_ENQUEUE,
    MultitaskStrategy.INTERRUPT: runs_pb2.MULTITASK_STRATEGY_INTERRUPT,
}


def multitask_from_proto(value: int) -> MultitaskStrategy:
    """The strategy of a MultitaskStrategy number; InvalidArgument for unknown numbers."""
    if value not in MULTITASK_BY_PROTO:
        raise InvalidArgument(
            f"unknown multitask_strategy {value}; use one of {', '.join(runs_pb2.MultitaskStrategy.keys())}"
        )
    return MULTITASK_BY_PROTO[value]


def multitask_to_proto(strategy: MultitaskStrategy) -> "runs_pb2.MultitaskStrategy":
    """The MultitaskStrategy number of a strategy."""
    return PROTO_BY_MULTITASK[MultitaskStrategy(strategy)]


#: The run's state as the store holds it -> its RunState number.
PROTO_BY_RUN_STATE: dict[str, "runs_pb2.RunState"] = {
    QUEUED: runs_pb2.RUN_STATE_QUEUED,
    RUNNING: runs_pb2.RUN_STATE_RUNNING,
    COMPLETED: runs_pb2.RUN_STATE_COMPLETED,
    FAILED: runs_pb2.RUN_STATE_FAILED,
    CANCELLED: runs_pb2.RUN_STATE_CANCELLED,
    WAITING: runs_pb2.RUN_STATE_WAITING,
}
#: RunState numbers -> the state. Keyed by int, like MULTITASK_BY_PROTO: proto3 enums are open, so a message
#: may carry a number that is no RunState this build knows, and the lookups below are asked about it.
RUN_STATE_BY_PROTO: dict[int, str] = {number: state for state, number in PROTO_BY_RUN_STATE.items()}


def run_state_from_proto(value: int) -> str | None:
    """The state of a RunState number; None for RUN_STATE_UNSPECIFIED, InvalidArgument for unknown numbers (a
    request's filter or state)."""
    if value == runs_pb2.RUN_STATE_UNSPECIFIED:
        return None
    if value not in RUN_STATE_BY_PROTO:
        raise InvalidArgument(f"unknown run state {value}; use one of {', '.join(runs_pb2.RunState.keys())}")
    return RUN_STATE_BY_PROTO[value]


def run_state_of(value: int) -> str | None:
    """The state of a run the store sent (a RunState number); None for one with no state this build knows."""
    return RUN_STATE_BY_PROTO.get(value)


def run_state_to_proto(state: str) -> "runs_pb2.RunState":
    """The RunState number of a run's state."""
    return PROTO_BY_RUN_STATE[state]


def limits_from_proto(limits: runs_pb2.RunLimits, field: str = "limits") -> RunLimits:
    """Zero (unset) fields are None; negative values are kept, for validation to refuse by name. A Duration
    protobuf's rules refuse is InvalidArgument naming it under `field` (`agent.limits.max_duration`)."""
    duration = (
        seconds_from_duration(limits.max_duration, f"{field}.max_duration") if limits.HasField("max_duration") else None
    )
    return RunLimits(
        max_model_calls=limits.max_model_calls or None,
        max_duration_seconds=duration,
        max_total_tokens=limits.max_total_tokens or None,
        max_tool_calls=limits.max_tool_calls or None,
    )


def limits_to_proto(limits: RunLimits) -> runs_pb2.RunLimits:
    message = runs_pb2.RunLimits(
        max_model_calls=limits.max_model_calls or 0,
        max_total_tokens=limits.max_total_tokens or 0,
        max_tool_calls=limits.max_tool_calls or 0,
    )
    if limits.max_duration_seconds:
        message.max_duration.CopyFrom(duration_from_seconds(limits.max_duration_seconds))
    return message
