"""AgentRegistryService over real gRPC, with API keys, in front of a real tools service, on SQLite and
PostgreSQL: the whole lifecycle of an agent, update masks, listings, every refusal naming its field, unknown
tools, and a tools service that cannot be reached."""

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.agents.app import SERVICE_NAME, AgentsApp
from services.tools.app import ToolsApp
from tests.agents.conftest import StartAgents
from tests.agents.helpers import ADMIN, ALICE, INVALID_AGENTS, agent, as_, status_of
from tests.conftest import free_port

ME = as_(ALICE)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def create(stub: Any, message: agents_pb2.Agent, metadata: Any = ME) -> agents_pb2.Agent:
    return await stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=message), metadata=metadata)


def full_agent() -> agents_pb2.Agent:
    message = agent(
        "Math tutor",
        description="Explains sums step by step",
        instructions="Show your working.",
        model="demo",
        model_parameters=agents_pb2.ModelParameters(temperature=0.0, max_output_tokens=256),
        tools=["calculator", "web_search"],
        limits=runs_pb2.RunLimits(max_model_calls=5, max_total_tokens=10_000, max_tool_calls=7),
        metadata={"team": "maths"},
    )
    message.limits.max_duration.FromSeconds(90)
    return message


def test_the_service_name_is_the_contracts() -> None:
    assert SERVICE_NAME == agents_pb2.DESCRIPTOR.services_by_name["AgentRegistryService"].full_name


async def test_an_agent_round_trips_through_create_get_update_and_delete(stub: Any) -> None:
    sent = full_agent()
    # What the server sets is the server's, whatever the client sends.
    sent.id, sent.revision, sent.owner = "chosen-by-me", 7, "bob"
    created = await create(stub, sent)
    assert created.id != "chosen-by-me" and created.revision == 1 and created.owner == "alice"
    assert created.create_time == created.revision_create_time and created.create_time.seconds > 0
    expected = full_agent()
    expected.id, expected.revision, expected.owner = created.id, 1, "alice"
    expected.create_time.CopyFrom(created.create_time)
    expected.revision_create_time.CopyFrom(created.revision_create_time)
    assert created == expected
    # Set to 0, an optional parameter is kept as set (0 is a temperature), and an unset one stays unset.
    assert created.model_parameters.HasField("temperature") and not created.model_parameters.HasField("top_p")

    got = await stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME)
    assert got == created

    change = agent("Maths tutor", tools=["calculator"], instructions="ignored: not in the mask")
    change.id = created.id
    updated = await stub.UpdateAgent(
        agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("display_name", "tools")), metadata=ME
    )
    assert updated.revision == 2 and updated.display_name == "Maths tutor" and list(updated.tools) == ["calculator"]
    assert updated.instructions == "Show your working." and updated.limits == created.limits
    assert updated.create_time == created.create_time
    first = await stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id, revision=1), metadata=ME)
    assert first == created

    await stub.DeleteAgent(agents_pb2.DeleteAgentRequest(agent_id=created.id), metadata=ME)
    for call in (
        stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME),
        stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id, revision=1), metadata=ME),
        stub.ListAgentRevisions(agents_pb2.ListAgentRevisionsRequest(agent_id=created.id), metadata=ME),
        stub.DeleteAgent(agents_pb2.DeleteAgentRequest(agent_id=created.id), metadata=ME),
    ):
        assert await status_of(call) == (grpc.StatusCode.NOT_FOUND, f"agent '{created.id}' not found")


async def test_an_update_needs_a_mask_of_known_fields(stub: Any) -> None:
    created = await create(stub, agent())
    change = agent("New name")
    change.id = created.id
    code, details = await status_of(stub.UpdateAgent(agents_pb2.UpdateAgentRequest(agent=change), metadata=ME))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("update_mask is required")
    code, details = await status_of(stub.UpdateAgent(
        agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("display_name", "owner", "revision")),
        metadata=ME,
    ))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("update_mask names unknown field(s) 'owner', 'revision'; use any of display_name")
    code, details = await status_of(stub.UpdateAgent(
        agents_pb2.UpdateAgentRequest(agent=agent("x"), update_mask=mask("display_name")), metadata=ME
    ))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "agent.id is required")
    # Nothing was changed by the refusals.
    got = await stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME)
    assert got.revision == 1 and got.display_name == "Math tutor"


async def test_an_update_checks_the_fields_it_names_only(stub: Any) -> None:
    created = await create(stub, agent(tools=["calculator"]))
    change = agent("", description="Only the description changes", tools=["nope"])
    change.id = created.id
    updated = await stub.UpdateAgent(
        agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("description")), metadata=ME
    )
    assert updated.display_name == "Math tutor" and list(updated.tools) == ["calculator"]
    for path, message in (("display_name", "agent.display_name is required"),
                          ("tools", "agent.tools[0]: unknown tool 'nope'")):
        code, details = await status_of(stub.UpdateAgent(
            agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask(path)), metadata=ME
        ))
        assert (code, details.startswith(message)) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    # Clearing a field is naming it with its empty value.
    change = agent()
    change.id = created.id
    cleared = await stub.UpdateAgent(
        agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("tools")), metadata=ME
    )
    assert list(cleared.tools) == [] and cleared.revision == 3


@pytest.mark.parametrize(("fields", "message"), [case[1:] for case in INVALID_AGENTS],
                         ids=[case[0] for case in INVALID_AGENTS])
async def test_each_invalid_agent_is_refused_naming_its_field(stub: Any, fields: dict[str, Any], message: str) -> None:
    code, details = await status_of(create(stub, agent(**{"display_name": "Helper", **fields})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message), details
    listed = await stub.ListAgents(agents_pb2.ListAgentsRequest(), metadata=ME)
    assert list(listed.agents) == []


async def test_an_unknown_tool_is_refused_and_a_disabled_one_accepted(stub: Any, tools_app: ToolsApp) -> None:
    code, details = await status_of(create(stub, agent(tools=["calculator", "nope"])))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "agent.tools[1]: unknown tool 'nope'")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tools_app.port}") as channel:
        tools = tools_pb2_grpc.ToolServiceStub(channel)

        async def set_web_search(enabled: bool) -> None:
            await tools.UpdateTool(
                tools_pb2.UpdateToolRequest(
                    tool=tools_pb2.Tool(id="web_search", enabled=enabled), update_mask=mask("enabled")
                ),
                metadata=as_(ADMIN),
            )

        await set_web_search(False)
        try:
            # An agent names the tools it may use; whether a tool is on today is the tools service's to say at run
            # time.
            created = await create(stub, agent(tools=["web_search", "calculator"]))
            assert list(created.tools) == ["web_search", "calculator"]
        finally:
            await set_web_search(True)  # the tools service is shared by the agents tests (conftest.py)


async def test_a_tools_service_out_of_reach_is_unavailable(start_app: StartAgents, tools_app: ToolsApp) -> None:
    app = await start_app(TOOLS_ADDR=f"127.0.0.1:{free_port()}", AGENTS_TOOLS_TIMEOUT_SECONDS=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = agents_pb2_grpc.AgentRegistryServiceStub(channel)
        code, details = await status_of(create(stub, agent(tools=["calculator"])))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith("cannot check the agent's tools: tools service: ")
        # An agent that names no tool needs no answer from the tools service.
        created = await create(stub, agent(tools=[]))
        assert created.revision == 1
        # Nor does an update that leaves the tools alone.
        change = agent("Renamed", tools=["calculator"])
        change.id = created.id
        renamed = await stub.UpdateAgent(
            agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("display_name")), metadata=ME
        )
        assert renamed.display_name == "Renamed"


async def test_agents_are_listed_by_name_in_pages_with_a_filter(stub: Any) -> None:
    for name in ("beta", "Alpha", "gamma math", "Delta", "Math tutor", "maths 100%"):
        await create(stub, agent(name))

    async def listing(page_size: int, name_contains: str = "") -> list[str]:
        shown, token = [], ""
        while True:
            page = await stub.ListAgents(
                agents_pb2.ListAgentsRequest(page_size=page_size, page_token=token, name_contains=name_contains),
                metadata=ME,
            )
            assert len(page.agents) <= page_size
            shown += [listed.display_name for listed in page.agents]
            token = page.next_page_token
            if not token:
                return shown

    everything = ["Alpha", "beta", "Delta", "gamma math", "Math tutor", "maths 100%"]
    assert await listing(2) == everything
    assert await listing(1000) == everything
    assert await listing(1, "MATH") == ["gamma math", "Math tutor", "maths 100%"]
    assert await listing(5, "%") == ["maths 100%"]
    first = await stub.ListAgents(agents_pb2.ListAgentsRequest(page_size=1, name_contains="math"), metadata=ME)
    code, details = await status_of(stub.ListAgents(
        agents_pb2.ListAgentsRequest(page_size=1, page_token=first.next_page_token), metadata=ME
    ))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token is not valid")
    code, _ = await status_of(stub.ListAgents(agents_pb2.ListAgentsRequest(page_size=-1), metadata=ME))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_revisions_are_listed_newest_first(stub: Any) -> None:
    created = await create(stub, agent("v1"))
    for n in (2, 3, 4):
        change = agent(f"v{n}")
        change.id = created.id
        await stub.UpdateAgent(
            agents_pb2.UpdateAgentRequest(agent=change, update_mask=mask("display_name")), metadata=ME
        )
    page = await stub.ListAgentRevisions(
        agents_pb2.ListAgentRevisionsRequest(agent_id=created.id, page_size=3), metadata=ME
    )
    assert [(revision.revision, revision.display_name) for revision in page.revisions] == [
        (4, "v4"), (3, "v3"), (2, "v2")
    ]
    rest = await stub.ListAgentRevisions(
        agents_pb2.ListAgentRevisionsRequest(agent_id=created.id, page_token=page.next_page_token), metadata=ME
    )
    assert [revision.revision for revision in rest.revisions] == [1] and not rest.next_page_token
    assert rest.revisions[0] == created
    code, details = await status_of(stub.GetAgent(
        agents_pb2.GetAgentRequest(agent_id=created.id, revision=9), metadata=ME
    ))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, f"agent '{created.id}' has no revision 9; its latest is 4")
    code, _ = await status_of(stub.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id, revision=-1), metadata=ME))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = await status_of(stub.GetAgent(agents_pb2.GetAgentRequest(agent_id="nope"), metadata=ME))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "agent_id 'nope' is not a valid agent id (a UUID)")


async def test_a_call_without_credentials_is_unauthenticated(stub: Any) -> None:
    code, _ = await status_of(stub.ListAgents(agents_pb2.ListAgentsRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = await status_of(stub.ListAgents(agents_pb2.ListAgentsRequest(), metadata=as_("apk_unknown")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_service_reports_its_health(agents_app: AgentsApp) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agents_app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
