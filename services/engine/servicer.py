"""AgentService over gRPC: converts requests to ChatInput, starts runs with the scheduler, and follows them.

StreamChat sends exactly what RunService.WatchRun sends: for a run this call executes, from the run's own feed
(services.engine.execution.run_feed), without a round trip through the store; for a retried request id, or once the feed
ends without the run's end (the store was away too long), from the store's WatchRun.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypeAlias

import grpc

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from services.common import errors
from services.common.identity import current_caller
from services.common.rpc.protoconv import dict_from_struct, limits_from_proto, multitask_from_proto
from services.common.run_vocabulary import COMPLETED, FINAL_STATES
from services.engine.execution.scheduler import RunScheduler
from services.engine.journal import AgentResponse, Run
from services.engine.run_request import ChatInput, WorkflowStart
from services.engine.upstream.run_messages import event_to_proto, run_to_proto
from services.engine.upstream.runs_client import RunsClient
from services.engine.workflows.runner import whole_numbers

log = logging.getLogger(__name__)

StartRequest: TypeAlias = engine_pb2.StartRunRequest | engine_pb2.StreamChatRequest | engine_pb2.ChatRequest

CLIENT_GONE = "the client following the run went away (on_disconnect: CANCEL)"


def _chat_input(request: StartRequest) -> ChatInput:
    return ChatInput(
        message=request.message,
        owner=current_caller(),
        agent_id=request.agent_id,
        agent_revision=request.agent_revision,
        model=request.model,
        metadata=dict(request.metadata),
        request_id=request.request_id,
        limits=limits_from_proto(request.limits),
        thread_id=request.thread_id,
        multitask=multitask_from_proto(request.multitask_strategy),
    )


def _cancels_on_disconnect(request: engine_pb2.StreamChatRequest | engine_pb2.ChatRequest) -> bool:
    return request.on_disconnect != engine_pb2.DISCONNECT_POLICY_CONTINUE


class AgentServicer(engine_pb2_grpc.AgentServiceServicer):
    def __init__(self, scheduler: RunScheduler, runs: RunsClient, heartbeat_seconds: float) -> None:
        self._scheduler = scheduler
        self._runs = runs
        self._heartbeat_seconds = heartbeat_seconds
        #: Cancels sent to the store for callers that went away (kept so they are not garbage-collected).
        self._cancels: set[asyncio.Future[None]] = set()

    async def StartRun(self, request: engine_pb2.StartRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        return run_to_proto(await self._scheduler.start(_chat_input(request)))

    async def StreamChat(
        self, request: engine_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        cancel = _cancels_on_disconnect(request)
        run, follower = await self._scheduler.start_followed(_chat_input(request), cancel_if_abandoned=cancel)
        finished = False
        after_sequence = 0
        try:
            if follower is not None:
                async with aclosing(follower.events(self._heartbeat_seconds)) as events:
                    async for event in events:
                        yield event_to_proto(event)
                finished, after_sequence = follower.finished, follower.last_sequence
            if not finished:
                # aclosing: when the caller disconnects, the watch stream to the store is closed at once.
                async with aclosing(self._runs.watch(run.id, current_caller(), after_sequence)) as events:
                    async for event in events:
                        finished = isinstance(event, Run) and event.state in FINAL_STATES
                        yield event_to_proto(event)
        except (asyncio.CancelledError, GeneratorExit):
            # A caller that goes away while this generator waits for the next event cancels it; one that goes
            # away while a sent event is in flight (the generator suspended at `yield`) has it closed instead.
            # So does this engine's server when it stops: then the run was handed back, not abandoned.
            if cancel and not finished and not self._scheduler.closing:
                self._abandon(run.id)
            raise

    async def Chat(self, request: engine_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> engine_pb2.ChatResponse:
        cancel = _cancels_on_disconnect(request)
        run = await self._scheduler.start(_chat_input(request), cancel_if_abandoned=cancel)
        try:
            outcome = await self._scheduler.outcome(run.id)
            if outcome is None or outcome.waiting:
                # A retried request id whose run another call (or engine) executes, a run whose end could not be
                # recorded here, or a run waiting for approval (it may resume in any engine): answer from the store.
                final = await self._wait_in_store(run.id)
        except asyncio.CancelledError:
            if cancel and not self._scheduler.closing:  # not when this engine's server stops: see StreamChat
                self._abandon(run.id)
            raise
        if outcome is None or outcome.waiting:
            if final.state == COMPLETED:
                answer = _answer(await self._runs.get_run(run.id, current_caller()))
                return engine_pb2.ChatResponse(response=answer, run_id=run.id, thread_id=run.thread_id)
            raise errors.FailedPrecondition(f"run {run.id} ended RUN_STATE_{(final.state or 'unspecified').upper()}: "
                                            f"{final.error_message}")
        if outcome.failure is not None:
            error = outcome.failure.error
            raise type(error)(f"run {outcome.run.id} failed: {error}")
        return engine_pb2.ChatResponse(
            response=outcome.answer, run_id=outcome.run.id, thread_id=outcome.run.thread_id
        )

    def _abandon(self, run_id: str) -> None:
        """Cancel the run of a caller that went away (on_disconnect CANCEL): here if this engine holds it, else
        through the store (a run WAITING for approval is held by no engine)."""
        if self._scheduler.cancel(run_id, CLIENT_GONE):
            return
        caller = current_caller()

        async def cancel_in_store() -> None:
            try:
                await self._runs.cancel_run(run_id, caller, CLIENT_GONE)
            except errors.DomainError as exc:
                log.info("run %s not cancelled after its client left: %s", run_id, exc)

        task = asyncio.ensure_future(cancel_in_store())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def StartWorkflowRun(
        self, request: engine_pb2.StartWorkflowRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        start = WorkflowStart(
            workflow_id=request.workflow_id,
            workflow_revision=request.workflow_revision,
            inputs=whole_numbers(dict_from_struct(request.inputs, "inputs")),
            owner=current_caller(),
            metadata=dict(request.metadata),
            request_id=request.request_id,
        )
        return run_to_proto(await self._scheduler.start_workflow(start))

    async def _wait_in_store(self, run_id: str) -> Run:
        final = Run(id=run_id, state="")
        async with aclosing(self._runs.watch(run_id, current_caller())) as events:
            async for event in events:
                if isinstance(event, Run):
                    final = event
        return final


def _answer(run: Run) -> str:
    responses = [step.content.text for step in run.steps if isinstance(step.content, AgentResponse)]
    return responses[-1] if responses else ""
