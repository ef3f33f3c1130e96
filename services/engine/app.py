"""Assembles the engine: clients of the model, runs and tools, the agent loop, the run scheduler with its lease
renewals and its link to the run store, and the gRPC server."""

import asyncio
import uuid
from dataclasses import dataclass

import grpc
import httpx2
import openai

from agentplatform.engine.v1 import engine_pb2_grpc
from services.common.auth import Authenticator
from services.common.rpc.channels import dial
from services.common.rpc.server import RunningServer, ServiceBinding, start_server
from services.common.step_delta import StepDelta
from services.engine import metrics
from services.engine.execution.run_executor import RunExecutor
from services.engine.execution.scheduler import RECORD_END_SECONDS, RunScheduler
from services.engine.loop.agent_loop import AgentLoop
from services.engine.loop.model_client import ModelClient
from services.engine.servicer import AgentServicer
from services.engine.settings import EngineSettings
from services.engine.upstream.agents_client import AgentsClient
from services.engine.upstream.executor_link import ExecutorLink
from services.engine.upstream.runs_client import RunsClient
from services.engine.upstream.tools_client import ToolsClient
from services.engine.workflows.runner import WorkflowRunner

SERVICE_NAME = "agentplatform.engine.v1.AgentService"


@dataclass
class EngineApp:
    server: RunningServer
    scheduler: RunScheduler
    link: ExecutorLink
    model: ModelClient
    channels: tuple[grpc.aio.Channel, ...]

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop taking runs (health NOT_SERVING), hand queued ones back to the store, give running ones `grace`
        seconds to finish and hand the rest back (scheduler.py `shutdown`), then stop serving and close the
        clients."""
        await self.server.health.enter_graceful_shutdown()
        # The server stops taking calls now, not after the runs: a chat sent meanwhile is refused before it starts
        # (REFUSED_STREAM, a closed port), which Envoy and balanced clients send to another engine, where an
        # answer "shutting down, retry" from here would reach the client. Calls in flight carry on: the runs'
        # grace, the time to hand back those that outlast it, and a second for followers to flush; a StreamChat
        # whose run was handed back follows it in the store meanwhile, and its client re-attaches after.
        stopping = asyncio.ensure_future(self.server.server.stop(grace + RECORD_END_SECONDS + 1.0))
        await self.scheduler.shutdown(grace)
        await stopping
        await self.link.stop()
        for channel in self.channels:
            await channel.close()
        await self.model.close()


#: The run store's answers can be larger than gRPC's default 4 MiB a message: a run resumed after an approval, or
#: a thread's earlier turns, come with all their steps (each up to RUNS_MAX_STEP_BYTES). What the engine sends the
#: store stays within the store's default limit (services/engine/upstream/executor_link.py MAX_MESSAGE_BYTES).
MAX_RUNS_ANSWER_BYTES = 256 * 1024 * 1024

#: Connections one HTTP client to the model endpoint holds at most. The client's pool looks through all of its
#: connections on every request and response, so one pool of a thousand cost a fifth of the engine's CPU with a
#: thousand runs at once; the engine shares its connections out over several clients of this size instead.
CONNECTIONS_PER_MODEL_CLIENT = 64


def _model_clients(settings: EngineSettings) -> list[openai.AsyncOpenAI]:
    """Clients of the model endpoint with one connection per run executing between them: the SDK's default pool
    (1,000, of which 100 kept alive) would make runs wait for a connection and reconnect for most calls under
    load."""
    count = -(-settings.max_concurrent_runs // CONNECTIONS_PER_MODEL_CLIENT)
    size = -(-settings.max_concurrent_runs // count)
    # One TLS context for them all, the one each would build for itself (verify=True): every context loads the CA
    # bundle, about 0.8 MiB apiece, so sixteen of their own were 12 MiB of an engine at rest (issue 22).
    tls = httpx2.create_ssl_context()
    return [
        openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            http_client=openai.DefaultAsyncHttpxClient(
                verify=tls,
                limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size),
                # Every attempt's answer, the SDK's retries included: they happen inside one call of the SDK.
                event_hooks={"response": [_count_model_response]},
            ),
        )
        for _ in range(count)
    ]


async def _count_model_response(response: httpx2.Response) -> None:
    metrics.MODEL_ENDPOINT_RESPONSES.labels(str(response.status_code)).inc()


async def start_engine(settings: EngineSettings) -> EngineApp:
    auth = Authenticator.from_settings(settings)
    runs_channel = dial(settings.runs_address, max_receive_bytes=MAX_RUNS_ANSWER_BYTES)
    tools_channel = dial(settings.tools_address)
    agents_channel = dial(settings.agents_address)
    model = ModelClient(_model_clients(settings))
    token = settings.service_token.get_secret_value()
    runs = RunsClient(
        runs_channel, settings.call_timeout_seconds, settings.store_outage_seconds, token, settings.max_step_bytes
    )
    tools = ToolsClient(
        tools_channel, settings.call_timeout_seconds, settings.tool_timeout_seconds, token, settings.tools_cache_seconds
    )

    executor_id = f"engine-{uuid.uuid4().hex[:12]}"
    link = ExecutorLink(runs, executor_id)
    runs.write_through(link)

    def send_delta(delta: StepDelta) -> None:
        link.send_delta(delta)  # for the run's watchers in the store
        scheduler.publish_delta(delta)  # for the StreamChat following it here

    loop = AgentLoop(runs, tools, model, settings, send_delta)
    agents = AgentsClient(agents_channel, settings.call_timeout_seconds, token)
    workflows = WorkflowRunner(loop, runs, tools, agents)
    scheduler = RunScheduler(runs, agents, RunExecutor(runs, agents, loop, workflows, settings, executor_id), settings)
    link.start(on_cancel=scheduler.cancel, on_resume=scheduler.resume)
    scheduler.start_lease_renewals()

    servicer = AgentServicer(scheduler, runs, settings.watch_heartbeat_seconds)
    server = await start_server(
        [ServiceBinding(SERVICE_NAME, lambda s: engine_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        settings.host,
        settings.port,
        auth,
    )
    return EngineApp(server, scheduler, link, model, (runs_channel, tools_channel, agents_channel))
