"""The engine's client of the agents service: saved agents (as the profile a run executes) and saved workflows,
read on behalf of the caller who asks to run one (so another user's agent or workflow is NOT_FOUND here too)."""

from dataclasses import dataclass

import grpc

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from services.common.identity import Caller, on_behalf_of
from services.common.limits import RunLimits
from services.common.rpc.protoconv import limits_from_proto
from services.engine.agent_profile import AgentProfile
from services.engine.upstream.calls import call_unary


@dataclass(frozen=True)
class WorkflowInput:
    name: str
    required: bool = False


@dataclass(frozen=True)
class SavedWorkflow:
    """A workflow revision as a run executes it. `graph` is still the agents API's message: the workflow runner
    (services/engine/workflows/runner.py) walks its nodes and edges."""

    id: str
    revision: int
    display_name: str
    limits: RunLimits
    inputs: tuple[WorkflowInput, ...]
    start_node_id: str
    graph: workflows_pb2.Workflow


class AgentsClient:
    """Reads saved agents and workflows from the agents service, on behalf of the caller who asks to run one."""

    SERVICE = "agents service"

    def __init__(self, channel: grpc.aio.Channel, timeout: float, service_token: str) -> None:
        self._stub = agents_pb2_grpc.AgentRegistryServiceStub(channel)
        self._workflows = workflows_pb2_grpc.WorkflowRegistryServiceStub(channel)
        self._timeout = timeout
        self._service_token = service_token

    async def workflow(self, workflow_id: str, revision: int, caller: Caller) -> SavedWorkflow:
        """The workflow's revision (its latest for 0), as `caller` may read it."""
        request = workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id, revision=revision)
        metadata = on_behalf_of(caller, self._service_token)
        graph = await call_unary(self.SERVICE, self._workflows.GetWorkflow, request, self._timeout, metadata)
        return SavedWorkflow(
            id=graph.id,
            revision=graph.revision,
            display_name=graph.display_name,
            limits=limits_from_proto(graph.limits),
            inputs=tuple(WorkflowInput(item.name, item.required) for item in graph.inputs),
            # The agents service checks that a saved workflow has exactly one start node.
            start_node_id=next((node.id for node in graph.nodes if node.WhichOneof("kind") == "start"), ""),
            graph=graph,
        )

    async def profile(self, agent_id: str, revision: int, caller: Caller) -> AgentProfile:
        """The agent's revision (its latest for 0), as a run executes it."""
        request = agents_pb2.GetAgentRequest(agent_id=agent_id, revision=revision)
        metadata = on_behalf_of(caller, self._service_token)
        agent = await call_unary(self.SERVICE, self._stub.GetAgent, request, self._timeout, metadata)
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
