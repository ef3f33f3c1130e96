"""Stubs of a service's public and internal APIs over one channel, called as one, as the tests use them.

The runs and tools services each serve a public API and an internal one (agentplatform.*.internal.v1). Tests
exercise both through one object: `stub.CreateRun` (internal) and `stub.GetRun` (public) alike.
"""

from typing import Any

import grpc

from agentplatform.runs.internal.v1 import execution_pb2_grpc as runs_execution_grpc
from agentplatform.runs.v1 import runs_pb2_grpc
from agentplatform.tools.internal.v1 import execution_pb2_grpc as tools_execution_grpc
from agentplatform.tools.v1 import tools_pb2_grpc


class ServiceStubs:
    """Looks each method up on the public stub, then on the internal one."""

    def __init__(self, public: Any, internal: Any) -> None:
        self.public = public
        self.internal = internal

    def __getattr__(self, name: str) -> Any:
        if hasattr(self.public, name):
            return getattr(self.public, name)
        return getattr(self.internal, name)


def runs_stubs(channel: grpc.aio.Channel) -> Any:
    """RunService and ExecutionService (typed Any: the methods of both)."""
    return ServiceStubs(runs_pb2_grpc.RunServiceStub(channel), runs_execution_grpc.ExecutionServiceStub(channel))


def tools_stubs(channel: grpc.aio.Channel) -> Any:
    """ToolService and ToolExecutionService (typed Any: the methods of both)."""
    return ServiceStubs(
        tools_pb2_grpc.ToolServiceStub(channel), tools_execution_grpc.ToolExecutionServiceStub(channel)
    )
