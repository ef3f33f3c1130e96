"""agentplatform-client: the Python SDK of the AI agent platform's public API (gRPC).

    from agentplatform_client import Client

    with Client() as client:                     # AGENTPLATFORM_ADDRESS, AGENTPLATFORM_API_KEY
        result = client.chat("What is 5 + 10, then multiply by 3?")
        print(result.answer)

`AsyncClient` is the same for asyncio. See clients/python/README.md.
"""

from agentplatform_client._rpc import RetryPolicy
from agentplatform_client.aio import AsyncClient, ChatResult, PendingApproval, RunFields
from agentplatform_client.errors import ApiError
from agentplatform_client.follow import FollowPolicy, Reattach
from agentplatform_client.sync import Client

__all__ = [
    "ApiError", "AsyncClient", "ChatResult", "Client", "FollowPolicy", "PendingApproval", "Reattach", "RetryPolicy",
    "RunFields",
]
