"""Conversions between the workflows protos and the domain records of `services.agents.workflows.records`."""

from google.protobuf import duration_pb2

from agentplatform.agents.v1 import workflows_pb2
from services.agents.workflows.records import (
    AgentNode,
    ApprovalNode,
    Edge,
    EndNode,
    IfNode,
    Node,
    NodeKind,
    SetStateNode,
    StartNode,
    ToolNode,
    WhileNode,
    WorkflowInput,
    WorkflowRecord,
    WorkflowSpec,
)
from services.common.limits import RunLimits
from services.common.rpc.protoconv import check_duration, limits_from_proto, limits_to_proto, timestamp_from_datetime

_NANOS_PER_MS = 1_000_000


def _timeout_ms(duration: duration_pb2.Duration, field: str) -> int:
    """A Duration in whole milliseconds, rounded up (so a positive duration stays positive); plain integer
    arithmetic once protobuf's rules passed (range checks are the domain's)."""
    check_duration(duration, field)
    nanos = duration.seconds * 1_000_000_000 + duration.nanos
    return -(-nanos // _NANOS_PER_MS)


def _kind_from_proto(node: workflows_pb2.Node, field: str) -> NodeKind | None:
    """The node's kind; `field` names the node in messages (`workflow.nodes[2]`)."""
    match node.WhichOneof("kind"):
        case "start":
            return StartNode()
        case "agent":
            agent = node.agent
            return AgentNode(agent.agent_id, agent.agent_revision, agent.input, agent.output)
        case "tool":
            return ToolNode(node.tool.tool_id, dict(node.tool.arguments), node.tool.output)
        case "if_else":
            return IfNode(node.if_else.condition)
        case "while_loop":
            return WhileNode(node.while_loop.condition, node.while_loop.max_iterations)
        case "set_state":
            return SetStateNode(dict(node.set_state.assignments))
        case "approval":
            approval = node.approval
            has_timeout = approval.HasField("timeout")
            timeout = _timeout_ms(approval.timeout, f"{field}.approval.timeout") if has_timeout else None
            return ApprovalNode(approval.prompt, timeout)
        case "end":
            return EndNode(node.end.output)
    return None


def spec_from_proto(workflow: workflows_pb2.Workflow) -> WorkflowSpec:
    """What a client set of a workflow; the fields the server sets (id, revision, owner, times) are ignored."""
    return WorkflowSpec(
        display_name=workflow.display_name,
        description=workflow.description,
        inputs=tuple(WorkflowInput(item.name, item.description, item.required) for item in workflow.inputs),
        nodes=tuple(
            Node(node.id, _kind_from_proto(node, f"workflow.nodes[{index}]"), node.display_name)
            for index, node in enumerate(workflow.nodes)
        ),
        edges=tuple(Edge(edge.from_node, edge.to_node, edge.branch) for edge in workflow.edges),
        limits=limits_from_proto(workflow.limits, "workflow.limits"),
        metadata=dict(workflow.metadata),
    )


def _node_to_proto(node: Node) -> workflows_pb2.Node:
    message = workflows_pb2.Node(id=node.id, display_name=node.display_name)
    kind = node.kind
    match kind:
        case StartNode():
            message.start.SetInParent()
        case AgentNode():
            message.agent.CopyFrom(workflows_pb2.AgentNode(
                agent_id=kind.agent_id, agent_revision=kind.agent_revision, input=kind.input, output=kind.output
            ))
        case ToolNode():
            message.tool.CopyFrom(workflows_pb2.ToolNode(tool_id=kind.tool_id, arguments=kind.arguments,
                                                         output=kind.output))
        case IfNode():
            message.if_else.condition = kind.condition
        case WhileNode():
            message.while_loop.CopyFrom(workflows_pb2.WhileNode(condition=kind.condition,
                                                                max_iterations=kind.max_iterations))
        case SetStateNode():
            message.set_state.CopyFrom(workflows_pb2.SetStateNode(assignments=kind.assignments))
        case ApprovalNode():
            message.approval.prompt = kind.prompt
            if kind.timeout_ms is not None:
                message.approval.timeout.CopyFrom(duration_pb2.Duration(
                    seconds=kind.timeout_ms // 1000, nanos=kind.timeout_ms % 1000 * _NANOS_PER_MS
                ))
        case EndNode():
            message.end.output = kind.output
    return message


def workflow_to_proto(record: WorkflowRecord) -> workflows_pb2.Workflow:
    spec = record.spec
    message = workflows_pb2.Workflow(
        id=record.id,
        revision=record.revision,
        display_name=spec.display_name,
        description=spec.description,
        inputs=[workflows_pb2.WorkflowInput(name=item.name, description=item.description, required=item.required)
                for item in spec.inputs],
        nodes=[_node_to_proto(node) for node in spec.nodes],
        edges=[workflows_pb2.Edge(from_node=edge.from_node, to_node=edge.to_node, branch=edge.branch)
               for edge in spec.edges],
        metadata=spec.metadata,
        owner=record.owner,
        create_time=timestamp_from_datetime(record.created_at),
        revision_create_time=timestamp_from_datetime(record.revision_created_at),
    )
    if spec.limits != RunLimits():  # unset when none is set, as the client most likely sent it
        message.limits.CopyFrom(limits_to_proto(spec.limits))
    return message
