"""The gRPC face of the agents service (agentplatform.agents.v1.AgentRegistryService): protos in, records to the
registry, protos out. Every method acts for the caller (services.common.identity.current_caller) on their own
agents; domain problems are raised as `services.common.errors` exceptions, which the server interceptor maps."""

import grpc
from google.protobuf import empty_pb2

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from services.agents import convert
from services.agents.registry import AgentRegistry
from services.common.identity import current_caller


class AgentRegistryServicer(agents_pb2_grpc.AgentRegistryServiceServicer):
    """agentplatform.agents.v1.AgentRegistryService over an AgentRegistry."""

    def __init__(self, registry: AgentRegistry) -> None:
        self._registry = registry

    async def CreateAgent(
        self, request: agents_pb2.CreateAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.Agent:
        spec = convert.spec_from_proto(request.agent)
        record = await self._registry.create_agent(current_caller(), spec, context.time_remaining())
        return convert.agent_to_proto(record)

    async def GetAgent(
        self, request: agents_pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.Agent:
        record = await self._registry.get_agent(current_caller(), request.agent_id, request.revision)
        return convert.agent_to_proto(record)

    async def ListAgents(
        self, request: agents_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.ListAgentsResponse:
        records, next_token = await self._registry.list_agents(
            current_caller(), request.page_size, request.page_token, request.name_contains
        )
        return agents_pb2.ListAgentsResponse(
            agents=[convert.agent_to_proto(record) for record in records], next_page_token=next_token
        )

    async def UpdateAgent(
        self, request: agents_pb2.UpdateAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.Agent:
        record = await self._registry.update_agent(
            current_caller(),
            request.agent.id,
            convert.spec_from_proto(request.agent),
            list(request.update_mask.paths),
            context.time_remaining(),
        )
        return convert.agent_to_proto(record)

    async def DeleteAgent(
        self, request: agents_pb2.DeleteAgentRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._registry.delete_agent(current_caller(), request.agent_id)
        return empty_pb2.Empty()

    async def ListAgentRevisions(
        self, request: agents_pb2.ListAgentRevisionsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.ListAgentRevisionsResponse:
        records, next_token = await self._registry.list_revisions(
            current_caller(), request.agent_id, request.page_size, request.page_token
        )
        return agents_pb2.ListAgentRevisionsResponse(
            revisions=[convert.agent_to_proto(record) for record in records], next_page_token=next_token
        )
