"""The engine's client of the runs service: creates, begins, appends to, pauses, resumes and finishes runs, renews
their leases, and watches runs on a caller's behalf; in the engine's journal types (services/engine/journal.py),
converted here by upstream/run_messages.py.

Every unary call carries a deadline (Python does not propagate them), and a failed call surfaces as the domain
error matching its status, so callers never see grpc types. Every call carries the platform's service token, and
the identity of the user it is made for: the caller of StreamChat or Chat for the reads made for it
(services.common.identity).
"""

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

import grpc

from agentplatform.runs.internal.v1 import execution_pb2, execution_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common import errors
from services.common.identity import Caller, as_service, on_behalf_of
from services.common.rpc.protoconv import (
    duration_from_seconds,
    limits_to_proto,
    multitask_to_proto,
    run_state_to_proto,
)
from services.common.rpc.status import error_from_rpc, error_from_status
from services.engine.failures import StepTooLarge
from services.engine.journal import Appended, HandBack, LeaseRenewal, NewRun, Run, RunEvent, Step, ThreadHistory
from services.engine.upstream.calls import (
    FIRST_BACKOFF_SECONDS,
    MAX_BACKOFF_SECONDS,
    CallError,
    ResponseT,
)
from services.engine.upstream.run_messages import (
    event_from_proto,
    history_from_proto,
    run_from_proto,
    step_from_proto,
    step_to_proto,
    trace_ids_of,
)
from services.engine.upstream.step_size import DEFAULT_MAX_STEP_BYTES, oversized

log = logging.getLogger(__name__)

#: Statuses after which a call to the run store is tried again: the store restarting, a deadline that ran out
#: before an answer came. Every call the engine makes to it is idempotent, so a retry never doubles a write.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: How long a lease renewal is retried: a renewal that found its replica gone is retried at once (through
#: another replica), and one that failed for longer waits for the renewer's next tick.
RENEWAL_RETRY_SECONDS = 1.0


class WriteLink(Protocol):
    """The engine's link to the store (services.engine.upstream.executor_link.ExecutorLink), as RunsClient uses it."""

    @property
    def connected(self) -> bool: ...

    async def call(self, kind: str, request: Any, timeout: float) -> Any:
        """The answer to `request` (an AppendStepsRequest for kind "append_steps" ...); raises CallError."""
        ...


class RunsClient:
    """Records runs and steps in the runs service, retrying with backoff and jitter while it is unavailable
    (a restart, a deploy) for up to `outage_seconds`; then the call fails with Unavailable.

    Creates, begins, appends and finishes go over the engine's executor link while it is connected
    (`write_through`): the same requests and answers as the unary calls, without the cost of a call each. While
    the link is down they are unary calls.

    A step larger than the store takes (`max_step_bytes`, RUNS_MAX_STEP_BYTES) is refused here, before it is sent,
    with StepTooLarge naming its largest field.
    """

    SERVICE = "runs service"

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float,
        outage_seconds: float,
        service_token: str,
        max_step_bytes: int = DEFAULT_MAX_STEP_BYTES,
    ) -> None:
        self._stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        self._public = runs_pb2_grpc.RunServiceStub(channel)
        self._service_token = service_token
        self._as_service = as_service(service_token)
        self._timeout = timeout
        self._outage_seconds = outage_seconds
        self._max_step_bytes = max_step_bytes
        self._link: WriteLink | None = None

    def write_through(self, link: WriteLink) -> None:
        """Make appends and finishes over `link` while it is connected."""
        self._link = link

    def _for(self, caller: Caller) -> tuple[tuple[str, str], ...]:
        return on_behalf_of(caller, self._service_token)

    async def _retrying(
        self,
        call: Callable[..., Awaitable[ResponseT]],
        request: Any,
        link_kind: str = "",
        metadata: tuple[tuple[str, str], ...] | None = None,
        outage_seconds: float | None = None,
    ) -> ResponseT:
        loop = asyncio.get_running_loop()
        start = loop.time()
        give_up_at = start + (self._outage_seconds if outage_seconds is None else outage_seconds)
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                if link_kind and self._link is not None and self._link.connected:
                    # The link answers a call with the response of the unary call it stands in for.
                    return cast(ResponseT, await self._link.call(link_kind, request, self._timeout))
                return await call(request, timeout=self._timeout, metadata=metadata or self._as_service)
            except grpc.aio.AioRpcError as exc:
                code, details, cause = exc.code(), exc.details() or "", exc
            except CallError as exc:
                code, details, cause = exc.code, exc.details, exc
            if code not in RETRYABLE:
                raise error_from_status(code, details, self.SERVICE) from cause
            if loop.time() + backoff > give_up_at:
                # A store that timed out until the end is as unreachable to the engine's caller as one refusing
                # connections: the caller set no deadline of its own, so DEADLINE_EXCEEDED would blame it.
                raise errors.Unavailable(f"{self.SERVICE}: {details or code.name} (retried for "
                                         f"{give_up_at - start:.1f} s)") from cause
            log.info("runs service %s (%s); retrying in %.2fs", code.name, details, backoff)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _checked(self, step: Step, check_size: bool = True) -> runs_pb2.Step:
        message = step_to_proto(step)
        if check_size and (problem := oversized(message, self._max_step_bytes)) is not None:
            raise StepTooLarge(problem)
        return message

    async def create_run(self, new: NewRun) -> Run:
        """Create the run; it comes back with the steps stored with it."""
        trace_id, span_id = trace_ids_of(new.traceparent)
        request = execution_pb2.CreateRunRequest(
            user_query=new.user_query,
            owner=new.owner,
            agent_id=new.agent_id,
            agent_revision=new.agent_revision,
            model=new.model,
            metadata=new.metadata,
            request_id=new.request_id,
            state=runs_pb2.RUN_STATE_QUEUED if new.queued else runs_pb2.RUN_STATE_RUNNING,
            executor_id=new.executor_id,
            lease_duration=duration_from_seconds(new.lease_seconds),
            limits=limits_to_proto(new.limits),
            thread_id=new.thread_id,
            multitask_strategy=multitask_to_proto(new.multitask),
            workflow_id=new.workflow_id,
            workflow_revision=new.workflow_revision,
            trace_id=trace_id,
            trace_span_id=span_id,
            # Not size-checked: what a run is created with (the user's request, a workflow's inputs) the store
            # checks against its own limit, and a refusal answers the caller who asked for the run.
            steps=[self._checked(step, check_size=False) for step in new.steps],
        )
        return run_from_proto(await self._retrying(self._stub.CreateRun, request, "create_run"))

    async def get_run(self, run_id: str, caller: Caller) -> Run:
        """The run as `caller` may see it (RunService.GetRun on their behalf), with its steps."""
        request = runs_pb2.GetRunRequest(run_id=run_id)
        return run_from_proto(await self._retrying(self._public.GetRun, request, metadata=self._for(caller)))

    async def thread_history(self, run_id: str, max_turns: int) -> ThreadHistory:
        """The turns of the run's thread before it, oldest first, with their steps."""
        request = execution_pb2.GetThreadHistoryRequest(run_id=run_id, max_turns=max_turns)
        return history_from_proto(await self._retrying(self._stub.GetThreadHistory, request))

    async def await_approval(self, run_id: str, executor_id: str, step: Step, *, epoch: int) -> Run:
        """Record the approval-request step and leave the run WAITING (releasing this engine's lease, taken at
        `epoch`)."""
        request = execution_pb2.AwaitApprovalRequest(
            run_id=run_id, executor_id=executor_id, step=self._checked(step), lease_epoch=epoch
        )
        return run_from_proto(await self._retrying(self._stub.AwaitApproval, request))

    async def resume_run(self, run_id: str, executor_id: str, lease_seconds: float) -> Run:
        """Take a decided WAITING run under this engine's lease; the run comes with all of its steps."""
        request = execution_pb2.ResumeRunRequest(
            run_id=run_id, executor_id=executor_id, lease_duration=duration_from_seconds(lease_seconds)
        )
        return run_from_proto(await self._retrying(self._stub.ResumeRun, request))

    async def cancel_run(self, run_id: str, caller: Caller, reason: str) -> Run:
        """Cancel a run through the store, on behalf of `caller` (for a run no engine holds, e.g. WAITING)."""
        request = runs_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        return run_from_proto(await self._retrying(self._public.CancelRun, request, metadata=self._for(caller)))

    async def begin_run(self, run_id: str, executor_id: str, *, epoch: int) -> Run:
        request = execution_pb2.BeginRunRequest(run_id=run_id, executor_id=executor_id, lease_epoch=epoch)
        return run_from_proto(await self._retrying(self._stub.BeginRun, request, "begin_run"))

    async def append_steps(
        self, run_id: str, steps: list[Step], *, epoch: int, check_size: bool = True
    ) -> Appended:
        """Append steps with explicit sequences (so a retry is idempotent) under the lease of `epoch`; returns them
        as stored, and whether they spent a budget. With `check_size`, StepTooLarge for a step larger than the
        store takes, before anything is sent."""
        request = execution_pb2.AppendStepsRequest(
            run_id=run_id, steps=[self._checked(step, check_size) for step in steps], lease_epoch=epoch
        )
        response = await self._retrying(self._stub.AppendSteps, request, "append_steps")
        return Appended([step_from_proto(step) for step in response.steps], response.budget_exceeded)

    async def finish_run(
        self, run_id: str, state: str, error_code: str = "", error_message: str = "", *, epoch: int
    ) -> Run:
        """End the run in `state` (services.common.run_vocabulary), with the error of a run that did not complete,
        under the lease of `epoch`."""
        request = execution_pb2.FinishRunRequest(
            run_id=run_id, state=run_state_to_proto(state), error_code=error_code, error_message=error_message,
            lease_epoch=epoch,
        )
        return run_from_proto(await self._retrying(self._stub.FinishRun, request, "finish_run"))

    async def renew_leases(self, executor_id: str, epochs: Mapping[str, int]) -> LeaseRenewal:
        """Renew the leases on the runs of `epochs` (run id: the epoch of its lease). Retried for a second at most,
        the renewer calls again on its next tick anyway. The retry of a renewal that failed UNAVAILABLE (the replica
        it went to died under it) goes to another replica of the runs service (the channel balances), well before
        the leases run out."""
        leases = [execution_pb2.HeldLease(run_id=run_id, lease_epoch=epoch) for run_id, epoch in epochs.items()]
        # The ids in `run_ids` as well: a runs service of the previous version (a rolling upgrade) reads only those.
        request = execution_pb2.RenewLeasesRequest(executor_id=executor_id, run_ids=list(epochs), leases=leases)
        response = await self._retrying(self._stub.RenewLeases, request, outage_seconds=RENEWAL_RETRY_SECONDS)
        return LeaseRenewal(
            frozenset(response.lost_run_ids),
            tuple((notice.run_id, notice.reason) for notice in response.cancel),
            frozenset(response.fenced_run_ids),
        )

    async def hand_back_runs(self, executor_id: str, epochs: Mapping[str, int], outage_seconds: float) -> HandBack:
        """Hand the runs of `epochs` (run id: the epoch of its lease) back to the store, for other engines to
        continue, as this engine shuts down; retried for `outage_seconds` at most (it is stopping)."""
        leases = [execution_pb2.HeldLease(run_id=run_id, lease_epoch=epoch) for run_id, epoch in epochs.items()]
        request = execution_pb2.HandBackRunsRequest(executor_id=executor_id, leases=leases)
        response = await self._retrying(self._stub.HandBackRuns, request, outage_seconds=outage_seconds)
        return HandBack(
            frozenset(response.handed_back_run_ids),
            frozenset(response.ended_run_ids),
            frozenset(response.refused_run_ids),
        )

    async def watch(self, run_id: str, caller: Caller, after_sequence: int = 0) -> AsyncGenerator[RunEvent, None]:
        """The run's events (RunService.WatchRun on behalf of `caller`) until its final run.

        A watch that breaks UNAVAILABLE (the runs replica it was attached to went away) attaches again after the
        last step it received, through another replica, for up to `outage_seconds`: no step is lost or repeated.
        The new watch starts with the run as it is then (a Run event), and a step that was forming may have
        some of its deltas sent again."""
        loop = asyncio.get_running_loop()
        last_sequence = after_sequence
        backoff, give_up_at = FIRST_BACKOFF_SECONDS, None
        while True:
            request = runs_pb2.WatchRunRequest(run_id=run_id, after_sequence=last_sequence)
            call = self._public.WatchRun(request, metadata=self._for(caller))
            try:
                async for message in call:
                    if (event := event_from_proto(message)) is None:
                        continue
                    if isinstance(event, Step):
                        last_sequence = max(last_sequence, event.sequence)
                    backoff, give_up_at = FIRST_BACKOFF_SECONDS, None
                    yield event
                return
            except grpc.aio.AioRpcError as exc:
                if give_up_at is None:
                    give_up_at = loop.time() + self._outage_seconds
                if exc.code() != grpc.StatusCode.UNAVAILABLE or loop.time() + backoff > give_up_at:
                    raise error_from_rpc(exc, self.SERVICE) from exc
                log.info("watch of run %s broke (%s); attaching again after step %d", run_id, exc.details(),
                         last_sequence)
            finally:
                call.cancel()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def connect_executor(
        self, messages: AsyncIterator[execution_pb2.ConnectExecutorRequest]
    ) -> "grpc.aio.StreamStreamCall[execution_pb2.ConnectExecutorRequest, execution_pb2.ExecutorNotice]":
        """The engine's live link to the store (see services.engine.upstream.executor_link)."""
        return self._stub.ConnectExecutor(messages, metadata=self._as_service)
