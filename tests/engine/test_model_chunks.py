"""What the engine accepts as a streamed chat completion chunk: it reads chunks as plain JSON, so a chunk of
another shape must become a bad_model_response failure, never a crash of the loop."""

import pytest

from services.engine.loop.model_client import _is_chunk

GOOD = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "calc"}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "{\"a\""}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    {"choices": [{"index": 0, "delta": {"content": None}}], "usage": None},
]

BAD = {
    "not an object": ["choices"],
    "choices not a list": {"choices": "abc"},
    "usage not an object": {"choices": [], "usage": 12},
    "choice not an object": {"choices": ["x"]},
    "delta not an object": {"choices": [{"delta": "x"}]},
    "content not text": {"choices": [{"delta": {"content": 5}}]},
    "tool call not an object": {"choices": [{"delta": {"tool_calls": ["x"]}}]},
    "function not an object": {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
    "name not text": {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 1}}]}}]},
    "index not a number": {"choices": [{"delta": {"tool_calls": [{"index": "0", "function": {}}]}}]},
}


@pytest.mark.parametrize("chunk", GOOD)
def test_chunks_of_the_openai_shape_are_read(chunk: object) -> None:
    assert _is_chunk(chunk)


@pytest.mark.parametrize("chunk", BAD.values(), ids=BAD.keys())
def test_chunks_of_another_shape_are_refused(chunk: object) -> None:
    assert not _is_chunk(chunk)
