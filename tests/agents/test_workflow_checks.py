"""What a workflow may be: every rule of services.agents.workflows.checks refuses its own case, naming the node,
edge or field (and a CEL error's line and column); valid graphs with nested loops pass."""

from typing import Any

import pytest

from agentplatform.agents.v1 import workflows_pb2
from services.agents.settings import AgentsSettings
from services.agents.workflows import convert
from services.agents.workflows.checks import check_update_mask, check_workflow, known_variables, parse_workflow_id
from services.agents.workflows.records import WORKFLOW_FIELDS
from services.common.errors import InvalidArgument
from tests.agents.workflow_cases import INVALID_WORKFLOWS
from tests.agents.workflow_helpers import SOME_AGENT, Change, edge, every_kind, node, two_agents

MAXIMUMS = AgentsSettings(_env_file=None)


def check(workflow: workflows_pb2.Workflow, fields: Any = WORKFLOW_FIELDS) -> None:
    check_workflow(convert.spec_from_proto(workflow), MAXIMUMS, fields)


def test_the_base_workflows_are_valid() -> None:
    check(every_kind())
    check(two_agents(SOME_AGENT, SOME_AGENT))


@pytest.mark.parametrize(("change", "message"), [case[1:] for case in INVALID_WORKFLOWS],
                         ids=[case[0] for case in INVALID_WORKFLOWS])
def test_each_refusal_names_its_node_edge_or_field(change: Change, message: str) -> None:
    workflow = every_kind()
    change(workflow)
    with pytest.raises(InvalidArgument) as exc:
        check(workflow)
    assert str(exc.value).startswith(message), str(exc.value)


def test_nested_loops_and_a_loop_entered_from_another_loops_body_pass() -> None:
    """outer: body -> inner (while) -> body -> step -> inner; inner done -> outer; outer done -> end."""
    workflow = workflows_pb2.Workflow(
        display_name="Nested",
        inputs=[workflows_pb2.WorkflowInput(name="n", required=True)],
        nodes=[
            node("start", start=workflows_pb2.StartNode()),
            node("outer", while_loop=workflows_pb2.WhileNode(condition="n > 0", max_iterations=10)),
            node("inner", while_loop=workflows_pb2.WhileNode(condition="n % 2 == 0", max_iterations=10)),
            node("step", set_state=workflows_pb2.SetStateNode(assignments={"n": "n / 2"})),
            node("dec", set_state=workflows_pb2.SetStateNode(assignments={"n": "n - 1"})),
            node("end", end=workflows_pb2.EndNode(output="n")),
        ],
        edges=[
            edge("start", "outer"),
            edge("outer", "inner", "body"),
            edge("inner", "step", "body"),
            edge("step", "inner"),
            edge("inner", "dec", "done"),
            edge("dec", "outer"),
            edge("outer", "end", "done"),
        ],
    )
    check(workflow)


def test_a_variable_is_known_wherever_the_graph_defines_it() -> None:
    # The whole-graph rule: `answer` is written by a node after the one reading it, and that is accepted.
    workflow = every_kind()
    spec = convert.spec_from_proto(workflow)
    assert known_variables(spec) == {"question", "tone", "attempts", "notes", "result", "answer"}
    workflow.nodes[1].set_state.assignments["greeting"] = "'Hi ' + answer"
    check(workflow)


def test_an_update_of_fields_outside_the_graph_checks_those_only() -> None:
    workflow = every_kind()
    workflow.display_name = ""
    workflow.edges.pop()  # a broken graph, not named
    check(workflow, ["description"])
    with pytest.raises(InvalidArgument, match=r"^workflow.display_name is required"):
        check(workflow, ["description", "display_name"])
    with pytest.raises(InvalidArgument, match=r"has no 'timeout' edge"):
        check(workflow, ["edges"])


def test_an_update_mask_names_known_fields() -> None:
    assert check_update_mask(["edges", "display_name"]) == ("display_name", "edges")
    with pytest.raises(InvalidArgument, match=r"^update_mask is required"):
        check_update_mask([])
    with pytest.raises(InvalidArgument, match=r"^update_mask names unknown field\(s\) 'nodes\[0\]', 'owner'"):
        check_update_mask(["owner", "nodes[0]"])


def test_workflow_ids_are_uuids() -> None:
    assert parse_workflow_id("9AF127A1-F83D-4718-9C68-4255AC287F44") == "9af127a1-f83d-4718-9c68-4255ac287f44"
    with pytest.raises(InvalidArgument, match=r"^workflow_id 'x' is not a valid workflow id"):
        parse_workflow_id("x")
