"""JWTs end to end: the whole stack with an OIDC issuer configured (a key set generated here). Envoy validates
the token, the services take its subject and role from the gateway, and ownership holds through the engine to
the run store, over native gRPC and grpc-web alike."""

import json

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from tests.e2e.conftest import RunningStack
from tests.gateway.test_identity import AUDIENCE, ISSUER, Issuer
from tests.support import grpc_web

pytestmark = pytest.mark.e2e

ISSUING = Issuer()


@pytest.fixture(scope="module")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    jwks = tmp_path_factory.mktemp("oidc") / "jwks.json"
    jwks.write_text(json.dumps(ISSUING.jwks()))
    return {"AUTH_JWT_ISSUER": ISSUER, "AUTH_JWT_AUDIENCES": AUDIENCE, "AUTH_JWT_JWKS_FILE": str(jwks)}


def bearer(**claims: object) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ISSUING.token(**claims)}"),)


@pytest.fixture(scope="module")
def gateway(platform_stack: RunningStack) -> grpc.Channel:
    with grpc.insecure_channel(platform_stack.stack.gateway_url.removeprefix("http://")) as channel:
        yield channel


def test_a_jwt_users_run_is_theirs_from_start_to_store(gateway: grpc.Channel) -> None:
    agents, runs = engine_pb2_grpc.AgentServiceStub(gateway), runs_pb2_grpc.RunServiceStub(gateway)
    chat = agents.Chat(engine_pb2.ChatRequest(message="What is 5 + 10?"), metadata=bearer(sub="carol"), timeout=60)
    run = runs.GetRun(runs_pb2.GetRunRequest(run_id=chat.run_id), metadata=bearer(sub="carol"), timeout=10)
    assert run.owner == "carol" and run.state == runs_pb2.RUN_STATE_COMPLETED
    assert "15" in chat.response

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
    mallorys = runs_pb2_grpc.RunServiceStub(gateway).ListRuns(
        runs_pb2.ListRunsRequest(all_users=True), metadata=bearer(sub="erin", role="admin"), timeout=10
    )
    assert "mallory" not in {run.owner for run in mallorys.runs}
