"""An agent's model is checked against the model endpoint's own list (GET /v1/models through the openai SDK),
over real HTTP: the demo model, an endpoint with many models, one that lists none, one that offers no list and
one that is down. The list is reused for AGENTS_MODELS_CACHE_SECONDS."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from services.demo_model.app import RunningModelServer, create_app, start_model_server
from services.demo_model.planner import plan_reply
from tests.agents.conftest import StartAgents
from tests.agents.helpers import ALICE, agent, as_, status_of
from tests.conftest import free_port

ME = as_(ALICE)


class ModelList:
    """A tiny OpenAI-compatible endpoint that serves only GET /v1/models, with the ids in `models`."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.requests = 0

    def app(self) -> Starlette:
        async def list_models(request: Request) -> Response:
            self.requests += 1
            data = [{"id": model, "object": "model", "created": 0, "owned_by": "test"} for model in self.models]
            return JSONResponse({"object": "list", "data": data})

        return Starlette(routes=[Route("/v1/models", list_models)])


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Starlette], Any]]:
    servers: list[RunningModelServer] = []

    async def start(app: Starlette) -> str:
        server = await start_model_server(app)
        servers.append(server)
        return server.base_url

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[Any], Any]]:
    channels: list[grpc.aio.Channel] = []

    def stub(app: Any) -> agents_pb2_grpc.AgentRegistryServiceStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        channels.append(channel)
        return agents_pb2_grpc.AgentRegistryServiceStub(channel)

    yield stub
    for channel in channels:
        await channel.close()


async def create(stub: Any, model: str) -> agents_pb2.Agent:
    return await stub.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent(model=model)), metadata=ME)


async def test_against_the_demo_model_an_agent_uses_demo_or_the_default(
    start_app: StartAgents, serve: Any, connect: Any
) -> None:
    # The demo model answers to any name but lists only "demo": the check holds it to its list, like any other.
    base_url = await serve(create_app(plan_reply))
    stub = connect(await start_app(LLM_BASE_URL=base_url))
    assert (await create(stub, "demo")).model == "demo"
    assert (await create(stub, "")).model == ""
    code, details = await status_of(create(stub, "gpt-4o"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == ("agent.model: the model endpoint does not serve 'gpt-4o'; it serves 'demo' (or leave the "
                       "model empty for the engine's default)")
    created = await create(stub, "demo")
    change = agent(model="gpt-4o")
    change.id = created.id
    code, details = await status_of(stub.UpdateAgent(
        agents_pb2.UpdateAgentRequest(agent=change, update_mask={"paths": ["model"]}), metadata=ME
    ))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("agent.model: ")


async def test_a_refusal_lists_a_few_of_many_models(start_app: StartAgents, serve: Any, connect: Any) -> None:
    endpoint = ModelList([f"model-{n:02}" for n in range(25)])
    stub = connect(await start_app(LLM_BASE_URL=await serve(endpoint.app())))
    code, details = await status_of(create(stub, "model-99"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "it serves 'model-00', 'model-01'" in details and "'model-09' and 15 more" in details
    assert (await create(stub, "model-24")).model == "model-24"


async def test_the_list_is_reused_for_its_cache_time(start_app: StartAgents, serve: Any, connect: Any) -> None:
    endpoint = ModelList(["old"])
    base_url = await serve(endpoint.app())
    cached = connect(await start_app(LLM_BASE_URL=base_url))
    fresh = connect(await start_app(LLM_BASE_URL=base_url, AGENTS_MODELS_CACHE_SECONDS=0))
    await create(cached, "old")
    await create(fresh, "old")
    endpoint.models = ["new"]
    await create(cached, "old")  # still the list of a moment ago
    assert (await status_of(create(cached, "new")))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (await create(fresh, "new")).model == "new"
    assert endpoint.requests == 3  # the cached service asked once


@pytest.mark.parametrize("endpoint", ["no-list", "empty-list", "down"])
async def test_an_endpoint_without_a_list_leaves_models_unchecked(
    endpoint: str, start_app: StartAgents, serve: Any, connect: Any
) -> None:
    if endpoint == "no-list":
        base_url = await serve(Starlette(routes=[]))  # 404 for /v1/models
    elif endpoint == "empty-list":
        base_url = await serve(ModelList([]).app())
    else:
        base_url = f"http://127.0.0.1:{free_port()}/v1"
    stub = connect(await start_app(LLM_BASE_URL=base_url, AGENTS_MODELS_TIMEOUT_SECONDS=2))
    assert (await create(stub, "anything-at-all")).model == "anything-at-all"


async def test_without_an_endpoint_models_are_not_checked(stub: Any) -> None:
    assert (await create(stub, "gpt-4o")).model == "gpt-4o"
