"""Test helpers: tool definitions, the SDK client and a stream accumulator (as an engine would do it)."""

from dataclasses import dataclass, field
from typing import Any

import openai

from tests.support.seed import SEED_CALCULATOR_SCHEMA

#: The calculator as the engine offers it (the seed's schema).
CALCULATOR_TOOL = SEED_CALCULATOR_SCHEMA


def tool(name: str) -> dict[str, Any]:
    """A minimal tool definition offering `name`."""
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def sdk_client(base_url: str) -> openai.AsyncOpenAI:
    """The real SDK, without retries so an error status surfaces at once."""
    return openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)


@dataclass
class StreamedReply:
    """A streamed completion put back together the way an engine does it."""

    content: str = ""
    #: tool call index -> {"id", "name", "arguments"}
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    #: tool call index -> how many argument pieces arrived
    argument_pieces: dict[int, int] = field(default_factory=dict)
    content_pieces: int = 0
    finish_reason: str | None = None
    usage: Any = None
    first_delta_role: str | None = None


async def collect_stream(stream: Any) -> StreamedReply:
    """Accumulate the chunks of a `stream=True` completion."""
    reply = StreamedReply()
    async for chunk in stream:
        if chunk.usage is not None:
            assert chunk.choices == [], "usage comes in its own chunk with no choices"
            reply.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if reply.first_delta_role is None:
                reply.first_delta_role = delta.role
            if delta.content:
                reply.content += delta.content
                reply.content_pieces += 1
            for call in delta.tool_calls or []:
                entry = reply.tool_calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                if call.id:
                    entry["id"] = call.id
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
                    reply.argument_pieces[call.index] = reply.argument_pieces.get(call.index, 0) + 1
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
    return reply
