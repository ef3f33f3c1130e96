"""The invalid workflows and what they are told: each case changes `every_kind()` (tests/agents/workflow_helpers.py,
whose docstring lists its nodes and edges by index) in one way, and the refusal names the node, edge or field
(and the position of a CEL error). Shared by the checks' unit tests and the service's gRPC tests."""

import itertools

from google.protobuf import duration_pb2

from agentplatform.agents.v1 import workflows_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.agents.workflow_helpers import Change, Workflow, edge, find, node, remove_edge, remove_node


def _set(path: str, value: object) -> Change:
    """Set a field of a node: "draft.agent.input" -> value."""
    node_id, *fields = path.split(".")

    def change(workflow: Workflow) -> None:
        target: object = find(workflow, node_id)
        for field in fields[:-1]:
            target = getattr(target, field)
        if isinstance(value, duration_pb2.Duration):
            getattr(target, fields[-1]).CopyFrom(value)
        else:
            setattr(target, fields[-1], value)

    return change


def _add_edges(*edges: workflows_pb2.Edge) -> Change:
    return lambda workflow: workflow.edges.extend(edges)


def _add_nodes(*nodes: workflows_pb2.Node) -> Change:
    return lambda workflow: workflow.nodes.extend(nodes)


def _all(*changes: Change) -> Change:
    def change(workflow: Workflow) -> None:
        for each in changes:
            each(workflow)

    return change


def _many_nodes(workflow: Workflow) -> None:
    # 201 nodes: a chain of set_state nodes between start and init.
    remove_edge(workflow, "start")
    names = [f"step{i}" for i in range(191)]
    for name in names:
        workflow.nodes.append(node(name, set_state=workflows_pb2.SetStateNode(assignments={"x": "1"})))
    chain = ["start", *names, "init"]
    workflow.edges.extend(edge(a, b) for a, b in itertools.pairwise(chain))


def _drop_input(name: str) -> Change:
    def change(workflow: Workflow) -> None:
        kept = [item for item in workflow.inputs if item.name != name]
        del workflow.inputs[:]
        workflow.inputs.extend(kept)

    return change


def _replace_edge(index: int, replacement: workflows_pb2.Edge) -> Change:
    def change(workflow: Workflow) -> None:
        workflow.edges[index].CopyFrom(replacement)

    return change


_PLAIN = workflows_pb2.SetStateNode(assignments={"x": "1"})

#: (test id, change, the start of the refusal)
INVALID_WORKFLOWS: list[tuple[str, Change, str]] = [
    # The workflow's own fields.
    ("no-display-name", lambda w: setattr(w, "display_name", " "), "workflow.display_name is required"),
    ("long-description", lambda w: setattr(w, "description", "d" * 2001),
     "workflow.description is 2001 characters long; the limit is 2000"),
    ("limits-above", lambda w: w.limits.CopyFrom(runs_pb2.RunLimits(max_tool_calls=501)),
     "workflow.limits.max_tool_calls is 501; this platform allows at most 500"),
    ("17-labels", lambda w: w.metadata.update({f"k{i}": "v" for i in range(17)}),
     "workflow.metadata has 17 pairs; at most 16"),
    # Inputs.
    ("bad-input-name", lambda w: setattr(w.inputs[1], "name", "Tone"),
     "workflow.inputs[1].name is 'Tone'; a variable name is a lower-case letter"),
    ("reserved-input-name", lambda w: setattr(w.inputs[1], "name", "int"),
     "workflow.inputs[1].name 'int' is a word of CEL; choose another variable name"),
    ("duplicate-input", lambda w: setattr(w.inputs[1], "name", "question"),
     "workflow.inputs[1].name 'question' is also workflow.inputs[0]'s"),
    # Nodes on their own.
    ("201-nodes", _many_nodes, "workflow.nodes has 201 nodes; a workflow may have at most 200"),
    ("bad-node-id", _set("draft.id", "Draft!"),
     "workflow.nodes[5].id is 'Draft!'; a node id is a lower-case letter, then up to 63"),
    ("empty-node-id", _set("draft.id", ""), "workflow.nodes[5].id is empty; a node id is"),
    ("duplicate-node-id", _set("check.id", "draft"),
     "workflow.nodes[6].id 'draft' is also the id of workflow.nodes[5]"),
    ("node-without-kind", _add_nodes(node("nothing")),
     "workflow.nodes[10] (node 'nothing') has no kind; set one of start, agent, tool, if_else"),
    ("agent-id-not-uuid", _set("draft.agent.agent_id", "writer"),
     "workflow.nodes[5].agent.agent_id (node 'draft') 'writer' is not a valid agent id"),
    ("negative-agent-revision", _set("draft.agent.agent_revision", -1),
     "workflow.nodes[5].agent.agent_revision (node 'draft') must be 0 (the agent's latest) or a revision number"),
    ("agent-without-input", _set("draft.agent.input", ""),
     "workflow.nodes[5].agent.input (node 'draft') is required: a CEL expression"),
    ("agent-output-not-a-name", _set("draft.agent.output", "the answer"),
     "workflow.nodes[5].agent.output (node 'draft') is 'the answer'; a variable name is"),
    ("tool-without-id", _set("calc.tool.tool_id", ""),
     "workflow.nodes[3].tool.tool_id (node 'calc') is required"),
    ("while-without-bound", _set("loop.while_loop.max_iterations", 0),
     "workflow.nodes[2].while_loop.max_iterations (node 'loop') must be 1 to 1,000 (a loop is bounded), got 0"),
    ("while-over-1000", _set("loop.while_loop.max_iterations", 1001),
     "workflow.nodes[2].while_loop.max_iterations (node 'loop') must be 1 to 1,000 (a loop is bounded), got 1001"),
    ("empty-set-state", lambda w: find(w, "init").set_state.assignments.clear(),
     "workflow.nodes[1].set_state.assignments (node 'init') is empty"),
    ("set-state-bad-variable", lambda w: find(w, "init").set_state.assignments.update({"2x": "1"}),
     "workflow.nodes[1].set_state.assignments (node 'init') key is '2x'; a variable name is"),
    ("approval-zero-timeout", _set("approve.approval.timeout", duration_pb2.Duration(seconds=0)),
     "workflow.nodes[7].approval.timeout (node 'approve') must be positive and at most 30 days"),
    ("approval-timeout-over-30-days", _set("approve.approval.timeout", duration_pb2.Duration(seconds=30 * 86400 + 1)),
     "workflow.nodes[7].approval.timeout (node 'approve') must be positive and at most 30 days"),
    ("end-without-output", _set("done.end.output", " "),
     "workflow.nodes[8].end.output (node 'done') is required: a CEL expression"),
    # Start and end.
    ("no-start", lambda w: remove_node(w, "start"),
     "workflow.nodes: a workflow has exactly one start node; it has none"),
    ("two-starts", _all(_add_nodes(node("again", start=workflows_pb2.StartNode())), _add_edges(edge("again", "init"))),
     "workflow.nodes: a workflow has exactly one start node; it has 2 ('start', 'again')"),
    ("no-end", _all(lambda w: remove_node(w, "done"), lambda w: remove_node(w, "refused")),
     "workflow.nodes: a workflow needs at least one end node; it has none"),
    # Edges.
    ("dangling-to", _replace_edge(6, edge("draft", "nowhere")),
     "workflow.edges[6].to_node 'nowhere' is not a node of the workflow"),
    ("dangling-from", _add_edges(edge("ghost", "check")),
     "workflow.edges[12].from_node 'ghost' is not a node of the workflow"),
    ("edge-without-target", _replace_edge(6, edge("draft", "")),
     "workflow.edges[6].to_node is required: the id of a node"),
    ("edge-into-start", _replace_edge(4, edge("bump", "start")),
     "workflow.edges[4].to_node 'start' is the start node, which no edge may enter"),
    ("edge-out-of-end", _add_edges(edge("done", "refused")),
     "workflow.edges[12].from_node 'done' is an end node, which has no outgoing edges"),
    ("if-branch-yes", _replace_edge(7, edge("check", "approve", "yes")),
     "workflow.edges[7].branch 'yes' is not an outcome of if_else node 'check'; use one of 'true' and 'false'"),
    ("branch-on-plain-node", _replace_edge(6, edge("draft", "check", "true")),
     "workflow.edges[6].branch 'true' is not an outcome of agent node 'draft'; use '' (a plain edge)"),
    ("while-branch-true", _replace_edge(5, edge("loop", "draft", "true")),
     "workflow.edges[5].branch 'true' is not an outcome of while_loop node 'loop'; use one of 'body' and 'done'"),
    ("approval-branch-ok", _replace_edge(9, edge("approve", "done", "ok")),
     "workflow.edges[9].branch 'ok' is not an outcome of approval node 'approve'; use one of 'approved' and "
     "'rejected' and 'timeout'"),
    ("if-without-false", lambda w: remove_edge(w, "check", "false"),
     "workflow.nodes[6] (node 'check') has no 'false' edge; an if_else node needs one edge for each of 'true' and "
     "'false'"),
    ("if-two-true", _add_edges(edge("check", "done", "true")),
     "workflow.edges[12]: node 'check' has a second 'true' edge (the first is workflow.edges[7])"),
    ("while-without-done", lambda w: remove_edge(w, "loop", "done"),
     "workflow.nodes[2] (node 'loop') has no 'done' edge; a while_loop node needs one edge for each of 'body' and "
     "'done'"),
    ("while-without-body", _all(lambda w: remove_edge(w, "loop", "body"), lambda w: remove_node(w, "calc"),
                                lambda w: remove_node(w, "bump")),
     "workflow.nodes[2] (node 'loop') has no 'body' edge; a while_loop node needs one edge for each of 'body' and "
     "'done'"),
    ("approval-without-rejected", lambda w: remove_edge(w, "approve", "rejected"),
     "workflow.nodes[7] (node 'approve') has no 'rejected' edge; an approval node needs one edge for each of "
     "'approved' and 'rejected' and 'timeout'"),
    ("approval-timeout-edge-without-timeout", lambda w: find(w, "approve").approval.ClearField("timeout"),
     "workflow.edges[11].branch 'timeout': approval node 'approve' has no timeout; set its approval.timeout or "
     "remove the edge"),
    ("approval-timeout-without-edge", lambda w: remove_edge(w, "approve", "timeout"),
     "workflow.nodes[7] (node 'approve') has no 'timeout' edge"),
    ("plain-node-two-edges", _add_edges(edge("draft", "refused")),
     "workflow.edges[12]: node 'draft' has a second outgoing edge (the first is workflow.edges[6])"),
    ("plain-node-no-edge", lambda w: remove_edge(w, "draft"),
     "workflow.nodes[5] (node 'draft') has no outgoing edge; an agent node needs exactly one"),
    # Reachability and cycles.
    ("unreachable-node", _all(_add_nodes(node("stray", set_state=_PLAIN)), _add_edges(edge("stray", "done"))),
     "workflow.nodes[10] (node 'stray') cannot be reached from the start node 'start'"),
    ("unreachable-end", _all(_add_nodes(node("other_end", end=workflows_pb2.EndNode(output="1")))),
     "workflow.nodes[10] (node 'other_end') cannot be reached from the start node 'start'"),
    ("cycle-without-while", _all(
        _add_nodes(node("spin", set_state=_PLAIN)),
        _replace_edge(8, edge("check", "spin", "false")),
        _add_edges(edge("spin", "spin")),
    ), "workflow.edges: the cycle spin -> spin does not go through a while_loop node's body"),
    ("longer-cycle-without-while", _all(
        _add_nodes(node("again", set_state=_PLAIN)),
        _replace_edge(8, edge("check", "again", "false")),
        _add_edges(edge("again", "draft")),
    ), "workflow.edges: the cycle draft -> check -> again -> draft does not go through a while_loop node's body"),
    ("cycle-through-while-done", _replace_edge(8, edge("check", "loop", "false")),
     "workflow.edges: the cycle loop -> draft -> check -> loop does not go through a while_loop node's body"),
    # Expressions.
    ("cel-syntax-error", _set("draft.agent.input", '"Answer: " + question +'),
     "workflow.nodes[5].agent.input (node 'draft'): syntax error at line 1, column 23: the expression ends too "
     "early"),
    ("cel-syntax-error-second-line", _set("check.if_else.condition", "size(answer) > 0 &&\n  (answer ! 'x')"),
     "workflow.nodes[6].if_else.condition (node 'check'): syntax error at line 2, column 11: unexpected '!'"),
    ("cel-unknown-variable", _set("draft.agent.input", '"Answer: " + questoin'),
     "workflow.nodes[5].agent.input (node 'draft'): unknown variable 'questoin' at line 1, column 14 (known "
     "variables: answer, attempts, notes, question, result, tone)"),
    ("cel-unknown-variable-in-while", _set("loop.while_loop.condition", "tries < 3"),
     "workflow.nodes[2].while_loop.condition (node 'loop'): unknown variable 'tries' at line 1, column 1"),
    ("cel-unknown-variable-in-tool-argument", lambda w: find(w, "calc").tool.arguments.update({"expression": "x"}),
     "workflow.nodes[3].tool.arguments['expression'] (node 'calc'): unknown variable 'x' at line 1, column 1"),
    ("cel-unknown-variable-in-assignment", lambda w: find(w, "bump").set_state.assignments.update({"notes": "n"}),
     "workflow.nodes[4].set_state.assignments['notes'] (node 'bump'): unknown variable 'n' at line 1, column 1"),
    ("cel-unknown-variable-in-prompt", _set("approve.approval.prompt", "answr"),
     "workflow.nodes[7].approval.prompt (node 'approve'): unknown variable 'answr' at line 1, column 1"),
    ("cel-unknown-variable-in-end", _set("done.end.output", "{'a': answer, 'n': note}"),
     "workflow.nodes[8].end.output (node 'done'): unknown variable 'note' at line 1, column 20"),
    ("cel-input-no-longer-declared", _drop_input("tone"),
     "workflow.nodes[5].agent.input (node 'draft'): unknown variable 'tone' at line 1, column 32"),
    ("cel-unknown-function", _set("check.if_else.condition", "len(answer) > 0"),
     "workflow.nodes[6].if_else.condition (node 'check'): unknown function 'len' at line 1, column 1"),
    ("cel-too-long", _set("done.end.output", "'" + "x" * 1999 + "'"),
     "workflow.nodes[8].end.output (node 'done'): the expression is 2001 characters long; the limit is 2000"),
]
