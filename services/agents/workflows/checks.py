"""What a workflow may be: its fields, the shape of its graph and its CEL expressions, checked before anything
reaches the database (so SQLite and PostgreSQL give the same answers). What a workflow names elsewhere (agents,
tools) is checked by `services.agents.workflows.registry`.

Every refusal is InvalidArgument naming the field as on the wire, with the node's id when it is about a node:
`workflow.nodes[2].agent.input (node 'draft'): unknown variable 'ticket' at line 1, column 12 (...)`.

The graph rules, in the order they are checked:
1. inputs: at most MAX_INPUTS, each a valid variable name, distinct;
2. nodes: MAX_NODES at most, each with a valid, unique id and a kind, and the kind's own fields well-formed;
3. exactly one start node and at least one end node;
4. edges: both ends are nodes; none enters the start node; the branch is an outcome of the source's kind, and
   each outcome of each node has exactly one edge (an end node has none);
5. every node is reachable from the start node (so an end node is too);
6. every cycle leaves a while node by its "body" edge and comes back to it. Checked as: without the while nodes'
   body edges, the graph has no cycle. Then every node also reaches an end node: following edges other than
   body edges never cycles, and every node but an end node has such an edge;
7. every expression parses and reads known variables only. Known variables (a whole-graph rule, the simplest
   that is sound at save time): the inputs, the `output` of every agent and tool node, and the targets of every
   set_state node, wherever they are in the graph. Whether a variable has a value yet on the path a run took is
   for the engine to find when it evaluates (services.common.cel says "has no value yet").
"""

import re
from collections.abc import Iterable, Iterator, Sequence

from services.agents.checks import parse_agent_id
from services.agents.models import MAX_DISPLAY_NAME_CHARS
from services.agents.workflows.records import (
    GRAPH_FIELDS,
    NODE_KINDS,
    WORKFLOW_FIELDS,
    AgentNode,
    ApprovalNode,
    EndNode,
    IfNode,
    Node,
    NodeKind,
    SetStateNode,
    StartNode,
    ToolNode,
    WhileNode,
    WorkflowSpec,
    branches_of,
)
from services.common import cel
from services.common.checks import check_metadata, check_text, parse_uuid
from services.common.errors import InvalidArgument
from services.common.limits import RunLimitMaximums, check_within

WORKFLOW = "workflow"
MAX_DESCRIPTION_CHARS = 2_000
MAX_INPUTS = 32
MAX_NODES = 200
#: Each node has at most 3 outcomes, each with one edge: more edges than this cannot all be valid.
MAX_EDGES = 3 * MAX_NODES
MAX_ITERATIONS = 1_000
MAX_ASSIGNMENTS = 32
MAX_TOOL_ARGUMENTS = 32
MAX_ARGUMENT_NAME_CHARS = 64
#: As the agents' (the tools service's settings table's key).
MAX_TOOL_ID_CHARS = 64
MAX_APPROVAL_TIMEOUT_MS = 30 * 24 * 3600 * 1000
#: Node ids and variable names.
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
NAME_RULE = "a lower-case letter, then up to 63 lower-case letters, digits or underscores"


def parse_workflow_id(workflow_id: str, field: str = "workflow_id") -> str:
    """The canonical form of a workflow id (a UUID); InvalidArgument when it is empty or not a UUID."""
    return parse_uuid(workflow_id, field, "workflow")


def check_revision(revision: int) -> None:
    if revision < 0:
        raise InvalidArgument(f"revision must be 0 (the latest) or a revision number, got {revision}")


def check_update_mask(paths: Sequence[str]) -> tuple[str, ...]:
    """The fields an update_mask names, in WORKFLOW_FIELDS order; InvalidArgument for no path or unknown ones."""
    if not paths:
        raise InvalidArgument(
            f"update_mask is required: name the fields to change, any of {', '.join(WORKFLOW_FIELDS)}"
        )
    unknown = sorted({path for path in paths if path not in WORKFLOW_FIELDS})
    if unknown:
        names = ", ".join(repr(path[:100]) for path in unknown)
        raise InvalidArgument(f"update_mask names unknown field(s) {names}; use any of {', '.join(WORKFLOW_FIELDS)}")
    return tuple(field for field in WORKFLOW_FIELDS if field in paths)


def check_workflow(spec: WorkflowSpec, maximums: RunLimitMaximums, fields: Iterable[str] = WORKFLOW_FIELDS) -> None:
    """Check `fields` of `spec` (all for a create; those an update names, where naming any graph field checks
    the whole graph, since its parts refer to one another)."""
    fields = set(fields)
    if "display_name" in fields:
        check_text(f"{WORKFLOW}.display_name", spec.display_name, MAX_DISPLAY_NAME_CHARS, required=True)
    if "description" in fields:
        check_text(f"{WORKFLOW}.description", spec.description, MAX_DESCRIPTION_CHARS)
    if "limits" in fields:
        check_within(spec.limits, maximums, prefix=f"{WORKFLOW}.limits")
    if "metadata" in fields:
        check_metadata(spec.metadata, f"{WORKFLOW}.metadata")
    if fields & GRAPH_FIELDS:
        check_graph(spec)


def node_field(index: int, node: Node, path: str = "") -> str:
    """How a message names a node's field: `workflow.nodes[2].agent.input (node 'draft')`."""
    return f"{WORKFLOW}.nodes[{index}]{path} (node {node.id!r})"


def check_variable_name(field: str, name: str) -> None:
    if not NAME.fullmatch(name):
        shown = f"{name[:70]!r}" if name else "empty"
        raise InvalidArgument(f"{field} is {shown}; a variable name is {NAME_RULE}")
    if name in cel.RESERVED_NAMES:
        raise InvalidArgument(f"{field} {name!r} is a word of CEL; choose another variable name")


def check_graph(spec: WorkflowSpec) -> None:
    """The graph rules of this module's docstring, in that order."""
    _check_inputs(spec)
    index_of = _check_nodes(spec.nodes)
    _check_start_and_end(spec.nodes)
    _check_edges(spec, index_of)
    _check_reachable(spec, index_of)
    _check_cycles(spec, index_of)
    _check_expressions(spec)


def _check_inputs(spec: WorkflowSpec) -> None:
    if len(spec.inputs) > MAX_INPUTS:
        raise InvalidArgument(f"{WORKFLOW}.inputs has {len(spec.inputs)} inputs; at most {MAX_INPUTS}")
    seen: dict[str, int] = {}
    for index, workflow_input in enumerate(spec.inputs):
        field = f"{WORKFLOW}.inputs[{index}]"
        check_variable_name(f"{field}.name", workflow_input.name)
        if workflow_input.name in seen:
            raise InvalidArgument(f"{field}.name {workflow_input.name!r} is also {WORKFLOW}.inputs"
                                  f"[{seen[workflow_input.name]}]'s")
        seen[workflow_input.name] = index
        check_text(f"{field}.description", workflow_input.description, MAX_DESCRIPTION_CHARS)


def _check_nodes(nodes: Sequence[Node]) -> dict[str, int]:
    """Each node on its own; the index of each node by id."""
    if len(nodes) > MAX_NODES:
        raise InvalidArgument(f"{WORKFLOW}.nodes has {len(nodes)} nodes; a workflow may have at most {MAX_NODES}")
    index_of: dict[str, int] = {}
    for index, node in enumerate(nodes):
        field = f"{WORKFLOW}.nodes[{index}]"
        if not NAME.fullmatch(node.id):
            shown = f"{node.id[:70]!r}" if node.id else "empty"
            raise InvalidArgument(f"{field}.id is {shown}; a node id is {NAME_RULE}")
        if node.id in index_of:
            raise InvalidArgument(f"{field}.id {node.id!r} is also the id of {WORKFLOW}.nodes[{index_of[node.id]}]")
        index_of[node.id] = index
        check_text(f"{node_field(index, node)}.display_name", node.display_name, MAX_DISPLAY_NAME_CHARS)
        if node.kind is None:
            raise InvalidArgument(f"{node_field(index, node)} has no kind; set one of {', '.join(NODE_KINDS)}")
        _check_kind(index, node, node.kind)
    return index_of


def _required_expression(field: str, expression: str) -> None:
    if not expression.strip():
        raise InvalidArgument(f"{field} is required: a CEL expression")


def _check_kind(index: int, node: Node, kind: NodeKind) -> None:
    """The fields of `node`'s kind (its `kind`, once known to be set), except what its expressions say (checked
    once the graph is known)."""

    def at(path: str) -> str:
        return node_field(index, node, f".{kind.KIND}.{path}" if path else f".{kind.KIND}")

    if isinstance(kind, AgentNode):
        parse_agent_id(kind.agent_id, at("agent_id"))
        if kind.agent_revision < 0:
            raise InvalidArgument(f"{at('agent_revision')} must be 0 (the agent's latest) or a revision number, "
                                  f"got {kind.agent_revision}")
        _required_expression(at("input"), kind.input)
        check_variable_name(at("output"), kind.output)
    elif isinstance(kind, ToolNode):
        if not kind.tool_id:
            raise InvalidArgument(f"{at('tool_id')} is required; name a tool by its id (ListTools shows them)")
        if len(kind.tool_id) > MAX_TOOL_ID_CHARS or "\x00" in kind.tool_id:
            raise InvalidArgument(f"{at('tool_id')}: unknown tool {kind.tool_id[:MAX_TOOL_ID_CHARS]!r}")
        if len(kind.arguments) > MAX_TOOL_ARGUMENTS:
            raise InvalidArgument(f"{at('arguments')} has {len(kind.arguments)} arguments; at most "
                                  f"{MAX_TOOL_ARGUMENTS}")
        for name, expression in kind.arguments.items():
            if not name or len(name) > MAX_ARGUMENT_NAME_CHARS or "\x00" in name:
                raise InvalidArgument(f"{at('arguments')} has an argument name {name[:70]!r}; names are 1 to "
                                      f"{MAX_ARGUMENT_NAME_CHARS} characters")
            _required_expression(f"{at('arguments')}[{name!r}]", expression)
        check_variable_name(at("output"), kind.output)
    elif isinstance(kind, IfNode):
        _required_expression(at("condition"), kind.condition)
    elif isinstance(kind, WhileNode):
        _required_expression(at("condition"), kind.condition)
        if not 1 <= kind.max_iterations <= MAX_ITERATIONS:
            raise InvalidArgument(f"{at('max_iterations')} must be 1 to {MAX_ITERATIONS:,} (a loop is bounded), "
                                  f"got {kind.max_iterations}")
    elif isinstance(kind, SetStateNode):
        if not kind.assignments:
            raise InvalidArgument(f"{at('assignments')} is empty; assign at least one variable")
        if len(kind.assignments) > MAX_ASSIGNMENTS:
            raise InvalidArgument(f"{at('assignments')} has {len(kind.assignments)} assignments; at most "
                                  f"{MAX_ASSIGNMENTS}")
        for name, expression in kind.assignments.items():
            check_variable_name(f"{at('assignments')} key", name)
            _required_expression(f"{at('assignments')}[{name!r}]", expression)
    elif isinstance(kind, ApprovalNode):
        _required_expression(at("prompt"), kind.prompt)
        if kind.timeout_ms is not None and not 0 < kind.timeout_ms <= MAX_APPROVAL_TIMEOUT_MS:
            raise InvalidArgument(f"{at('timeout')} must be positive and at most 30 days, or unset to wait "
                                  "indefinitely")
    elif isinstance(kind, EndNode):
        _required_expression(at("output"), kind.output)


def _check_start_and_end(nodes: Sequence[Node]) -> None:
    starts = [node.id for node in nodes if isinstance(node.kind, StartNode)]
    if len(starts) != 1:
        found = f"{len(starts)} ({', '.join(repr(node) for node in starts)})" if starts else "none"
        raise InvalidArgument(f"{WORKFLOW}.nodes: a workflow has exactly one start node; it has {found}")
    if not any(isinstance(node.kind, EndNode) for node in nodes):
        raise InvalidArgument(f"{WORKFLOW}.nodes: a workflow needs at least one end node; it has none")


def _branch_names(branches: Iterable[str]) -> str:
    return " and ".join(repr(branch) for branch in branches) or "none"


def _check_edges(spec: WorkflowSpec, index_of: dict[str, int]) -> None:
    if len(spec.edges) > MAX_EDGES:
        raise InvalidArgument(f"{WORKFLOW}.edges has {len(spec.edges)} edges; at most {MAX_EDGES}")
    nodes = spec.nodes
    used: dict[tuple[str, str], int] = {}
    for index, edge in enumerate(spec.edges):
        field = f"{WORKFLOW}.edges[{index}]"
        for end in ("from_node", "to_node"):
            node_id = getattr(edge, end)
            if not node_id:
                raise InvalidArgument(f"{field}.{end} is required: the id of a node")
            if node_id not in index_of:
                raise InvalidArgument(f"{field}.{end} {node_id[:70]!r} is not a node of the workflow")
        source = nodes[index_of[edge.from_node]]
        target = nodes[index_of[edge.to_node]]
        assert source.kind is not None and target.kind is not None  # _check_nodes refused kindless nodes
        if isinstance(target.kind, StartNode):
            raise InvalidArgument(f"{field}.to_node {edge.to_node!r} is the start node, which no edge may enter")
        branches = branches_of(source.kind)
        if isinstance(source.kind, EndNode):
            raise InvalidArgument(f"{field}.from_node {edge.from_node!r} is an end node, which has no outgoing "
                                  "edges")
        if edge.branch not in branches:
            if isinstance(source.kind, ApprovalNode) and edge.branch == "timeout":
                raise InvalidArgument(f"{field}.branch 'timeout': approval node {edge.from_node!r} has no timeout; "
                                      "set its approval.timeout or remove the edge")
            expected = "'' (a plain edge)" if branches == ("",) else f"one of {_branch_names(branches)}"
            raise InvalidArgument(f"{field}.branch {edge.branch[:40]!r} is not an outcome of {source.kind.KIND} "
                                  f"node {edge.from_node!r}; use {expected}")
        key = (edge.from_node, edge.branch)
        if key in used:
            outcome = f"{edge.branch!r} edge" if edge.branch else "outgoing edge"
            raise InvalidArgument(f"{field}: node {edge.from_node!r} has a second {outcome} (the first is "
                                  f"{WORKFLOW}.edges[{used[key]}]); each outcome has exactly one edge")
        used[key] = index
    for index, node in enumerate(nodes):
        assert node.kind is not None
        branches = branches_of(node.kind)
        missing = [branch for branch in branches if (node.id, branch) not in used]
        if missing and branches == ("",):
            article = "an" if node.kind.KIND[0] in "aeiou" else "a"
            raise InvalidArgument(f"{node_field(index, node)} has no outgoing edge; {article} {node.kind.KIND} node "
                                  "needs exactly one")
        if missing:
            article = "an" if node.kind.KIND[0] in "aeiou" else "a"
            raise InvalidArgument(f"{node_field(index, node)} has no {_branch_names(missing)} edge; {article} "
                                  f"{node.kind.KIND} node needs one edge for each of {_branch_names(branches)}")


def _successors(spec: WorkflowSpec, skip_body: bool = False) -> dict[str, list[str]]:
    following: dict[str, list[str]] = {node.id: [] for node in spec.nodes}
    for edge in spec.edges:
        if skip_body and edge.branch == "body":
            continue
        following[edge.from_node].append(edge.to_node)
    return following


def _check_reachable(spec: WorkflowSpec, index_of: dict[str, int]) -> None:
    start = next(node.id for node in spec.nodes if isinstance(node.kind, StartNode))
    following = _successors(spec)
    reached = {start}
    queue = [start]
    while queue:
        for next_id in following[queue.pop()]:
            if next_id not in reached:
                reached.add(next_id)
                queue.append(next_id)
    for node in spec.nodes:
        if node.id not in reached:
            raise InvalidArgument(f"{node_field(index_of[node.id], node)} cannot be reached from the start node "
                                  f"{start!r}")


def _check_cycles(spec: WorkflowSpec, index_of: dict[str, int]) -> None:
    """Without the body edges, the graph must have no cycle (iterative depth-first search)."""
    following = _successors(spec, skip_body=True)
    done: set[str] = set()
    for root in (node.id for node in spec.nodes):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        iterators: list[Iterator[str]] = [iter(following[root])]
        while iterators:
            next_id = next(iterators[-1], None)
            if next_id is None:
                iterators.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if next_id in on_path:
                cycle = [*path[path.index(next_id):], next_id]
                raise InvalidArgument(
                    f"{WORKFLOW}.edges: the cycle {' -> '.join(cycle)} does not go through a while_loop node's "
                    "body: every cycle must leave a while_loop node by its 'body' edge and come back to it"
                )
            if next_id not in done:
                path.append(next_id)
                on_path.add(next_id)
                iterators.append(iter(following[next_id]))


def known_variables(spec: WorkflowSpec) -> frozenset[str]:
    """The state variables the workflow's expressions may read (the whole-graph rule of the module docstring)."""
    names = {workflow_input.name for workflow_input in spec.inputs}
    for node in spec.nodes:
        if isinstance(node.kind, AgentNode | ToolNode):
            names.add(node.kind.output)
        elif isinstance(node.kind, SetStateNode):
            names.update(node.kind.assignments)
    return frozenset(names)


def expressions(index: int, node: Node) -> Iterator[tuple[str, str]]:
    """(field, expression) for every CEL expression of a node; the engine compiles the same ones."""
    kind = node.kind
    if kind is None:
        return
    prefix = f".{kind.KIND}."
    if isinstance(kind, AgentNode):
        yield node_field(index, node, prefix + "input"), kind.input
    elif isinstance(kind, ToolNode):
        for name, expression in kind.arguments.items():
            yield node_field(index, node, f"{prefix}arguments[{name!r}]"), expression
    elif isinstance(kind, IfNode | WhileNode):
        yield node_field(index, node, prefix + "condition"), kind.condition
    elif isinstance(kind, SetStateNode):
        for name, expression in kind.assignments.items():
            yield node_field(index, node, f"{prefix}assignments[{name!r}]"), expression
    elif isinstance(kind, ApprovalNode):
        yield node_field(index, node, prefix + "prompt"), kind.prompt
    elif isinstance(kind, EndNode):
        yield node_field(index, node, prefix + "output"), kind.output


def _check_expressions(spec: WorkflowSpec) -> None:
    known = known_variables(spec)
    for index, node in enumerate(spec.nodes):
        for field, expression in expressions(index, node):
            try:
                cel.compile(expression, known)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{field}: {exc}") from None
