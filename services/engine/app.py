"""Assembles the engine: clients of the model, runs and tools, the agent loop and its gRPC server."""

from dataclasses import dataclass

import grpc
import openai

from agentplatform.engine.v1 import engine_pb2_grpc
from services.common.server import RunningServer, ServiceBinding, start_server
from services.engine.agent_loop import AgentLoop
from services.engine.clients import RunsClient, ToolsClient
from services.engine.model_client import ModelClient
from services.engine.servicer import AgentServicer
from services.engine.settings import EngineSettings

SERVICE_NAME = "agentplatform.engine.v1.AgentService"


@dataclass
class EngineApp:
    server: RunningServer
    loop: AgentLoop
    model: ModelClient
    channels: tuple[grpc.aio.Channel, ...]

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop serving, let interrupted runs record their end, then close the clients."""
        await self.server.stop(grace)
        await self.loop.wait_for_active_runs(timeout=5)
        for channel in self.channels:
            await channel.close()
        await self.model.close()


async def start_engine(settings: EngineSettings) -> EngineApp:
    runs_channel = grpc.aio.insecure_channel(settings.runs_address)
    tools_channel = grpc.aio.insecure_channel(settings.tools_address)
    model = ModelClient(
        openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
        )
    )
    loop = AgentLoop(
        RunsClient(runs_channel, settings.call_timeout_seconds),
        ToolsClient(tools_channel, settings.call_timeout_seconds, settings.tool_timeout_seconds),
        model,
        settings,
    )
    servicer = AgentServicer(loop)
    server = await start_server(
        [ServiceBinding(SERVICE_NAME, lambda s: engine_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        settings.host,
        settings.port,
    )
    return EngineApp(server, loop, model, (runs_channel, tools_channel))
