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
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.identity import Caller, current_caller
from services.common.rpc.protoconv import datetime_from_timestamp
from services.common.run_vocabulary import ACTIVE_STATES
from services.runs import convert
from services.runs.price_book import checked_price
from services.runs.records import APPROVED, REJECTED
from services.runs.store import RunStore
from services.runs.watch import watch_run

log = logging.getLogger(__name__)


def _admin(refusal: str) -> Caller:
    """The caller, who must be an admin (PermissionDenied with `refusal` otherwise)."""
    caller = current_caller()
    if not caller.is_admin:
        raise PermissionDenied(refusal)
    return caller


def _reader_of(all_users: bool, what: str) -> str | None:
    """Whose records a listing or a summary reads: the caller's own, or every user's (None) for an admin asking
    for `all_users` (PermissionDenied naming `what` for anyone else)."""
    caller = current_caller()
    if all_users and not caller.is_admin:
        raise PermissionDenied(f"all_users {what}: only an admin may ask for it")
    return None if all_users else caller.user


#: Runs one ImportRuns call stores at most (one transaction).
MAX_IMPORT_RUNS = 100


def _search_owner(request: runs_pb2.ListRunsRequest) -> str | None:
    """Whose runs a search (ListRuns, ExportRuns) reads: the caller's own; any one user's, or every user's (None),
    for an admin asking for them."""
    reader = _reader_of(request.all_users, "lists every user's runs")
    caller = current_caller()
    if request.user and request.user != caller.user and not caller.is_admin:
        raise PermissionDenied("user names another user's runs: only an admin may search them")
    if request.user:
        return request.user
    return None if caller.is_admin and request.thread_id else reader


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
        return convert.run_to_proto(
            await self._store.get_run(request.run_id, owner=_owner_filter(), with_scores=True)
        )

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        owner = _search_owner(request)
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
        reader = _reader_of(request.all_users, "lists every user's threads")
        threads, next_token = await self._store.list_threads(
            request.page_size, request.page_token, owner=reader
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

    async def CreateScore(
        self, request: runs_pb2.CreateScoreRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Score:
        score = convert.new_score_from_proto(request.run_id, request.score)
        return convert.score_to_proto(
            await self._store.create_score(score, author=current_caller().user, owner=_owner_filter())
        )

    async def ListScores(
        self, request: runs_pb2.ListScoresRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListScoresResponse:
        scores = await self._store.list_scores(request.run_id, owner=_owner_filter())
        return runs_pb2.ListScoresResponse(scores=[convert.score_to_proto(score) for score in scores])

    async def DeleteScore(
        self, request: runs_pb2.DeleteScoreRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        caller = current_caller()
        await self._store.delete_score(request.score_id, caller=caller.user, admin=caller.is_admin)
        return empty_pb2.Empty()

    async def SummarizeScores(
        self, request: runs_pb2.SummarizeScoresRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.SummarizeScoresResponse:
        reader = _reader_of(request.all_users, "sums up every user's scores")
        summaries = await self._store.summarize_scores(
            request.agent_id,
            owner=reader,
            start=datetime_from_timestamp(request.start_time, "start_time") if request.HasField("start_time") else None,
            end=datetime_from_timestamp(request.end_time, "end_time") if request.HasField("end_time") else None,
        )
        return runs_pb2.SummarizeScoresResponse(
            summaries=[convert.score_summary_to_proto(summary) for summary in summaries]
        )

    async def SetRetentionHold(
        self, request: runs_pb2.SetRetentionHoldRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        _admin("retention holds are set by admins only")
        await self._store.set_retention_hold(request.run_id, request.hold)
        return convert.run_to_proto(await self._store.get_run(request.run_id, with_steps=False))

    async def ListModelPrices(
        self, request: runs_pb2.ListModelPricesRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListModelPricesResponse:
        prices = await self._store.list_model_prices()
        return runs_pb2.ListModelPricesResponse(prices=[convert.price_to_proto(price) for price in prices])

    async def SetModelPrice(
        self, request: runs_pb2.SetModelPriceRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ModelPrice:
        caller = _admin("model prices are set by admins only")
        price = request.price
        checked = checked_price(
            price.model, price.currency, price.input_per_million, price.cached_input_per_million,
            price.output_per_million, caller.user,
        )
        return convert.price_to_proto(await self._store.set_model_price(checked))

    async def DeleteModelPrice(
        self, request: runs_pb2.DeleteModelPriceRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        _admin("model prices are set by admins only")
        await self._store.delete_model_price(request.model)
        return empty_pb2.Empty()

    async def SummarizeUsage(
        self, request: runs_pb2.SummarizeUsageRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.SummarizeUsageResponse:
        reader = _reader_of(request.all_users, "sums up every user's usage")
        for field in ("start_time", "end_time"):
            if not request.HasField(field):
                raise InvalidArgument(f"{field} is required")
        buckets = await self._store.summarize_usage(
            datetime_from_timestamp(request.start_time, "start_time"),
            datetime_from_timestamp(request.end_time, "end_time"),
            convert.usage_grouping_from_proto(request.group_by),
            convert.usage_interval_from_proto(request.interval),
            owner=reader,
        )
        return runs_pb2.SummarizeUsageResponse(buckets=[convert.usage_bucket_to_proto(bucket) for bucket in buckets])

    async def SetBudget(self, request: runs_pb2.SetBudgetRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Budget:
        caller = _admin("budgets are set by admins only")
        budget = convert.budget_from_proto(request.budget, caller.user)
        return convert.budget_to_proto(await self._store.set_budget(budget))

    async def ListBudgets(
        self, request: runs_pb2.ListBudgetsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListBudgetsResponse:
        caller = current_caller()
        statuses = await self._store.list_budgets(user=None if caller.is_admin else caller.user)
        return runs_pb2.ListBudgetsResponse(
            budgets=[convert.budget_to_proto(status.budget, status) for status in statuses]
        )

    async def DeleteBudget(
        self, request: runs_pb2.DeleteBudgetRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        _admin("budgets are set by admins only")
        await self._store.delete_budget(request.budget_id)
        return empty_pb2.Empty()

    async def ExportRuns(
        self, request: runs_pb2.ExportRunsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.ExportRunsResponse]:
        owner = _search_owner(request.filter)
        search = convert.run_filter_from_proto(request.filter)
        async for record, cursor in self._store.export_runs(search, owner=owner, cursor=request.cursor):
            yield runs_pb2.ExportRunsResponse(run=convert.run_to_proto(record), cursor=cursor)

    async def ImportRuns(
        self, request: runs_pb2.ImportRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ImportRunsResponse:
        _admin("runs are imported by admins only")
        if len(request.runs) > MAX_IMPORT_RUNS:
            raise InvalidArgument(f"at most {MAX_IMPORT_RUNS} runs per ImportRuns call, got {len(request.runs)}")
        runs = [convert.stored_run_from_proto(position, run) for position, run in enumerate(request.runs)]
        return runs_pb2.ImportRunsResponse(imported=await self._store.import_runs(runs, batch_size=MAX_IMPORT_RUNS))

    async def DeleteRuns(
        self, request: runs_pb2.DeleteRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.DeleteRunsResponse:
        _admin("runs are deleted by search by admins only")
        count = await self._store.delete_runs_found(
            convert.run_filter_from_proto(request.filter), owner=_search_owner(request.filter),
            dry_run=request.dry_run,
        )
        return runs_pb2.DeleteRunsResponse(runs=count)
