"""The public gRPC face of the runs service (agentplatform.runs.v1.RunService): read, follow, cancel and delete
runs, each caller only its own (an admin any, by id; every user's in a list only when asking for all_users).

Domain problems are raised as `services.common.errors` exceptions; the server interceptor maps them.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from google.protobuf import empty_pb2

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common.errors import PermissionDenied
from services.common.identity import current_caller
from services.common.run_vocabulary import ACTIVE_STATES
from services.runs import convert
from services.runs.records import APPROVED, REJECTED
from services.runs.store import RunStore
from services.runs.watch import watch_run

log = logging.getLogger(__name__)


def _owner_filter() -> str | None:
    """Whose runs the caller may address by id: its own, or any for an admin."""
    caller = current_caller()
    return None if caller.is_admin else caller.user


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    """agentplatform.runs.v1.RunService over a RunStore."""

    def __init__(self, store: RunStore, watch_heartbeat_seconds: float, cancel_wait_seconds: float) -> None:
        self._store = store
        self._heartbeat_seconds = watch_heartbeat_seconds
        self._cancel_wait_seconds = cancel_wait_seconds

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        return convert.run_to_proto(await self._store.get_run(request.run_id, owner=_owner_filter()))

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        caller = current_caller()
        if request.all_users and not caller.is_admin:
            raise PermissionDenied("all_users lists every user's runs: only an admin may ask for it")
        if request.user and request.user != caller.user and not caller.is_admin:
            raise PermissionDenied("user names another user's runs: only an admin may search them")
        if request.user:
            owner: str | None = request.user
        else:
            owner = None if request.all_users or (caller.is_admin and request.thread_id) else caller.user
        runs, next_token = await self._store.list_runs(
            request.page_size,
            request.page_token,
            convert.run_filter_from_proto(request),
            owner=owner,
            thread_id=request.thread_id,
        )
        return runs_pb2.ListRunsResponse(runs=[convert.run_to_proto(run) for run in runs], next_page_token=next_token)

    async def GetThread(self, request: runs_pb2.GetThreadRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Thread:
        return convert.thread_to_proto(await self._store.get_thread(request.thread_id, owner=_owner_filter()))

    async def ListThreads(
        self, request: runs_pb2.ListThreadsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListThreadsResponse:
        caller = current_caller()
        if request.all_users and not caller.is_admin:
            raise PermissionDenied("all_users lists every user's threads: only an admin may ask for it")
        threads, next_token = await self._store.list_threads(
            request.page_size, request.page_token, owner=None if request.all_users else caller.user
        )
        return runs_pb2.ListThreadsResponse(
            threads=[convert.thread_to_proto(thread) for thread in threads], next_page_token=next_token
        )

    async def DeleteThread(
        self, request: runs_pb2.DeleteThreadRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._store.delete_thread(request.thread_id, owner=_owner_filter())
        return empty_pb2.Empty()

    async def DeleteRun(self, request: runs_pb2.DeleteRunRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._store.delete_run(request.run_id, owner=_owner_filter())
        return empty_pb2.Empty()

    async def CancelRun(self, request: runs_pb2.CancelRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        record = await self._store.cancel_run(
            request.run_id, request.reason, owner=_owner_filter(), by=current_caller().user
        )
        if record.state in ACTIVE_STATES:
            # The engine executing the run ends it; wait a little so the caller usually gets the final run.
            with self._store.signals.subscribe(record.id) as subscription:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self._cancel_wait_seconds
                while record.state in ACTIVE_STATES and (left := deadline - loop.time()) > 0:
                    if await subscription.wait(left):
                        subscription.take()
                        record = await self._store.get_run(record.id, with_steps=False)
        return convert.run_to_proto(record)

    async def ApproveStep(
        self, request: runs_pb2.ApproveStepRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return await self._decide(request, APPROVED)

    async def RejectStep(self, request: runs_pb2.RejectStepRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        return await self._decide(request, REJECTED)

    async def _decide(
        self, request: runs_pb2.ApproveStepRequest | runs_pb2.RejectStepRequest, outcome: str
    ) -> runs_pb2.Run:
        record = await self._store.decide_approval(
            request.run_id, request.sequence, outcome, request.comment, by=current_caller().user, owner=_owner_filter()
        )
        return convert.run_to_proto(record)

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        # Whether the caller may see the run is settled once, here: NotFound for someone else's.
        await self._store.get_run(request.run_id, with_steps=False, owner=_owner_filter())
        events = watch_run(
            self._store, self._store.signals, request.run_id, request.after_sequence, self._heartbeat_seconds
        )
        try:
            # aclosing: when the client goes away between events, the watch generator's cleanup (dropping
            # its signal subscription) runs now, not whenever the garbage collector gets to it.
            async with aclosing(events):
                async for event in events:
                    yield convert.run_event(event)
        except asyncio.CancelledError:
            log.info("watcher of run %s disconnected", request.run_id)
            raise  # cancellation must reach grpc, which is ending the RPC
