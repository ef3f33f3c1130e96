"""`AsyncClient`: the platform's public API from asyncio code (chat, runs, threads, tools, agents, workflows,
approvals), over one gRPC channel to the gateway.

Results are the API's own protobuf messages (`agentplatform_client.types`), typed by the generated .pyi stubs:
they are the contract, documented in protos/, and a hand-written copy of each would drift from it. The SDK adds
what a caller should not have to write: pagination iterators, streams that re-attach after a break
(`stream_chat`, `watch`), deadlines, retries and typed errors (errors.py). The sync `Client` (sync.py) is this
class run on an event loop of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypedDict, Unpack

import grpc
from google.protobuf import field_mask_pb2, struct_pb2

from agentplatform_client import errors
from agentplatform_client._proto.agentplatform.agents.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from agentplatform_client._proto.agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform_client._proto.agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform_client._proto.agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from agentplatform_client._rpc import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    RetryPolicy,
    Target,
    call_unary,
    credentials,
    stub_call,
)
from agentplatform_client.follow import DEFAULT_FOLLOW, FollowPolicy, Reattach, follow

#: Runs per ImportRuns call: the most the server takes in one.
IMPORT_BATCH = 100


class RunFields(TypedDict, total=False):
    """What a run may be started with besides its message (engine.v1 StartRunRequest's fields)."""

    #: A saved agent to run as (its latest revision unless `agent_revision`).
    agent_id: str
    agent_revision: int
    #: Continue this conversation (a thread id from an earlier run).
    thread_id: str
    #: What happens when the thread has a run in progress (default REJECT).
    multitask_strategy: runs_pb2.MultitaskStrategy
    model: str
    metadata: Mapping[str, str]
    limits: runs_pb2.RunLimits
    #: The start's idempotency key (AIP-155); the SDK makes one when it is missing, so retries are safe.
    request_id: str


@dataclass
class ChatResult:
    """A chat followed to its end."""

    #: The run in its final state (without its steps).
    run: runs_pb2.Run
    #: Every step, in sequence order, each once.
    steps: list[runs_pb2.Step] = field(default_factory=list)

    @property
    def answer(self) -> str:
        """The agent's final answer (empty when the run failed or was cancelled before it answered)."""
        return next((step.agent_response.text for step in reversed(self.steps) if step.HasField("agent_response")), "")


@dataclass(frozen=True)
class PendingApproval:
    """A WAITING run's open approval request: decide it with approve_step / reject_step(run_id, sequence)."""

    run_id: str
    sequence: int
    request: runs_pb2.ApprovalRequest


class AsyncClient:
    """The platform's public API over gRPC.

    `address`: the gateway (default AGENTPLATFORM_ADDRESS, else 127.0.0.1:8080, what `make run` serves);
    `https://host` for TLS. `api_key`: an API key (`apk_...`) or a bearer token (a JWT), default
    AGENTPLATFORM_API_KEY. `timeout`: the deadline of each unary call in seconds, retries included (streams
    have none unless asked). `retry`: how unary calls are retried (see RetryPolicy). `follow_policy`: how streams
    re-attach. Use it as `async with AsyncClient() as client:` or call `close()`."""

    def __init__(
        self,
        address: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        follow_policy: FollowPolicy = DEFAULT_FOLLOW,
    ) -> None:
        self.target = Target.parse(address)
        self.timeout = timeout
        self.retry = retry
        self.follow_policy = follow_policy
        self._metadata = credentials(api_key)
        self._channel = self.target.channel()
        self._agents = engine_pb2_grpc.AgentServiceStub(self._channel)
        self._runs = runs_pb2_grpc.RunServiceStub(self._channel)
        self._tools = tools_pb2_grpc.ToolServiceStub(self._channel)
        self._registry = agents_pb2_grpc.AgentRegistryServiceStub(self._channel)
        self._workflows = workflows_pb2_grpc.WorkflowRegistryServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # --- plumbing ---------------------------------------------------------------------------------------

    async def _unary(
        self, stub: Any, method: str, request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        return await call_unary(
            stub_call(stub, method, request, self._metadata),
            timeout=timeout if timeout is not None else self.timeout,
            retry=self.retry,
            idempotent=idempotent,
        )

    async def _pages(self, stub: Any, method: str, request: Any, items: str, limit: int | None) -> AsyncIterator[Any]:
        """Every item of a List method, page after page, up to `limit` items (None: all)."""
        count = 0
        while True:
            response = await self._unary(stub, method, request, idempotent=True)
            for item in getattr(response, items):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    # --- chat and runs (AgentService) -------------------------------------------------------------------

    async def start_run(
        self, message: str, *, timeout: float | None = None, **fields: Unpack[RunFields]
    ) -> runs_pb2.Run:
        """Start a run and return it at once (QUEUED); follow it with `watch`."""
        request = engine_pb2.StartRunRequest(message=message, **_with_request_id(fields))
        run: runs_pb2.Run = await self._unary(self._agents, "StartRun", request, idempotent=True, timeout=timeout)
        return run

    def stream_chat(
        self,
        message: str,
        *,
        cancel_on_disconnect: bool = True,
        timeout: float | None = None,
        on_reattach: Callable[[Reattach], None] | None = None,
        **fields: Unpack[RunFields],
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        """Start a run and yield its events to its end: the run first, steps (each once, in order), deltas of
        the step the model is writing, the run on each state change, heartbeats, and the final run last.

        Re-attaches by itself after a break (see follow.py); a start broken before its first event is sent again
        with the same request id, so it is one run. Leaving the iteration early cancels the run unless
        `cancel_on_disconnect` is False. `timeout`: a deadline for the whole chat, re-attaches included."""
        policy = engine_pb2.DISCONNECT_POLICY_CANCEL if cancel_on_disconnect else engine_pb2.DISCONNECT_POLICY_CONTINUE
        request = engine_pb2.StreamChatRequest(message=message, on_disconnect=policy, **_with_request_id(fields))
        return follow(
            watch=self._open_watch,
            get_run=self._get_run_for_follow,
            cancel_run=self._cancel_for_follow if cancel_on_disconnect else None,
            start=lambda remaining: self._agents.StreamChat(request, metadata=self._metadata, timeout=remaining),
            timeout=timeout,
            policy=self.follow_policy,
            on_reattach=on_reattach,
        )

    async def chat(self, message: str, *, timeout: float | None = None, **fields: Unpack[RunFields]) -> ChatResult:
        """Start a run and wait for its end (re-attaching as `stream_chat` does): its final run and steps."""
        result: ChatResult | None = None
        steps: list[runs_pb2.Step] = []
        async for event in self.stream_chat(message, timeout=timeout, **fields):
            if event.HasField("step"):
                steps.append(event.step)
            elif event.HasField("run"):
                result = ChatResult(event.run, steps)
        if result is None:  # a stream without a run cannot end the follow; kept for the type checker
            raise errors.Internal("the chat ended without its run")
        return result

    async def start_workflow_run(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        workflow_revision: int = 0,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> runs_pb2.Run:
        """Start a saved workflow with its inputs; returns the run at once."""
        struct = struct_pb2.Struct()
        struct.update(dict(inputs or {}))
        request = engine_pb2.StartWorkflowRunRequest(
            workflow_id=workflow_id, workflow_revision=workflow_revision, inputs=struct, metadata=metadata,
            request_id=request_id or str(uuid.uuid4()),
        )
        run: runs_pb2.Run = await self._unary(
            self._agents, "StartWorkflowRun", request, idempotent=True, timeout=timeout
        )
        return run

    # --- runs (RunService) ------------------------------------------------------------------------------

    async def get_run(self, run_id: str, *, timeout: float | None = None) -> runs_pb2.Run:
        """The run with all its steps."""
        run: runs_pb2.Run = await self._unary(
            self._runs, "GetRun", runs_pb2.GetRunRequest(run_id=run_id), idempotent=True, timeout=timeout
        )
        return run

    def list_runs(
        self,
        *,
        state: runs_pb2.RunState = runs_pb2.RUN_STATE_UNSPECIFIED,
        thread_id: str = "",
        all_users: bool = False,
        page_size: int = 0,
        limit: int | None = None,
    ) -> AsyncIterator[runs_pb2.Run]:
        """Your runs, newest first (a thread's turns in order with `thread_id`), without their steps, fetched
        `page_size` at a time (0: the server's default), up to `limit`."""
        request = runs_pb2.ListRunsRequest(page_size=page_size, state=state, all_users=all_users, thread_id=thread_id)
        return self._pages(self._runs, "ListRuns", request, "runs", limit)

    async def export_runs(
        self, search: runs_pb2.ListRunsRequest | None = None, *, cursor: str = "", max_breaks: int = 5
    ) -> AsyncIterator[runs_pb2.ExportRunsResponse]:
        """Every run `search` finds (a ListRunsRequest's filter fields; None: all of yours), whole, each with the
        cursor that resumes after it; a stream broken by UNAVAILABLE (a replica restarting) is resumed from the
        last cursor, `max_breaks` times at most, so no run is missed or repeated."""
        breaks = 0
        while True:
            request = runs_pb2.ExportRunsRequest(filter=search or runs_pb2.ListRunsRequest(), cursor=cursor)
            try:
                async for item in self._runs.ExportRuns(request, metadata=self._metadata):
                    cursor = item.cursor
                    breaks = 0
                    yield item
                return
            except grpc.aio.AioRpcError as error:
                breaks += 1
                if error.code() != grpc.StatusCode.UNAVAILABLE or breaks > max_breaks:
                    raise errors.from_rpc_error(error) from None

    async def import_runs(self, runs: Iterable[runs_pb2.Run], *, timeout: float | None = None) -> int:
        """Store exported runs in this platform's store (admins), 100 per call; how many were stored."""
        batch: list[runs_pb2.Run] = []
        stored = 0
        for run in [*runs, None]:
            if run is not None:
                batch.append(run)
            if batch and (run is None or len(batch) == IMPORT_BATCH):
                request = runs_pb2.ImportRunsRequest(runs=batch)
                response = await self._unary(self._runs, "ImportRuns", request, idempotent=False, timeout=timeout)
                stored += response.imported
                batch = []
        return stored

    def watch(
        self,
        run_id: str,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
        on_reattach: Callable[[Reattach], None] | None = None,
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        """The run's events after step `after_sequence` (0 replays the whole run), then live to its end,
        re-attaching from the last step yielded after a break: each step once, in order. Leaving early cancels
        nothing."""
        return follow(
            watch=self._open_watch,
            get_run=self._get_run_for_follow,
            cancel_run=None,
            start=None,
            run_id=run_id,
            after_sequence=after_sequence,
            timeout=timeout,
            policy=self.follow_policy,
            on_reattach=on_reattach,
        )

    async def cancel_run(self, run_id: str, *, reason: str = "", timeout: float | None = None) -> runs_pb2.Run:
        """Ask for the run's end (recorded as cancelled by you); returns the run, which ends CANCELLED shortly."""
        request = runs_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        run: runs_pb2.Run = await self._unary(self._runs, "CancelRun", request, idempotent=True, timeout=timeout)
        return run

    async def delete_run(self, run_id: str, *, timeout: float | None = None) -> None:
        await self._unary(
            self._runs, "DeleteRun", runs_pb2.DeleteRunRequest(run_id=run_id), idempotent=False, timeout=timeout
        )

    # --- approvals --------------------------------------------------------------------------------------

    async def pending_approvals(self, *, all_users: bool = False, limit: int | None = None) -> list[PendingApproval]:
        """The open approval requests: of each WAITING run, its last step if that is an approval request."""
        pending: list[PendingApproval] = []
        async for listed in self.list_runs(state=runs_pb2.RUN_STATE_WAITING, all_users=all_users, limit=limit):
            run = await self.get_run(listed.id)
            last = run.steps[-1] if run.steps else None
            if last is not None and last.HasField("approval_request"):
                pending.append(PendingApproval(run.id, last.sequence, last.approval_request))
        return pending

    async def approve_step(
        self, run_id: str, sequence: int, *, comment: str = "", timeout: float | None = None
    ) -> runs_pb2.Run:
        """Approve the approval request at step `sequence`: the run goes on."""
        request = runs_pb2.ApproveStepRequest(run_id=run_id, sequence=sequence, comment=comment)
        run: runs_pb2.Run = await self._unary(self._runs, "ApproveStep", request, idempotent=False, timeout=timeout)
        return run

    async def reject_step(
        self, run_id: str, sequence: int, *, comment: str = "", timeout: float | None = None
    ) -> runs_pb2.Run:
        """Reject the approval request at step `sequence`."""
        request = runs_pb2.RejectStepRequest(run_id=run_id, sequence=sequence, comment=comment)
        run: runs_pb2.Run = await self._unary(self._runs, "RejectStep", request, idempotent=False, timeout=timeout)
        return run

    # --- threads ----------------------------------------------------------------------------------------

    async def get_thread(self, thread_id: str, *, timeout: float | None = None) -> runs_pb2.Thread:
        request = runs_pb2.GetThreadRequest(thread_id=thread_id)
        thread: runs_pb2.Thread = await self._unary(self._runs, "GetThread", request, idempotent=True, timeout=timeout)
        return thread

    def list_threads(
        self, *, all_users: bool = False, page_size: int = 0, limit: int | None = None
    ) -> AsyncIterator[runs_pb2.Thread]:
        """Your conversations, most recently updated first; their turns with list_runs(thread_id=...)."""
        request = runs_pb2.ListThreadsRequest(page_size=page_size, all_users=all_users)
        return self._pages(self._runs, "ListThreads", request, "threads", limit)

    async def delete_thread(self, thread_id: str, *, timeout: float | None = None) -> None:
        request = runs_pb2.DeleteThreadRequest(thread_id=thread_id)
        await self._unary(self._runs, "DeleteThread", request, idempotent=False, timeout=timeout)

    # --- tools ------------------------------------------------------------------------------------------

    def list_tools(
        self, *, enabled_only: bool = False, page_size: int = 0, limit: int | None = None
    ) -> AsyncIterator[tools_pb2.Tool]:
        request = tools_pb2.ListToolsRequest(page_size=page_size, enabled_only=enabled_only)
        return self._pages(self._tools, "ListTools", request, "tools", limit)

    async def get_tool(self, tool_id: str, *, timeout: float | None = None) -> tools_pb2.Tool:
        """The tool with its function schema, usage and hints."""
        request = tools_pb2.GetToolRequest(tool_id=tool_id)
        tool: tools_pb2.Tool = await self._unary(self._tools, "GetTool", request, idempotent=True, timeout=timeout)
        return tool

    async def update_tool(
        self,
        tool_id: str,
        *,
        enabled: bool | None = None,
        description: str | None = None,
        requires_approval: bool | None = None,
        timeout: float | None = None,
    ) -> tools_pb2.Tool:
        """Change what is given (admins only); the rest stays."""
        tool = tools_pb2.Tool(id=tool_id)
        paths: list[str] = []
        if enabled is not None:
            tool.enabled = enabled
            paths.append("enabled")
        if description is not None:
            tool.description = description
            paths.append("description")
        if requires_approval is not None:
            tool.requires_approval = requires_approval
            paths.append("requires_approval")
        if not paths:
            raise errors.InvalidArgument("update_tool: name at least one of enabled, description, requires_approval")
        request = tools_pb2.UpdateToolRequest(tool=tool, update_mask=field_mask_pb2.FieldMask(paths=paths))
        # Setting values is the same the second time: safe to retry.
        updated: tools_pb2.Tool = await self._unary(
            self._tools, "UpdateTool", request, idempotent=True, timeout=timeout
        )
        return updated

    async def enable_tool(self, tool_id: str, *, timeout: float | None = None) -> tools_pb2.Tool:
        return await self.update_tool(tool_id, enabled=True, timeout=timeout)

    async def disable_tool(self, tool_id: str, *, timeout: float | None = None) -> tools_pb2.Tool:
        return await self.update_tool(tool_id, enabled=False, timeout=timeout)

    # --- agents -----------------------------------------------------------------------------------------

    def list_agents(
        self, *, name_contains: str = "", page_size: int = 0, limit: int | None = None
    ) -> AsyncIterator[agents_pb2.Agent]:
        request = agents_pb2.ListAgentsRequest(page_size=page_size, name_contains=name_contains)
        return self._pages(self._registry, "ListAgents", request, "agents", limit)

    async def get_agent(self, agent_id: str, *, revision: int = 0, timeout: float | None = None) -> agents_pb2.Agent:
        """The agent's latest revision, or `revision`."""
        request = agents_pb2.GetAgentRequest(agent_id=agent_id, revision=revision)
        agent: agents_pb2.Agent = await self._unary(
            self._registry, "GetAgent", request, idempotent=True, timeout=timeout
        )
        return agent

    async def create_agent(self, agent: agents_pb2.Agent, *, timeout: float | None = None) -> agents_pb2.Agent:
        created: agents_pb2.Agent = await self._unary(
            self._registry, "CreateAgent", agents_pb2.CreateAgentRequest(agent=agent), idempotent=False,
            timeout=timeout,
        )
        return created

    async def update_agent(
        self, agent: agents_pb2.Agent, fields: Iterable[str], *, timeout: float | None = None
    ) -> agents_pb2.Agent:
        """A new revision with `fields` (e.g. "instructions", "tools") taken from `agent` (its id names it)."""
        request = agents_pb2.UpdateAgentRequest(agent=agent, update_mask=field_mask_pb2.FieldMask(paths=list(fields)))
        updated: agents_pb2.Agent = await self._unary(
            self._registry, "UpdateAgent", request, idempotent=False, timeout=timeout
        )
        return updated

    async def delete_agent(self, agent_id: str, *, timeout: float | None = None) -> None:
        request = agents_pb2.DeleteAgentRequest(agent_id=agent_id)
        await self._unary(self._registry, "DeleteAgent", request, idempotent=False, timeout=timeout)

    # --- workflows --------------------------------------------------------------------------------------

    def list_workflows(
        self, *, name_contains: str = "", page_size: int = 0, limit: int | None = None
    ) -> AsyncIterator[workflows_pb2.Workflow]:
        request = workflows_pb2.ListWorkflowsRequest(page_size=page_size, name_contains=name_contains)
        return self._pages(self._workflows, "ListWorkflows", request, "workflows", limit)

    async def get_workflow(
        self, workflow_id: str, *, revision: int = 0, timeout: float | None = None
    ) -> workflows_pb2.Workflow:
        request = workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id, revision=revision)
        workflow: workflows_pb2.Workflow = await self._unary(
            self._workflows, "GetWorkflow", request, idempotent=True, timeout=timeout
        )
        return workflow

    async def create_workflow(
        self, workflow: workflows_pb2.Workflow, *, timeout: float | None = None
    ) -> workflows_pb2.Workflow:
        request = workflows_pb2.CreateWorkflowRequest(workflow=workflow)
        created: workflows_pb2.Workflow = await self._unary(
            self._workflows, "CreateWorkflow", request, idempotent=False, timeout=timeout
        )
        return created

    async def update_workflow(
        self, workflow: workflows_pb2.Workflow, fields: Iterable[str], *, timeout: float | None = None
    ) -> workflows_pb2.Workflow:
        request = workflows_pb2.UpdateWorkflowRequest(
            workflow=workflow, update_mask=field_mask_pb2.FieldMask(paths=list(fields))
        )
        updated: workflows_pb2.Workflow = await self._unary(
            self._workflows, "UpdateWorkflow", request, idempotent=False, timeout=timeout
        )
        return updated

    async def delete_workflow(self, workflow_id: str, *, timeout: float | None = None) -> None:
        request = workflows_pb2.DeleteWorkflowRequest(workflow_id=workflow_id)
        await self._unary(self._workflows, "DeleteWorkflow", request, idempotent=False, timeout=timeout)

    # --- what follow() calls ----------------------------------------------------------------------------

    def _open_watch(self, run_id: str, after_sequence: int, timeout: float | None) -> Any:
        request = runs_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)
        return self._runs.WatchRun(request, metadata=self._metadata, timeout=timeout)

    async def _get_run_for_follow(self, run_id: str, timeout: float | None) -> runs_pb2.Run:
        return await self.get_run(run_id, timeout=timeout if timeout is not None else self.timeout)

    async def _cancel_for_follow(self, run_id: str) -> None:
        await self._runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), metadata=self._metadata, timeout=5.0)


def _with_request_id(fields: RunFields) -> dict[str, Any]:
    """The start's fields with a request id (a random UUID unless given), so that a retried start is the same
    run, not a second one."""
    return {**fields, "request_id": fields.get("request_id") or str(uuid.uuid4())}


__all__ = ["AsyncClient", "ChatResult", "PendingApproval", "RunFields"]
