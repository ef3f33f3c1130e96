"""The API's messages and enums under short names, for annotations and for building requests
(`Agent(display_name=...)`, `RunState.Value("RUN_STATE_WAITING")`): the generated classes themselves, from the
SDK's copy of the public protos (agentplatform_client._proto), documented in protos/."""

from agentplatform_client._proto.agentplatform.agents.v1.agents_pb2 import Agent, ModelParameters
from agentplatform_client._proto.agentplatform.agents.v1.workflows_pb2 import Workflow
from agentplatform_client._proto.agentplatform.runs.v1.runs_pb2 import (
    MultitaskStrategy,
    Run,
    RunEvent,
    RunLimits,
    RunState,
    Step,
    StepDelta,
    Thread,
)
from agentplatform_client._proto.agentplatform.tools.v1.tools_pb2 import Tool

__all__ = [
    "Agent", "ModelParameters", "MultitaskStrategy", "Run", "RunEvent", "RunLimits", "RunState", "Step", "StepDelta",
    "Thread", "Tool", "Workflow",
]
