"""The engine's gRPC clients of the runs and tools services.

Every unary call carries a deadline (Python does not propagate them), and a failed call surfaces as the domain
error matching its status (services.common.rpc.status), so callers never see grpc types. Every call carries the
platform's service token, and the identity of the user it is made for: the run's owner for its tool calls, the
caller of StreamChat or Chat for the reads made for it (services.common.identity).
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from agentplatform.runs.internal.v1 import execution_pb2, execution_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.internal.v1 import execution_pb2 as tool_execution_pb2
from agentplatform.tools.internal.v1 import execution_pb2_grpc as tool_execution_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common import errors
from services.common.identity import Caller, as_service, on_behalf_of
from services.common.rpc.protoconv import (
    dict_from_struct,
    duration_from_seconds,
    limits_from_proto,
    python_from_value,
    seconds_from_duration,
    struct_from_dict,
)
from services.common.rpc.status import error_from_rpc, error_from_status
from services.engine.agent_profile import AgentProfile
from services.engine.step_checks import check_value

log = logging.getLogger(__name__)
ResponseT = TypeVar("ResponseT")

#: Statuses after which a call to the run store is tried again: the store restarting, a deadline that ran out
#: before an answer came. Every call the engine makes to it is idempotent, so a retry never doubles a write.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0


class CallError(Exception):
    """A call made over the executor link failed with this status (as a unary call would have)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class WriteLink(Protocol):
    """The engine's link to the store (services.engine.executor_link.ExecutorLink), as RunsClient uses it."""

    @property
    def connected(self) -> bool: ...

    async def call(self, kind: str, request: Any, timeout: float) -> Any:
        """The answer to `request` (an AppendStepsRequest for kind "append_steps" ...); raises CallError."""
        ...


async def _call(
    service: str,
    call: Callable[..., Awaitable[ResponseT]],
    request: Any,
    timeout: float,
    metadata: tuple[tuple[str, str], ...],
    *,
    wait_for_ready: bool = False,
) -> ResponseT:
    try:
        return await call(request, timeout=timeout, metadata=metadata, wait_for_ready=wait_for_ready)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, service) from exc


class RunsClient:
    """Records runs and steps in the runs service, retrying with backoff and jitter while it is unavailable
    (a restart, a deploy) for up to `outage_seconds`; then the call fails with Unavailable.

    Creates, begins, appends and finishes go over the engine's executor link while it is connected
    (`write_through`): the same requests and answers as the unary calls, without the cost of a call each. While
    the link is down they are unary calls.
    """

    SERVICE = "runs service"

    def __init__(self, channel: grpc.aio.Channel, timeout: float, outage_seconds: float, service_token: str) -> None:
        self._stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        self._public = runs_pb2_grpc.RunServiceStub(channel)
        self._service_token = service_token
        self._as_service = as_service(service_token)
        self._timeout = timeout
        self._outage_seconds = outage_seconds
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
    ) -> ResponseT:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._outage_seconds
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                if link_kind and self._link is not None and self._link.connected:
                    return await self._link.call(link_kind, request, self._timeout)  # type: ignore[no-any-return]
                return await call(request, timeout=self._timeout, metadata=metadata or self._as_service)
            except grpc.aio.AioRpcError as exc:
                code, details, cause = exc.code(), exc.details() or "", exc
            except CallError as exc:
                code, details, cause = exc.code, exc.details, exc
            if code not in RETRYABLE or loop.time() + backoff > give_up_at:
                raise error_from_status(code, details, self.SERVICE) from cause
            log.info("runs service %s (%s); retrying in %.2fs", code.name, details, backoff)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def create_run(self, request: execution_pb2.CreateRunRequest) -> runs_pb2.Run:
        return await self._retrying(self._stub.CreateRun, request, "create_run")

    async def get_run(self, run_id: str, caller: Caller) -> runs_pb2.Run:
        """The run as `caller` may see it (RunService.GetRun on their behalf)."""
        request = runs_pb2.GetRunRequest(run_id=run_id)
        return await self._retrying(self._public.GetRun, request, metadata=self._for(caller))

    async def thread_history(self, run_id: str, max_turns: int) -> execution_pb2.ThreadHistory:
        """The turns of the run's thread before it, oldest first, with their steps."""
        request = execution_pb2.GetThreadHistoryRequest(run_id=run_id, max_turns=max_turns)
        return await self._retrying(self._stub.GetThreadHistory, request)

    async def await_approval(self, run_id: str, executor_id: str, step: runs_pb2.Step) -> runs_pb2.Run:
        """Record the approval-request step and leave the run WAITING (releasing this engine's lease)."""
        request = execution_pb2.AwaitApprovalRequest(run_id=run_id, executor_id=executor_id, step=step)
        return await self._retrying(self._stub.AwaitApproval, request)

    async def resume_run(self, run_id: str, executor_id: str, lease_seconds: float) -> runs_pb2.Run:
        """Take a decided WAITING run under this engine's lease; the run comes with all of its steps."""
        request = execution_pb2.ResumeRunRequest(
            run_id=run_id, executor_id=executor_id, lease_duration=duration_from_seconds(lease_seconds)
        )
        return await self._retrying(self._stub.ResumeRun, request)

    async def cancel_run(self, run_id: str, caller: Caller, reason: str) -> runs_pb2.Run:
        """Cancel a run through the store, on behalf of `caller` (for a run no engine holds, e.g. WAITING)."""
        request = runs_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        return await self._retrying(self._public.CancelRun, request, metadata=self._for(caller))

    async def begin_run(self, run_id: str, executor_id: str) -> runs_pb2.Run:
        request = execution_pb2.BeginRunRequest(run_id=run_id, executor_id=executor_id)
        return await self._retrying(self._stub.BeginRun, request, "begin_run")

    async def append_steps(self, run_id: str, steps: list[runs_pb2.Step]) -> list[runs_pb2.Step]:
        """Append steps with explicit sequences (so a retry is idempotent); returns them as stored."""
        request = execution_pb2.AppendStepsRequest(run_id=run_id, steps=steps)
        response = await self._retrying(self._stub.AppendSteps, request, "append_steps")
        return list(response.steps)

    async def finish_run(
        self, run_id: str, state: "runs_pb2.RunState", error_code: str = "", error_message: str = ""
    ) -> runs_pb2.Run:
        request = execution_pb2.FinishRunRequest(
            run_id=run_id, state=state, error_code=error_code, error_message=error_message
        )
        return await self._retrying(self._stub.FinishRun, request, "finish_run")

    async def renew_leases(self, executor_id: str, run_ids: list[str]) -> execution_pb2.RenewLeasesResponse:
        """One attempt: the renewer calls again on its next tick anyway."""
        request = execution_pb2.RenewLeasesRequest(executor_id=executor_id, run_ids=run_ids)
        return await _call(self.SERVICE, self._stub.RenewLeases, request, self._timeout, self._as_service)

    async def watch(
        self, run_id: str, caller: Caller, after_sequence: int = 0
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        """The run's events (RunService.WatchRun on behalf of `caller`) until its final run."""
        request = runs_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)
        call = self._public.WatchRun(request, metadata=self._for(caller))
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self.SERVICE) from exc
        finally:
            call.cancel()

    def connect_executor(
        self, messages: AsyncIterator[execution_pb2.ConnectExecutorRequest]
    ) -> "grpc.aio.StreamStreamCall[execution_pb2.ConnectExecutorRequest, execution_pb2.ExecutorNotice]":
        """The engine's live link to the store (see services.engine.executor_link)."""
        return self._stub.ConnectExecutor(messages, metadata=self._as_service)


@dataclass(frozen=True)
class OfferedTool:
    """An enabled tool as the model is offered it: its function schema, and whether its calls wait for approval."""

    schema: dict[str, Any]
    requires_approval: bool = False

    @property
    def name(self) -> str:
        return str(self.schema["function"]["name"])


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call gave back: a result and its text, or an error message for the model."""

    result: Any = None
    text: str = ""
    error: str = ""
    duration_seconds: float | None = None


class ToolsClient:
    """Lists the enabled tools' schemas and executes tools in the tools service.

    The list is cached for `cache_seconds` (ENGINE_TOOLS_CACHE_SECONDS): a run starting within that time of the
    last listing uses it, and runs starting together share one ListTools call. A tool enabled or disabled in
    the tools service reaches new runs within that time.
    """

    SERVICE = "tools service"

    def __init__(
        self,
        channel: grpc.aio.Channel,
        list_timeout: float,
        execute_timeout: float,
        service_token: str,
        cache_seconds: float = 0.0,
    ) -> None:
        self._stub = tools_pb2_grpc.ToolServiceStub(channel)
        self._executor = tool_execution_pb2_grpc.ToolExecutionServiceStub(channel)
        self._service_token = service_token
        self._list_timeout = list_timeout
        self._execute_timeout = execute_timeout
        self._cache_seconds = cache_seconds
        self._listing: asyncio.Future[list[OfferedTool]] | None = None
        self._listed_at = 0.0

    async def enabled_tools(self, caller: Caller) -> list[OfferedTool]:
        """Every enabled tool, with its function schema exactly as the model is to see it. (The same for every
        user: the listing is made on behalf of the caller whose run asked first.)"""
        loop = asyncio.get_running_loop()
        listing = self._listing
        fresh = listing is not None and (
            not listing.done() or (listing.exception() is None and loop.time() - self._listed_at < self._cache_seconds)
        )
        if not fresh:
            listing = self._listing = asyncio.ensure_future(self._list(caller))
            self._listed_at = loop.time()
        assert listing is not None
        # Shielded: one caller going away must not cancel the listing the others wait for.
        return list(await asyncio.shield(listing))

    async def _list(self, caller: Caller) -> list[OfferedTool]:
        request = tools_pb2.ListToolsRequest(enabled_only=True)
        metadata = on_behalf_of(caller, self._service_token)
        # wait_for_ready: while the tools service is starting (or restarting), a run waits for it, within the
        # deadline, instead of failing at once with tools_unavailable.
        response = await _call(
            self.SERVICE, self._stub.ListTools, request, self._list_timeout, metadata, wait_for_ready=True
        )
        return [OfferedTool(dict_from_struct(tool.schema), tool.requires_approval) for tool in response.tools]

    async def execute(self, tool_id: str, arguments: dict[str, Any], caller: Caller) -> ToolOutcome:
        """Run a tool on behalf of `caller`. Errors the model can react to (bad arguments, unknown or disabled
        tool, a tool failure, even the tools service being down) come back as an outcome with `error`, not as an
        exception."""
        request = tool_execution_pb2.ExecuteToolRequest(tool_id=tool_id, arguments=struct_from_dict(arguments))
        metadata = on_behalf_of(caller, self._service_token)
        try:
            response = await self._executor.ExecuteTool(request, timeout=self._execute_timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return ToolOutcome(error=f"{error_from_rpc(exc, self.SERVICE)}")
            return ToolOutcome(error=exc.details() or exc.code().name)
        try:
            # Checked as a value a step can carry: an answer the run store cannot take is the tool's error, which
            # the model is told like any other, not a write the store refuses.
            result = python_from_value(response.result, "result") if response.HasField("result") else None
            check_value(result, "result")
        except errors.InvalidArgument as exc:
            return ToolOutcome(error=f"tool '{tool_id}' returned a result the run cannot record: {exc}")
        return ToolOutcome(
            result=result,
            text=response.text,
            duration_seconds=(
                seconds_from_duration(response.duration, "duration") if response.HasField("duration") else None
            ),
        )


class AgentsClient:
    """Reads saved agents and workflows from the agents service, on behalf of the caller who asks to run one (so
    another user's agent or workflow is NOT_FOUND here too)."""

    SERVICE = "agents service"

    def __init__(self, channel: grpc.aio.Channel, timeout: float, service_token: str) -> None:
        self._stub = agents_pb2_grpc.AgentRegistryServiceStub(channel)
        self._workflows = workflows_pb2_grpc.WorkflowRegistryServiceStub(channel)
        self._timeout = timeout
        self._service_token = service_token

    async def workflow(self, workflow_id: str, revision: int, caller: Caller) -> workflows_pb2.Workflow:
        """The workflow's revision (its latest for 0), as `caller` may read it."""
        request = workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id, revision=revision)
        metadata = on_behalf_of(caller, self._service_token)
        return await _call(self.SERVICE, self._workflows.GetWorkflow, request, self._timeout, metadata)

    async def profile(self, agent_id: str, revision: int, caller: Caller) -> AgentProfile:
        """The agent's revision (its latest for 0), as a run executes it."""
        request = agents_pb2.GetAgentRequest(agent_id=agent_id, revision=revision)
        metadata = on_behalf_of(caller, self._service_token)
        agent = await _call(self.SERVICE, self._stub.GetAgent, request, self._timeout, metadata)
        parameters = agent.model_parameters
        return AgentProfile(
            agent_id=agent.id,
            revision=agent.revision,
            instructions=agent.instructions,
            model=agent.model,
            temperature=parameters.temperature if parameters.HasField("temperature") else None,
            top_p=parameters.top_p if parameters.HasField("top_p") else None,
            max_output_tokens=parameters.max_output_tokens if parameters.HasField("max_output_tokens") else None,
            tools=tuple(agent.tools),
            limits=limits_from_proto(agent.limits),
        )
