"""The stored form of a workflow's graph (its inputs, nodes and edges): one JSON document per revision, in the
`graph` column of `workflow_revisions`.

Its shape is this module's, not the wire format's: the names below are the storage's own and change only with
SCHEMA_VERSION, so renaming a proto field (or a Python attribute) orphans no stored data, and a document written
by an older schema is read by its own reader here. Version 1:

    {"schema": 1,
     "inputs": [{"name": "ticket", "description": "...", "required": true}],
     "nodes": [{"id": "draft", "name": "Draft a reply", "kind": "agent",
                "agent": "<uuid>", "agent_revision": 3, "input": "<CEL>", "output": "reply"},
               {"id": "check", "name": "", "kind": "if", "condition": "<CEL>"}, ...],
     "edges": [{"from": "start", "to": "draft", "branch": ""}]}

Node kinds and their fields: start; agent (agent, agent_revision, input, output); tool (tool, arguments: {name:
CEL}, output); if (condition); while (condition, max_iterations); set_state (assignments: {variable: CEL});
approval (prompt, timeout_ms: int or null); end (output).
"""

from typing import Any

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
)
from services.common.errors import Internal

SCHEMA_VERSION = 1

Document = dict[str, Any]


def graph_document(
    inputs: tuple[WorkflowInput, ...], nodes: tuple[Node, ...], edges: tuple[Edge, ...]
) -> Document:
    """The document of a checked graph (every node has a kind)."""
    return {
        "schema": SCHEMA_VERSION,
        "inputs": [
            {"name": item.name, "description": item.description, "required": item.required} for item in inputs
        ],
        "nodes": [{"id": node.id, "name": node.display_name, **_kind_fields(node.kind)} for node in nodes],
        "edges": [{"from": edge.from_node, "to": edge.to_node, "branch": edge.branch} for edge in edges],
    }


def _kind_fields(kind: NodeKind | None) -> dict[str, Any]:
    match kind:
        case StartNode():
            return {"kind": "start"}
        case AgentNode():
            return {"kind": "agent", "agent": kind.agent_id, "agent_revision": kind.agent_revision,
                    "input": kind.input, "output": kind.output}
        case ToolNode():
            return {"kind": "tool", "tool": kind.tool_id, "arguments": dict(kind.arguments), "output": kind.output}
        case IfNode():
            return {"kind": "if", "condition": kind.condition}
        case WhileNode():
            return {"kind": "while", "condition": kind.condition, "max_iterations": kind.max_iterations}
        case SetStateNode():
            return {"kind": "set_state", "assignments": dict(kind.assignments)}
        case ApprovalNode():
            return {"kind": "approval", "prompt": kind.prompt, "timeout_ms": kind.timeout_ms}
        case EndNode():
            return {"kind": "end", "output": kind.output}
    raise ValueError(f"a node without a kind cannot be stored: {kind!r}")  # the checks refuse such nodes


def _kind(fields: Document) -> NodeKind:
    match fields["kind"]:
        case "start":
            return StartNode()
        case "agent":
            return AgentNode(fields["agent"], fields["agent_revision"], fields["input"], fields["output"])
        case "tool":
            return ToolNode(fields["tool"], dict(fields["arguments"]), fields["output"])
        case "if":
            return IfNode(fields["condition"])
        case "while":
            return WhileNode(fields["condition"], fields["max_iterations"])
        case "set_state":
            return SetStateNode(dict(fields["assignments"]))
        case "approval":
            return ApprovalNode(fields["prompt"], fields["timeout_ms"])
        case "end":
            return EndNode(fields["output"])
    raise KeyError(f"node kind {fields['kind']!r}")


def read_graph(document: Document) -> tuple[tuple[WorkflowInput, ...], tuple[Node, ...], tuple[Edge, ...]]:
    """The inputs, nodes and edges of a stored document; Internal for a document this version cannot read (a
    newer schema, written by a newer version of the service, or a damaged one)."""
    version = document.get("schema") if isinstance(document, dict) else None
    if version != SCHEMA_VERSION:
        raise Internal(f"a stored workflow graph has schema version {version!r}; this agents service reads "
                       f"version {SCHEMA_VERSION}")
    try:
        inputs = tuple(
            WorkflowInput(item["name"], item["description"], item["required"]) for item in document["inputs"]
        )
        nodes = tuple(Node(item["id"], _kind(item), item["name"]) for item in document["nodes"])
        edges = tuple(Edge(item["from"], item["to"], item["branch"]) for item in document["edges"])
    except (KeyError, TypeError) as exc:
        raise Internal(f"a stored workflow graph is damaged: {exc}") from None
    return inputs, nodes, edges
