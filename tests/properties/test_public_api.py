"""Every public method of every service, called with generated requests, answers with a status a client can act on.

The promise checked (issue 15, "Keep it from coming back"): whatever a client sends, a public method never answers
INTERNAL or UNKNOWN, never hangs past its deadline, and no run is left live afterwards. The four services run as
real gRPC servers on SQLite, with the offline demo model, in development mode (the caller is the local admin, who
may call everything). Requests come from `tests.properties.messages`, seeded with ids of resources that exist so
that they reach past "not found".

CreateMcpServer is left out: a stdio MCP server is a command the tools service runs, which an admin may register
on purpose, and generated commands are not something to run on a test machine.
"""

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from agentplatform.agents.v1 import agents_pb2, workflows_pb2
from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from services.common.settings import load_settings
from services.demo_model.app import start_demo_model
from services.demo_model.settings import DemoModelSettings
from tests.properties.messages import messages
from tests.support.platform import Platform, start_platform

T = TypeVar("T")

SERVICES = [
    engine_pb2.DESCRIPTOR.services_by_name["AgentService"],
    runs_pb2.DESCRIPTOR.services_by_name["RunService"],
    tools_pb2.DESCRIPTOR.services_by_name["ToolService"],
    agents_pb2.DESCRIPTOR.services_by_name["AgentRegistryService"],
    workflows_pb2.DESCRIPTOR.services_by_name["WorkflowRegistryService"],
]
LEFT_OUT = {"agentplatform.tools.v1.ToolService.CreateMcpServer"}
METHODS = [m for service in SERVICES for m in service.methods if m.full_name not in LEFT_OUT]
#: No answer a client can act on: a server bug (INTERNAL, UNKNOWN) or a hang (DEADLINE_EXCEEDED).
NOT_AN_ANSWER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
#: Seconds a call may take: unary calls and whole streams (a chat with the demo model takes well under one).
DEADLINE = 20.0
LIVE_STATES = (runs_pb2.RUN_STATE_QUEUED, runs_pb2.RUN_STATE_RUNNING)


class _Loop:
    """An event loop in a thread of its own: hypothesis drives its examples synchronously, the services are
    asyncio servers that live for the whole module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="platform-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Stack:
    loop: _Loop
    platform: Platform
    channels: dict[str, grpc.aio.Channel]
    ids: list[str]


async def _start(stack: AsyncExitStack, tmp_path: Path) -> tuple[Platform, dict[str, grpc.aio.Channel], list[str]]:
    settings = load_settings(DemoModelSettings, DEMO_MODEL_PORT=0, DEMO_MODEL_CHUNK_DELAY_SECONDS=0)
    model = await start_demo_model(settings)
    stack.push_async_callback(model.stop)
    platform = await stack.enter_async_context(
        start_platform(tmp_path, model.server.base_url, with_agents=True, LLM_MODEL="demo")
    )
    ports = {
        "agentplatform.engine.v1.AgentService": platform.engine.port,
        "agentplatform.runs.v1.RunService": platform.runs.port,
        "agentplatform.tools.v1.ToolService": platform.tools.port,
        "agentplatform.agents.v1.AgentRegistryService": platform.agents.port,
        "agentplatform.agents.v1.WorkflowRegistryService": platform.agents.port,
    }
    channels = {}
    for service, port in ports.items():
        channels[service] = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stack.push_async_callback(channels[service].close)
    # Resources that exist, so generated requests can name them.
    chat = await platform.engine_stub.Chat(engine_pb2.ChatRequest(message="What is 5 + 10?"), timeout=DEADLINE)
    run = (await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest(page_size=1), timeout=DEADLINE)).runs[0]
    agent = await platform.agents_stub.CreateAgent(
        agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(display_name="Fuzzed", model="demo")), timeout=DEADLINE
    )
    ids = [run.id, chat.thread_id, agent.id, "calculator", "file_io", "web_search", "demo", "1", "0"]
    return platform, channels, ids


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    loop = _Loop()
    exits = AsyncExitStack()
    try:
        platform, channels, ids = loop.run(_start(exits, tmp_path_factory.mktemp("platform")))
        yield Stack(loop, platform, channels, ids)
        loop.run(_assert_no_run_left_live(platform))
    finally:
        loop.run(exits.aclose())
        loop.close()


async def _call(stack: Stack, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
    channel = stack.channels[method.containing_service.full_name]
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = kind(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b)
    try:
        if method.server_streaming:
            async for _ in call(request, timeout=DEADLINE):
                pass
        else:
            await call(request, timeout=DEADLINE)
    except grpc.aio.AioRpcError as error:
        assert error.code() not in NOT_AN_ANSWER, f"{method.name}: {error.code().name} {error.details()!r}"
        assert error.details(), f"{method.name}: {error.code().name} with no message a person can act on"
        return error.code()
    return grpc.StatusCode.OK


async def _assert_no_run_left_live(platform: Platform) -> None:
    """Every run the generated requests started ends by itself (they are short chats with the demo model)."""
    live: list[str] = []
    for _ in range(100):
        response = await platform.runs_stub.ListRuns(runs_pb2.ListRunsRequest(all_users=True, page_size=1000))
        live = [run.run_id for run in response.runs if run.state in LIVE_STATES]
        if not live:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"runs left live 30 s after the last call: {live}")


@pytest.mark.timeout(300)  # hypothesis shrinks a failing example with many more calls
@pytest.mark.parametrize("method", METHODS, ids=[m.full_name.rsplit(".", 2)[-2] + "." + m.name for m in METHODS])
def test_a_generated_request_gets_an_answer_a_client_can_act_on(stack: Stack, method: MethodDescriptor) -> None:
    @given(request=st.data())
    def check(request: st.DataObject) -> None:
        message = request.draw(messages(method.input_type, stack.ids), label="request")
        stack.loop.run(_call(stack, method, message), timeout=DEADLINE + 10)

    check()
