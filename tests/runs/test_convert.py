"""Proto <-> domain conversions of the runs service."""

from datetime import UTC, datetime

import pytest
from google.protobuf import struct_pb2

from agentplatform.runs.v1 import runs_pb2
from services.common.errors import InvalidArgument
from services.common.rpc.protoconv import run_state_from_proto
from services.runs import convert
from services.runs.models import STEP_TYPES
from services.runs.records import StepRecord

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_step_types_follow_the_proto_content_fields() -> None:
    assert set(convert.STEP_TYPE_BY_FIELD.values()) == set(STEP_TYPES)
    assert convert.STEP_TYPE_BY_FIELD["tool_call"] == "tool-call"


@pytest.mark.parametrize(
    "step",
    [
        runs_pb2.Step(user_request=runs_pb2.UserRequest(text="what is 5 + 10?")),
        runs_pb2.Step(agent_thought=runs_pb2.AgentThought()),  # empty content keeps its type
        runs_pb2.Step(
            tool_call=runs_pb2.ToolCall(
                tool_name="calculator",
                tool_call_id="call_1",
                params=struct_pb2.Struct(fields={"x": struct_pb2.Value(number_value=5)}),
                raw_arguments='{"x": 5}',
            )
        ),
        runs_pb2.Step(
            tool_result=runs_pb2.ToolResult(tool_name="calculator", result=struct_pb2.Value(number_value=15))
        ),
        runs_pb2.Step(agent_response=runs_pb2.AgentResponse(text="15")),
        runs_pb2.Step(error=runs_pb2.StepError(code="max_iterations", message="gave up")),
    ],
    ids=lambda step: step.WhichOneof("content"),
)
def test_step_content_round_trips(step: runs_pb2.Step) -> None:
    step.sequence = 4
    step.duration.FromMilliseconds(250)
    new = convert.new_step_from_proto(1, step)
    assert new.type == convert.STEP_TYPE_BY_FIELD[step.WhichOneof("content")] and new.duration_ms == 250
    record = StepRecord("run", new.sequence, new.type, new.content, NOW, new.duration_ms)
    back = convert.step_to_proto(record)
    assert back.WhichOneof("content") == step.WhichOneof("content")
    assert getattr(back, back.WhichOneof("content")) == getattr(step, step.WhichOneof("content"))
    assert back.duration == step.duration and back.create_time.ToDatetime(tzinfo=UTC) == NOW


def test_step_without_content_is_rejected_naming_the_choices() -> None:
    with pytest.raises(InvalidArgument, match="step 2 has no content; set one of user_request, agent_thought"):
        convert.new_step_from_proto(2, runs_pb2.Step(sequence=1))


def test_run_states() -> None:
    assert run_state_from_proto(runs_pb2.RUN_STATE_UNSPECIFIED) is None
    assert run_state_from_proto(runs_pb2.RUN_STATE_FAILED) == "failed"
    with pytest.raises(InvalidArgument, match="unknown run state 99"):
        run_state_from_proto(99)
