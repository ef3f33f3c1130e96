"""The load clients: native gRPC (grpc.aio) through the Envoy gateway, as a backend client or a gRPC-capable
frontend proxy would call it. Clients share a few channels (HTTP/2 connections), not one each."""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import grpc

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from bench.verify import SEED_QUESTION

#: Connections the clients of a case share. Each channel gets its own connection (a local subchannel pool:
#: by default gRPC would let channels with the same target and arguments share one).
CHANNELS = 4
CONNECT_TIMEOUT_SECONDS = 20.0
MS = 1000.0


@dataclass
class ClientRun:
    """One run as its client saw it. Times are time.perf_counter() seconds."""

    key: str
    started: float = 0.0
    ended: float = 0.0
    run_id: str = ""
    #: When the first RunEvent carrying a step arrived.
    first_step: float | None = None
    #: The sequences of the steps the stream delivered, in arrival order.
    sequences: list[int] = field(default_factory=list)
    #: The state of the last `run` event the stream carried.
    final_state: int = runs_pb2.RUN_STATE_UNSPECIFIED
    #: A non-OK status (or a stream that broke off), as "CODE: details".
    error: str | None = None
    #: For watched runs: receive wall-clock time minus each live step's create_time, in ms.
    delivery_ms: list[float] = field(default_factory=list)

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * MS

    @property
    def time_to_first_step_ms(self) -> float | None:
        return None if self.first_step is None else (self.first_step - self.started) * MS

    def note(self, event: runs_pb2.RunEvent) -> None:
        """Take in one event of a StreamChat or WatchRun stream."""
        kind = event.WhichOneof("event")
        if kind == "run":
            self.run_id = self.run_id or event.run.id
            self.final_state = event.run.state
        elif kind == "step":
            if self.first_step is None:
                self.first_step = time.perf_counter()
            self.sequences.append(event.step.sequence)


class Channels:
    """A few grpc.aio channels to one target (the gateway, or the baseline server), handed out round-robin."""

    def __init__(self, target: str, count: int = CHANNELS) -> None:
        self._target = target
        self._count = count
        self._exits = AsyncExitStack()
        self._channels: list[grpc.aio.Channel] = []
        self._next: itertools.cycle[grpc.aio.Channel] | None = None

    async def __aenter__(self) -> "Channels":
        options = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(self._count):
            channel = grpc.aio.insecure_channel(self._target, options=options)
            await self._exits.enter_async_context(channel)
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_SECONDS)
            self._channels.append(channel)
        self._next = itertools.cycle(self._channels)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exits.aclose()

    def next(self) -> grpc.aio.Channel:
        assert self._next is not None, "use Channels as `async with`"
        return next(self._next)


def _error_text(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"


async def stream_chat(channel: grpc.aio.Channel, key: str, deadline: float) -> ClientRun:
    """One StreamChat of the seed question, followed to its end."""
    run = ClientRun(key)
    stub = engine_pb2_grpc.AgentServiceStub(channel)
    run.started = time.perf_counter()
    try:
        async for event in stub.StreamChat(engine_pb2.StreamChatRequest(message=SEED_QUESTION), timeout=deadline):
            run.note(event)
    except grpc.aio.AioRpcError as error:
        run.error = _error_text(error)
    run.ended = time.perf_counter()
    return run


async def start_and_watch(channel: grpc.aio.Channel, key: str, deadline: float) -> ClientRun:
    """StartRun, then WatchRun from the first step on its own stream; the delivery latency of each step recorded
    while the watch was open (a step replayed from before it is not a delivery)."""
    run = ClientRun(key)
    runs = runs_pb2_grpc.RunServiceStub(channel)
    run.started = time.perf_counter()
    try:
        started = await engine_pb2_grpc.AgentServiceStub(channel).StartRun(
            engine_pb2.StartRunRequest(message=SEED_QUESTION), timeout=deadline
        )
        run.run_id = started.id
        watch_opened = time.time()
        async for event in runs.WatchRun(runs_pb2.WatchRunRequest(run_id=started.id), timeout=deadline):
            received = time.time()
            run.note(event)
            if event.HasField("step") and event.step.create_time.ToNanoseconds() / 1e9 >= watch_opened:
                run.delivery_ms.append((received - event.step.create_time.ToNanoseconds() / 1e9) * MS)
    except grpc.aio.AioRpcError as error:
        run.error = _error_text(error)
    run.ended = time.perf_counter()
    return run


Client = Callable[[grpc.aio.Channel, str, float], Awaitable[ClientRun]]


async def closed_loop(channels: Channels, client: Client, runs: int, clients: int,
                      deadline: float) -> list[ClientRun]:
    """`clients` clients, each starting its next run as soon as its last one ended, until `runs` are done."""
    keys = iter(range(1, runs + 1))
    done: list[ClientRun] = []

    async def one_client() -> None:
        channel = channels.next()
        for number in keys:
            done.append(await client(channel, f"run {number}", deadline))

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return done


async def all_at_once(channels: Channels, client: Client, runs: int, deadline: float) -> list[ClientRun]:
    """`runs` clients started together, one run each."""
    return list(await asyncio.gather(*(client(channels.next(), f"run {n}", deadline) for n in range(1, runs + 1))))
