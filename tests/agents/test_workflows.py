"""WorkflowRegistryService over real gRPC, with API keys, in front of a real tools service, on SQLite and
PostgreSQL: a workflow's whole lifecycle, agent revisions pinned when saved, update masks that check the graph
again, listings, the agents and tools nodes name, and every invalid workflow refused naming what is wrong."""

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.agents.v1 import agents_pb2, workflows_pb2
from agentplatform.runs.v1 import runs_pb2
from services.agents.app import WORKFLOWS_SERVICE_NAME
from tests.agents.helpers import ALICE, BOB, agent, as_, status_of
from tests.agents.workflow_cases import INVALID_WORKFLOWS
from tests.agents.workflow_helpers import Change, every_kind, find, plain, two_agents

ME = as_(ALICE)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def new_agent(stub: Any, name: str = "Writer", metadata: Any = ME) -> agents_pb2.Agent:
    return await stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent(name)), metadata=metadata)


async def create(workflows: Any, workflow: workflows_pb2.Workflow, metadata: Any = ME) -> workflows_pb2.Workflow:
    return await workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow), metadata=metadata)


async def get(workflows: Any, workflow_id: str, revision: int = 0) -> workflows_pb2.Workflow:
    return await workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id, revision=revision), metadata=ME
    )


async def update(workflows: Any, workflow: workflows_pb2.Workflow, *paths: str) -> workflows_pb2.Workflow:
    return await workflows.UpdateWorkflow(
        workflows_pb2.UpdateWorkflowRequest(workflow=workflow, update_mask=mask(*paths)), metadata=ME
    )


def as_stored(sent: workflows_pb2.Workflow, created: workflows_pb2.Workflow) -> workflows_pb2.Workflow:
    """What the server should answer for `sent`: the server's fields copied from `created`."""
    expected = workflows_pb2.Workflow()
    expected.CopyFrom(sent)
    expected.id, expected.revision, expected.owner = created.id, created.revision, created.owner
    expected.create_time.CopyFrom(created.create_time)
    expected.revision_create_time.CopyFrom(created.revision_create_time)
    return expected


def test_the_service_name_is_the_contracts() -> None:
    assert WORKFLOWS_SERVICE_NAME == workflows_pb2.DESCRIPTOR.services_by_name["WorkflowRegistryService"].full_name


async def test_a_two_agent_workflow_with_a_condition_and_an_approval_saves_and_reads_back_identical(
    stub: Any, workflows: Any
) -> None:
    drafter, reviewer = await new_agent(stub, "Drafter"), await new_agent(stub, "Reviewer")
    sent = two_agents(drafter.id, reviewer.id)
    sent.limits.CopyFrom(runs_pb2.RunLimits(max_model_calls=10, max_total_tokens=20_000))
    sent.limits.max_duration.FromSeconds(600)
    sent.id, sent.revision, sent.owner = "mine", 9, "bob"  # the server's to set
    created = await create(workflows, sent)
    assert created.id != "mine" and created.revision == 1 and created.owner == "alice"
    assert created.create_time == created.revision_create_time and created.create_time.seconds > 0

    # Agent revision 0 was pinned to the agents' latest (1); everything else is as sent.
    expected_graph = two_agents(drafter.id, reviewer.id)
    expected_graph.limits.CopyFrom(sent.limits)
    for node_id in ("draft", "review"):
        find(expected_graph, node_id).agent.agent_revision = 1
    assert created == as_stored(expected_graph, created)
    assert await get(workflows, created.id) == created
    assert await get(workflows, created.id, revision=1) == created
    assert created.nodes[4].WhichOneof("kind") == "approval" and not created.nodes[4].approval.HasField("timeout")


async def test_a_workflow_with_every_kind_of_node_round_trips(stub: Any, workflows: Any) -> None:
    writer = await new_agent(stub)
    sent = every_kind(writer.id)
    sent.nodes[7].approval.timeout.nanos = 250_000_000  # 3600.25 s, kept to the millisecond
    created = await create(workflows, sent)
    find(sent, "draft").agent.agent_revision = 1
    assert created == as_stored(sent, created)
    assert await get(workflows, created.id) == created


async def test_agent_nodes_are_pinned_to_a_revision_when_saved(stub: Any, workflows: Any) -> None:
    writer = await new_agent(stub)
    change = agent("Writer v2")
    change.id = writer.id
    await stub.UpdateAgent(agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("display_name")), metadata=ME)
    latest = await create(workflows, two_agents(writer.id, writer.id))
    assert [node.agent.agent_revision for node in latest.nodes if node.HasField("agent")] == [2, 2]

    pinned_to_one = two_agents(writer.id, writer.id)
    find(pinned_to_one, "review").agent.agent_revision = 1
    created = await create(workflows, pinned_to_one)
    assert [node.agent.agent_revision for node in created.nodes if node.HasField("agent")] == [2, 1]

    # The agent changes again: the workflows keep the revisions they were saved with.
    change.display_name = "Writer v3"
    await stub.UpdateAgent(agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("display_name")), metadata=ME)
    assert await get(workflows, latest.id) == latest

    missing_revision = two_agents(writer.id, writer.id)
    find(missing_revision, "review").agent.agent_revision = 9
    assert await status_of(create(workflows, missing_revision)) == (
        grpc.StatusCode.NOT_FOUND,
        f"workflow.nodes[2].agent.agent_id (node 'review'): agent '{writer.id}' has no revision 9; its latest is 3",
    )


async def test_an_agent_node_must_name_an_agent_of_the_callers(stub: Any, workflows: Any) -> None:
    mine = await new_agent(stub)
    bobs = await new_agent(stub, "Bob's", metadata=as_(BOB))
    missing = "00000000-0000-4000-8000-000000000000"
    for agent_id in (bobs.id, missing):  # the same words for another user's agent and no agent
        code, details = await status_of(create(workflows, two_agents(mine.id, agent_id)))
        assert (code, details) == (
            grpc.StatusCode.NOT_FOUND,
            f"workflow.nodes[2].agent.agent_id (node 'review'): agent '{agent_id}' not found",
        )
    listed = await workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), metadata=ME)
    assert list(listed.workflows) == []


async def test_a_tool_node_must_name_a_tool_that_exists(stub: Any, workflows: Any) -> None:
    writer = await new_agent(stub)
    workflow = every_kind(writer.id)
    find(workflow, "calc").tool.tool_id = "abacus"
    assert await status_of(create(workflows, workflow)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "workflow.nodes[3].tool.tool_id (node 'calc'): unknown tool 'abacus'"
    )


async def test_updates_make_revisions_and_check_the_graph_they_touch(stub: Any, workflows: Any) -> None:
    writer = await new_agent(stub)
    created = await create(workflows, every_kind(writer.id))

    renamed = workflows_pb2.Workflow(id=created.id, display_name="Renamed", description="ignored")
    second = await update(workflows, renamed, "display_name")
    assert second.revision == 2 and second.display_name == "Renamed" and second.description == created.description
    assert list(second.nodes) == list(created.nodes) and list(second.edges) == list(created.edges)
    assert second.create_time == created.create_time

    # Edges alone: checked against the stored nodes.
    broken = workflows_pb2.Workflow(id=created.id, edges=list(created.edges)[:-1])
    assert await status_of(update(workflows, broken, "edges")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "workflow.nodes[7] (node 'approve') has no 'timeout' edge; an approval node needs one edge for each of "
        "'approved' and 'rejected' and 'timeout'",
    )
    # Nodes and edges together: the approval loses its timeout and its timeout edge.
    new_graph = every_kind(writer.id)
    new_graph.id = created.id
    find(new_graph, "approve").approval.ClearField("timeout")
    del new_graph.edges[-1]
    third = await update(workflows, new_graph, "nodes", "edges")
    assert third.revision == 3 and len(third.edges) == 11 and find(third, "draft").agent.agent_revision == 1
    assert third.display_name == "Renamed"
    # Inputs alone: a removed input that an expression reads is refused.
    no_inputs = workflows_pb2.Workflow(id=created.id)
    code, details = await status_of(update(workflows, no_inputs, "inputs"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("workflow.nodes[5].agent.input (node 'draft'): unknown variable 'question' at line 1")
    # Nodes naming an agent that is not the caller's.
    other = every_kind("00000000-0000-4000-8000-000000000000")
    other.id = created.id
    find(other, "approve").approval.ClearField("timeout")  # as the stored edges have it
    assert await status_of(update(workflows, other, "nodes")) == (
        grpc.StatusCode.NOT_FOUND,
        "workflow.nodes[5].agent.agent_id (node 'draft'): agent '00000000-0000-4000-8000-000000000000' not found",
    )

    assert (await get(workflows, created.id)).revision == 3
    assert await get(workflows, created.id, revision=1) == created
    revisions = await workflows.ListWorkflowRevisions(
        workflows_pb2.ListWorkflowRevisionsRequest(workflow_id=created.id, page_size=2), metadata=ME
    )
    assert [item.revision for item in revisions.revisions] == [3, 2] and revisions.next_page_token
    rest = await workflows.ListWorkflowRevisions(
        workflows_pb2.ListWorkflowRevisionsRequest(
            workflow_id=created.id, page_size=2, page_token=revisions.next_page_token
        ),
        metadata=ME,
    )
    assert list(rest.revisions) == [created] and rest.next_page_token == ""
    assert await status_of(workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=created.id, revision=4), metadata=ME
    )) == (grpc.StatusCode.NOT_FOUND, f"workflow '{created.id}' has no revision 4; its latest is 3")


async def test_an_update_needs_a_mask_of_known_fields_and_an_id(workflows: Any) -> None:
    created = await create(workflows, plain())
    change = workflows_pb2.Workflow(id=created.id, display_name="New")
    code, details = await status_of(workflows.UpdateWorkflow(
        workflows_pb2.UpdateWorkflowRequest(workflow=change), metadata=ME
    ))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("update_mask is required")
    code, details = await status_of(update(workflows, change, "display_name", "owner"))
    assert (code, details.startswith("update_mask names unknown field(s) 'owner'")) == (
        grpc.StatusCode.INVALID_ARGUMENT, True
    )
    assert await status_of(update(workflows, workflows_pb2.Workflow(display_name="x"), "display_name")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "workflow.id is required"
    )
    assert (await get(workflows, created.id)).revision == 1


async def test_a_deleted_workflow_is_gone_with_its_revisions(workflows: Any) -> None:
    created = await create(workflows, plain())
    await update(workflows, workflows_pb2.Workflow(id=created.id, display_name="Second"), "display_name")
    await workflows.DeleteWorkflow(workflows_pb2.DeleteWorkflowRequest(workflow_id=created.id), metadata=ME)
    for call in (
        workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(workflow_id=created.id), metadata=ME),
        workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(workflow_id=created.id, revision=1), metadata=ME),
        workflows.ListWorkflowRevisions(workflows_pb2.ListWorkflowRevisionsRequest(workflow_id=created.id),
                                        metadata=ME),
        workflows.DeleteWorkflow(workflows_pb2.DeleteWorkflowRequest(workflow_id=created.id), metadata=ME),
    ):
        assert await status_of(call) == (grpc.StatusCode.NOT_FOUND, f"workflow '{created.id}' not found")


async def test_listing_by_name_in_pages_with_a_filter(workflows: Any) -> None:
    names = ["delta", "Alpha", "charlie", "Bravo", "alpha two"]
    for name in names:
        workflow = plain()
        workflow.display_name = name
        await create(workflows, workflow)
    await create(workflows, plain(), metadata=as_(BOB))  # not Alice's

    async def listing(**request: Any) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            page = await workflows.ListWorkflows(
                workflows_pb2.ListWorkflowsRequest(page_token=token, **request), metadata=ME
            )
            assert len(page.workflows) <= request.get("page_size", 50)
            seen.extend(item.display_name for item in page.workflows)
            token = page.next_page_token
            if not token:
                return seen

    assert await listing(page_size=2) == ["Alpha", "alpha two", "Bravo", "charlie", "delta"]
    assert await listing(page_size=1, name_contains="ALPHA") == ["Alpha", "alpha two"]
    assert await listing(name_contains="zulu") == []
    first = await workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(page_size=1), metadata=ME)
    code, details = await status_of(workflows.ListWorkflows(
        workflows_pb2.ListWorkflowsRequest(page_size=1, page_token=first.next_page_token, name_contains="a"),
        metadata=ME,
    ))
    assert (code, details.startswith("page_token is not valid")) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    code, _ = await status_of(workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(page_size=-1), metadata=ME))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the checks run before any database
@pytest.mark.parametrize(("change", "message"), [case[1:] for case in INVALID_WORKFLOWS],
                         ids=[case[0] for case in INVALID_WORKFLOWS])
async def test_each_invalid_workflow_is_refused_naming_what_is_wrong(
    workflows: Any, change: Change, message: str
) -> None:
    workflow = every_kind()
    change(workflow)
    code, details = await status_of(create(workflows, workflow))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message), details
    listed = await workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), metadata=ME)
    assert list(listed.workflows) == []
