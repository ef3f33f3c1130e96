"""Fixtures of the tools tests: settings on tmp_path, the domain objects, a running service with a stub, the
file_io tests' workspaces, the tool workers' plugin, and the HTTP and MCP servers the tools reach."""

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from agentplatform.tools.internal.v1 import execution_pb2 as tool_execution_pb2
from services.common.db.database import Database
from services.tools.app import ToolsApp, start_tools
from services.tools.base import ToolContext
from services.tools.executor import DEFAULT_MAX_RESULT_BYTES, ToolExecutor
from services.tools.registry import ToolRegistry
from services.tools.settings import BUILTIN_WEB_SEARCH_CORPUS, ToolsSettings
from services.tools.tool_settings import ToolSettingsStore
from services.tools.workers.pool import ToolWorkerPool
from services.tools.workers.protocol import WorkerConfig
from services.tools.workspaces import beneath
from tests.support.keys import TOOLS_SECRET_KEY
from tests.support.stubs import tools_stubs
from tests.tools.file_io_helpers import OPENAT2, Box, make_box
from tests.tools.http_endpoint import Endpoint, serving_endpoint
from tests.tools.mcp_servers import HttpServer, ServerFiles, server_files
from tests.tools.pool_tools_plugin import POOL_TOOLS

SettingsFactory = Callable[..., ToolsSettings]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The tools database, once on SQLite (a file under tmp_path) and once on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}"
    return request.getfixturevalue("postgres_url")


def write_plugin(folder: Path, file_name: str, source: str) -> Path:
    """Write a tool plugin file (dedented) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def execute_request(tool_id: str, **arguments: Any) -> tool_execution_pb2.ExecuteToolRequest:
    """An ExecuteToolRequest with `arguments` as its Struct."""
    struct = struct_pb2.Struct()
    struct.update(arguments)
    return tool_execution_pb2.ExecuteToolRequest(tool_id=tool_id, arguments=struct)


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    return folder


@pytest.fixture
def make_settings(tmp_path: Path, plugin_dir: Path) -> SettingsFactory:
    """ToolsSettings on tmp_path (DB, workspace, one plugin folder, port 0); keyword overrides by env name."""

    def build(**overrides: Any) -> ToolsSettings:
        values: dict[str, Any] = {
            "TOOLS_HOST": "127.0.0.1",
            "TOOLS_PORT": 0,
            "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}",
            "TOOLS_WORKSPACE": str(tmp_path / "workspace"),
            "TOOLS_PLUGIN_DIRS": str(plugin_dir),
            "TOOLS_TIMEOUT_SECONDS": 5,
            "TOOLS_WEB_SEARCH_CORPUS": str(BUILTIN_WEB_SEARCH_CORPUS),
            "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY,
        }
        values.update(overrides)
        return ToolsSettings(_env_file=None, **values)  # a developer's .env must not leak in

    return build


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return ToolContext(workspace=workspace.resolve(), web_search_corpus=BUILTIN_WEB_SEARCH_CORPUS)


@dataclass
class ExecutorEnv:
    """An executor and what it is built from, without a gRPC server."""

    registry: ToolRegistry
    store: ToolSettingsStore
    executor: ToolExecutor
    workers: ToolWorkerPool


@pytest_asyncio.fixture
async def make_executor(
    tmp_path: Path, plugin_dir: Path, context: ToolContext
) -> AsyncIterator[Callable[..., Awaitable[ExecutorEnv]]]:
    """Build executors over tmp_path's DB and plugin folder with a chosen time limit and worker pool; their
    workers are stopped afterwards."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'executor.db'}")
    store = ToolSettingsStore(database)
    await store.migrate()
    pools: list[ToolWorkerPool] = []

    async def build(
        timeout_seconds: float = 5.0,
        *,
        workers: int = 1,
        memory_bytes: int | None = 512 * 1024 * 1024,
        cpu_seconds: int | None = 20,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> ExecutorEnv:
        registry = ToolRegistry([plugin_dir])
        config = WorkerConfig((plugin_dir,), context, max_result_bytes, memory_bytes, cpu_seconds)
        pool = ToolWorkerPool(config, workers)
        pools.append(pool)
        await pool.start()
        return ExecutorEnv(registry, store, ToolExecutor(registry, store, pool, timeout_seconds), pool)

    yield build
    for pool in pools:
        await pool.close()
    await database.dispose()


@dataclass
class RunningTools:
    """A started tools service and a stub connected to it."""

    app: ToolsApp
    #: ToolService and ToolExecutionService (tests.support.stubs).
    stub: Any


@pytest_asyncio.fixture
async def service(make_settings: SettingsFactory) -> AsyncIterator[RunningTools]:
    """The tools service on a free port, with a channel that is closed afterwards."""
    app = await start_tools(make_settings())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield RunningTools(app, tools_stubs(channel))
    finally:
        await channel.close()
        await app.stop()


# --- the file_io tests' workspaces (test_file_io*.py) ---------------------------------------------------------------


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with openat2, then with the O_NOFOLLOW walk."""
    if request.param == "openat2" and not OPENAT2:
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(beneath, "use_openat2", request.param == "openat2")
    return str(request.param)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return make_box(tmp_path / "box")


# --- the tool workers' tests (test_worker_pool.py, test_worker_pool_health.py) --------------------------------------


# Not autouse: the other tools tests must not find these misbehaving tools; the worker tests ask for it with
# `pytestmark = pytest.mark.usefixtures("pool_tools")`.
@pytest.fixture
def pool_tools(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "pool_tools.py", POOL_TOOLS)


# --- the servers the HTTP tools and MCP sources reach (http_tools/, mcp_sources/, test_secrets_at_rest.py) --------


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """The test HTTP server on a free port of 127.0.0.1, stopped afterwards."""
    async with serving_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(server_files(tmp_path / "http"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stdio_files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path / "stdio")
