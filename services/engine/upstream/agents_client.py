"""The engine's client of the agents service: saved agents (as the profile a run executes) and saved workflows,
read on behalf of the caller who asks to run one (so another user's agent or workflow is NOT_FOUND here too)."""

from typing import Any

import grpc

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from services.common.identity import Caller, on_behalf_of
from services.common.rpc.protoconv import limits_from_proto, seconds_from_duration
from services.engine.agent_profile import AgentProfile
from services.engine.upstream.calls import call_unary
from services.engine.workflow_graph import (
    AgentNode,
    ApprovalNode,
    Edge,
    EndNode,
    IfNode,
    Node,
    SavedWorkflow,
    SetStateNode,
    ToolNode,
    WhileNode,
    WorkflowInput,
)


def _node(message: workflows_pb2.Node) -> Node:
    kind = message.WhichOneof("kind") or ""
    spec: dict[str, Any] = {}  # the spec of its kind, by field name
    if kind == "agent":
        agent = message.agent
        spec["agent"] = AgentNode(agent.agent_id, agent.agent_revision, agent.input, agent.output)
    elif kind == "tool":
        spec["tool"] = ToolNode(message.tool.tool_id, dict(message.tool.arguments), message.tool.output)
    elif kind == "if_else":
        spec["if_else"] = IfNode(message.if_else.condition)
    elif kind == "while_loop":
        spec["while_loop"] = WhileNode(message.while_loop.condition, message.while_loop.max_iterations)
    elif kind == "set_state":
        spec["set_state"] = SetStateNode(dict(message.set_state.assignments))
    elif kind == "approval":
        approval = message.approval
        timeout = (
            seconds_from_duration(approval.timeout, f"nodes.{message.id}.approval.timeout")
            if approval.HasField("timeout") else None
        )
        spec["approval"] = ApprovalNode(approval.prompt, timeout)
    elif kind == "end":
        spec["end"] = EndNode(message.end.output)
    return Node(message.id, kind, **spec)


def workflow_from_proto(message: workflows_pb2.Workflow) -> SavedWorkflow:
    return SavedWorkflow(
        id=message.id,
        revision=message.revision,
        display_name=message.display_name,
        limits=limits_from_proto(message.limits),
        inputs=tuple(WorkflowInput(item.name, item.required) for item in message.inputs),
        nodes=tuple(_node(node) for node in message.nodes),
        edges=tuple(Edge(edge.from_node, edge.to_node, edge.branch) for edge in message.edges),
    )


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
        return workflow_from_proto(
            await call_unary(self.SERVICE, self._workflows.GetWorkflow, request, self._timeout, metadata)
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
