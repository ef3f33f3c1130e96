"""The bench's check of a seed run: the right run passes; a fast wrong one does not."""

from collections.abc import Callable

import pytest

from agentplatform.runs.v1 import runs_pb2
from bench.verify import delivered_problems, failure_kind, seed_run_problems
from services.common.rpc.protoconv import struct_from_dict, value_from_python


def seed_run() -> runs_pb2.Run:
    """A run as the demo model completes the seed example."""
    run = runs_pb2.Run(id="r", state=runs_pb2.RUN_STATE_COMPLETED)

    def step(**content: object) -> runs_pb2.Step:
        return run.steps.add(run_id="r", sequence=len(run.steps) + 1, **content)

    step(user_request=runs_pb2.UserRequest(text="What is 5 + 10, then multiply by 3?"))
    for (operation, x, y), result in ((("add", 5, 10), 15), (("multiply", 15, 3), 45)):
        step(agent_thought=runs_pb2.AgentThought(text="calculating"), model_call=runs_pb2.ModelCall())
        step(tool_call=runs_pb2.ToolCall(tool_name="calculator",
                                         params=struct_from_dict({"operation": operation, "x": x, "y": y})))
        step(tool_result=runs_pb2.ToolResult(tool_name="calculator", result=value_from_python(result)))
    step(agent_response=runs_pb2.AgentResponse(text="5 + 10 = 15, and 15 * 3 = 45."), model_call=runs_pb2.ModelCall())
    return run


def test_the_seed_run_passes() -> None:
    assert seed_run_problems(seed_run()) == []
    assert delivered_problems(range(1, 9)) == []


def wrong_result(run: runs_pb2.Run) -> None:
    run.steps[6].tool_result.result.CopyFrom(value_from_python(44))


def wrong_answer(run: runs_pb2.Run) -> None:
    run.steps[7].agent_response.text = "I am done."


def missing_model_call(run: runs_pb2.Run) -> None:
    run.steps[4].ClearField("model_call")


def failed(run: runs_pb2.Run) -> None:
    run.state = runs_pb2.RUN_STATE_FAILED
    run.error_code = "interrupted"


def step_dropped(run: runs_pb2.Run) -> None:
    del run.steps[3]


def gap_in_sequences(run: runs_pb2.Run) -> None:
    run.steps[7].sequence = 9


@pytest.mark.parametrize(
    "spoil", [wrong_result, wrong_answer, missing_model_call, failed, step_dropped, gap_in_sequences]
)
def test_a_wrong_run_fails(spoil: Callable[[runs_pb2.Run], None]) -> None:
    run = seed_run()
    spoil(run)
    assert seed_run_problems(run) != []


def test_a_stream_that_missed_or_repeated_a_step_fails() -> None:
    assert delivered_problems([1, 2, 3, 5, 6, 7, 8]) != []
    assert delivered_problems([1, 2, 2, 3, 4, 5, 6, 7, 8]) != []


def test_failures_are_counted_by_kind() -> None:
    run = seed_run()
    failed(run)
    assert failure_kind(None, run) == "FAILED interrupted"
    assert failure_kind("UNAVAILABLE: upstream connect error", None) == "UNAVAILABLE"
    assert failure_kind(None, seed_run()) == "wrong timeline"


def resumed_after(run: runs_pb2.Run, steps_before: int) -> runs_pb2.Run:
    """`run` as resumed by another engine after its first `steps_before` steps: a `resumed` step there, the
    rest renumbered after it."""
    resumed = runs_pb2.Run(id=run.id, state=run.state)
    for step in run.steps[:steps_before]:
        resumed.steps.add().CopyFrom(step)
    resumed.steps.add(run_id=run.id, sequence=steps_before + 1, resumed=runs_pb2.Resumed(executor_id="e", attempt=1))
    for step in run.steps[steps_before:]:
        resumed.steps.add().CopyFrom(step)
        resumed.steps[-1].sequence = len(resumed.steps)
    return resumed


def test_a_resumed_seed_run_passes_with_the_markers_it_must_carry_and_only_those() -> None:
    run = resumed_after(seed_run(), 4)
    assert seed_run_problems(run, resumes=1) == []
    assert seed_run_problems(run) != []  # a marker where none was expected
    assert seed_run_problems(seed_run(), resumes=1) != []  # a run in flight at the kill that shows no resume
    gap = resumed_after(seed_run(), 4)
    gap.steps[-1].sequence += 1
    assert seed_run_problems(gap, resumes=1) != []
