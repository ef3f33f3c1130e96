"""Assembles the tools service: database, registry, catalog, executor and the gRPC server."""

import logging
from dataclasses import dataclass

import grpc

from agentplatform.tools.v1 import tools_pb2_grpc
from services.common.database import Database
from services.common.server import RunningServer, ServiceBinding, start_server
from services.tools.base import ToolContext
from services.tools.catalog import ToolCatalog
from services.tools.executor import ToolExecutor
from services.tools.registry import ToolRegistry
from services.tools.servicer import SERVICE_NAME, ToolServicer
from services.tools.settings import ToolsSettings
from services.tools.tool_settings import ToolSettingsStore

log = logging.getLogger(__name__)


@dataclass
class ToolsApp:
    """A running tools service and the resources it holds."""

    server: RunningServer
    database: Database
    registry: ToolRegistry
    catalog: ToolCatalog
    executor: ToolExecutor

    @property
    def port(self) -> int:
        """The port the gRPC server bound (useful when the settings asked for 0)."""
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop serving (letting in-flight RPCs finish for `grace` s), then close the database."""
        try:
            await self.server.stop(grace)
        finally:
            await self.database.dispose()


async def start_tools(settings: ToolsSettings) -> ToolsApp:
    """Create the settings table if needed, discover the tools and start serving on settings.host:port."""
    database = Database(settings.database_url)
    try:
        store = ToolSettingsStore(database)
        await store.create_schema()
        registry = ToolRegistry(settings.plugin_dirs)
        registry.refresh()
        context = ToolContext(
            workspace=settings.workspace.resolve(), web_search_corpus=settings.web_search_corpus.resolve()
        )
        catalog = ToolCatalog(registry, store)
        executor = ToolExecutor(registry, store, context, settings.timeout_seconds)
        servicer = ToolServicer(catalog, executor)

        def register(server: grpc.aio.Server) -> None:
            tools_pb2_grpc.add_ToolServiceServicer_to_server(servicer, server)

        running = await start_server([ServiceBinding(SERVICE_NAME, register)], settings.host, settings.port)
    except BaseException:
        await database.dispose()
        raise
    return ToolsApp(running, database, registry, catalog, executor)
