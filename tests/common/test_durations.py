"""Durations and Timestamps a caller sends are held to protobuf's own rules (duration.proto, timestamp.proto): out of
range or of mixed signs is INVALID_ARGUMENT naming the field, never accepted and normalised, never INTERNAL. The
checks (services/common/rpc/protoconv.py) and every place a caller sets one, through the real services."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.errors import InvalidArgument
from services.common.rpc.protoconv import check_duration, datetime_from_timestamp, seconds_from_duration
from tests.agents.workflow_helpers import every_kind, find
from tests.runs.helpers import EXECUTOR, create_request
from tests.support.platform import start_registries
from tests.support.stubs import runs_stubs

MAX = 315_576_000_000
#: (seconds, nanos, what the refusal says after the field's name)
BAD_DURATIONS = [
    (1, -1, ": seconds (1) and nanos (-1) must have the same sign"),
    (-1, 1, ": seconds (-1) and nanos (1) must have the same sign"),
    (0, 1_000_000_000, ".nanos must be within +-999,999,999"),
    (0, -1_000_000_000, ".nanos must be within +-999,999,999"),
    (5, 2**31 - 1, ".nanos must be within"),
    (MAX + 1, 0, ".seconds must be within +-315,576,000,000"),
    (-MAX - 1, 0, ".seconds must be within +-315,576,000,000"),
    (2**63 - 1, 0, ".seconds must be within"),
]
BAD_IDS = [f"{seconds},{nanos}" for seconds, nanos, _ in BAD_DURATIONS]


@pytest.mark.parametrize(("seconds", "nanos", "says"), BAD_DURATIONS, ids=BAD_IDS)
def test_a_duration_protobuf_refuses_is_invalid_argument_naming_the_field(seconds: int, nanos: int, says: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        seconds_from_duration(duration_pb2.Duration(seconds=seconds, nanos=nanos), "limits.max_duration")
    assert str(caught.value).startswith("limits.max_duration" + says), str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [(0, 0, 0.0), (1, 500_000_000, 1.5), (-1, -500_000_000, -1.5), (0, -999_999_999, -0.999999999), (MAX, 999_999_999,
     MAX + 0.999999999), (-MAX, -999_999_999, -MAX - 0.999999999)],
)
def test_a_duration_within_the_rules_is_its_seconds(seconds: int, nanos: int, expected: float) -> None:
    assert seconds_from_duration(duration_pb2.Duration(seconds=seconds, nanos=nanos), "d") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(-62_135_596_801, 0), (253_402_300_800, 0), (0, -1), (0, 1_000_000_000), (2**63 - 1, 0)]
)
def test_a_timestamp_protobuf_refuses_is_invalid_argument(seconds: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument, match=r"^expire_time\.(seconds|nanos) must be within"):
        datetime_from_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), "expire_time")
    check_duration(duration_pb2.Duration(seconds=1, nanos=1), "fine")


@pytest.fixture
async def stubs(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The runs service (its internal ExecutionService too) and the agents service, with its tools service."""
    async with start_registries(tmp_path) as services:
        runs_channel, agents_channel = services.runs_channel, services.agents_channel
        yield {
            "runs": runs_stubs(runs_channel),
            "agents": agents_pb2_grpc.AgentRegistryServiceStub(agents_channel),
            "workflows": workflows_pb2_grpc.WorkflowRegistryServiceStub(agents_channel),
        }


async def _refused(call: Any, field: str, says: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert (caught.value.details() or "").startswith(field + says), caught.value.details()


@pytest.mark.parametrize(("seconds", "nanos", "says"), BAD_DURATIONS, ids=BAD_IDS)
async def test_every_duration_a_caller_sets_is_checked(
    stubs: dict[str, Any], seconds: int, nanos: int, says: str
) -> None:
    bad = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    agents, workflows, runs = stubs["agents"], stubs["workflows"], stubs["runs"]
    agent = agents_pb2.Agent(display_name="a", model="m", limits=runs_pb2.RunLimits(max_duration=bad))
    await _refused(agents.CreateAgent(agents_pb2.CreateAgentRequest(agent=agent)), "agent.limits.max_duration", says)
    workflow = every_kind()
    workflow.limits.max_duration.CopyFrom(bad)
    await _refused(
        workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow)),
        "workflow.limits.max_duration", says,
    )
    workflow = every_kind()
    find(workflow, "approve").approval.timeout.CopyFrom(bad)
    await _refused(
        workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow)),
        "workflow.nodes[7].approval.timeout", says,
    )

    # The runs service's internal API: what an engine sends.
    request = create_request()
    request.lease_duration.CopyFrom(bad)
    await _refused(runs.CreateRun(request), "lease_duration", says)
    await _refused(runs.CreateRun(create_request(limits=runs_pb2.RunLimits(max_duration=bad))), "limits.max_duration",
                   says)
    run = await runs.CreateRun(create_request())
    step = runs_pb2.Step(agent_response=runs_pb2.AgentResponse(text="hi"), duration=bad)
    await _refused(runs.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[step])),
                   "steps[0].duration", says)
    step = runs_pb2.Step(model_call=runs_pb2.ModelCall(latency=bad), agent_response=runs_pb2.AgentResponse(text="hi"))
    await _refused(runs.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[step])),
                   "steps[0].model_call.latency", says)
    resume = execution_pb2.ResumeRunRequest(run_id=run.id, executor_id=EXECUTOR, lease_duration=bad)
    await _refused(runs.ResumeRun(resume), "lease_duration", says)


async def test_an_approval_expire_time_out_of_range_is_invalid_argument(stubs: dict[str, Any]) -> None:
    runs = stubs["runs"]
    run = await runs.CreateRun(create_request())
    for seconds, nanos in ((253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (2**63 - 1, 0)):
        step = runs_pb2.Step(approval_request=runs_pb2.ApprovalRequest(
            prompt="ok?", expire_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
        ))
        await _refused(
            runs.AwaitApproval(execution_pb2.AwaitApprovalRequest(run_id=run.id, executor_id=EXECUTOR, step=step)),
            "step.approval_request.expire_time", "",
        )
    assert (await runs.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).state == runs_pb2.RUN_STATE_RUNNING
