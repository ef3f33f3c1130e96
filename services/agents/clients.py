"""The agents service's gRPC client of the tools service: which tools exist, asked on the caller's behalf.

Every call carries the platform's service token and the identity of the user whose agent is being checked
(services.common.identity.on_behalf_of), and a deadline (Python does not propagate them). A failed call
surfaces as the domain error matching its status (services.common.rpc.status), so the registry never sees grpc.
"""

import grpc

from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from services.common import errors
from services.common.identity import Caller, on_behalf_of
from services.common.rpc.status import error_from_rpc

#: Pages a listing may take before the tools service is deemed to misbehave.
MAX_PAGES = 100


class ToolIdsClient:
    """Lists the ids of the tools service's tools (ToolService.ListTools), enabled or not, to check the tools an
    agent names. Not the engine's ToolsClient (services/engine/upstream/tools_client.py), which lists the enabled
    tools' schemas for the model, caches them, and executes tools: the two share the channel
    (services.common.rpc.channels.dial) and the on-behalf-of metadata, and nothing else worth a common base."""

    SERVICE = "tools service"

    def __init__(self, channel: grpc.aio.Channel, timeout: float, service_token: str) -> None:
        self._stub = tools_pb2_grpc.ToolServiceStub(channel)
        self._timeout = timeout
        self._service_token = service_token

    async def tool_ids(self, caller: Caller, time_left: float | None = None) -> set[str]:
        """The ids of every tool, disabled ones included (an agent may name a tool an admin turned off for now;
        the engine offers the model only the enabled ones). `time_left` is what remains of the incoming call's
        deadline, if it has one: the listing must fit in it.

        The tools service unreachable or too slow is Unavailable ("cannot check the agent's tools: ..."); any
        other failure is its own status, with the same prefix.
        """
        timeout = self._timeout if time_left is None else max(0.0, min(self._timeout, time_left))
        metadata = on_behalf_of(caller, self._service_token)
        ids: set[str] = set()
        token = ""
        for _ in range(MAX_PAGES):
            request = tools_pb2.ListToolsRequest(page_token=token)
            try:
                response = await self._stub.ListTools(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc, self.SERVICE)
                if isinstance(error, errors.DeadlineExceeded):
                    error = errors.Unavailable(f"{self.SERVICE}: no answer within {timeout:g} s")
                raise type(error)(f"cannot check the agent's tools: {error}") from exc
            ids.update(tool.id for tool in response.tools)
            token = response.next_page_token
            if not token:
                return ids
        raise errors.Unavailable(f"cannot check the agent's tools: the {self.SERVICE} listed more than "
                                 f"{MAX_PAGES} pages")
