"""The engine's client of the tools service: the enabled tools' schemas as the model is offered them, and tool
calls executed on behalf of a run's owner. Answers are domain types (OfferedTool, ToolOutcome); a tool's failure,
even the tools service being down, is an outcome the model is told, not an exception.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc

from agentplatform.tools.internal.v1 import execution_pb2 as tool_execution_pb2
from agentplatform.tools.internal.v1 import execution_pb2_grpc as tool_execution_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common import errors
from services.common.identity import Caller, on_behalf_of
from services.common.pages import MAX_PAGE_SIZE
from services.common.rpc.protoconv import dict_from_struct, python_from_value, seconds_from_duration, struct_from_dict
from services.common.rpc.status import error_from_rpc
from services.engine import spans
from services.engine.step_checks import check_value
from services.engine.upstream.calls import call_unary

#: Pages of enabled tools a listing may take before the tools service is deemed to misbehave.
MAX_PAGES = 100


def idempotency_key(run_id: str, sequence: int) -> str:
    """The idempotency key of the tool call recorded as step `sequence` of run `run_id`: computable from the run's
    journal alone, so every engine, and every repeat of the call, sends the same one."""
    return f"{run_id}:{sequence}"


@dataclass(frozen=True)
class OfferedTool:
    """An enabled tool as the model is offered it: its function schema, whether its calls wait for approval, and
    whether a call whose outcome is unknown (its engine died before recording the result) may be run again:
    `repeat_safe` for all its calls, else those whose argument `safe_argument` is one of `safe_values`."""

    schema: dict[str, Any]
    requires_approval: bool = False
    repeat_safe: bool = False
    safe_argument: str = ""
    safe_values: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return str(self.schema["function"]["name"])

    def repeats_safely(self, arguments: dict[str, Any] | None) -> bool:
        """Whether the call with these (recorded) arguments may be run again without a person's decision."""
        if self.repeat_safe:
            return True
        value = (arguments or {}).get(self.safe_argument) if self.safe_argument else None
        return isinstance(value, str) and value in self.safe_values


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
        metadata = on_behalf_of(caller, self._service_token)
        offered: list[OfferedTool] = []
        token = ""
        for _ in range(MAX_PAGES):
            request = tools_pb2.ListToolsRequest(enabled_only=True, page_size=MAX_PAGE_SIZE, page_token=token)
            # wait_for_ready: while the tools service is starting (or restarting), a run waits for it, within the
            # deadline, instead of failing at once with tools_unavailable.
            response = await call_unary(
                self.SERVICE, self._stub.ListTools, request, self._list_timeout, metadata, wait_for_ready=True
            )
            offered.extend(_offered(tool) for tool in response.tools)
            token = response.next_page_token
            if not token:
                return offered
        raise errors.Unavailable(f"the {self.SERVICE} listed more than {MAX_PAGES} pages of enabled tools")

    async def execute(
        self, tool_id: str, arguments: dict[str, Any], caller: Caller, idempotency_key: str = "", call_id: str = ""
    ) -> ToolOutcome:
        """Run a tool on behalf of `caller`, with the call's `idempotency_key` (see `idempotency_key`), which the
        tools service passes on to the tool; traced as an `execute_tool` span (the model's `call_id`, if it made
        the call). Errors the model can react to (bad arguments, unknown or disabled tool, a tool failure, even
        the tools service being down) come back as an outcome with `error`, not as an exception."""
        with spans.tool_call(tool_id, call_id, arguments) as span:
            outcome = await self._execute(tool_id, arguments, caller, idempotency_key)
            spans.tool_result(span, outcome.error, outcome.text)
            return outcome

    async def _execute(
        self, tool_id: str, arguments: dict[str, Any], caller: Caller, idempotency_key: str
    ) -> ToolOutcome:
        request = tool_execution_pb2.ExecuteToolRequest(
            tool_id=tool_id, arguments=struct_from_dict(arguments), idempotency_key=idempotency_key
        )
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




def _offered(tool: tools_pb2.Tool) -> OfferedTool:
    calls = tool.repeat_safe_calls if tool.HasField("repeat_safe_calls") else None
    return OfferedTool(
        dict_from_struct(tool.schema),
        tool.requires_approval,
        repeat_safe=tool.repeat_safe,
        safe_argument=calls.argument if calls is not None else "",
        safe_values=frozenset(calls.values) if calls is not None else frozenset(),
    )
