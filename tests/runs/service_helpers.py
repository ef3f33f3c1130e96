"""Helpers of the RunService tests over real gRPC (test_service, test_service_listing, test_service_watch):
the stub's calls the tests repeat, reading watch streams, and callers with API keys."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common.auth import digest, new_api_key
from services.common.identity import SERVICE_TOKEN_KEY
from tests.runs.helpers import create_request

Stub = runs_pb2_grpc.RunServiceStub

#: How long a test waits for an event that should come at once.
PROMPTLY = 2.0


async def create_run(stub: Stub, query: str = "what is 5 + 10?", **fields: Any) -> runs_pb2.Run:
    return await stub.CreateRun(create_request(query, **fields))


async def append(stub: Stub, run_id: str, *steps: runs_pb2.Step) -> list[runs_pb2.Step]:
    response = await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run_id, steps=steps))
    return list(response.steps)


async def finish(
    stub: Stub, run_id: str, state: int = runs_pb2.RUN_STATE_COMPLETED, code: str = "", message: str = ""
) -> runs_pb2.Run:
    request = execution_pb2.FinishRunRequest(run_id=run_id, state=state, error_code=code, error_message=message)
    return await stub.FinishRun(request)


async def next_event(events: AsyncIterator[runs_pb2.RunEvent]) -> runs_pb2.RunEvent:
    """The next event of a watch stream that is not a heartbeat."""
    while True:
        event = await asyncio.wait_for(anext(events), PROMPTLY)
        if event.WhichOneof("event") != "heartbeat":
            return event


async def rest_of(call: grpc.aio.UnaryStreamCall) -> list[runs_pb2.RunEvent]:
    """The remaining events of a watch stream but heartbeats (it must end)."""
    return [event async for event in call if event.WhichOneof("event") != "heartbeat"]


def calculator_call(sequence: int = 0) -> runs_pb2.Step:
    params = struct_pb2.Struct()
    params.update({"operation": "add", "x": 5, "y": 10})
    return runs_pb2.Step(
        sequence=sequence,
        tool_call=runs_pb2.ToolCall(tool_name="calculator", tool_call_id="call_1", params=params),
    )


# --- callers with API keys (test_ownership, test_scores: the `secured` and `keyed_stub` fixtures of conftest) ----

ALICE, BOB, ADMIN, TOKEN = new_api_key(), new_api_key(), new_api_key(), "service-secret"
#: AUTH_API_KEYS of a runs server that knows the three: alice and bob users, root an admin.
API_KEYS = f"alice:user:{digest(ALICE)},bob:user:{digest(BOB)},root:admin:{digest(ADMIN)}"
SERVICE = ((SERVICE_TOKEN_KEY, TOKEN),)


def as_(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def create_for(stub: Any, owner: str) -> runs_pb2.Run:
    """A run created as the engine creates it: over the internal API, with the service token."""
    return await stub.CreateRun(create_request(owner=owner), metadata=SERVICE)


async def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code()
