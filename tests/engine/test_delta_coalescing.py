"""Deltas that queue up while the executor link is busy go as one message per forming step, the pieces joined
in the order they came."""

from services.common.step_delta import StepDelta, ToolCallDelta
from services.engine.deltas import coalesced

A, B = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


def text(run_id: str, sequence: int, piece: str) -> StepDelta:
    return StepDelta(run_id=run_id, sequence=sequence, text=piece)


def call(run_id: str, sequence: int, call_id: str, name: str, arguments: str) -> StepDelta:
    piece = ToolCallDelta(tool_call_id=call_id, tool_name=name, arguments=arguments)
    return StepDelta(run_id=run_id, sequence=sequence, tool_call=piece)


def test_interleaved_pieces_of_several_runs_become_one_delta_per_step_in_order() -> None:
    queued = [
        text(A, 2, "Let "), text(B, 2, "I "), text(A, 2, "me "), call(A, 3, "c1", "calc", '{"a"'),
        text(B, 2, "will"), call(A, 3, "", "", ': 1}'), text(A, 2, "see"),
    ]
    assert coalesced(queued) == [
        text(A, 2, "Let me see"), text(B, 2, "I will"), call(A, 3, "c1", "calc", '{"a": 1}'),
    ]


def test_one_delta_goes_as_it_is() -> None:
    only = [text(A, 1, "x")]
    assert coalesced(only) == only
