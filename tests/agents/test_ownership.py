"""Agents and workflows are personal: over real gRPC with API keys, each user sees and touches only their own;
another user's agent or workflow is NOT_FOUND in the same words as none, for admins too. The engine reads an
agent on its owner's behalf, with the platform's service token."""

from typing import Any

import grpc

from agentplatform.agents.v1 import agents_pb2, workflows_pb2
from services.common.identity import ROLE_KEY, SERVICE_TOKEN_KEY, USER_KEY
from tests.agents.helpers import ADMIN, ALICE, BOB, TOKEN, agent, as_, status_of
from tests.agents.workflow_helpers import plain


async def test_another_users_agent_is_not_found_everywhere_and_absent_from_lists(stub: Any) -> None:
    alices = await stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent("Alice's")), metadata=as_(ALICE))
    bobs = await stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent("Bob's")), metadata=as_(BOB))
    missing = "00000000-0000-4000-8000-000000000000"
    change = agent("Taken over")
    for agent_id in (alices.id, missing):
        change.id = agent_id
        for key in (BOB, ADMIN):  # an admin is no exception: agents are personal
            for call in (
                stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=agent_id), metadata=as_(key)),
                stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=agent_id, revision=1), metadata=as_(key)),
                stub.UpdateAgent(
                    agents_pb2.UpdateAgentRequest(agent=change, update_mask={"paths": ["display_name"]}),
                    metadata=as_(key),
                ),
                stub.ListAgentRevisions(agents_pb2.ListAgentRevisionsRequest(agent_id=agent_id), metadata=as_(key)),
                stub.DeleteAgent(agents_pb2.DeleteAgentRequest(agent_id=agent_id), metadata=as_(key)),
            ):
                assert await status_of(call) == (grpc.StatusCode.NOT_FOUND, f"agent '{agent_id}' not found")

    listed = await stub.ListAgents(agents_pb2.ListAgentsRequest(), metadata=as_(BOB))
    assert [listed_agent.id for listed_agent in listed.agents] == [bobs.id]
    listed = await stub.ListAgents(agents_pb2.ListAgentsRequest(), metadata=as_(ADMIN))
    assert list(listed.agents) == []
    # Nothing of Alice's changed.
    still = await stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=alices.id), metadata=as_(ALICE))
    assert still == alices


async def test_the_engine_reads_an_agent_on_its_owners_behalf(stub: Any) -> None:
    alices = await stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent()), metadata=as_(ALICE))
    on_behalf = ((SERVICE_TOKEN_KEY, TOKEN), (USER_KEY, "alice"), (ROLE_KEY, "user"))
    got = await stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=alices.id), metadata=on_behalf)
    assert got == alices
    for_bob = ((SERVICE_TOKEN_KEY, TOKEN), (USER_KEY, "bob"))
    code, _ = await status_of(stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=alices.id), metadata=for_bob))
    assert code == grpc.StatusCode.NOT_FOUND
    # Identity headers without the platform's token are not believed.
    forged = ((USER_KEY, "alice"), (ROLE_KEY, "user"))
    code, _ = await status_of(stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=alices.id), metadata=forged))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    wrong_token = ((SERVICE_TOKEN_KEY, "not-the-token"), (USER_KEY, "alice"))
    code, _ = await status_of(stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=alices.id), metadata=wrong_token))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_another_users_workflow_is_not_found_everywhere_and_absent_from_lists(workflows: Any) -> None:
    """Workflows follow the agents' rule: NOT_FOUND in the same words as no workflow, for admins too."""
    alices = await workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=plain()), metadata=as_(ALICE)
    )
    bobs = await workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=plain()), metadata=as_(BOB)
    )
    missing = "00000000-0000-4000-8000-000000000000"
    for workflow_id in (alices.id, missing):
        change = plain()
        change.id = workflow_id
        for key in (BOB, ADMIN):
            for call in (
                workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id), metadata=as_(key)),
                workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id, revision=1),
                                      metadata=as_(key)),
                workflows.UpdateWorkflow(
                    workflows_pb2.UpdateWorkflowRequest(workflow=change, update_mask={"paths": ["display_name"]}),
                    metadata=as_(key),
                ),
                workflows.UpdateWorkflow(
                    workflows_pb2.UpdateWorkflowRequest(workflow=change, update_mask={"paths": ["nodes"]}),
                    metadata=as_(key),
                ),
                workflows.ListWorkflowRevisions(
                    workflows_pb2.ListWorkflowRevisionsRequest(workflow_id=workflow_id), metadata=as_(key)
                ),
                workflows.DeleteWorkflow(workflows_pb2.DeleteWorkflowRequest(workflow_id=workflow_id),
                                         metadata=as_(key)),
            ):
                assert await status_of(call) == (grpc.StatusCode.NOT_FOUND, f"workflow '{workflow_id}' not found")

    listed = await workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), metadata=as_(BOB))
    assert [item.id for item in listed.workflows] == [bobs.id]
    listed = await workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), metadata=as_(ADMIN))
    assert list(listed.workflows) == []
    still = await workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(workflow_id=alices.id), metadata=as_(ALICE))
    assert still == alices
    # No identity at all is UNAUTHENTICATED, not an empty answer.
    code, _ = await status_of(workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED
