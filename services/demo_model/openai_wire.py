"""The OpenAI chat-completions wire format: replies, usage, JSON bodies, SSE chunks and error bodies.

One implementation shared by the offline demo model and the tests' scripted model server, so both speak exactly
what the `openai` SDK expects (streamed or not), and a fix here fixes both.
"""

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: The line that ends every chat-completions SSE stream.
SSE_DONE = "data: [DONE]\n\n"

#: Pieces a tool call's arguments are streamed in are at most this long (the real API sends a few tokens each).
_ARGUMENT_PIECE_CHARS = 8

#: OpenAI error `type` for a status code; anything else 4xx is a bad request, 5xx a server error.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class ReplyToolCall:
    """One function call the model asks for. `arguments` is the raw string sent, valid JSON or not (on purpose)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ModelReply:
    """What the model answers in one turn: some text, some tool calls, or both."""

    content: str | None = None
    tool_calls: list[ReplyToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        """Why the model stopped: "tool_calls" when it wants tools run, otherwise "stop" (as the real API)."""
        return "tool_calls" if self.tool_calls else "stop"


class HttpError(Exception):
    """An HTTP error the model server answers with instead of a reply (a 500, a 429 rate limit, a 400 ...).

    A responder may raise it or return it; the body is OpenAI's {"error": {"message", "type", "code"}}.
    """

    def __init__(self, status: int, message: str, *, type: str | None = None, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.type = type or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.code = code

    def body(self) -> dict[str, Any]:
        """The OpenAI-style JSON error body."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


@dataclass(frozen=True)
class Usage:
    """Token counts of one completion (deterministic word counts, not a real tokenizer)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The `usage` object of the wire format."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def message_text(message: dict[str, Any]) -> str:
    """The text of a request message, whose content is a string, null, or a list of {"type":"text"} parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _word_count(text: str) -> int:
    return len(text.split())


def _request_message_words(message: dict[str, Any]) -> int:
    # An assistant message that called tools costs its calls too, so a long tool loop grows the prompt count.
    words = _word_count(message_text(message))
    for call in message.get("tool_calls") or []:
        function = (call.get("function") if isinstance(call, dict) else None) or {}
        words += _word_count(str(function.get("name", ""))) + _word_count(str(function.get("arguments", "")))
    return words


def count_usage(messages: list[dict[str, Any]], reply: ModelReply) -> Usage:
    """Usage for answering `messages` with `reply`: whitespace-separated words of each side."""
    prompt = sum(_request_message_words(m) for m in messages if isinstance(m, dict))
    completion = _word_count(reply.content or "") + sum(
        _word_count(call.name) + _word_count(call.arguments) for call in reply.tool_calls
    )
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


@dataclass(frozen=True)
class Completion:
    """Identity of one completion, shared by all its chunks: id, creation time and the model echoed back."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


def _tool_call_json(call: ReplyToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def completion_body(completion: Completion, reply: ModelReply, usage: Usage) -> dict[str, Any]:
    """The non-streaming response: object "chat.completion" with one choice and the usage."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [_tool_call_json(call) for call in reply.tool_calls]
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage.as_dict(),
    }


def split_words(text: str) -> list[str]:
    """Split `text` into words, each with the whitespace after it, so the pieces join back exactly."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def split_arguments(arguments: str) -> list[str]:
    """Split a tool call's arguments into the pieces they stream in: at least 2 when there are 2+ characters."""
    if len(arguments) < 2:
        return [arguments] if arguments else []
    size = min(_ARGUMENT_PIECE_CHARS, (len(arguments) + 1) // 2)
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _delta_chunks(reply: ModelReply) -> Iterator[dict[str, Any]]:
    """The `delta` of each streamed chunk, in the order the real API sends them."""
    yield {"role": "assistant"}
    for piece in split_words(reply.content or ""):
        yield {"content": piece}
    for index, call in enumerate(reply.tool_calls):
        # The first delta of a call names it; the arguments follow in pieces under the same index.
        yield {
            "tool_calls": [
                {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            ]
        }
        for piece in split_arguments(call.arguments):
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def stream_chunks(completion: Completion, reply: ModelReply, usage: Usage | None) -> Iterator[dict[str, Any]]:
    """The streamed response as "chat.completion.chunk" objects; `usage` set adds the final usage-only chunk."""

    def chunk(choices: list[dict[str, Any]], chunk_usage: Usage | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
            "choices": choices,
        }
        if usage is not None:
            # With include_usage the real API sends "usage": null on every chunk but the last.
            body["usage"] = chunk_usage.as_dict() if chunk_usage else None
        return body

    for delta in _delta_chunks(reply):
        yield chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
    yield chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}])
    if usage is not None:
        yield chunk([], usage)


def sse_event(data: dict[str, Any]) -> str:
    """One server-sent event carrying `data` as JSON."""
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
