"""Two agents replicas on one real PostgreSQL. The agents service keeps no agent or workflow in memory (every call
reads the database; the only cache is the model endpoint's list of models), so it needs no notifications: what
one replica writes the other answers at once, their page tokens are interchangeable (one key, derived from the
service token), and updates through both at once make consecutive revisions, each either applied or refused as a
conflict to send again, never an internal error."""

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from tests.agents.conftest import StartAgents
from tests.agents.helpers import ALICE, agent, as_, status_of

pytestmark = pytest.mark.postgres
ME = as_(ALICE)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_answer_alike_and_make_consecutive_revisions(start_app: StartAgents) -> None:
    first, second = await start_app(), await start_app()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel_b,
    ):
        a = agents_pb2_grpc.AgentRegistryServiceStub(channel_a)
        b = agents_pb2_grpc.AgentRegistryServiceStub(channel_b)

        created = await a.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent("Shared")), metadata=ME)
        assert await b.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME) == created
        for name in ("Second", "Third"):
            await b.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent(name)), metadata=ME)
        page = await a.ListAgents(agents_pb2.ListAgentsRequest(page_size=2), metadata=ME)
        rest = await b.ListAgents(agents_pb2.ListAgentsRequest(page_token=page.next_page_token), metadata=ME)
        assert [x.display_name for x in [*page.agents, *rest.agents]] == ["Second", "Shared", "Third"]

        async def rename(stub: Any, n: int) -> int | None:
            change = agent(f"name {n}")
            change.id = created.id
            request = agents_pb2.UpdateAgentRequest(
                agent=change, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
            )
            try:
                return (await stub.UpdateAgent(request, metadata=ME)).revision  # type: ignore[no-any-return]
            except grpc.aio.AioRpcError as exc:
                # The only refusal two writers may get: a conflict the client sends again.
                assert exc.code() == grpc.StatusCode.ALREADY_EXISTS, exc
                return None

        revisions = await asyncio.gather(*(rename(a if n % 2 else b, n) for n in range(16)))
        applied = sorted(revision for revision in revisions if revision is not None)
        print(f"{len(applied)} of 16 concurrent updates applied")
        assert applied == list(range(2, 2 + len(applied))), "two updates got the same revision, or one was lost"
        latest = await a.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME)
        assert latest == await b.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME)
        assert latest.revision == applied[-1]

        await b.DeleteAgent(agents_pb2.DeleteAgentRequest(agent_id=created.id), metadata=ME)
        code, _ = await status_of(a.GetAgent(agents_pb2.GetAgentRequest(agent_id=created.id), metadata=ME))
        assert code == grpc.StatusCode.NOT_FOUND
