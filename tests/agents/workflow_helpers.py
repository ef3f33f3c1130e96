"""Workflows the tests build: one with every kind of node, a two-agent workflow (draft, review, approve), and small
helpers to change them."""

from collections.abc import Callable

from google.protobuf import duration_pb2

from agentplatform.agents.v1 import workflows_pb2

#: An agent id for checks that do not look agents up.
SOME_AGENT = "6f1c3a52-8a6e-4c1e-9d2a-1b2c3d4e5f60"

Workflow = workflows_pb2.Workflow
Change = Callable[[Workflow], None]


def node(node_id: str, **kind: object) -> workflows_pb2.Node:
    return workflows_pb2.Node(id=node_id, **kind)  # type: ignore[arg-type]


def edge(from_node: str, to_node: str, branch: str = "") -> workflows_pb2.Edge:
    return workflows_pb2.Edge(from_node=from_node, to_node=to_node, branch=branch)


def every_kind(agent_id: str = SOME_AGENT) -> Workflow:
    """A valid workflow with a node of every kind, a loop and an approval with a timeout.

    nodes: 0 start, 1 init, 2 loop, 3 calc, 4 bump, 5 draft, 6 check, 7 approve, 8 done, 9 refused
    edges: 0 start>init, 1 init>loop, 2 loop-body>calc, 3 calc>bump, 4 bump>loop, 5 loop-done>draft,
           6 draft>check, 7 check-true>approve, 8 check-false>refused, 9 approve-approved>done,
           10 approve-rejected>refused, 11 approve-timeout>refused
    """
    return Workflow(
        display_name="Every kind",
        description="A node of each kind",
        inputs=[
            workflows_pb2.WorkflowInput(name="question", description="What to answer", required=True),
            workflows_pb2.WorkflowInput(name="tone"),
        ],
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("init", set_state=workflows_pb2.SetStateNode(assignments={"attempts": "0", "notes": "[]"})),
            node("loop", while_loop=workflows_pb2.WhileNode(condition="attempts < 3", max_iterations=5)),
            node("calc", tool=workflows_pb2.ToolNode(
                tool_id="calculator", arguments={"expression": '"2 + " + string(attempts)'}, output="result"
            )),
            node("bump", set_state=workflows_pb2.SetStateNode(
                assignments={"attempts": "attempts + 1", "notes": "notes + [result]"}
            )),
            node("draft", display_name="Draft", agent=workflows_pb2.AgentNode(
                agent_id=agent_id, input='"Answer: " + question + " (" + tone + ")"', output="answer"
            )),
            node("check", if_else=workflows_pb2.IfNode(condition="size(answer) > 0")),
            node("approve", approval=workflows_pb2.ApprovalNode(
                prompt='"Send? " + answer', timeout=duration_pb2.Duration(seconds=3600)
            )),
            node("done", end=workflows_pb2.EndNode(output='{"answer": answer, "notes": notes}')),
            node("refused", end=workflows_pb2.EndNode(output="null")),
        ],
        edges=[
            edge("start", "init"),
            edge("init", "loop"),
            edge("loop", "calc", "body"),
            edge("calc", "bump"),
            edge("bump", "loop"),
            edge("loop", "draft", "done"),
            edge("draft", "check"),
            edge("check", "approve", "true"),
            edge("check", "refused", "false"),
            edge("approve", "done", "approved"),
            edge("approve", "refused", "rejected"),
            edge("approve", "refused", "timeout"),
        ],
    )


def two_agents(drafter: str, reviewer: str) -> Workflow:
    """A two-agent workflow: an agent drafts a reply, another reviews it; if the review passes, a person
    approves sending it."""
    return Workflow(
        display_name="Support reply",
        description="Draft, review, approve",
        inputs=[workflows_pb2.WorkflowInput(name="ticket", description="The customer's message", required=True)],
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("draft", display_name="Draft a reply", agent=workflows_pb2.AgentNode(
                agent_id=drafter, input='"Draft a reply to: " + ticket', output="reply"
            )),
            node("review", display_name="Review it", agent=workflows_pb2.AgentNode(
                agent_id=reviewer, input='"Answer OK or say what is wrong: " + reply', output="review"
            )),
            node("passed", if_else=workflows_pb2.IfNode(condition='review.startsWith("OK")')),
            node("approve", approval=workflows_pb2.ApprovalNode(prompt='"Send this reply?\\n\\n" + reply')),
            node("sent", end=workflows_pb2.EndNode(output='{"reply": reply, "sent": true}')),
            node("held", end=workflows_pb2.EndNode(output='{"reply": reply, "sent": false, "review": review}')),
        ],
        edges=[
            edge("start", "draft"),
            edge("draft", "review"),
            edge("review", "passed"),
            edge("passed", "approve", "true"),
            edge("passed", "held", "false"),
            edge("approve", "sent", "approved"),
            edge("approve", "held", "rejected"),
        ],
        metadata={"layout": "left-to-right"},
    )


def plain() -> workflows_pb2.Workflow:
    """A workflow that names no agent or tool: start -> set_state -> end."""
    return workflows_pb2.Workflow(
        display_name="Plain",
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("set", set_state=workflows_pb2.SetStateNode(assignments={"x": "1 + 1"})),
            node("end", end=workflows_pb2.EndNode(output="x")),
        ],
        edges=[
            edge("start", "set"),
            edge("set", "end"),
        ],
    )


def find(workflow: Workflow, node_id: str) -> workflows_pb2.Node:
    return next(item for item in workflow.nodes if item.id == node_id)


def remove_node(workflow: Workflow, node_id: str) -> None:
    """The node and every edge to or from it."""
    kept_nodes = [item for item in workflow.nodes if item.id != node_id]
    kept_edges = [item for item in workflow.edges if node_id not in (item.from_node, item.to_node)]
    del workflow.nodes[:]
    workflow.nodes.extend(kept_nodes)
    del workflow.edges[:]
    workflow.edges.extend(kept_edges)


def remove_edge(workflow: Workflow, from_node: str, branch: str = "") -> None:
    kept = [item for item in workflow.edges if (item.from_node, item.branch) != (from_node, branch)]
    del workflow.edges[:]
    workflow.edges.extend(kept)
