"""The three services started in-process on 127.0.0.1 with free ports, real gRPC servers and real databases.

    async with start_platform(tmp_path, llm.base_url) as platform:
        run = await platform.runs_stub.GetRun(...)
"""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from agentplatform.agents.v1 import agents_pb2_grpc
from agentplatform.engine.v1 import engine_pb2_grpc
from services.agents.app import AgentsApp, start_agents
from services.agents.settings import AgentsSettings
from services.engine.app import EngineApp, start_engine
from services.engine.settings import EngineSettings
from services.runs.app import RunsApp, start_runs
from services.runs.settings import RunsSettings
from services.tools.app import ToolsApp, start_tools
from services.tools.settings import ToolsSettings
from tests.support.keys import TOOLS_SECRET_KEY
from tests.support.stubs import runs_stubs, tools_stubs


def runs_settings(tmp_path: Path, **overrides: Any) -> RunsSettings:
    """Runs settings for a test: free port, a SQLite file under tmp_path, no .env file."""
    values = {"RUNS_PORT": 0, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/runs.db", **overrides}
    return RunsSettings(_env_file=None, **values)


def tools_settings(tmp_path: Path, **overrides: Any) -> ToolsSettings:
    values = {
        "TOOLS_PORT": 0,
        "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/tools.db",
        "TOOLS_WORKSPACE": str(tmp_path / "workspace"),
        "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY,
        **overrides,
    }
    return ToolsSettings(_env_file=None, **values)


def agents_settings(tmp_path: Path, tools_port: int, **overrides: Any) -> AgentsSettings:
    values = {
        "AGENTS_PORT": 0,
        "AGENTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/agents.db",
        "TOOLS_ADDR": f"127.0.0.1:{tools_port}",
        **overrides,
    }
    return AgentsSettings(_env_file=None, **values)


def engine_settings(runs_port: int, tools_port: int, llm_base_url: str, **overrides: Any) -> EngineSettings:
    values = {
        "ENGINE_PORT": 0,
        "RUNS_ADDR": f"127.0.0.1:{runs_port}",
        "TOOLS_ADDR": f"127.0.0.1:{tools_port}",
        "LLM_BASE_URL": llm_base_url,
        "LLM_MODEL": "scripted",
        # Tests that make the model fail want the failure, not the SDK's backoff before it.
        "LLM_MAX_RETRIES": 0,
        "LLM_TIMEOUT_SECONDS": 10,
        **overrides,
    }
    return EngineSettings(_env_file=None, **values)


@dataclass
class Platform:
    runs: RunsApp
    tools: ToolsApp
    engine: EngineApp
    #: The public and internal APIs of runs and of tools (tests.support.stubs).
    runs_stub: Any
    tools_stub: Any
    engine_stub: engine_pb2_grpc.AgentServiceStub
    #: The agents service and its stub, when the platform was started with_agents.
    agents: AgentsApp | None = None
    agents_stub: agents_pb2_grpc.AgentRegistryServiceStub | None = None


@asynccontextmanager
async def grpc_channel(port: int) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()


@dataclass
class Registries:
    """The runs, tools and agents services without an engine, and a channel to each."""

    runs: RunsApp
    tools: ToolsApp
    agents: AgentsApp
    runs_channel: grpc.aio.Channel
    tools_channel: grpc.aio.Channel
    agents_channel: grpc.aio.Channel


@asynccontextmanager
async def start_registries(tmp_path: Path) -> AsyncIterator[Registries]:
    """The services whose public APIs a client calls directly (runs, tools, agents), with no engine and no model,
    in development mode; stopped and closed on exit."""
    async with AsyncExitStack() as stack:
        runs = await start_runs(runs_settings(tmp_path))
        stack.push_async_callback(runs.stop)
        tools = await start_tools(tools_settings(tmp_path))
        stack.push_async_callback(tools.stop)
        agents = await start_agents(agents_settings(tmp_path, tools.port, LLM_BASE_URL=""))
        stack.push_async_callback(agents.stop)
        channels = [
            await stack.enter_async_context(grpc_channel(port)) for port in (runs.port, tools.port, agents.port)
        ]
        yield Registries(runs, tools, agents, *channels)


@asynccontextmanager
async def start_platform(
    tmp_path: Path,
    llm_base_url: str,
    *,
    tools_overrides: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    with_agents: bool = False,
    **engine_overrides: Any,
) -> AsyncIterator[Platform]:
    """Runs, tools and engine servers (engine pointed at `llm_base_url`), stopped and closed on exit.

    `engine_overrides` are engine settings (ENGINE_MAX_CONCURRENT_RUNS=1 ...); `tools_overrides` the tools
    service's (TOOLS_PLUGIN_DIRS ...); `auth` the settings all three share (AUTH_API_KEYS,
    PLATFORM_SERVICE_TOKEN ...). Without `auth` the services are in development mode. `with_agents` starts the
    agents service too (checking models against `llm_base_url`)."""
    shared = auth or {}
    async with AsyncExitStack() as stack:
        runs = await start_runs(runs_settings(tmp_path, **shared))
        stack.push_async_callback(runs.stop)
        tools = await start_tools(tools_settings(tmp_path, **shared, **(tools_overrides or {})))
        stack.push_async_callback(tools.stop)
        agents = None
        if with_agents:
            agents = await start_agents(agents_settings(tmp_path, tools.port, LLM_BASE_URL=llm_base_url, **shared))
            stack.push_async_callback(agents.stop)
            engine_overrides.setdefault("AGENTS_ADDR", f"127.0.0.1:{agents.port}")
        engine = await start_engine(
            engine_settings(runs.port, tools.port, llm_base_url, **shared, **engine_overrides)
        )
        stack.push_async_callback(engine.stop)
        runs_channel = await stack.enter_async_context(grpc_channel(runs.port))
        tools_channel = await stack.enter_async_context(grpc_channel(tools.port))
        engine_channel = await stack.enter_async_context(grpc_channel(engine.port))
        agents_stub = None
        if agents is not None:
            agents_channel = await stack.enter_async_context(grpc_channel(agents.port))
            agents_stub = agents_pb2_grpc.AgentRegistryServiceStub(agents_channel)
        yield Platform(
            runs,
            tools,
            engine,
            runs_stubs(runs_channel),
            tools_stubs(tools_channel),
            engine_pb2_grpc.AgentServiceStub(engine_channel),
            agents,
            agents_stub,
        )
