"""Fixtures of the agents tests: a store on a fresh database (SQLite, and PostgreSQL when it is installed), and
agents servers over real gRPC with API keys, in front of a real tools service."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentplatform.agents.v1 import agents_pb2_grpc, workflows_pb2_grpc
from services.agents.app import AgentsApp, start_agents
from services.agents.models import MIGRATIONS
from services.agents.settings import AgentsSettings
from services.agents.store import AgentStore
from services.common.db.database import Database
from services.tools.app import ToolsApp, start_tools
from services.tools.settings import ToolsSettings
from services.tools.workers.lifecycle import start_forkserver
from tests.agents.helpers import AUTH, drop_agents_schema, sqlite_url
from tests.support.background_loop import background_loop
from tests.support.platform import tools_settings

#: The store and service tests run on SQLite and on the session's PostgreSQL server (`postgres_url`,
#: tests/conftest.py), whose agents tables are dropped before and after each test.
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of a database without the agents schema: a new SQLite file, or the PostgreSQL test server."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "agents.db")
        return
    url = request.getfixturevalue("postgres_url")
    await drop_agents_schema(url)
    yield url
    await drop_agents_schema(url)  # the server is shared: leave nothing behind for other tests' schema checks


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The database of `database_url`, migrated."""
    db = Database(database_url)
    await db.migrate(MIGRATIONS)
    yield db
    await db.dispose()


@pytest.fixture
def store(database: Database) -> AgentStore:
    return AgentStore(database)


@asynccontextmanager
async def running_tools(settings: ToolsSettings) -> AsyncIterator[ToolsApp]:
    app = await start_tools(settings)
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture(scope="package")
def tools_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolsApp]:
    """A tools service with the same API keys and service token as the agents service, shared by every agents test:
    the agents service only asks it which tools exist, and starting one (its worker processes) took longer than most
    of these tests. It runs in an event loop of its own thread, so that each test's own loop reaches it; a test that
    changes its tool settings puts them back."""
    settings = tools_settings(tmp_path_factory.mktemp("agents-tools"), **AUTH)
    # The forkserver is started from the main thread, as a service's is (the loop's thread could not ignore SIGTERM
    # for it); the later tests' tools services fork their workers from it too.
    start_forkserver()
    with background_loop() as loop, loop.entered(running_tools(settings)) as app:
        yield app


StartAgents = Callable[..., Awaitable[AgentsApp]]


@pytest.fixture
async def start_app(database_url: str, tools_app: ToolsApp) -> AsyncIterator[StartAgents]:
    """Start agents servers on free ports, on `database_url`, with API keys, in front of `tools_app` (stopped at
    teardown); keyword arguments named like the environment (LLM_BASE_URL=..., TOOLS_ADDR=...) override
    settings."""
    apps: list[AgentsApp] = []

    async def start(**settings_env: Any) -> AgentsApp:
        values = {
            "AGENTS_PORT": 0,
            "AGENTS_DATABASE_URL": database_url,
            "TOOLS_ADDR": f"127.0.0.1:{tools_app.port}",
            "LLM_BASE_URL": "",
            **AUTH,
            **settings_env,
        }
        app = await start_agents(AgentsSettings(_env_file=None, **values))
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def agents_app(start_app: StartAgents) -> AgentsApp:
    return await start_app()


@pytest.fixture
async def stub(agents_app: AgentsApp) -> AsyncIterator[agents_pb2_grpc.AgentRegistryServiceStub]:
    """An AgentRegistryService stub over a real channel to `agents_app`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agents_app.port}") as channel:
        yield agents_pb2_grpc.AgentRegistryServiceStub(channel)


@pytest.fixture
async def workflows(agents_app: AgentsApp) -> AsyncIterator[workflows_pb2_grpc.WorkflowRegistryServiceStub]:
    """A WorkflowRegistryService stub over a real channel to `agents_app` (the same server as `stub`'s)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agents_app.port}") as channel:
        yield workflows_pb2_grpc.WorkflowRegistryServiceStub(channel)
