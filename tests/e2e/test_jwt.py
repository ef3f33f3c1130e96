"""JWTs end to end: the whole stack with an OIDC issuer configured (a key set generated here) and API keys. Envoy
validates the token, the services take its issuer-qualified subject and role from the gateway, and ownership holds
through the engine to the run store, over native gRPC and grpc-web alike; a token's user is never an API key's."""

import json

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common.identity import jwt_user_id
from tests.e2e.conftest import RunningStack
from tests.gateway.test_identity import AUDIENCE, ISSUER, Issuer
from tests.support import grpc_web
from tests.support.keys import ALICE, AUTH, as_

pytestmark = pytest.mark.e2e

ISSUING = Issuer()


@pytest.fixture(scope="module")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    jwks = tmp_path_factory.mktemp("oidc") / "jwks.json"
    jwks.write_text(json.dumps(ISSUING.jwks()))
    return {"AUTH_JWT_ISSUER": ISSUER, "AUTH_JWT_AUDIENCES": AUDIENCE, "AUTH_JWT_JWKS_FILE": str(jwks), **AUTH}


def bearer(**claims: object) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ISSUING.token(**claims)}"),)


@pytest.fixture(scope="module")
def gateway(platform_stack: RunningStack) -> grpc.Channel:
    with grpc.insecure_channel(platform_stack.stack.gateway_url.removeprefix("http://")) as channel:
        yield channel


def test_a_jwt_users_run_is_theirs_from_start_to_store(gateway: grpc.Channel, platform_stack: RunningStack) -> None:
    agents, runs = engine_pb2_grpc.AgentServiceStub(gateway), runs_pb2_grpc.RunServiceStub(gateway)
    chat = agents.Chat(engine_pb2.ChatRequest(message="What is 5 + 10?"), metadata=bearer(sub="carol"), timeout=60)
    run = runs.GetRun(runs_pb2.GetRunRequest(run_id=chat.run_id), metadata=bearer(sub="carol"), timeout=10)
    assert run.owner == jwt_user_id(ISSUER, "carol") and run.state == runs_pb2.RUN_STATE_COMPLETED
    assert "15" in chat.response
    # The same identity over REST: carol's run is hers, and hidden from dave.
    rest = platform_stack.stack.gateway_url + f"/api/runs/{chat.run_id}"
    mine = httpx.get(rest, headers={"authorization": bearer(sub="carol")[0][1]}, timeout=10)
    assert mine.status_code == 200 and mine.json()["owner"] == jwt_user_id(ISSUER, "carol")
    theirs = httpx.get(rest, headers={"authorization": bearer(sub="dave")[0][1]}, timeout=10)
    assert (theirs.status_code, theirs.json()["code"]) == (404, 5)

    with pytest.raises(grpc.RpcError) as hidden:
        runs.GetRun(runs_pb2.GetRunRequest(run_id=chat.run_id), metadata=bearer(sub="dave"), timeout=10)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    everyone = runs.ListRuns(
        runs_pb2.ListRunsRequest(all_users=True), metadata=bearer(sub="erin", role="admin"), timeout=10
    )
    assert chat.run_id in {listed.id for listed in everyone.runs}


def test_the_role_comes_from_the_token(gateway: grpc.Channel) -> None:
    tools = tools_pb2_grpc.ToolServiceStub(gateway)
    update = tools_pb2.UpdateToolRequest(
        tool=tools_pb2.Tool(id="web_search", enabled=True), update_mask=field_mask_pb2.FieldMask(paths=["enabled"])
    )
    with pytest.raises(grpc.RpcError) as denied:
        tools.UpdateTool(update, metadata=bearer(sub="carol", role="user"), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert tools.UpdateTool(update, metadata=bearer(sub="erin", role="admin"), timeout=10).enabled


@pytest.mark.parametrize(
    "claims",
    [{"exp": 1}, {"iss": "https://elsewhere.test/"}, {"aud": "another-api"}],
    ids=["expired", "other-issuer", "other-audience"],
)
def test_a_bad_token_is_unauthenticated_and_starts_nothing(
    gateway: grpc.Channel, platform_stack: RunningStack, claims: dict[str, object]
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        engine_pb2_grpc.AgentServiceStub(gateway).StartRun(
            engine_pb2.StartRunRequest(message="hi"), metadata=bearer(sub="mallory", **claims), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Through grpc-web too, as a browser would send it.
    response = httpx.post(
        platform_stack.url("agentplatform.runs.v1.RunService/ListRuns"),
        content=grpc_web.frame(runs_pb2.ListRunsRequest()),
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1",
                 "authorization": bearer(sub="mallory", **claims)[0][1]},
        timeout=10,
    )
    assert response.headers.get("grpc-status") == "16"
    # And over REST: 401 with the status as JSON.
    rest = httpx.get(
        f"{platform_stack.stack.gateway_url}/api/runs",
        headers={"authorization": bearer(sub="mallory", **claims)[0][1]}, timeout=10,
    )
    assert (rest.status_code, rest.json()["code"]) == (401, 16)
    mallorys = runs_pb2_grpc.RunServiceStub(gateway).ListRuns(
        runs_pb2.ListRunsRequest(all_users=True), metadata=bearer(sub="erin", role="admin"), timeout=10
    )
    assert jwt_user_id(ISSUER, "mallory") not in {run.owner for run in mallorys.runs}


def test_a_token_whose_sub_is_alice_is_not_the_api_key_user_alice(gateway: grpc.Channel) -> None:
    engine, runs = engine_pb2_grpc.AgentServiceStub(gateway), runs_pb2_grpc.RunServiceStub(gateway)
    agents = agents_pb2_grpc.AgentRegistryServiceStub(gateway)
    key, token = as_(ALICE), bearer(sub="alice")  # the API-key user "alice", and a token whose sub is "alice"
    made = {}
    for who, metadata in (("key", key), ("token", token)):
        chat = engine.Chat(engine_pb2.ChatRequest(message="What is 2 + 2?"), metadata=metadata, timeout=60)
        agent = agents.CreateAgent(
            agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(display_name=f"{who}'s")), metadata=metadata,
            timeout=10,
        )
        made[who] = (chat, agent)

    for me, other in (("key", "token"), ("token", "key")):
        metadata = key if me == "key" else token
        (mine, my_agent), (theirs, their_agent) = made[me], made[other]
        owner = runs.GetRun(runs_pb2.GetRunRequest(run_id=mine.run_id), metadata=metadata, timeout=10).owner
        assert owner == ("alice" if me == "key" else jwt_user_id(ISSUER, "alice"))
        for method, request in (
            (runs.GetRun, runs_pb2.GetRunRequest(run_id=theirs.run_id)),
            (runs.GetThread, runs_pb2.GetThreadRequest(thread_id=theirs.thread_id)),
            (agents.GetAgent, agents_pb2.GetAgentRequest(agent_id=their_agent.id)),
            (engine.Chat, engine_pb2.ChatRequest(message="and then?", thread_id=theirs.thread_id)),
        ):
            with pytest.raises(grpc.RpcError) as hidden:
                method(request, metadata=metadata, timeout=60)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND, (me, hidden.value.details())
        listed_runs = {run.id for run in runs.ListRuns(runs_pb2.ListRunsRequest(), metadata=metadata, timeout=10).runs}
        assert mine.run_id in listed_runs and theirs.run_id not in listed_runs
        threads = runs.ListThreads(runs_pb2.ListThreadsRequest(), metadata=metadata, timeout=10).threads
        assert mine.thread_id in {thread.id for thread in threads}
        assert theirs.thread_id not in {thread.id for thread in threads}
        listed_agents = agents.ListAgents(agents_pb2.ListAgentsRequest(), metadata=metadata, timeout=10).agents
        assert [listed.id for listed in listed_agents] == [my_agent.id]
