"""The internal gRPC face of the runs service (agentplatform.runs.internal.v1.ExecutionService): how the engine
processes create and write the runs they execute, hold their leases, and keep their live link to the store.

Only the platform's own services reach it (the server interceptor checks the service token; the gateway does
not route it). Domain problems are raised as `services.common.errors` exceptions; the interceptor maps them,
and ExecutorCalls answer them in their result the same way.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from agentplatform.runs.internal.v1 import execution_pb2, execution_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from services.common import tracing
from services.common.errors import DomainError, InvalidArgument
from services.common.rpc.protoconv import (
    datetime_from_timestamp,
    limits_from_proto,
    multitask_from_proto,
    run_state_from_proto,
    seconds_from_duration,
)
from services.common.rpc.status import status_for
from services.runs import convert
from services.runs.checks import check_executor_id
from services.runs.executors import Notice
from services.runs.records import CancelNotice, NewRun, ResumeNotice
from services.runs.store import RunStore

log = logging.getLogger(__name__)

#: The internal service's full name, for the spans of the calls an engine makes over its link.
EXECUTION_SERVICE = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name

#: ExecutorCalls one engine's link may have being answered at once.
MAX_CALLS_IN_FLIGHT = 2000


async def _forward_notices(notices: asyncio.Queue[Notice], outbox: asyncio.Queue[execution_pb2.ExecutorNotice]) -> None:
    """Put the store's notices for one engine (resume, cancel) into its link's outbox, as messages, for ever."""
    while True:
        notice = await notices.get()
        if isinstance(notice, ResumeNotice):
            outbox.put_nowait(execution_pb2.ExecutorNotice(resume=execution_pb2.ResumeNotice(run_id=notice.run_id)))
        else:
            outbox.put_nowait(execution_pb2.ExecutorNotice(cancel=_cancel_notice(notice)))


def _cancel_notice(notice: CancelNotice) -> execution_pb2.CancelNotice:
    return execution_pb2.CancelNotice(run_id=notice.run_id, reason=notice.reason)


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    """agentplatform.runs.internal.v1.ExecutionService over a RunStore."""

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._closing = asyncio.Event()
        #: What an ExecutorCall may ask for, by the name of its request field.
        self._executor_methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "create_run": self._create_run,
            "begin_run": self._begin_run,
            "append_steps": self._append_steps,
            "finish_run": self._finish_run,
        }

    def close_links(self) -> None:
        """End every ConnectExecutor stream now (the service is stopping): engines then retry their writes until a
        runs service answers again, instead of writing over a link into a store about to close."""
        self._closing.set()

    async def CreateRun(
        self, request: execution_pb2.CreateRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return await self._create_run(request)

    async def _create_run(self, request: execution_pb2.CreateRunRequest) -> runs_pb2.Run:
        state = run_state_from_proto(request.state) or "running"
        new = NewRun(
            user_query=request.user_query,
            model=request.model,
            metadata=dict(request.metadata),
            request_id=request.request_id,
            owner=request.owner,
            agent_id=request.agent_id,
            agent_revision=request.agent_revision,
            state=state,
            limits=limits_from_proto(request.limits),
            executor_id=request.executor_id,
            lease_seconds=seconds_from_duration(request.lease_duration, "lease_duration"),
            steps=tuple(convert.new_step_from_proto(position, step) for position, step in enumerate(request.steps, 1)),
            thread_id=request.thread_id,
            multitask=multitask_from_proto(request.multitask_strategy),
            workflow_id=request.workflow_id,
            workflow_revision=request.workflow_revision,
            trace_id=request.trace_id,
            trace_span_id=request.trace_span_id,
        )
        return convert.run_to_proto(await self._store.create_run(new))

    async def AwaitApproval(
        self, request: execution_pb2.AwaitApprovalRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        step = request.step
        if step.WhichOneof("content") != "approval_request":
            raise InvalidArgument("step must be an approval_request step")
        expires_at = (
            datetime_from_timestamp(step.approval_request.expire_time, "step.approval_request.expire_time")
            if step.approval_request.HasField("expire_time")
            else None
        )
        record = await self._store.await_approval(
            request.run_id, request.executor_id, convert.new_step_from_proto(1, step), expires_at,
            epoch=request.lease_epoch,
        )
        return convert.run_to_proto(record)

    async def ResumeRun(
        self, request: execution_pb2.ResumeRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        record = await self._store.resume_run(
            request.run_id, request.executor_id, seconds_from_duration(request.lease_duration, "lease_duration")
        )
        return convert.run_to_proto(record)

    async def HandBackRuns(
        self, request: execution_pb2.HandBackRunsRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.HandBackRunsResponse:
        epochs: dict[str, int] = {}
        for lease in request.leases:
            if lease.run_id in epochs:
                raise InvalidArgument(f"run '{lease.run_id}' is named twice in leases")
            epochs[lease.run_id] = lease.lease_epoch
        handed = await self._store.hand_back(request.executor_id, epochs)
        return execution_pb2.HandBackRunsResponse(
            handed_back_run_ids=handed.handed_back_run_ids,
            ended_run_ids=handed.ended_run_ids,
            refused_run_ids=handed.refused_run_ids,
        )

    async def GetThreadHistory(
        self, request: execution_pb2.GetThreadHistoryRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.ThreadHistory:
        history = await self._store.thread_history(request.run_id, request.max_turns)
        return execution_pb2.ThreadHistory(
            turns=[convert.run_to_proto(turn) for turn in history.turns], omitted_turns=history.omitted
        )

    async def BeginRun(self, request: execution_pb2.BeginRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        return await self._begin_run(request)

    async def _begin_run(self, request: execution_pb2.BeginRunRequest) -> runs_pb2.Run:
        record = await self._store.begin_run(request.run_id, request.executor_id, epoch=request.lease_epoch)
        return convert.run_to_proto(record)

    async def AppendSteps(
        self, request: execution_pb2.AppendStepsRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.AppendStepsResponse:
        return await self._append_steps(request)

    async def _append_steps(self, request: execution_pb2.AppendStepsRequest) -> execution_pb2.AppendStepsResponse:
        steps = [convert.new_step_from_proto(position, step) for position, step in enumerate(request.steps, 1)]
        stored = await self._store.append_steps(request.run_id, steps, epoch=request.lease_epoch)
        # An append that ends its run (an error step) needs no stop: the budget is not looked at again.
        ending = any(step.type == "error" for step in steps)
        return execution_pb2.AppendStepsResponse(
            steps=[convert.step_to_proto(step) for step in stored],
            budget_exceeded="" if ending else await self._store.crossed_budget(request.run_id),
        )

    async def FinishRun(
        self, request: execution_pb2.FinishRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return await self._finish_run(request)

    async def _finish_run(self, request: execution_pb2.FinishRunRequest) -> runs_pb2.Run:
        state = run_state_from_proto(request.state)
        if state is None:
            raise InvalidArgument("state is required: RUN_STATE_COMPLETED, RUN_STATE_FAILED or RUN_STATE_CANCELLED")
        record = await self._store.finish_run(
            request.run_id, state, request.error_code, request.error_message, epoch=request.lease_epoch
        )
        return convert.run_to_proto(record)

    async def RenewLeases(
        self, request: execution_pb2.RenewLeasesRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.RenewLeasesResponse:
        # Runs named only in `run_ids` (by an engine of an earlier version) carry no epoch: checked as before.
        leases = {lease.run_id: lease.lease_epoch for lease in request.leases}
        run_ids = list(dict.fromkeys([*request.run_ids, *leases]))  # an engine names its runs in both
        renewal = await self._store.renew_leases(request.executor_id, run_ids, leases)
        return execution_pb2.RenewLeasesResponse(
            lost_run_ids=renewal.lost_run_ids,
            cancel=[_cancel_notice(notice) for notice in renewal.cancel],
            fenced_run_ids=renewal.fenced_run_ids,
        )

    async def ConnectExecutor(
        self, request_iterator: AsyncIterator[execution_pb2.ConnectExecutorRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[execution_pb2.ExecutorNotice]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("message") != "executor_id":
            raise InvalidArgument("the first message of ConnectExecutor must be the engine's executor_id")
        executor_id = first.executor_id
        check_executor_id(executor_id)
        signals = self._store.signals
        # What goes down to the engine: cancel notices and the answers to its calls, in the order they are ready.
        outbox: asyncio.Queue[execution_pb2.ExecutorNotice] = asyncio.Queue()
        calls: set[asyncio.Task[None]] = set()

        # Calls are answered concurrently, but at most this many at once per link: past that, reading waits, and
        # HTTP/2 flow control makes the engine wait too, instead of one link filling the store with tasks.
        slots = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)

        async def answer(call: execution_pb2.ExecutorCall) -> None:
            try:
                outbox.put_nowait(execution_pb2.ExecutorNotice(call_result=await self._executor_call(call)))
            finally:
                slots.release()

        async def read() -> None:
            async for message in request_iterator:
                kind = message.WhichOneof("message")
                if kind == "delta":
                    signals.publish_delta(convert.delta_from_proto(message.delta))
                elif kind == "deltas":
                    for delta in message.deltas.deltas:
                        signals.publish_delta(convert.delta_from_proto(delta))
                elif kind == "call":
                    await slots.acquire()
                    task = asyncio.create_task(answer(message.call))
                    calls.add(task)
                    task.add_done_callback(calls.discard)

        with self._store.notices.connect(executor_id) as notices:
            log.info("executor %s connected", executor_id)
            reader = asyncio.create_task(read())
            forwarder = asyncio.create_task(_forward_notices(notices, outbox))
            # Runs decided while no engine was connected are waiting for one: offer them now.
            await self._store.offer_ready_runs()
            closing = asyncio.create_task(self._closing.wait())
            next_notice: asyncio.Future[execution_pb2.ExecutorNotice] | None = None
            try:
                while True:
                    next_notice = asyncio.ensure_future(outbox.get())
                    await asyncio.wait({next_notice, reader, closing}, return_when=asyncio.FIRST_COMPLETED)
                    if not next_notice.done():
                        break  # the engine closed its side, its stream broke, or this service is stopping; a cancel
                        # missed here is repeated by the engine's next lease renewal, an unanswered call is retried
                    yield next_notice.result()
            finally:
                for task in (next_notice, reader, forwarder, closing):
                    if task is not None:
                        task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                log.info("executor %s disconnected", executor_id)

    async def _executor_call(self, call: execution_pb2.ExecutorCall) -> execution_pb2.ExecutorCallResult:
        """Answer an engine's call made over its link as the unary method would, its error included."""
        kind = call.WhichOneof("request")
        # Traced as the unary method of the same name would be, in the trace of the engine's call.
        method = f"/{EXECUTION_SERVICE}/{''.join(part.title() for part in (kind or '').split('_'))}"
        with tracing.rpc_span(method, {"traceparent": call.traceparent}) as span:
            result = await self._answer_call(call, kind)
            if span is not None:
                tracing.rpc_status(span, result.error.code if result.WhichOneof("result") == "error" else 0)
            return result

    async def _answer_call(
        self, call: execution_pb2.ExecutorCall, kind: str | None
    ) -> execution_pb2.ExecutorCallResult:
        try:
            if kind is None:
                raise InvalidArgument("an ExecutorCall must carry a request: create_run, begin_run, append_steps or "
                                      "finish_run")
            answer = await self._executor_methods[kind](getattr(call, kind))
            return execution_pb2.ExecutorCallResult(call_id=call.call_id, **{kind: answer})
        except DomainError as exc:
            code, message = status_for(exc), str(exc)
        except Exception:
            log.exception("unhandled error in an executor call (%s)", kind)
            code, message = grpc.StatusCode.INTERNAL, "internal error; the runs service log has the details"
        error = execution_pb2.ExecutorCallError(code=code.value[0], message=message)
        return execution_pb2.ExecutorCallResult(call_id=call.call_id, error=error)
