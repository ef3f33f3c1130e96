"""The workflows' domain types: what callers hand the store and what it hands back (no gRPC, no ORM).

A node's kind is one of the `*Node` classes below; `Node.kind` is None only for a node a client sent without a
kind, which the checks refuse. The engine that runs workflows reads these types (through the registry or the
protos), so they say what each field means at run time.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from services.common.limits import RunLimits

#: The fields of a workflow a client sets, by their names on the wire; the paths an update_mask may name.
WORKFLOW_FIELDS = ("display_name", "description", "inputs", "nodes", "edges", "limits", "metadata")
#: The fields that make the graph, checked together: changing any one checks the whole graph again.
GRAPH_FIELDS = frozenset({"inputs", "nodes", "edges"})


@dataclass(frozen=True)
class WorkflowInput:
    """A value a run is given; it becomes the state variable `name`."""

    name: str
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class StartNode:
    """Where a run begins."""

    KIND: ClassVar[str] = "start"
    #: The outcomes the node's outgoing edges are labelled with ("" is a plain edge).
    BRANCHES: ClassVar[tuple[str, ...]] = ("",)


@dataclass(frozen=True)
class AgentNode:
    """Sends the value of `input` (CEL) to the agent at `agent_revision`; its answer becomes `output`."""

    KIND: ClassVar[str] = "agent"
    BRANCHES: ClassVar[tuple[str, ...]] = ("",)
    agent_id: str
    #: 0 only in what a client sends: the registry pins it to the agent's latest revision before storing.
    agent_revision: int
    input: str
    output: str


@dataclass(frozen=True)
class ToolNode:
    """Calls the tool with each argument the value of its CEL expression; the result becomes `output`."""

    KIND: ClassVar[str] = "tool"
    BRANCHES: ClassVar[tuple[str, ...]] = ("",)
    tool_id: str
    #: Argument name -> CEL expression.
    arguments: dict[str, str]
    output: str


@dataclass(frozen=True)
class IfNode:
    """Follows the "true" or the "false" edge, as `condition` (CEL, a bool) says."""

    KIND: ClassVar[str] = "if_else"
    BRANCHES: ClassVar[tuple[str, ...]] = ("true", "false")
    condition: str


@dataclass(frozen=True)
class WhileNode:
    """Follows "body" while `condition` (CEL, a bool) holds, at most `max_iterations` times per entry; then
    "done"."""

    KIND: ClassVar[str] = "while_loop"
    BRANCHES: ClassVar[tuple[str, ...]] = ("body", "done")
    condition: str
    max_iterations: int


@dataclass(frozen=True)
class SetStateNode:
    """Assigns each variable the value of its CEL expression, all evaluated on the state before the node."""

    KIND: ClassVar[str] = "set_state"
    BRANCHES: ClassVar[tuple[str, ...]] = ("",)
    #: Variable -> CEL expression.
    assignments: dict[str, str]


@dataclass(frozen=True)
class ApprovalNode:
    """Shows the value of `prompt` (CEL, text) to the workflow's owner and waits for "approved" or "rejected",
    or "timeout" after `timeout_ms` (None: waits indefinitely)."""

    KIND: ClassVar[str] = "approval"
    BRANCHES: ClassVar[tuple[str, ...]] = ("approved", "rejected", "timeout")
    prompt: str
    timeout_ms: int | None = None

    @property
    def branches(self) -> tuple[str, ...]:
        """The outcomes this node has: "timeout" only when it has a timeout."""
        return self.BRANCHES if self.timeout_ms is not None else self.BRANCHES[:2]


@dataclass(frozen=True)
class EndNode:
    """Where a run ends; the value of `output` (CEL) is the workflow's result."""

    KIND: ClassVar[str] = "end"
    BRANCHES: ClassVar[tuple[str, ...]] = ()
    output: str


NodeKind = StartNode | AgentNode | ToolNode | IfNode | WhileNode | SetStateNode | ApprovalNode | EndNode
#: The kinds by their names on the wire (the `kind` oneof's fields).
NODE_KINDS: dict[str, type[NodeKind]] = {
    kind.KIND: kind
    for kind in (StartNode, AgentNode, ToolNode, IfNode, WhileNode, SetStateNode, ApprovalNode, EndNode)
}


def branches_of(kind: NodeKind) -> tuple[str, ...]:
    """The outcomes a node of this kind has, each of which needs exactly one outgoing edge."""
    return kind.branches if isinstance(kind, ApprovalNode) else kind.BRANCHES


@dataclass(frozen=True)
class Node:
    """One node of a workflow."""

    id: str
    kind: NodeKind | None
    display_name: str = ""


@dataclass(frozen=True)
class Edge:
    """After `from_node` (when its outcome is `branch`), the run goes to `to_node`."""

    from_node: str
    to_node: str
    branch: str = ""


@dataclass(frozen=True)
class WorkflowSpec:
    """What a client says a workflow is: the content of one revision."""

    display_name: str
    description: str = ""
    inputs: tuple[WorkflowInput, ...] = ()
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    limits: RunLimits = field(default_factory=RunLimits)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowRecord:
    """A stored workflow as of one revision."""

    id: str
    revision: int
    owner: str
    #: When revision 1 was made.
    created_at: datetime
    #: When this revision was made.
    revision_created_at: datetime
    spec: WorkflowSpec
