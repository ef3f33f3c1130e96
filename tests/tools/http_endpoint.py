"""The HTTP server the HTTP tools call in the tests (starlette under uvicorn, on a free port of 127.0.0.1, in the
test's event loop): it records every request it receives, and answers with JSON, errors, text, big and slow
bodies and redirects. Served by `serving_endpoint` (the `endpoint` fixture of conftest.py); used by http_tools/,
test_secrets_at_rest.py and the engine's tests of idempotency keys."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import free_port

#: Length of the body /big answers with.
BIG_BODY_BYTES = 300_000
#: How long /slow takes to answer.
SLOW_SECONDS = 3.0


@dataclass
class Received:
    """One request the test server received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """The test's HTTP server and what it received."""

    port: int
    received: list[Received] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def endpoint_app(endpoint: Endpoint) -> Starlette:
    async def record(request: Request) -> Received:
        received = Received(
            request.method, request.url.path, list(request.query_params.multi_items()),
            {key.lower(): value for key, value in request.headers.items()}, await request.body(),
        )
        endpoint.received.append(received)
        return received

    async def echo(request: Request) -> Response:
        received = await record(request)
        return JSONResponse({
            "method": received.method,
            "query": received.query,
            "json": json.loads(received.body) if received.body else None,
            "weather": "sunny",
        })

    async def fail(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("boom: the forecast database is on fire", status_code=500)

    async def text(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("plain words, not JSON")

    async def big(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("x" * BIG_BODY_BYTES)

    async def slow(request: Request) -> Response:
        await record(request)
        await asyncio.sleep(SLOW_SECONDS)
        return JSONResponse({"late": True})

    async def redirect(request: Request) -> Response:
        await record(request)
        return RedirectResponse("/echo", status_code=302)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[
        Route("/echo", echo, methods=methods),
        Route("/fail", fail, methods=methods),
        Route("/text", text, methods=methods),
        Route("/big", big, methods=methods),
        Route("/slow", slow, methods=methods),
        Route("/redirect", redirect, methods=methods),
    ])


@contextlib.asynccontextmanager
async def serving_endpoint() -> AsyncIterator[Endpoint]:
    """The test HTTP server on a free port of 127.0.0.1, in the running event loop, stopped on the way out."""
    endpoint = Endpoint(free_port())
    config = uvicorn.Config(
        endpoint_app(endpoint), host="127.0.0.1", port=endpoint.port, log_level="warning", lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    try:
        yield endpoint
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
