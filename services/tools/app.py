"""Assembles the tools service: database, replica notifications, MCP servers, HTTP tools, registry, worker pool,
catalog, executor and the gRPC server."""

import asyncio
import logging
from dataclasses import dataclass

import grpc

from agentplatform.tools.internal.v1 import execution_pb2_grpc
from agentplatform.tools.v1 import tools_pb2_grpc
from services.common.auth import Authenticator
from services.common.db.database import Database
from services.common.db.notifications import Notifications, notifications_for
from services.common.pages import PageTokens
from services.common.rpc.server import RunningServer, ServiceBinding, start_server
from services.common.rpc.serving import Readiness, serve_while
from services.common.settings import SettingsError
from services.tools import metrics
from services.tools.base import ToolContext
from services.tools.catalog import ToolCatalog
from services.tools.execution_servicer import SERVICE_NAME as EXECUTION_SERVICE_NAME
from services.tools.execution_servicer import ToolExecutionServicer
from services.tools.executor import ToolExecutor
from services.tools.http.sources import HttpToolSource
from services.tools.http.specs import HttpToolStore
from services.tools.mcp.servers import McpServerStore
from services.tools.mcp.sources import McpSources
from services.tools.registry import ToolRegistry
from services.tools.replicas import HTTP_TOOL, MCP_SERVER, TOOL_SETTINGS, ReplicaChanges
from services.tools.secret_codec import SecretsUnreadable, use_codec
from services.tools.secrets import seal_stored_secrets
from services.tools.servicer import SERVICE_NAME, ToolServicer
from services.tools.settings import ToolsSettings
from services.tools.tool_settings import ToolSettingsStore
from services.tools.workers.pool import ToolWorkerPool
from services.tools.workers.protocol import WorkerConfig

log = logging.getLogger(__name__)


@dataclass
class ToolsApp:
    """A running tools service and the resources it holds."""

    server: RunningServer
    database: Database
    registry: ToolRegistry
    catalog: ToolCatalog
    executor: ToolExecutor
    workers: ToolWorkerPool
    mcp: McpSources
    http_tools: HttpToolSource
    #: How this replica hears the others' settings changes (nothing to hear on SQLite).
    notifications: Notifications
    #: Follows the notifications connection into the health status.
    health_watch: asyncio.Task[None]

    @property
    def port(self) -> int:
        """The port the gRPC server bound (useful when the settings asked for 0)."""
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop serving (letting in-flight RPCs finish for `grace` s), then kill the tool workers (whatever they are
        stuck in, at once: nobody waits for their results any more), close the MCP sessions (stopping stdio
        servers' processes) and close the database."""
        try:
            await self.server.stop(grace)
        finally:
            self.health_watch.cancel()
            await asyncio.gather(self.health_watch, return_exceptions=True)
            try:
                await asyncio.gather(
                    self.workers.close(), self.mcp.close(), self.http_tools.close(), self.notifications.close()
                )
            finally:
                await self.database.dispose()


async def start_tools(settings: ToolsSettings) -> ToolsApp:
    """Create the settings table if needed, discover the tools, start the tool workers and serve ToolService
    (public) and ToolExecutionService (internal) on settings.host:port. Raises WorkerStartError when not one tool
    worker can start (a memory limit too small for Python itself, no processes left): better an exit that says
    so than a service that is up and can run nothing."""
    auth = Authenticator.from_settings(settings)
    codec = settings.secret_codec()
    database = Database(settings.database_url)
    use_codec(database, codec)
    notifications = notifications_for(settings.database_url)
    changes = ReplicaChanges(notifications)
    try:
        store = ToolSettingsStore(database, changes.announcer(TOOL_SETTINGS))
        await store.migrate()
        try:
            sealed = await seal_stored_secrets(database, codec)
        except SecretsUnreadable as exc:
            raise SettingsError(str(exc)) from None
        if sealed.encrypted:
            log.info("encrypted %d secret(s) an earlier version stored in plain text", sealed.encrypted)
        page_tokens = PageTokens.from_settings(settings)
        mcp = McpSources(
            McpServerStore(database, changes.announcer(MCP_SERVER)),
            destinations=settings.mcp_destinations(),
            ping_seconds=settings.mcp_ping_seconds,
            connect_seconds=settings.mcp_connect_seconds,
            sync_seconds=settings.mcp_sync_seconds,
            retry_max_seconds=settings.mcp_retry_max_seconds,
            page_tokens=page_tokens,
        )
        metrics.TOOLS_PARTS.watch_mcp(mcp)
        http_tools = HttpToolSource(
            HttpToolStore(database, changes.announcer(HTTP_TOOL)),
            settings.http_destinations(),
            timeout_seconds=settings.timeout_seconds,
            max_result_bytes=settings.max_result_bytes,
            sync_seconds=settings.http_sync_seconds,
        )
        changes.follow(TOOL_SETTINGS, store.forget)
        changes.follow(MCP_SERVER, mcp.changed)
        changes.follow(HTTP_TOOL, http_tools.changed)
        # Listening before the first reads below: a change committed after them is heard.
        await notifications.start()
        registry = ToolRegistry(settings.plugin_dirs, sources=[mcp, http_tools])
        registry.refresh()
        context = ToolContext(
            workspace=settings.workspace.resolve(),
            web_search_corpus=settings.web_search_corpus.resolve(),
            workspace_max_bytes=settings.workspace_max_bytes,
            workspace_max_files=settings.workspace_max_files,
            workspace_shared=settings.workspace_shared,
            web_search_backend=settings.web_search_backend,
            web_search_url=settings.web_search_url.strip(),
            web_search_api_key=settings.web_search_api_key.get_secret_value().strip(),
            web_search_timeout_seconds=settings.web_search_timeout_seconds,
        )
        workers = ToolWorkerPool(worker_config(settings, context), settings.workers, settings.workers_per_tool)
        metrics.TOOLS_PARTS.watch_pool(workers)
        await workers.start()
        try:
            # Connects in the background: a server that is away does not hold up the start.
            await mcp.start()
            await http_tools.start()
            executor = ToolExecutor(
                registry,
                store,
                workers,
                settings.timeout_seconds,
                context=context,
                max_result_bytes=settings.max_result_bytes,
            )
            catalog = ToolCatalog(registry, store, executor.usage, context, http_tools, page_tokens)
            public = ToolServicer(catalog, mcp, http_tools.destinations)
            execution = ToolExecutionServicer(executor)

            def register_public(server: grpc.aio.Server) -> None:
                tools_pb2_grpc.add_ToolServiceServicer_to_server(public, server)

            def register_execution(server: grpc.aio.Server) -> None:
                execution_pb2_grpc.add_ToolExecutionServiceServicer_to_server(execution, server)

            bindings = [
                ServiceBinding(SERVICE_NAME, register_public),
                ServiceBinding(EXECUTION_SERVICE_NAME, register_execution),
            ]
            running = await start_server(bindings, settings.host, settings.port, auth)
        except BaseException:
            await asyncio.gather(workers.close(), mcp.close(), http_tools.close())
            raise
    except BaseException:
        await notifications.close()
        await database.dispose()
        raise
    # SERVING while the tool workers can run tools (without them the catalog still answers, but the service cannot do
    # its job: out of balancing, and restarted by liveness if it lasts) and this replica hears the others' changes.
    readiness = Readiness(running.health, running.service_names)
    workers.set_health_listener(lambda serving: readiness.report("tool workers", serving))
    health_watch = asyncio.create_task(serve_while(notifications, readiness), name="notifications health")
    return ToolsApp(
        running, database, registry, catalog, executor, workers, mcp, http_tools, notifications, health_watch
    )


def worker_config(settings: ToolsSettings, context: ToolContext) -> WorkerConfig:
    """What each tool worker gets from the settings."""
    return WorkerConfig(
        plugin_dirs=tuple(folder.resolve() for folder in settings.plugin_dirs),
        context=context,
        max_result_bytes=settings.max_result_bytes,
        memory_bytes=settings.worker_memory_mb * 1024 * 1024,
        cpu_seconds=settings.worker_cpu_seconds,
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        log_format=settings.log_format,
    )
