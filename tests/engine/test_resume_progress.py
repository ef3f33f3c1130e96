"""What an engine taking over a run whose engine stopped reads from its steps (loop/run_progress.py) and asks a
person (loop/approvals.py): calls without a result are held whatever their tool, a decision taken before the stop
does not cover them, one taken after does, and a recorded answer only has to be finished. Plain domain code."""

from datetime import UTC, datetime, timedelta

from services.common.usage import Usage
from services.engine.journal import (
    APPROVED,
    AgentResponse,
    AgentThought,
    ApprovalDecision,
    ApprovalRequest,
    ModelCall,
    Resumed,
    Step,
    ToolCall,
    ToolResult,
    UserRequest,
)
from services.engine.loop.approvals import ApprovalGate
from services.engine.loop.run_progress import progress_from_steps, repeat_safe

START = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


def numbered(*contents: object, model_calls: tuple[int, ...] = ()) -> list[Step]:
    return [
        Step(
            content,  # type: ignore[arg-type]
            sequence=n,
            created_at=START + timedelta(seconds=n),
            model_call=ModelCall(Usage(10, 5)) if n in model_calls else None,
        )
        for n, content in enumerate(contents, start=1)
    ]


def test_a_call_without_a_result_is_held_whatever_its_tool_and_the_marker_says_so() -> None:
    steps = numbered(
        UserRequest("add"), AgentThought("adding"), ToolCall("calculator", "c1", "{}"), model_calls=(2,)
    )
    progress = progress_from_steps(steps)
    assert [call.id for call in progress.pending] == ["c1"] and progress.model_calls == 1
    assert not repeat_safe("calculator")
    marker = progress.take_over("engine-b", 1)
    assert (marker.executor_id, marker.attempt, marker.held_tool_call_ids) == ("engine-b", 1, ("c1",))
    assert "calculator (c1)" in marker.summary
    gate = ApprovalGate(set(), progress.decisions, 0, progress.unknown)
    [call] = progress.pending
    assert gate.undecided(call)  # calculator requires no approval, yet its unknown outcome does
    assert "outcome" in gate.request(call).prompt and "unknown" in gate.request(call).prompt


def test_a_decision_before_the_stop_does_not_cover_the_call_and_one_after_does() -> None:
    before = numbered(
        UserRequest("delete"), AgentThought("deleting"), ToolCall("file_io", "c1", "{}"),
        ApprovalRequest("allow?", "c1", "file_io"), ApprovalDecision(APPROVED, 4),
        Resumed("engine-b", 1, "holds", ("c1",)),
    )
    held = progress_from_steps(before)
    assert held.unknown == {"c1"} and "c1" not in held.decisions and held.resumes == 1
    gate = ApprovalGate({"file_io"}, held.decisions, 0, held.unknown)
    assert gate.undecided(held.pending[0])

    rejected = progress_from_steps(numbered(
        *[step.content for step in before], ApprovalRequest("unknown", "c1", "file_io"),
        ApprovalDecision("rejected", 7, "maybe ran", "alice"),
    ))
    gate = ApprovalGate({"file_io"}, rejected.decisions, 0, rejected.unknown)
    call = rejected.pending[0]
    assert not gate.undecided(call)
    refusal = gate.refusal(call)
    assert refusal is not None and "outcome of this call is unknown" in refusal and "not run again" in refusal
    # The stretch of execution counts from the last decision, not from the run's start.
    assert rejected.stretch_began == START + timedelta(seconds=8)


def test_a_run_stopped_after_its_answer_only_has_to_finish_and_after_results_asks_the_model() -> None:
    answered = progress_from_steps(numbered(UserRequest("hi"), AgentResponse("hello"), model_calls=(2,)))
    assert answered.answer == "hello" and not answered.pending
    assert "finishes" in answered.take_over("engine-b", 1).summary
    after_result = progress_from_steps(numbered(
        UserRequest("add"), AgentThought("adding"), ToolCall("calculator", "c1", "{}"),
        ToolResult("calculator", "c1", 3, "3"), model_calls=(2,),
    ))
    assert after_result.pending == [] and after_result.answer is None and after_result.tool_calls == 1
    marker = after_result.take_over("engine-b", 2)
    assert marker.held_tool_call_ids == () and "model call again" in marker.summary
    assert after_result.messages[-1] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
