"""`Client`: the same surface as `AsyncClient`, for code that is not asyncio (scripts, notebooks, the CLI).

It runs an AsyncClient on an event loop in a thread of its own and waits for each call, so there is one
implementation of the re-attaching streams, retries and errors; iterators (list_*, stream_chat, watch) are
ordinary iterators. A Client may be used from any one thread at a time; close it (or use `with`) to stop its
loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

from agentplatform_client._proto.agentplatform.agents.v1 import agents_pb2, workflows_pb2
from agentplatform_client._proto.agentplatform.runs.v1 import runs_pb2
from agentplatform_client._proto.agentplatform.tools.v1 import tools_pb2
from agentplatform_client._rpc import DEFAULT_RETRY, DEFAULT_TIMEOUT, RetryPolicy
from agentplatform_client.aio import AsyncClient, ChatResult, PendingApproval, RunFields
from agentplatform_client.follow import DEFAULT_FOLLOW, FollowPolicy, Reattach

T = TypeVar("T")
#: How long an interrupted call may take to unwind (a CancelRun of the chat being left included).
UNWIND_SECONDS = 6.0


class Client:
    """The platform's public API, synchronously. The arguments are AsyncClient's; so are the methods."""

    def __init__(
        self,
        address: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        follow_policy: FollowPolicy = DEFAULT_FOLLOW,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentplatform-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            # grpc.aio binds a channel to the loop it is made on: make it on ours.
            return AsyncClient(address, api_key=api_key, timeout=timeout, retry=retry, follow_policy=follow_policy)

        try:
            self.aio = self._wait(make())
        except BaseException:  # a bad address or policy: stop the loop we started
            self._stop_loop()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._wait(self.aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result, run on our loop. Interrupted (Ctrl-C in the calling thread), the coroutine is
        cancelled and given a moment to unwind before the interrupt goes on: a chat left this way cancels its
        run, as leaving it in AsyncClient does."""
        call = _Cancellable(coroutine)
        try:
            # Inside the try: an interrupt can land while the call is being handed to the loop.
            return asyncio.run_coroutine_threadsafe(call.run(), self._loop).result()
        except BaseException:
            # future.cancel() cannot stop a coroutine that already runs: cancel its task, on the loop.
            self._loop.call_soon_threadsafe(call.cancel)
            call.unwound.wait(UNWIND_SECONDS)
            raise

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator of our loop as a plain one; leaving it early closes the async one (so a chat left
        early is cancelled, as with AsyncClient)."""
        try:
            while True:
                try:
                    yield self._wait(_next(iterator))
                except StopAsyncIteration:
                    return
        finally:
            close: Callable[[], Coroutine[Any, Any, None]] | None = getattr(iterator, "aclose", None)
            # Still running: an interrupted step did not unwind in time; it ends with the loop instead.
            running = getattr(iterator, "ag_running", False)
            if close is not None and not running and not self._loop.is_closed():
                self._wait(close())

    # --- chat and runs ----------------------------------------------------------------------------------

    def start_run(self, message: str, *, timeout: float | None = None, **fields: Unpack[RunFields]) -> runs_pb2.Run:
        return self._wait(self.aio.start_run(message, timeout=timeout, **fields))

    def stream_chat(
        self,
        message: str,
        *,
        cancel_on_disconnect: bool = True,
        timeout: float | None = None,
        on_reattach: Callable[[Reattach], None] | None = None,
        **fields: Unpack[RunFields],
    ) -> Iterator[runs_pb2.RunEvent]:
        return self._iterate(self.aio.stream_chat(
            message, cancel_on_disconnect=cancel_on_disconnect, timeout=timeout, on_reattach=on_reattach, **fields
        ))

    def chat(self, message: str, *, timeout: float | None = None, **fields: Unpack[RunFields]) -> ChatResult:
        return self._wait(self.aio.chat(message, timeout=timeout, **fields))

    def start_workflow_run(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        workflow_revision: int = 0,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> runs_pb2.Run:
        return self._wait(self.aio.start_workflow_run(
            workflow_id, inputs, workflow_revision=workflow_revision, metadata=metadata, request_id=request_id,
            timeout=timeout,
        ))

    def get_run(self, run_id: str, *, timeout: float | None = None) -> runs_pb2.Run:
        return self._wait(self.aio.get_run(run_id, timeout=timeout))

    def list_runs(
        self,
        *,
        state: runs_pb2.RunState = runs_pb2.RUN_STATE_UNSPECIFIED,
        thread_id: str = "",
        all_users: bool = False,
        page_size: int = 0,
        limit: int | None = None,
    ) -> Iterator[runs_pb2.Run]:
        return self._iterate(self.aio.list_runs(
            state=state, thread_id=thread_id, all_users=all_users, page_size=page_size, limit=limit
        ))

    def watch(
        self,
        run_id: str,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
        on_reattach: Callable[[Reattach], None] | None = None,
    ) -> Iterator[runs_pb2.RunEvent]:
        return self._iterate(self.aio.watch(
            run_id, after_sequence=after_sequence, timeout=timeout, on_reattach=on_reattach
        ))

    def export_runs(
        self, search: runs_pb2.ListRunsRequest | None = None, *, cursor: str = "", max_breaks: int = 5
    ) -> Iterator[runs_pb2.ExportRunsResponse]:
        return self._iterate(self.aio.export_runs(search, cursor=cursor, max_breaks=max_breaks))

    def import_runs(self, runs: Iterable[runs_pb2.Run], *, timeout: float | None = None) -> int:
        return self._wait(self.aio.import_runs(runs, timeout=timeout))

    def cancel_run(self, run_id: str, *, reason: str = "", timeout: float | None = None) -> runs_pb2.Run:
        return self._wait(self.aio.cancel_run(run_id, reason=reason, timeout=timeout))

    def delete_run(self, run_id: str, *, timeout: float | None = None) -> None:
        self._wait(self.aio.delete_run(run_id, timeout=timeout))

    # --- approvals --------------------------------------------------------------------------------------

    def pending_approvals(self, *, all_users: bool = False, limit: int | None = None) -> list[PendingApproval]:
        return self._wait(self.aio.pending_approvals(all_users=all_users, limit=limit))

    def approve_step(
        self, run_id: str, sequence: int, *, comment: str = "", timeout: float | None = None
    ) -> runs_pb2.Run:
        return self._wait(self.aio.approve_step(run_id, sequence, comment=comment, timeout=timeout))

    def reject_step(
        self, run_id: str, sequence: int, *, comment: str = "", timeout: float | None = None
    ) -> runs_pb2.Run:
        return self._wait(self.aio.reject_step(run_id, sequence, comment=comment, timeout=timeout))

    # --- threads ----------------------------------------------------------------------------------------

    def get_thread(self, thread_id: str, *, timeout: float | None = None) -> runs_pb2.Thread:
        return self._wait(self.aio.get_thread(thread_id, timeout=timeout))

    def list_threads(
        self, *, all_users: bool = False, page_size: int = 0, limit: int | None = None
    ) -> Iterator[runs_pb2.Thread]:
        return self._iterate(self.aio.list_threads(all_users=all_users, page_size=page_size, limit=limit))

    def delete_thread(self, thread_id: str, *, timeout: float | None = None) -> None:
        self._wait(self.aio.delete_thread(thread_id, timeout=timeout))

    # --- tools ------------------------------------------------------------------------------------------

    def list_tools(
        self, *, enabled_only: bool = False, page_size: int = 0, limit: int | None = None
    ) -> Iterator[tools_pb2.Tool]:
        return self._iterate(self.aio.list_tools(enabled_only=enabled_only, page_size=page_size, limit=limit))

    def get_tool(self, tool_id: str, *, timeout: float | None = None) -> tools_pb2.Tool:
        return self._wait(self.aio.get_tool(tool_id, timeout=timeout))

    def update_tool(
        self,
        tool_id: str,
        *,
        enabled: bool | None = None,
        description: str | None = None,
        requires_approval: bool | None = None,
        timeout: float | None = None,
    ) -> tools_pb2.Tool:
        return self._wait(self.aio.update_tool(
            tool_id, enabled=enabled, description=description, requires_approval=requires_approval, timeout=timeout
        ))

    def enable_tool(self, tool_id: str, *, timeout: float | None = None) -> tools_pb2.Tool:
        return self._wait(self.aio.enable_tool(tool_id, timeout=timeout))

    def disable_tool(self, tool_id: str, *, timeout: float | None = None) -> tools_pb2.Tool:
        return self._wait(self.aio.disable_tool(tool_id, timeout=timeout))

    # --- agents -----------------------------------------------------------------------------------------

    def list_agents(
        self, *, name_contains: str = "", page_size: int = 0, limit: int | None = None
    ) -> Iterator[agents_pb2.Agent]:
        return self._iterate(self.aio.list_agents(name_contains=name_contains, page_size=page_size, limit=limit))

    def get_agent(self, agent_id: str, *, revision: int = 0, timeout: float | None = None) -> agents_pb2.Agent:
        return self._wait(self.aio.get_agent(agent_id, revision=revision, timeout=timeout))

    def create_agent(self, agent: agents_pb2.Agent, *, timeout: float | None = None) -> agents_pb2.Agent:
        return self._wait(self.aio.create_agent(agent, timeout=timeout))

    def update_agent(
        self, agent: agents_pb2.Agent, fields: Iterable[str], *, timeout: float | None = None
    ) -> agents_pb2.Agent:
        return self._wait(self.aio.update_agent(agent, fields, timeout=timeout))

    def delete_agent(self, agent_id: str, *, timeout: float | None = None) -> None:
        self._wait(self.aio.delete_agent(agent_id, timeout=timeout))

    # --- workflows --------------------------------------------------------------------------------------

    def list_workflows(
        self, *, name_contains: str = "", page_size: int = 0, limit: int | None = None
    ) -> Iterator[workflows_pb2.Workflow]:
        return self._iterate(self.aio.list_workflows(name_contains=name_contains, page_size=page_size, limit=limit))

    def get_workflow(
        self, workflow_id: str, *, revision: int = 0, timeout: float | None = None
    ) -> workflows_pb2.Workflow:
        return self._wait(self.aio.get_workflow(workflow_id, revision=revision, timeout=timeout))

    def create_workflow(
        self, workflow: workflows_pb2.Workflow, *, timeout: float | None = None
    ) -> workflows_pb2.Workflow:
        return self._wait(self.aio.create_workflow(workflow, timeout=timeout))

    def update_workflow(
        self, workflow: workflows_pb2.Workflow, fields: Iterable[str], *, timeout: float | None = None
    ) -> workflows_pb2.Workflow:
        return self._wait(self.aio.update_workflow(workflow, fields, timeout=timeout))

    def delete_workflow(self, workflow_id: str, *, timeout: float | None = None) -> None:
        self._wait(self.aio.delete_workflow(workflow_id, timeout=timeout))


async def _next(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


class _Cancellable(Generic[T]):
    """A coroutine run as a task of the client's loop that another thread can cancel (through call_soon_threadsafe:
    `run` and `cancel` both run on the loop, so a cancel that comes before the task started is not lost)."""

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self.coroutine = coroutine
        self.unwound = threading.Event()
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    async def run(self) -> T:
        try:
            if self._cancelled:
                self.coroutine.close()
                raise asyncio.CancelledError()
            self._task = asyncio.current_task()
            return await self.coroutine
        finally:
            self.unwound.set()

    def cancel(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()
        else:
            # Not started: either its first step is queued before the next callback (and run() sees the flag),
            # or it was never handed to the loop (interrupted before), and nothing will set `unwound`.
            asyncio.get_running_loop().call_soon(self._settle)

    def _settle(self) -> None:
        if self._task is None:
            self.unwound.set()
