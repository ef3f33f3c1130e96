"""The bare gRPC server stream the stack is compared with: a tiny grpc.aio server, in a subprocess of its own
(`python -m bench.baseline` serves on a free port and prints it), that answers each call with 8 small RunEvents
at once; and the clients that call it directly, as many at once as the 0 ms case's clients.

It is the floor of what one Python gRPC stream costs on this machine: a StreamChat through the stack is one such
stream to the client plus the engine's calls to the runs, tools and model services behind it."""

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from agentplatform.runs.v1 import runs_pb2
from bench.load import ClientRun

METHOD = "/bench.v1.BareStream/Stream"
#: As many messages as the seed example has steps.
MESSAGES_PER_CALL = 8
READY_TIMEOUT_SECONDS = 20.0


def _event(sequence: int) -> runs_pb2.RunEvent:
    """A small message, about the size of a tool-result step."""
    step = runs_pb2.Step(run_id="00000000-0000-4000-8000-000000000000", sequence=sequence)
    step.tool_result.tool_name = "calculator"
    step.tool_result.text = "15"
    step.create_time.GetCurrentTime()
    return runs_pb2.RunEvent(step=step)


async def _stream(request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[
    runs_pb2.RunEvent
]:
    for sequence in range(1, MESSAGES_PER_CALL + 1):
        yield _event(sequence)


async def serve() -> None:
    """Serve the bare stream on a free loopback port, print the port, and stop on SIGTERM or SIGINT."""
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(
        _stream,
        request_deserializer=runs_pb2.WatchRunRequest.FromString,
        response_serializer=runs_pb2.RunEvent.SerializeToString,
    )
    service, method = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {method: handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


@dataclass(frozen=True)
class BaselineServer:
    pid: int
    address: str


@contextmanager
def baseline_server() -> Iterator[BaselineServer]:
    """The bare stream server in its own process, stopped on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the baseline server did not report its port (exit {process.poll()})")
        yield BaselineServer(process.pid, f"127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(READY_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def bare_stream(channel: grpc.aio.Channel, key: str, deadline: float) -> ClientRun:
    """One call of the bare stream; an error unless all its messages arrived."""
    call = ClientRun(key)
    stream = channel.unary_stream(
        METHOD, request_serializer=runs_pb2.WatchRunRequest.SerializeToString,
        response_deserializer=runs_pb2.RunEvent.FromString,
    )
    call.started = time.perf_counter()
    try:
        async for event in stream(runs_pb2.WatchRunRequest(), timeout=deadline):
            call.note(event)
    except grpc.aio.AioRpcError as error:
        call.error = f"{error.code().name}: {error.details()}"
    call.ended = time.perf_counter()
    if call.error is None and len(call.sequences) != MESSAGES_PER_CALL:
        call.error = f"{len(call.sequences)} messages, expected {MESSAGES_PER_CALL}"
    return call


if __name__ == "__main__":
    asyncio.run(serve())
