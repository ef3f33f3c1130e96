"""A saved workflow as the engine runs it: its inputs, nodes and edges, as plain dataclasses (no protos). The
agents service's client (upstream/agents_client.py) converts the agents API's Workflow into this; the workflow
runner (workflows/runner.py) walks it. Field names are the agents API's (agentplatform.agents.v1): each node has
one spec per kind, and `kind` says which one it is (as the message's oneof does)."""

from dataclasses import dataclass, field

from services.common.limits import RunLimits


@dataclass(frozen=True)
class AgentNode:
    """Runs a saved agent on a message computed from the state (`input`), keeping its answer as `output`."""

    agent_id: str = ""
    agent_revision: int = 0
    input: str = ""
    output: str = ""


@dataclass(frozen=True)
class ToolNode:
    """Calls a tool with arguments computed from the state, keeping its result as `output`."""

    tool_id: str = ""
    arguments: dict[str, str] = field(default_factory=dict)
    output: str = ""


@dataclass(frozen=True)
class IfNode:
    condition: str = ""


@dataclass(frozen=True)
class WhileNode:
    condition: str = ""
    max_iterations: int = 0


@dataclass(frozen=True)
class SetStateNode:
    assignments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApprovalNode:
    """Pauses the run until a person decides, or `timeout_seconds` (None: no timeout) pass."""

    prompt: str = ""
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class EndNode:
    output: str = ""


@dataclass(frozen=True)
class Node:
    """A node: its `kind` ("start", "agent", "tool", "if_else", "while_loop", "set_state", "approval", "end"; ""
    for one this engine does not know) and that kind's spec."""

    id: str
    kind: str
    agent: AgentNode = field(default_factory=AgentNode)
    tool: ToolNode = field(default_factory=ToolNode)
    if_else: IfNode = field(default_factory=IfNode)
    while_loop: WhileNode = field(default_factory=WhileNode)
    set_state: SetStateNode = field(default_factory=SetStateNode)
    approval: ApprovalNode = field(default_factory=ApprovalNode)
    end: EndNode = field(default_factory=EndNode)


@dataclass(frozen=True)
class Edge:
    """From a node to the next when it takes `branch` ("" for a node with one way on)."""

    from_node: str
    to_node: str
    branch: str = ""


@dataclass(frozen=True)
class WorkflowInput:
    name: str
    required: bool = False


@dataclass(frozen=True)
class SavedWorkflow:
    """A workflow revision as a run executes it."""

    id: str
    revision: int
    display_name: str = ""
    limits: RunLimits = field(default_factory=RunLimits)
    inputs: tuple[WorkflowInput, ...] = ()
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()

    @property
    def start_node_id(self) -> str:
        """Its start node (the agents service keeps exactly one in a saved workflow)."""
        return next((node.id for node in self.nodes if node.kind == "start"), "")
