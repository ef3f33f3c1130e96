"""An OpenAI-compatible chat-completions HTTP server around a pluggable responder, and how to run it.

The same app serves the offline demo model (responder = the planner) and the tests' scripted model (responder =
the next queued reply), so the engine always talks to it through the real `openai` SDK.
"""

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.demo_model.openai_wire import (
    SSE_DONE,
    Completion,
    HttpError,
    ModelReply,
    Usage,
    completion_body,
    count_usage,
    sse_event,
    stream_chunks,
)
from services.demo_model.planner import asks_for_slow_pace, plan_reply
from services.demo_model.settings import DemoModelSettings

log = logging.getLogger(__name__)

#: The one model id GET /v1/models lists (any requested model name is accepted and echoed back).
DEMO_MODEL_ID = "demo"

#: Answers one parsed chat-completions request with a reply or an HTTP error (returned or raised); may be async.
Responder = Callable[[dict[str, Any]], ModelReply | HttpError | Awaitable[ModelReply | HttpError]]


def _error_response(error: HttpError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """Parse and check a chat-completions request body; raise a 400 HttpError saying what is wrong."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HttpError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise HttpError(400, "'model' must be a non-empty string", code="missing_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "'messages' must be a non-empty list of messages", code="missing_messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise HttpError(400, f"messages[{index}] must be an object with a string 'role'")
    if not isinstance(body.get("stream", False), bool):
        raise HttpError(400, "'stream' must be true or false")
    if not isinstance(body.get("tools", []), list):
        raise HttpError(400, "'tools' must be a list of tool definitions")
    if not isinstance(body.get("stream_options") or {}, dict):
        raise HttpError(400, "'stream_options' must be an object")
    return body


async def _answer(responder: Responder, body: dict[str, Any]) -> ModelReply:
    """Call the responder, sync or async, and turn an HttpError it returns into one raised."""
    try:
        outcome = responder(body)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except HttpError:
        raise
    except Exception as exc:
        # A responder bug must still reach the SDK as an OpenAI-style 500, with the cause in the log.
        log.exception("the model responder failed")
        raise HttpError(500, f"the model server failed to answer: {exc}") from exc
    if isinstance(outcome, HttpError):
        raise outcome
    if not isinstance(outcome, ModelReply):
        raise HttpError(500, f"the model responder returned {type(outcome).__name__}, not a ModelReply")
    return outcome


def create_app(
    responder: Responder,
    *,
    chunk_delay_seconds: float = 0.0,
    latency_seconds: float | Callable[[dict[str, Any]], float] = 0.0,
) -> Starlette:
    """The chat-completions app: POST /v1/chat/completions, GET /v1/models, GET /health.

    `chunk_delay_seconds` is slept between streamed chunks so a stream arrives over time like a real model's;
    `latency_seconds` once before each reply (streamed or not) starts: a number, or a function of the request's
    body (the demo model's slow pace on request).
    """

    async def chat_completions(request: Request) -> Response:
        try:
            body = parse_chat_request(await request.body())
            reply = await _answer(responder, body)
        except HttpError as error:
            return _error_response(error)
        latency = latency_seconds(body) if callable(latency_seconds) else latency_seconds
        if latency:
            await asyncio.sleep(latency)
        completion = Completion(model=body["model"])
        usage = count_usage(body["messages"], reply)
        if not body.get("stream", False):
            return JSONResponse(completion_body(completion, reply, usage))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
        return StreamingResponse(
            _stream(completion, reply, usage if include_usage else None, chunk_delay_seconds),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": DEMO_MODEL_ID, "object": "model", "created": 0, "owned_by": "demo"}]}
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_exception(request: Request, exc: Exception) -> Response:
        # Unknown paths and wrong methods answer in OpenAI's error shape too, so SDK errors read well.
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return _error_response(HttpError(status, f"{request.method} {request.url.path}: {detail}"))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_exception},
    )


async def _stream(
    completion: Completion, reply: ModelReply, usage: Usage | None, chunk_delay_seconds: float
) -> AsyncIterator[str]:
    for index, chunk in enumerate(stream_chunks(completion, reply, usage)):
        if index and chunk_delay_seconds:
            await asyncio.sleep(chunk_delay_seconds)
        yield sse_event(chunk)
    yield SSE_DONE


@dataclass
class RunningModelServer:
    """A model server running in this event loop, and the port it bound."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give the SDK."""
        return f"http://{self.host}:{self.port}/v1"

    async def stop(self, grace: float = 0) -> None:
        """Stop accepting connections, give open responses `grace` s to finish, then wait for the server task."""
        # uvicorn annotates this int | None, yet only hands it to asyncio.wait_for(timeout=), which takes any
        # float: fractions of a second work as given.
        self.server.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
        self.server.should_exit = True
        await self.task


async def _serve(server: uvicorn.Server, host: str, port: int) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot bind; inside a task that would tear down the event loop.
        raise OSError(f"could not bind the model server to {host}:{port}; is the port in use?") from None


async def start_model_server(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
) -> RunningModelServer:
    """Serve `app` with uvicorn in the running event loop on host:port (0 picks a free port) until stopped."""
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", log_config=None, access_log=access_log, log_level=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(_serve(server, host, port), name=f"model-server-{host}:{port}")
    while not server.started:
        if task.done():
            task.result()  # raises why it stopped
            raise OSError(f"the model server on {host}:{port} stopped before it started")
        await asyncio.sleep(0.005)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    return RunningModelServer(server=server, task=task, host=host, port=bound_port)


@dataclass
class DemoModelApp:
    """The running offline demo model."""

    server: RunningModelServer

    @property
    def port(self) -> int:
        """The port the demo model listens on."""
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop the HTTP server, letting open streams finish for `grace` s."""
        await self.server.stop(grace)


async def start_demo_model(settings: DemoModelSettings) -> DemoModelApp:
    """Start the offline demo model (the deterministic planner behind the chat-completions API)."""
    def latency(body: dict[str, Any]) -> float:
        return settings.slow_seconds if asks_for_slow_pace(body) else settings.latency_seconds

    app = create_app(plan_reply, chunk_delay_seconds=settings.chunk_delay_seconds, latency_seconds=latency)
    server = await start_model_server(app, settings.host, settings.port, access_log=True)
    return DemoModelApp(server=server)
