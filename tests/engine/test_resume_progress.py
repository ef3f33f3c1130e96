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
from services.engine.loop.model_client import RequestedToolCall
from services.engine.loop.run_progress import progress_from_steps

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


def never(_call: RequestedToolCall) -> bool:
    return False


def test_a_call_safe_to_repeat_runs_again_and_the_others_wait_for_a_person() -> None:
    """The tools' declarations decide (the loop asks the tools service: engine tests check that end to end)."""
    steps = numbered(
        UserRequest("look and write"), AgentThought("both"),
        ToolCall("web_search", "c1", '{"query": "x"}'), ToolCall("http__post", "c2", "{}"), model_calls=(2,)
    )
    progress = progress_from_steps(steps)
    marker = progress.take_over("engine-b", 1, lambda call: call.name == "web_search")
    assert marker.held_tool_call_ids == ("c2",)
    assert progress.unknown == {"c2"} and [call.id for call in progress.pending] == ["c1", "c2"]
    assert "http__post (c2)" in marker.summary and progress.pending_sequences == {"c1": 3, "c2": 4}
    gate = ApprovalGate(set(), progress.decisions, 0, progress.unknown)
    assert not gate.undecided(progress.pending[0]) and gate.undecided(progress.pending[1])


def test_a_call_without_a_result_is_held_when_its_tool_is_not_safe_to_repeat() -> None:
    steps = numbered(
        UserRequest("add"), AgentThought("adding"), ToolCall("calculator", "c1", "{}"), model_calls=(2,)
    )
    progress = progress_from_steps(steps)
    assert [call.id for call in progress.pending] == ["c1"] and progress.model_calls == 1
    marker = progress.take_over("engine-b", 1, never)
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
    assert "finishes" in answered.take_over("engine-b", 1, never).summary
    after_result = progress_from_steps(numbered(
        UserRequest("add"), AgentThought("adding"), ToolCall("calculator", "c1", "{}"),
        ToolResult("calculator", "c1", 3, "3"), model_calls=(2,),
    ))
    assert after_result.pending == [] and after_result.answer is None and after_result.tool_calls == 1
    marker = after_result.take_over("engine-b", 2, never)
    assert marker.held_tool_call_ids == () and "model call again" in marker.summary
    assert after_result.messages[-1] == {"role": "tool", "tool_call_id": "c1", "content": "3"}


def test_a_run_handed_back_at_a_shutdown_says_by_whom_and_follows_the_same_journal_rules() -> None:
    cut_off = numbered(
        UserRequest("pay"), AgentThought("paying"), ToolCall("pay", "c1", "{}"),
        Resumed("engine-b", 0, "handed back ...", (), "engine-a"), model_calls=(2,),
    )
    progress = progress_from_steps(cut_off[:3])
    assert (progress.resumes, progress.handbacks) == (0, 0)
    progress.handed_back_by = "engine-a"
    marker = progress.take_over("engine-b", 0, never)
    # A hand-back does not make a call that was cut off safe to repeat: it is held as after a crash.
    assert marker == Resumed(
        "engine-b", 0, "handed back by engine engine-a at its shutdown; holds for a decision, their outcome "
        "unknown: pay (c1)", ("c1",), "engine-a",
    )
    # Read back, the marker counts as a resume, and as one that followed a hand-back.
    read_back = progress_from_steps(cut_off)
    assert (read_back.resumes, read_back.handbacks) == (1, 1)
