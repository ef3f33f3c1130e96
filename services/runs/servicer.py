"""The gRPC face of the runs service: validate and convert requests, call RunStore, convert back.

Domain problems are raised as `services.common.errors` exceptions; the server interceptor maps them.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from google.protobuf import empty_pb2

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common.errors import InvalidArgument
from services.runs import convert
from services.runs.store import RunStore
from services.runs.watch import watch_run

log = logging.getLogger(__name__)


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    """agentplatform.runs.v1.RunService over a RunStore."""

    def __init__(self, store: RunStore, watch_heartbeat_seconds: float) -> None:
        self._store = store
        self._heartbeat_seconds = watch_heartbeat_seconds

    async def CreateRun(self, request: runs_pb2.CreateRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        record = await self._store.create_run(request.user_query, request.model, dict(request.metadata))
        return convert.run_to_proto(record)

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        return convert.run_to_proto(await self._store.get_run(request.run_id))

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        runs, next_token = await self._store.list_runs(
            request.page_size, request.page_token, convert.run_state_from_proto(request.state)
        )
        return runs_pb2.ListRunsResponse(runs=[convert.run_to_proto(run) for run in runs], next_page_token=next_token)

    async def DeleteRun(self, request: runs_pb2.DeleteRunRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._store.delete_run(request.run_id)
        return empty_pb2.Empty()

    async def AppendSteps(
        self, request: runs_pb2.AppendStepsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.AppendStepsResponse:
        steps = [convert.new_step_from_proto(position, step) for position, step in enumerate(request.steps, 1)]
        stored = await self._store.append_steps(request.run_id, steps)
        return runs_pb2.AppendStepsResponse(steps=[convert.step_to_proto(step) for step in stored])

    async def FinishRun(self, request: runs_pb2.FinishRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        state = convert.run_state_from_proto(request.state)
        if state is None:
            raise InvalidArgument("state is required: RUN_STATE_COMPLETED, RUN_STATE_FAILED or RUN_STATE_CANCELLED")
        record = await self._store.finish_run(
            request.run_id, state, request.error_message, convert.usage_from_proto(request.usage)
        )
        return convert.run_to_proto(record)

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.WatchRunResponse]:
        events = watch_run(
            self._store, self._store.signals, request.run_id, request.after_sequence, self._heartbeat_seconds
        )
        try:
            # aclosing: when the client goes away between events, the watch generator's cleanup (dropping
            # its signal subscription) runs now, not whenever the garbage collector gets to it.
            async with aclosing(events):
                async for event in events:
                    yield convert.watch_response(event)
        except asyncio.CancelledError:
            log.info("watcher of run %s disconnected", request.run_id)
            raise  # cancellation must reach grpc, which is ending the RPC
