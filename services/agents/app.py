"""Start and stop the agents service: database (migrated), the tools service's channel, the model endpoint's
catalog and the gRPC server, which serves the agents (AgentRegistryService) and the workflows
(WorkflowRegistryService) on one port."""

from dataclasses import dataclass

import grpc

from agentplatform.agents.v1 import agents_pb2_grpc, workflows_pb2_grpc
from services.agents.clients import ToolIdsClient
from services.agents.model_catalog import ModelCatalog
from services.agents.models import MIGRATIONS, VERSION_TABLE
from services.agents.registry import AgentRegistry
from services.agents.servicer import AgentRegistryServicer
from services.agents.settings import AgentsSettings
from services.agents.store import AgentStore
from services.agents.workflows.registry import WorkflowRegistry
from services.agents.workflows.servicer import WorkflowRegistryServicer
from services.agents.workflows.store import WorkflowStore
from services.common.auth import Authenticator
from services.common.db.database import Database
from services.common.pages import PageTokens
from services.common.rpc.channels import dial
from services.common.rpc.server import RunningServer, ServiceBinding, start_server

SERVICE_NAME = "agentplatform.agents.v1.AgentRegistryService"
WORKFLOWS_SERVICE_NAME = "agentplatform.agents.v1.WorkflowRegistryService"


@dataclass
class AgentsApp:
    """A running agents service and the resources it owns."""

    server: RunningServer
    database: Database
    registry: AgentRegistry
    workflows: WorkflowRegistry
    tools_channel: grpc.aio.Channel
    models: ModelCatalog | None

    @property
    def port(self) -> int:
        """The port the gRPC server bound (useful when the settings asked for 0)."""
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop serving (in-flight RPCs get `grace` seconds), then close the channels and the database."""
        try:
            await self.server.stop(grace)
        finally:
            await self.tools_channel.close()
            if self.models is not None:
                await self.models.close()
            await self.database.dispose()


async def start_agents(settings: AgentsSettings) -> AgentsApp:
    """Bring the agents schema up to date and serve AgentRegistryService and WorkflowRegistryService on
    settings.host:settings.port."""
    auth = Authenticator.from_settings(settings)
    database = Database(settings.database_url)
    channel = dial(settings.tools_addr)
    models = None
    if settings.llm_base_url:
        models = ModelCatalog(
            settings.llm_base_url,
            settings.llm_api_key.get_secret_value(),
            settings.models_cache_seconds,
            settings.models_timeout_seconds,
        )
    try:
        await database.migrate(MIGRATIONS, version_table=VERSION_TABLE)
        tools = ToolIdsClient(channel, settings.tools_timeout_seconds, settings.service_token.get_secret_value())
        page_tokens = PageTokens.from_settings(settings)
        registry = AgentRegistry(AgentStore(database, page_tokens), settings, tools, models)
        servicer = AgentRegistryServicer(registry)
        # Workflows read agents through the same registry, so an agent node names an agent its caller can read.
        workflows = WorkflowRegistry(WorkflowStore(database, page_tokens), settings, registry, tools)
        workflows_servicer = WorkflowRegistryServicer(workflows)

        def register(server: grpc.aio.Server) -> None:
            agents_pb2_grpc.add_AgentRegistryServiceServicer_to_server(servicer, server)

        def register_workflows(server: grpc.aio.Server) -> None:
            workflows_pb2_grpc.add_WorkflowRegistryServiceServicer_to_server(workflows_servicer, server)

        bindings = [ServiceBinding(SERVICE_NAME, register), ServiceBinding(WORKFLOWS_SERVICE_NAME, register_workflows)]
        server = await start_server(bindings, settings.host, settings.port, auth)
    except BaseException:
        await channel.close()
        if models is not None:
            await models.close()
        await database.dispose()
        raise
    return AgentsApp(server, database, registry, workflows, channel, models)
