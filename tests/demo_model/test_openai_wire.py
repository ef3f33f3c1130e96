"""The wire format pieces: splitting, chunk order, usage counts and error bodies."""

import json

from services.demo_model.openai_wire import (
    Completion,
    HttpError,
    ModelReply,
    ReplyToolCall,
    count_usage,
    split_arguments,
    split_words,
    sse_event,
    stream_chunks,
)

REPLY = ModelReply(
    content="Let me check.",
    tool_calls=[
        ReplyToolCall("call_1", "calculator", '{"operation": "add", "x": 1, "y": 2}'),
        ReplyToolCall("call_2", "web_search", '{"query": "x"}'),
    ],
)


def test_split_words_and_arguments_join_back_exactly() -> None:
    text = "  First, I need\nto add  5."
    assert split_words(text) == ["  ", "First, ", "I ", "need\n", "to ", "add  ", "5."]
    for arguments in ['{"a": 1}', "{}", '{"query": "a long search query"}']:
        pieces = split_arguments(arguments)
        assert "".join(pieces) == arguments and len(pieces) >= 2
    assert split_arguments("") == [] and split_arguments("x") == ["x"]


def test_stream_chunks_follow_the_real_api_order() -> None:
    usage = count_usage([{"role": "user", "content": "add one and two"}], REPLY)
    chunks = list(stream_chunks(Completion(model="m", id="chatcmpl-1", created=7), REPLY, usage))
    assert {(c["id"], c["object"], c["model"], c["created"]) for c in chunks} == {
        ("chatcmpl-1", "chat.completion.chunk", "m", 7)
    }
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant"}
    assert [d["content"] for d in deltas if "content" in d] == ["Let ", "me ", "check."]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    starts = [c for c in calls if "id" in c]
    assert starts == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": ""}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "web_search", "arguments": ""}},
    ]
    for index, call in enumerate(REPLY.tool_calls):
        pieces = [c["function"]["arguments"] for c in calls if c["index"] == index and "id" not in c]
        assert len(pieces) >= 2 and "".join(pieces) == call.arguments
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage.as_dict()
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_fields() -> None:
    chunks = list(stream_chunks(Completion(model="m"), ModelReply(content="hi"), None))
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_usage_counts_words_of_prompt_and_reply() -> None:
    messages = [
        {"role": "user", "content": "add one and two"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "calc", "arguments": "{} {}"}}]},
        {"role": "tool", "content": [{"type": "text", "text": "3"}]},
    ]
    usage = count_usage(messages, ModelReply(content="The result is 3."))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4 + 3 + 1, 4, 12)


def test_http_error_body_and_sse_framing() -> None:
    assert HttpError(429, "slow down").body() == {
        "error": {"message": "slow down", "type": "rate_limit_error", "code": None}
    }
    assert HttpError(503, "busy", code="overloaded").body()["error"] == {
        "message": "busy",
        "type": "server_error",
        "code": "overloaded",
    }
    event = sse_event({"a": 1})
    assert event.startswith("data: ") and event.endswith("\n\n") and json.loads(event[6:]) == {"a": 1}
