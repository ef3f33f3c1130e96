"""The engine's one codec between its journal types and the runs API (services/engine/upstream/run_messages.py):
whatever the store sends comes out of the engine unchanged (StreamChat hands the store's runs and steps on), and
every field of every step kind makes the trip."""

from datetime import UTC, datetime

import pytest
from google.protobuf import struct_pb2

from agentplatform.runs.v1 import runs_pb2
from services.common.rpc.protoconv import duration_from_seconds, timestamp_from_datetime
from services.common.step_delta import StepDelta, ToolCallDelta
from services.engine.journal import Heartbeat, NodeOutcome, Run
from services.engine.upstream.run_messages import (
    delta_from_proto,
    delta_to_proto,
    event_from_proto,
    event_to_proto,
    run_from_proto,
    run_to_proto,
    step_from_proto,
    step_to_proto,
)

# As the store sends them: times and durations to the microsecond.
AT = timestamp_from_datetime(datetime(2026, 12, 4, 21, 34, 1, 123456, tzinfo=UTC))
LATER = timestamp_from_datetime(datetime(2026, 12, 4, 21, 34, 9, 654321, tzinfo=UTC))


def value(data: object) -> struct_pb2.Value:
    message = struct_pb2.Value()
    message.struct_value.update({"v": data})
    return message.struct_value.fields["v"]


def struct(data: dict[str, object]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


CONTENTS = {
    "user_request": runs_pb2.UserRequest(text="what is 5 + 10?", context_turns=3, omitted_turns=2),
    "agent_thought": runs_pb2.AgentThought(text="Using tool: calculator", placeholder=True),
    "tool_call": runs_pb2.ToolCall(
        tool_name="calculator", tool_call_id="call_1", raw_arguments='{"x": 5}', params=struct({"x": 5, "ys": [1, "a"]})
    ),
    "tool_result": runs_pb2.ToolResult(
        tool_name="calculator", tool_call_id="call_1", result=value({"sum": 15.5, "ok": True}), text="15.5",
    ),
    "agent_response": runs_pb2.AgentResponse(text="The result is 15."),
    "error": runs_pb2.StepError(code="max_model_calls", message="the agent did not finish"),
    "approval_request": runs_pb2.ApprovalRequest(
        prompt="Allow it?", tool_call_id="call_2", tool_name="file_io", node_id="ask", expire_time=LATER
    ),
    "approval_decision": runs_pb2.ApprovalDecision(
        outcome=runs_pb2.APPROVAL_OUTCOME_TIMED_OUT, request_sequence=4, comment="late", decided_by="alice"
    ),
    "node_outcome": runs_pb2.NodeOutcome(
        kind="while_loop", branch="body", assigned=struct({"count": 2, "names": ["a"]}), output=value(None),
        iteration=3,
    ),
}


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_a_stored_step_of_every_kind_makes_the_round_trip_unchanged(case: str) -> None:
    stored = runs_pb2.Step(
        run_id="r1", sequence=7, create_time=AT, duration=duration_from_seconds(0.012345), node_id="n1",
        model_call=runs_pb2.ModelCall(
            usage=runs_pb2.Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
            time_to_first_token=duration_from_seconds(0.2), latency=duration_from_seconds(1.5),
        ),
        **{case: CONTENTS[case]},
    )
    assert step_to_proto(step_from_proto(stored)) == stored
    bare = runs_pb2.Step(run_id="r1", sequence=1, **{case: type(CONTENTS[case])()})
    assert step_to_proto(step_from_proto(bare)) == bare  # empty content keeps its kind


def test_an_output_of_null_is_not_no_output() -> None:
    without = runs_pb2.Step(node_outcome=runs_pb2.NodeOutcome(kind="start"))
    assert step_from_proto(without).content == NodeOutcome(kind="start")
    with_null = step_from_proto(runs_pb2.Step(node_outcome=runs_pb2.NodeOutcome(kind="end", output=value(None))))
    assert with_null.content == NodeOutcome(kind="end", output=None, has_output=True)


def test_a_stored_run_with_every_field_makes_the_round_trip_unchanged() -> None:
    stored = runs_pb2.Run(
        id="r1", user_query="hello", state=runs_pb2.RUN_STATE_FAILED, model="demo", create_time=AT,
        start_time=AT, complete_time=LATER, error_message="boom", error_code="internal",
        usage=runs_pb2.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7), metadata={"k": "v"},
        step_count=2, limits=runs_pb2.RunLimits(
            max_model_calls=5, max_duration=duration_from_seconds(30), max_total_tokens=1000, max_tool_calls=9
        ),
        cancel_requested=True, executor_id="engine-1", user_query_truncated=True, owner="alice", agent_id="a1",
        agent_revision=2, thread_id="t1", thread_turn=3, workflow_id="w1", workflow_revision=4,
        steps=[
            runs_pb2.Step(run_id="r1", sequence=1, create_time=AT, user_request=CONTENTS["user_request"]),
            runs_pb2.Step(
                run_id="r1", sequence=2, create_time=AT, agent_thought=runs_pb2.AgentThought(text="t"),
                model_call=runs_pb2.ModelCall(
                    usage=runs_pb2.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7), model="gpt-4o",
                    cached_prompt_tokens=2, cost=runs_pb2.Cost(usd=0.25),
                ),
            ),
        ],
        cost=runs_pb2.Cost(usd=0.25, unpriced_model_calls=1), retention_hold=True,
    )
    run = run_from_proto(stored)
    assert (run.state, run.limits.max_duration_seconds, run.usage.total_tokens) == ("failed", 30.0, 7)
    assert run_to_proto(run) == stored
    assert event_to_proto(event_from_proto(runs_pb2.RunEvent(run=stored)) or Run("", "")) == runs_pb2.RunEvent(
        run=stored
    )


def test_a_run_in_a_state_this_engine_does_not_know_has_none() -> None:
    assert run_from_proto(runs_pb2.Run(id="r1", state=99)).state == ""


@pytest.mark.parametrize("delta", [
    StepDelta("r1", 3, text="Hel"),
    StepDelta("r1", 4, tool_call=ToolCallDelta("call_1", "calculator", '{"x"'), replace=True),
])
def test_deltas_make_the_round_trip(delta: StepDelta) -> None:
    assert delta_from_proto(delta_to_proto(delta)) == delta
    assert event_from_proto(event_to_proto(delta)) == delta


def test_heartbeats_keep_their_cursor() -> None:
    message = runs_pb2.RunEvent(heartbeat=runs_pb2.Heartbeat(time=AT, last_sequence=12))
    event = event_from_proto(message)
    assert event is not None and event_to_proto(event) == message
    assert event_from_proto(runs_pb2.RunEvent()) is None  # a kind this engine does not know is skipped
    untimed = event_from_proto(runs_pb2.RunEvent(heartbeat=runs_pb2.Heartbeat(last_sequence=3)))
    assert isinstance(untimed, Heartbeat) and untimed.time.tzinfo is not None  # stamped on arrival, sendable
    assert event_to_proto(untimed).heartbeat.last_sequence == 3
