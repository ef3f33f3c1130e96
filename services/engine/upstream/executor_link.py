"""The engine process's live link to the run store (RunService.ConnectExecutor): deltas of forming steps and
the engine's appends and finishes (ExecutorCall) go up, cancel notices and call answers come down. Reconnects
with backoff for as long as the engine runs.

Deltas are best effort by design: a delta that cannot be sent (the store is restarting, the queue is full) is
dropped, and the step it was forming still arrives whole. Cancel notices missed while disconnected come back
with the next lease renewal. A call in flight when the link breaks fails UNAVAILABLE, and RunsClient retries it
(as a unary call while the link is down); every call made here is idempotent, so a retry of one that was
applied changes nothing.
"""

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from agentplatform.runs.internal.v1 import execution_pb2
from services.common import tracing
from services.common.rpc.status import status_code
from services.common.step_delta import StepDelta
from services.engine.deltas import coalesced
from services.engine.upstream.calls import MAX_BACKOFF_SECONDS, CallError
from services.engine.upstream.run_messages import delta_to_proto
from services.engine.upstream.runs_client import RunsClient

log = logging.getLogger(__name__)

#: Deltas waiting to be sent before new ones are dropped.
MAX_QUEUED_DELTAS = 10_000
#: The largest message sent over the link: gRPC's default limit on a received message (4 MiB, which the runs
#: service keeps), less room for the envelope. The link carries every run's writes, and one message over the
#: store's limit ends the stream for all of them ("Received message larger than max"), so a larger call fails
#: alone, here, before it is sent (RESOURCE_EXHAUSTED: the run that made it ends "step_too_large"), and larger
#: deltas are dropped (the step they form still arrives whole, or fails as that call).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024 - 16 * 1024


def _deltas_message(deltas: list[StepDelta]) -> execution_pb2.ConnectExecutorRequest:
    """The deltas that queued up while the stream was busy, one per forming step, in one message."""
    joined = [delta_to_proto(delta) for delta in coalesced(deltas)]
    if len(joined) == 1:
        return execution_pb2.ConnectExecutorRequest(delta=joined[0])
    return execution_pb2.ConnectExecutorRequest(deltas=execution_pb2.StepDeltas(deltas=joined))


class ExecutorLink:
    """One ConnectExecutor stream, kept open."""

    def __init__(self, runs: RunsClient, executor_id: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._runs = runs
        self._max_message_bytes = max_message_bytes
        self._executor_id = executor_id
        self._outbox: asyncio.Queue[StepDelta | execution_pb2.ExecutorCall] = asyncio.Queue(MAX_QUEUED_DELTAS)
        self._task: asyncio.Task[None] | None = None
        self._call_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[execution_pb2.ExecutorCallResult]] = {}
        self._connected = False
        #: How many times the stream was opened: 1 for a link that never broke.
        self.connections = 0

    @property
    def connected(self) -> bool:
        return self._connected

    def send_delta(self, delta: StepDelta) -> None:
        """Queue a delta for the store; dropped when the queue is full."""
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(delta)

    async def call(self, kind: str, request: Any, timeout: float) -> Any:
        """Make a call over the link (a request field of ExecutorCall, e.g. "append_steps", and its request) and
        return its answer.
        Raises CallError: with the store's status, or UNAVAILABLE when the link is down or breaks, or
        DEADLINE_EXCEEDED after `timeout` seconds."""
        if not self._connected:
            raise CallError(grpc.StatusCode.UNAVAILABLE, "the executor link is not connected")
        message = execution_pb2.ExecutorCall(**{kind: request})
        if tracing.enabled():
            # A call on the link is no gRPC call of its own: its trace context goes in the message.
            message.traceparent = dict(tracing.inject()).get("traceparent", "")
        size = message.ByteSize()
        if size > self._max_message_bytes:
            raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the {kind} call is {size:,} bytes; the link to the "
                            f"run store carries at most {self._max_message_bytes:,} bytes in a message")
        call_id = next(self._call_ids)
        message.call_id = call_id
        answer = asyncio.get_running_loop().create_future()
        self._pending[call_id] = answer
        try:
            try:
                self._outbox.put_nowait(message)
            except asyncio.QueueFull:
                raise CallError(grpc.StatusCode.UNAVAILABLE, "the executor link is backed up") from None
            try:
                async with asyncio.timeout(timeout):
                    result = await answer
            except TimeoutError:
                late = f"no answer over the link in {timeout:g} s"
                raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED, late) from None
        finally:
            self._pending.pop(call_id, None)
        outcome = result.WhichOneof("result")
        if outcome == "error":
            raise CallError(status_code(result.error.code), result.error.message)
        if outcome != kind:
            raise CallError(grpc.StatusCode.INTERNAL, f"the store answered a {kind} call with {outcome}")
        return getattr(result, kind)

    def _fail_pending(self) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(CallError(grpc.StatusCode.UNAVAILABLE, "the executor link broke"))
        self._pending.clear()

    def start(self, on_cancel: Callable[[str, str], object], on_resume: Callable[[str], None]) -> None:
        """Connect, and keep connected; `on_cancel(run_id, reason)` is called for every cancel notice, and
        `on_resume(run_id)` for every run the store offers to resume."""
        self._task = asyncio.create_task(self._keep_connected(on_cancel, on_resume), name="executor-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _messages(self) -> AsyncIterator[execution_pb2.ConnectExecutorRequest]:
        yield execution_pb2.ConnectExecutorRequest(executor_id=self._executor_id)
        while True:
            waiting = [await self._outbox.get()]
            while not self._outbox.empty():
                waiting.append(self._outbox.get_nowait())
            deltas: list[StepDelta] = []
            for item in waiting:
                if isinstance(item, StepDelta):
                    deltas.append(item)
                    continue
                # A call goes after the deltas queued before it, as queued: a step's deltas before its append.
                if deltas and (joined := self._bounded(_deltas_message(deltas))) is not None:
                    yield joined
                deltas = []
                if item.call_id in self._pending:  # not given up on (timed out, or failed with an earlier link)
                    yield execution_pb2.ConnectExecutorRequest(call=item)
            if deltas and (joined := self._bounded(_deltas_message(deltas))) is not None:
                yield joined

    def _bounded(
        self, message: execution_pb2.ConnectExecutorRequest
    ) -> execution_pb2.ConnectExecutorRequest | None:
        """`message`, or None (dropped, as deltas may be) when it is larger than the link carries."""
        if message.ByteSize() <= self._max_message_bytes:
            return message
        log.warning("dropped %d bytes of deltas: larger than a message over the link may be", message.ByteSize())
        return None

    async def _keep_connected(
        self, on_cancel: Callable[[str, str], object], on_resume: Callable[[str], None]
    ) -> None:
        backoff = 0.1
        while True:
            call = self._runs.connect_executor(self._messages())
            try:
                # The server sends no initial response until a notice; wait_for_connection tells us it took.
                await call.wait_for_connection()
                self._connected = True
                self.connections += 1
                backoff = 0.1
                async for notice in call:
                    kind = notice.WhichOneof("notice")
                    if kind == "cancel":
                        on_cancel(notice.cancel.run_id, notice.cancel.reason)
                    elif kind == "resume":
                        on_resume(notice.resume.run_id)
                    elif kind == "call_result":
                        answer = self._pending.get(notice.call_result.call_id)
                        if answer is not None and not answer.done():
                            answer.set_result(notice.call_result)
                log.info("run store closed the executor link; reconnecting")
            except grpc.aio.AioRpcError as exc:
                log.info("executor link to the run store lost (%s); reconnecting in %.1fs", exc.code().name, backoff)
            finally:
                self._connected = False
                self._fail_pending()
                call.cancel()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
