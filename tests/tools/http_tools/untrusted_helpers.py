"""Helpers of the untrusted input tests (test_untrusted_schemas, test_untrusted_responses,
test_untrusted_destinations): raw local servers that answer with given bytes or never, and health's latency."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.tools.http_tools.helpers import Tools

#: Settings that let the tools service reach the tests' servers on 127.0.0.1 (by address).
LOCAL = {"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1"}


# --- raw local servers -------------------------------------------------------------------------------------------


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that counts its connections and answers each with `reply` (None: never)."""

    reply: bytes | None
    connections: int = 0
    server: asyncio.Server | None = None
    held: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.reply is None:
            self.held.append(writer)  # read nothing, answer nothing, keep the connection open
            return
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.reply)
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def raw_server(reply: bytes | None) -> AsyncIterator[RawServer]:
    server = RawServer(reply)
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield server
    finally:
        for writer in server.held:
            writer.close()
        server.server.close()
        await server.server.wait_closed()


def json_reply(body: str) -> bytes:
    data = body.encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )


async def health_latency(tools: Tools) -> float:
    """Seconds one health check of the service takes to answer."""
    assert tools.channel is not None
    started = time.perf_counter()
    response = await health_pb2_grpc.HealthStub(tools.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    return time.perf_counter() - started
