"""The engine process's live link to the run store (RunService.ConnectExecutor): deltas of forming steps go up,
cancel notices for its runs come down. Reconnects with backoff for as long as the engine runs.

Deltas are best effort by design: a delta that cannot be sent (the store is restarting, the queue is full) is
dropped, and the step it was forming still arrives whole. Cancel notices missed while disconnected come back
with the next lease renewal.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from agentplatform.runs.v1 import runs_pb2
from services.engine.clients import MAX_BACKOFF_SECONDS, RunsClient

log = logging.getLogger(__name__)

#: Deltas waiting to be sent before new ones are dropped.
MAX_QUEUED_DELTAS = 10_000


def coalesced(deltas: list[runs_pb2.StepDelta]) -> list[runs_pb2.StepDelta]:
    """The deltas that queued up while the stream was busy, one per forming step: the pieces of a step joined in
    order. A model streams many small pieces; while the link is busy they cost one message per step, not one each.
    """
    if len(deltas) == 1:
        return deltas
    merged: dict[tuple[str, int, str], runs_pb2.StepDelta] = {}
    for delta in deltas:
        kind = delta.WhichOneof("part") or ""
        key = (delta.run_id, delta.sequence, kind)
        into = merged.get(key)
        if into is None or delta.replace:
            merged[key] = delta
        elif kind == "tool_call":
            piece = delta.tool_call
            into.tool_call.tool_call_id = piece.tool_call_id or into.tool_call.tool_call_id
            into.tool_call.tool_name += piece.tool_name
            into.tool_call.arguments += piece.arguments
        else:
            into.text += delta.text
    return list(merged.values())


class ExecutorLink:
    """One ConnectExecutor stream, kept open."""

    def __init__(self, runs: RunsClient, executor_id: str) -> None:
        self._runs = runs
        self._executor_id = executor_id
        self._outbox: asyncio.Queue[runs_pb2.StepDelta] = asyncio.Queue(MAX_QUEUED_DELTAS)
        self._task: asyncio.Task[None] | None = None

    def send_delta(self, delta: runs_pb2.StepDelta) -> None:
        """Queue a delta for the store; dropped when the queue is full."""
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(delta)

    def start(self, on_cancel: Callable[[str, str], None]) -> None:
        """Connect, and keep connected; `on_cancel(run_id, reason)` is called for every cancel notice."""
        self._task = asyncio.create_task(self._keep_connected(on_cancel), name="executor-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _messages(self) -> AsyncIterator[runs_pb2.ConnectExecutorRequest]:
        yield runs_pb2.ConnectExecutorRequest(executor_id=self._executor_id)
        while True:
            waiting = [await self._outbox.get()]
            while not self._outbox.empty():
                waiting.append(self._outbox.get_nowait())
            for delta in coalesced(waiting):
                yield runs_pb2.ConnectExecutorRequest(delta=delta)

    async def _keep_connected(self, on_cancel: Callable[[str, str], None]) -> None:
        backoff = 0.1
        while True:
            call = self._runs.connect_executor(self._messages())
            try:
                # The server sends no initial response until a notice; wait_for_connection tells us it took.
                await call.wait_for_connection()
                backoff = 0.1
                async for notice in call:
                    if notice.WhichOneof("notice") == "cancel":
                        on_cancel(notice.cancel.run_id, notice.cancel.reason)
                log.info("run store closed the executor link; reconnecting")
            except grpc.aio.AioRpcError as exc:
                log.info("executor link to the run store lost (%s); reconnecting in %.1fs", exc.code().name, backoff)
            finally:
                call.cancel()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
