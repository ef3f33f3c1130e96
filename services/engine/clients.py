"""The engine's gRPC clients of the runs and tools services.

Every call carries a deadline (Python does not propagate them), and a failed call surfaces as the domain
error matching its status (services.common.status), so callers never see grpc types.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common.protoconv import dict_from_struct, python_from_value, struct_from_dict
from services.common.status import error_from_rpc

ResponseT = TypeVar("ResponseT")


async def _call(service: str, call: Callable[..., Awaitable[ResponseT]], request: Any, timeout: float) -> ResponseT:
    try:
        return await call(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, service) from exc


class RunsClient:
    """Records runs and steps in the runs service."""

    SERVICE = "runs service"

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = runs_pb2_grpc.RunServiceStub(channel)
        self._timeout = timeout

    async def create_run(self, user_query: str, model: str, metadata: Mapping[str, str]) -> runs_pb2.Run:
        request = runs_pb2.CreateRunRequest(user_query=user_query, model=model, metadata=dict(metadata))
        return await _call(self.SERVICE, self._stub.CreateRun, request, self._timeout)

    async def append_step(self, step: runs_pb2.Step) -> runs_pb2.Step:
        request = runs_pb2.AppendStepsRequest(run_id=step.run_id, steps=[step])
        response = await _call(self.SERVICE, self._stub.AppendSteps, request, self._timeout)
        return response.steps[0]

    async def finish_run(
        self, run_id: str, state: "runs_pb2.RunState", error_message: str, usage: runs_pb2.Usage
    ) -> runs_pb2.Run:
        request = runs_pb2.FinishRunRequest(run_id=run_id, state=state, error_message=error_message, usage=usage)
        return await _call(self.SERVICE, self._stub.FinishRun, request, self._timeout)


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call gave back: a result and its text, or an error message for the model."""

    result: Any = None
    text: str = ""
    error: str = ""
    duration_seconds: float | None = None


class ToolsClient:
    """Lists the enabled tools' schemas and executes tools in the tools service."""

    SERVICE = "tools service"

    def __init__(self, channel: grpc.aio.Channel, list_timeout: float, execute_timeout: float) -> None:
        self._stub = tools_pb2_grpc.ToolServiceStub(channel)
        self._list_timeout = list_timeout
        self._execute_timeout = execute_timeout

    async def enabled_tool_schemas(self) -> list[dict[str, Any]]:
        """The function schemas of every enabled tool, exactly as the model is to see them."""
        request = tools_pb2.ListToolsRequest(enabled_only=True)
        response = await _call(self.SERVICE, self._stub.ListTools, request, self._list_timeout)
        return [dict_from_struct(tool.schema) for tool in response.tools]

    async def execute(self, tool_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run a tool. Errors the model can react to (bad arguments, unknown or disabled tool, a tool failure,
        even the tools service being down) come back as an outcome with `error`, not as an exception."""
        request = tools_pb2.ExecuteToolRequest(tool_id=tool_id, arguments=struct_from_dict(arguments))
        try:
            response = await self._stub.ExecuteTool(request, timeout=self._execute_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return ToolOutcome(error=f"{error_from_rpc(exc, self.SERVICE)}")
            return ToolOutcome(error=exc.details() or exc.code().name)
        return ToolOutcome(
            result=python_from_value(response.result) if response.HasField("result") else None,
            text=response.text,
            duration_seconds=response.duration.ToTimedelta().total_seconds() if response.HasField("duration") else None,
        )
