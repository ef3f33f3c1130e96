"""Property: any Duration or Timestamp a caller sets (any int64 seconds, any int32 nanos) is answered OK or
INVALID_ARGUMENT, never INTERNAL; one that protobuf's rules refuse is always INVALID_ARGUMENT naming the field."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.rpc.protoconv import MAX_DURATION_SECONDS, MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS
from tests.runs.helpers import EXECUTOR, create_request
from tests.support.platform import start_registries
from tests.support.stubs import runs_stubs

PROMPTLY = 5.0
_int64 = st.integers(-(2**63), 2**63 - 1)
_int32 = st.integers(-(2**31), 2**31 - 1)
#: Edges and anything: both ends of protobuf's ranges, and the whole of the wire's.
seconds = st.one_of(_int64, st.sampled_from([0, 1, -1, MAX_DURATION_SECONDS, MAX_DURATION_SECONDS + 1,
                                              -MAX_DURATION_SECONDS - 1, MIN_TIMESTAMP_SECONDS - 1,
                                              MAX_TIMESTAMP_SECONDS + 1]), st.integers(-10_000, 10_000))
nanos = st.one_of(_int32, st.sampled_from([0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_000]))


def _duration_valid(value: duration_pb2.Duration) -> bool:
    return (
        abs(value.seconds) <= MAX_DURATION_SECONDS
        and abs(value.nanos) <= 999_999_999
        and not (value.seconds > 0 > value.nanos or value.seconds < 0 < value.nanos)
    )


@pytest.fixture
async def stubs(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with start_registries(tmp_path) as services:
        runs_channel, agents_channel = services.runs_channel, services.agents_channel
        yield {"runs": runs_stubs(runs_channel), "agents": agents_pb2_grpc.AgentRegistryServiceStub(agents_channel)}


async def _answer(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        return error.code()
    return grpc.StatusCode.OK


@given(seconds=seconds, nanos=nanos)
async def test_any_duration_is_ok_or_invalid_argument(stubs: dict[str, Any], seconds: int, nanos: int) -> None:
    duration = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    agent = agents_pb2.Agent(display_name="a", model="m", limits=runs_pb2.RunLimits(max_duration=duration))
    code = await _answer(stubs["agents"].CreateAgent(agents_pb2.CreateAgentRequest(agent=agent), timeout=PROMPTLY))
    request = create_request()
    request.lease_duration.CopyFrom(duration)
    lease_code = await _answer(stubs["runs"].CreateRun(request, timeout=PROMPTLY))
    if not _duration_valid(duration):
        assert code == lease_code == grpc.StatusCode.INVALID_ARGUMENT


@given(seconds=seconds, nanos=nanos)
async def test_any_approval_expire_time_is_ok_or_invalid_argument(
    stubs: dict[str, Any], seconds: int, nanos: int
) -> None:
    runs = stubs["runs"]
    run = await runs.CreateRun(create_request(), timeout=PROMPTLY)
    step = runs_pb2.Step(approval_request=runs_pb2.ApprovalRequest(
        prompt="ok?", expire_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    ))
    request = execution_pb2.AwaitApprovalRequest(run_id=run.id, executor_id=EXECUTOR, step=step)
    code = await _answer(runs.AwaitApproval(request, timeout=PROMPTLY))
    if not (MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS and 0 <= nanos <= 999_999_999):
        assert code == grpc.StatusCode.INVALID_ARGUMENT
