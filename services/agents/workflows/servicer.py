"""The gRPC face of the workflows (agentplatform.agents.v1.WorkflowRegistryService): protos in, records to the
registry, protos out. Every method acts for the caller (services.common.identity.current_caller) on their own
workflows; domain problems are raised as `services.common.errors` exceptions, which the server interceptor maps."""

import grpc
from google.protobuf import empty_pb2

from agentplatform.agents.v1 import workflows_pb2, workflows_pb2_grpc
from services.agents.workflows import convert
from services.agents.workflows.registry import WorkflowRegistry
from services.common.identity import current_caller


class WorkflowRegistryServicer(workflows_pb2_grpc.WorkflowRegistryServiceServicer):
    """agentplatform.agents.v1.WorkflowRegistryService over a WorkflowRegistry."""

    def __init__(self, registry: WorkflowRegistry) -> None:
        self._registry = registry

    async def CreateWorkflow(
        self, request: workflows_pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.Workflow:
        spec = convert.spec_from_proto(request.workflow)
        record = await self._registry.create_workflow(current_caller(), spec, context.time_remaining())
        return convert.workflow_to_proto(record)

    async def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.Workflow:
        record = await self._registry.get_workflow(current_caller(), request.workflow_id, request.revision)
        return convert.workflow_to_proto(record)

    async def ListWorkflows(
        self, request: workflows_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.ListWorkflowsResponse:
        records, next_token = await self._registry.list_workflows(
            current_caller(), request.page_size, request.page_token, request.name_contains
        )
        return workflows_pb2.ListWorkflowsResponse(
            workflows=[convert.workflow_to_proto(record) for record in records], next_page_token=next_token
        )

    async def UpdateWorkflow(
        self, request: workflows_pb2.UpdateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.Workflow:
        record = await self._registry.update_workflow(
            current_caller(),
            request.workflow.id,
            convert.spec_from_proto(request.workflow),
            list(request.update_mask.paths),
            context.time_remaining(),
        )
        return convert.workflow_to_proto(record)

    async def DeleteWorkflow(
        self, request: workflows_pb2.DeleteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._registry.delete_workflow(current_caller(), request.workflow_id)
        return empty_pb2.Empty()

    async def ListWorkflowRevisions(
        self, request: workflows_pb2.ListWorkflowRevisionsRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.ListWorkflowRevisionsResponse:
        records, next_token = await self._registry.list_revisions(
            current_caller(), request.workflow_id, request.page_size, request.page_token
        )
        return workflows_pb2.ListWorkflowRevisionsResponse(
            revisions=[convert.workflow_to_proto(record) for record in records], next_page_token=next_token
        )
