"""A run's limits: the one domain type for them, shared by the engine (which enforces them) and the run store
(which records them), and its one conversion from and to the wire (agentplatform.runs.v1.RunLimits, which
both services' contracts use). None means "not limited by this field"."""

from dataclasses import dataclass

from agentplatform.runs.v1 import runs_pb2
from services.common.protoconv import duration_from_seconds, seconds_from_duration


@dataclass(frozen=True)
class RunLimits:
    """What one run may use before it is stopped FAILED with the limit's name as its error code."""

    max_model_calls: int | None = None
    max_duration_seconds: float | None = None
    max_total_tokens: int | None = None
    max_tool_calls: int | None = None


def limits_from_proto(limits: runs_pb2.RunLimits) -> RunLimits:
    """Zero (unset) fields are None; negative values are kept, for validation to refuse by name."""
    duration = seconds_from_duration(limits.max_duration) if limits.HasField("max_duration") else None
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
