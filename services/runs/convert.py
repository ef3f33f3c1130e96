"""Conversions between the runs protos and the domain records of `services.runs.store`.

A step's content is stored as the JSON form of its content message (field names as in the proto), so the
database holds plain JSON documents that any tool can read, and new proto fields need no migration.
"""

from google.protobuf import json_format

from agentplatform.runs.v1 import runs_pb2
from services.common.errors import InvalidArgument
from services.common.protoconv import duration_from_seconds, timestamp_from_datetime
from services.runs.models import CANCELLED, COMPLETED, FAILED, RUNNING
from services.runs.store import NewStep, RunRecord, StepRecord, Usage
from services.runs.watch import Heartbeat

_CONTENT = runs_pb2.Step.DESCRIPTOR.oneofs_by_name["content"]
#: Step content field -> step type slug, derived from the proto ("tool_call" -> "tool-call").
STEP_TYPE_BY_FIELD: dict[str, str] = {field.name: field.name.replace("_", "-") for field in _CONTENT.fields}
FIELD_BY_STEP_TYPE: dict[str, str] = {slug: name for name, slug in STEP_TYPE_BY_FIELD.items()}

STATE_BY_ENUM: dict[runs_pb2.RunState, str] = {
    runs_pb2.RUN_STATE_RUNNING: RUNNING,
    runs_pb2.RUN_STATE_COMPLETED: COMPLETED,
    runs_pb2.RUN_STATE_FAILED: FAILED,
    runs_pb2.RUN_STATE_CANCELLED: CANCELLED,
}
ENUM_BY_STATE: dict[str, runs_pb2.RunState] = {slug: number for number, slug in STATE_BY_ENUM.items()}


def run_state_from_proto(value: int) -> str | None:
    """The state slug of a RunState; None for RUN_STATE_UNSPECIFIED, InvalidArgument for unknown numbers."""
    if value == runs_pb2.RUN_STATE_UNSPECIFIED:
        return None
    if value not in STATE_BY_ENUM:
        raise InvalidArgument(f"unknown run state {value}; use one of {', '.join(runs_pb2.RunState.keys())}")
    return STATE_BY_ENUM[value]


def new_step_from_proto(position: int, step: runs_pb2.Step) -> NewStep:
    """The step at 1-based `position` of an AppendSteps request; its content case is its type."""
    case = step.WhichOneof("content")
    if case is None:
        raise InvalidArgument(f"step {position} has no content; set one of {', '.join(STEP_TYPE_BY_FIELD)}")
    duration_ms = None
    if step.HasField("duration"):
        duration_ms = step.duration.seconds * 1000 + step.duration.nanos / 1_000_000
    return NewStep(
        type=STEP_TYPE_BY_FIELD[case],
        content=json_format.MessageToDict(getattr(step, case), preserving_proto_field_name=True),
        sequence=step.sequence,
        duration_ms=duration_ms,
    )


def step_to_proto(record: StepRecord) -> runs_pb2.Step:
    """A stored step as a proto Step."""
    message = runs_pb2.Step(
        run_id=record.run_id,
        sequence=record.sequence,
        create_time=timestamp_from_datetime(record.created_at),
    )
    if record.duration_ms is not None:
        message.duration.CopyFrom(duration_from_seconds(record.duration_ms / 1000))
    content = getattr(message, FIELD_BY_STEP_TYPE[record.type])
    # SetInParent selects the oneof case even when the content is empty ({} for an empty thought).
    content.SetInParent()
    # Unknown fields are skipped so steps stored by a newer version (with fields since removed) still load.
    json_format.ParseDict(record.content, content, ignore_unknown_fields=True)
    return message


def usage_from_proto(usage: runs_pb2.Usage) -> Usage:
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def run_to_proto(record: RunRecord) -> runs_pb2.Run:
    """A stored run as a proto Run (with the steps the record holds, if any)."""
    message = runs_pb2.Run(
        id=record.id,
        user_query=record.user_query,
        state=ENUM_BY_STATE[record.state],
        model=record.model,
        create_time=timestamp_from_datetime(record.created_at),
        error_message=record.error_message,
        usage=runs_pb2.Usage(
            prompt_tokens=record.usage.prompt_tokens,
            completion_tokens=record.usage.completion_tokens,
            total_tokens=record.usage.total_tokens,
        ),
        metadata=record.metadata,
        step_count=record.step_count,
        steps=[step_to_proto(step) for step in record.steps],
    )
    if record.completed_at is not None:
        message.complete_time.CopyFrom(timestamp_from_datetime(record.completed_at))
    return message


def watch_response(event: StepRecord | RunRecord | Heartbeat) -> runs_pb2.WatchRunResponse:
    """One event of `services.runs.watch.watch_run` as a WatchRun message."""
    if isinstance(event, StepRecord):
        return runs_pb2.WatchRunResponse(step=step_to_proto(event))
    if isinstance(event, RunRecord):
        return runs_pb2.WatchRunResponse(run=run_to_proto(event))
    return runs_pb2.WatchRunResponse(heartbeat=runs_pb2.Heartbeat(time=timestamp_from_datetime(event.time)))
