"""A scripted OpenAI-compatible model server for tests: it answers with the replies a test queues, in order.

    async with ScriptedLLM() as llm:
        llm.script(tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}), text_reply("15"))
        ... point the engine at llm.base_url, run it ...
        assert llm.requests[1]["messages"][-1]["role"] == "tool"

It is the demo model's own HTTP app (same wire format, streamed or not) with a queue instead of the planner.
"""

import json
import uuid
from collections import deque
from typing import Any, Self

from services.demo_model.app import RunningModelServer, create_app, start_model_server
from services.demo_model.openai_wire import HttpError, ModelReply, ReplyToolCall

__all__ = ["HttpError", "ModelReply", "ReplyToolCall", "ScriptedLLM", "text_reply", "tool_call_reply"]

#: What the server answers once every queued reply has been used.
NO_REPLY_LEFT = "scripted LLM: no reply left (the test scripted fewer replies than the model was asked for)"


def text_reply(content: str) -> ModelReply:
    """A final answer: text and no tool calls."""
    return ModelReply(content=content)


def tool_call_reply(
    name: str, arguments: dict[str, Any] | str, *, id: str | None = None, content: str | None = None
) -> ModelReply:
    """One tool call, with optional thought text before it. A str `arguments` is sent verbatim (even bad JSON)."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    call = ReplyToolCall(id=id or f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=raw)
    return ModelReply(content=content, tool_calls=[call])


class ScriptedLLM:
    """An in-process chat-completions server on 127.0.0.1 (free port) that replays scripted replies.

    Use as `async with ScriptedLLM(chunk_delay_seconds=...) as llm:`; `base_url` is ready inside the block.
    """

    def __init__(self, *replies: ModelReply | HttpError, chunk_delay_seconds: float = 0.0) -> None:
        self._replies: deque[ModelReply | HttpError] = deque(replies)
        self._chunk_delay_seconds = chunk_delay_seconds
        self._server: RunningModelServer | None = None
        #: Every request body received, in order (what the engine sent: messages, tools, stream flags).
        self.requests: list[dict[str, Any]] = []

    def script(self, *replies: ModelReply | HttpError) -> None:
        """Queue replies; each request takes the next one (an HttpError is answered as that HTTP error)."""
        self._replies.extend(replies)

    @property
    def remaining(self) -> int:
        """How many queued replies have not been used yet."""
        return len(self._replies)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL ("http://127.0.0.1:PORT/v1") of the running server."""
        if self._server is None:
            raise RuntimeError("ScriptedLLM is not running; use it as `async with ScriptedLLM() as llm:`")
        return self._server.base_url

    def _respond(self, body: dict[str, Any]) -> ModelReply | HttpError:
        self.requests.append(body)
        if not self._replies:
            return HttpError(500, NO_REPLY_LEFT)
        return self._replies.popleft()

    async def __aenter__(self) -> Self:
        app = create_app(self._respond, chunk_delay_seconds=self._chunk_delay_seconds)
        self._server = await start_model_server(app, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            # A short grace lets a stream the test abandoned finish instead of hanging the test's teardown.
            await server.stop(grace=1.0)
