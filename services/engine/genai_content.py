"""Message content in the OpenTelemetry GenAI conventions' structured form: what a model call's span carries as
`gen_ai.system_instructions`, `gen_ai.input.messages` and `gen_ai.output.messages` when content capture is on
(services.engine.spans; the capture setting is in services.common.tracing).

The engine speaks the OpenAI chat-completions shape (role, content, tool_calls, tool_call_id); the conventions
want each message as a role and a list of typed parts, so that a trace backend (Jaeger, Tempo, Langfuse) shows a
tool call and its answer as such instead of a JSON blob it cannot read:

    {"role": "assistant", "parts": [{"type": "text", "content": "..."},
                                     {"type": "tool_call", "id": "call_1", "name": "calculator", "arguments": {...}}],
     "finish_reason": "tool_call"}

Pure functions over plain data; the JSON texts they return are what the span attributes hold (OpenTelemetry
attributes cannot be nested objects).
"""

import json
from collections.abc import Iterable, Sequence
from typing import Any

#: OpenAI's finish reasons that the conventions spell differently; the others ("stop", "length",
#: "content_filter") are the same in both.
_FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}


def _text_of(content: Any) -> str:
    """The text of an OpenAI message's content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _arguments(text: str) -> Any:
    """A tool call's arguments as the object they encode; the raw text when the model wrote no valid JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _tool_call_parts(calls: Iterable[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [
        {"type": "tool_call", "id": call_id, "name": name, "arguments": _arguments(arguments)}
        for call_id, name, arguments in calls
    ]


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": message.get("tool_call_id", ""),
                 "response": _text_of(message.get("content"))}]
    parts: list[dict[str, Any]] = []
    if text := _text_of(message.get("content")):
        parts.append({"type": "text", "content": text})
    calls = message.get("tool_calls") or ()
    parts.extend(_tool_call_parts(
        (call.get("id", ""), call.get("function", {}).get("name", ""), call.get("function", {}).get("arguments", ""))
        for call in calls
    ))
    return parts


def input_content(messages: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """(`gen_ai.system_instructions`, `gen_ai.input.messages`) of a model call's chat messages: the system
    messages' text parts apart ("" when there is none), every other message as a role and its parts."""
    system = [
        {"type": "text", "content": text}
        for message in messages if message.get("role") == "system" and (text := _text_of(message.get("content")))
    ]
    chat = [{"role": message.get("role", ""), "parts": _parts(message)}
            for message in messages if message.get("role") != "system"]
    return (json.dumps(system, ensure_ascii=False) if system else "", json.dumps(chat, ensure_ascii=False))


def output_content(text: str, tool_calls: Iterable[tuple[str, str, str]], finish_reason: str) -> str:
    """`gen_ai.output.messages` of a model call: the one assistant message it answered, its text and the tool
    calls (id, name, raw arguments) it asked for, and why it stopped."""
    calls = _tool_call_parts(tool_calls)
    parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
    parts.extend(calls)
    # The schema requires a reason; a model that gave none stopped for its calls, or because it was done.
    reason = _FINISH_REASONS.get(finish_reason, finish_reason) or ("tool_call" if calls else "stop")
    return json.dumps([{"role": "assistant", "parts": parts, "finish_reason": reason}], ensure_ascii=False)
