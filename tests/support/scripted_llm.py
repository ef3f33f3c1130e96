"""A scripted OpenAI-compatible model server for tests: it answers with the replies a test queues, in order.

    async with ScriptedLLM() as llm:
        llm.script(tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}), text_reply("15"))
        ... point the engine at llm.base_url, run it ...
        assert llm.requests[1]["messages"][-1]["role"] == "tool"

It is the demo model's own HTTP app (same wire format, streamed or not) with a queue instead of the planner.

For tests of slow or failing endpoints: `first_byte_delay_seconds` (or `delayed(reply, s)` for one reply) holds
the answer back before its first byte; `http_error(status, message, headers=...)` answers an error with extra
headers (Retry-After); `usages` are the token counts the server reported for each request, and `aborted` the
requests whose connection the client closed before the answer was complete (`await llm.wait_for(...)` waits for
either to show something).

For runs in parallel, whose requests interleave, `ScriptedLLM(pick=...)` answers each request with what
`pick(body)` returns instead of the next queued reply (e.g. by the conversation's user message and turn).
"""

import asyncio
import contextlib
import contextvars
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Self

from services.demo_model.app import RunningModelServer, create_app, start_model_server
from services.demo_model.openai_wire import HttpError, ModelReply, ReplyToolCall, Usage, count_usage

__all__ = [
    "Delayed",
    "HttpError",
    "ModelReply",
    "ReplyToolCall",
    "ScriptedLLM",
    "delayed",
    "http_error",
    "text_reply",
    "tool_call_reply",
    "tool_calls_reply",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Chooses the answer to one request from its body (the messages so far), instead of the queue.
Pick = Callable[[dict[str, Any]], "ModelReply | HttpError | Delayed"]

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


def tool_calls_reply(*calls: tuple[str, dict[str, Any] | str], content: str | None = None) -> ModelReply:
    """Several tool calls in one turn, in this order: `tool_calls_reply(("calculator", {...}), ("file_io", {...}))`."""
    replies = [tool_call_reply(name, arguments) for name, arguments in calls]
    return ModelReply(content=content, tool_calls=[reply.tool_calls[0] for reply in replies])


@dataclass(frozen=True)
class Delayed:
    """A scripted reply (or error) held back `seconds` before its first byte."""

    reply: ModelReply | HttpError
    seconds: float


def delayed(reply: ModelReply | HttpError, seconds: float) -> Delayed:
    """`reply`, answered only after `seconds` (before the status line: the client waits for the first byte)."""
    return Delayed(reply, seconds)


class _HttpErrorWithHeaders(HttpError):
    def __init__(self, status: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(status, message)
        self.headers = headers


def http_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> HttpError:
    """An HTTP error answer with extra response headers, e.g. `http_error(429, "slow down", headers={"retry-after":
    "0"})`."""
    return _HttpErrorWithHeaders(status, message, dict(headers or {}))


@dataclass
class _Exchange:
    """One HTTP request to the server, as the observing middleware sees it."""

    index: int | None = None  # position in `requests`, once the responder took the request
    headers: dict[str, str] = field(default_factory=dict)


#: The exchange of the request being answered (set by the middleware, read by the responder).
_current_exchange: contextvars.ContextVar[_Exchange] = contextvars.ContextVar("scripted_llm_exchange")


class ScriptedLLM:
    """An in-process chat-completions server on 127.0.0.1 (free port) that replays scripted replies.

    Use as `async with ScriptedLLM(chunk_delay_seconds=...) as llm:`; `base_url` is ready inside the block.
    """

    def __init__(
        self,
        *replies: ModelReply | HttpError | Delayed,
        chunk_delay_seconds: float = 0.0,
        first_byte_delay_seconds: float = 0.0,
        pick: Pick | None = None,
    ) -> None:
        self._pick = pick
        self._replies: deque[ModelReply | HttpError | Delayed] = deque(replies)
        self._chunk_delay_seconds = chunk_delay_seconds
        self._first_byte_delay_seconds = first_byte_delay_seconds
        self._server: RunningModelServer | None = None
        self._changed = asyncio.Event()
        #: Every request body received, in order (what the engine sent: messages, tools, stream flags).
        self.requests: list[dict[str, Any]] = []
        #: The usage the server reported for each request (None for an error answer), aligned with `requests`.
        self.usages: list[Usage | None] = []
        #: Indexes (into `requests`) of the requests whose connection the client closed before the answer ended.
        self.aborted: set[int] = set()

    def script(self, *replies: ModelReply | HttpError | Delayed) -> None:
        """Queue replies; each request takes the next one (an HttpError is answered as that HTTP error)."""
        self._replies.extend(replies)

    def reset(self, pick: Pick | None = None) -> None:
        """Forget every request seen and every reply left, and answer by `pick` from now on (by the queue without
        one): the server as new, for the next test of a module that shares it (with the stack pointed at it).
        Call it while no request is in flight."""
        self._pick = pick
        self._replies.clear()
        self.requests.clear()
        self.usages.clear()
        self.aborted.clear()

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

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until `condition()` (about `requests` or `aborted`) holds; False if it still does not after
        `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()
        return True

    def _notify(self) -> None:
        self._changed.set()

    async def _respond(self, body: dict[str, Any]) -> ModelReply | HttpError:
        self.requests.append(body)
        exchange = _current_exchange.get(None)
        if exchange is not None:
            exchange.index = len(self.requests) - 1
        if self._pick is not None:
            item = self._pick(body)
        else:
            item = self._replies.popleft() if self._replies else HttpError(500, NO_REPLY_LEFT)
        delay = self._first_byte_delay_seconds
        if isinstance(item, Delayed):
            item, delay = item.reply, item.seconds
        self.usages.append(count_usage(body["messages"], item) if isinstance(item, ModelReply) else None)
        if isinstance(item, _HttpErrorWithHeaders) and exchange is not None:
            exchange.headers.update(item.headers)
        self._notify()
        if delay:
            await asyncio.sleep(delay)
        return item

    def _observed(self, app: ASGIApp) -> ASGIApp:
        """`app` behind a middleware that adds scripted response headers and notices a client that closes the
        connection before the answer is complete: the request goes to `aborted` and its handler is cancelled
        (so a delayed answer does not outlive the client)."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            body: list[Message] = []
            while not body or body[-1].get("more_body", False):
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body.append(message)
            client_gone = asyncio.Event()
            complete = False

            async def replay() -> Message:
                if body:
                    return body.pop(0)
                await client_gone.wait()
                return {"type": "http.disconnect"}

            async def send_observed(message: Message) -> None:
                nonlocal complete
                if message["type"] == "http.response.start" and exchange.headers:
                    extra = [(name.lower().encode(), value.encode()) for name, value in exchange.headers.items()]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    complete = True
                await send(message)

            exchange = _Exchange()
            token = _current_exchange.set(exchange)
            try:
                handler = asyncio.ensure_future(app(scope, replay, send_observed))  # copies the context
            finally:
                _current_exchange.reset(token)
            # After the body, uvicorn's receive() answers only when the client disconnects or the response ends.
            listener = asyncio.ensure_future(receive())
            try:
                await asyncio.wait({handler, listener}, return_when=asyncio.FIRST_COMPLETED)
                if listener.done() and not handler.done():
                    client_gone.set()
                    if not complete:
                        if exchange.index is not None:
                            self.aborted.add(exchange.index)
                            self._notify()
                        handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
            finally:
                listener.cancel()

        return observed

    async def __aenter__(self) -> Self:
        app = create_app(self._respond, chunk_delay_seconds=self._chunk_delay_seconds)
        self._server = await start_model_server(self._observed(app), "127.0.0.1", 0)  # type: ignore[arg-type]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            # A short grace lets a stream the test abandoned finish instead of hanging the test's teardown.
            await server.stop(grace=1.0)
