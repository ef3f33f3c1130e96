"""The internal gRPC face of the tools service (agentplatform.tools.internal.v1.ToolExecutionService): the
engine runs its runs' tool calls here. Only the platform's own services reach it (the server interceptor checks
the service token; the gateway does not route it).
"""

import grpc

from agentplatform.tools.internal.v1 import execution_pb2, execution_pb2_grpc
from services.common.identity import current_caller
from services.common.rpc.protoconv import dict_from_struct, duration_from_seconds, value_from_python
from services.tools.executor import ToolExecutor
from services.tools.servicer import require

#: The full gRPC service name (health checks and reflection use it).
SERVICE_NAME = execution_pb2.DESCRIPTOR.services_by_name["ToolExecutionService"].full_name


class ToolExecutionServicer(execution_pb2_grpc.ToolExecutionServiceServicer):
    """ToolExecutionService over the executor."""

    def __init__(self, executor: ToolExecutor) -> None:
        self._executor = executor

    async def ExecuteTool(
        self, request: execution_pb2.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.ExecuteToolResponse:
        arguments = dict_from_struct(request.arguments, "arguments")  # NaN or Infinity: InvalidArgument
        execution = await self._executor.execute(
            require(request.tool_id, "tool_id"), arguments, current_caller(), request.idempotency_key
        )
        return execution_pb2.ExecuteToolResponse(
            result=value_from_python(execution.output.result),
            text=execution.output.text,
            duration=duration_from_seconds(execution.duration),
        )
