"""Numbers the run store cannot keep: a Struct's binary form carries NaN and infinities, which JSON (and so the
store) has no form for. Whatever a caller sends, unary or over an engine's link, the store answers
INVALID_ARGUMENT naming the field, never INTERNAL, on SQLite and on PostgreSQL, and the link goes on serving."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import text

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database
from services.runs.app import RunsApp, start_runs
from services.runs.models import Base
from tests.runs.helpers import EXECUTOR, connect, create_request, eventually, sqlite_url, thought
from tests.support.platform import runs_settings

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
NON_FINITE = [float("inf"), float("-inf"), float("nan")]


@pytest.fixture(params=BACKENDS)
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunsApp]:
    """A runs server on an empty database: a SQLite file, or the session's PostgreSQL server."""
    url = sqlite_url(tmp_path / "runs.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    if request.param == "postgres":
        db = Database(url)
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await db.dispose()
    runs = await start_runs(runs_settings(tmp_path, DATABASE_URL=url))
    yield runs
    await runs.stop()


def struct(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)  # the binary form takes any double
    return message


def hostile_steps(number: float) -> list[tuple[str, runs_pb2.Step]]:
    """Steps with `number` in each place a step carries JSON values, and the field the refusal must name."""
    tool_call = runs_pb2.ToolCall(tool_name="calculator", tool_call_id="c1", params=struct(x=[1, {"y": number}]))
    result = runs_pb2.ToolResult(tool_name="calculator", tool_call_id="c1")
    result.result.number_value = number
    outcome = runs_pb2.NodeOutcome(kind="set_state", assigned=struct(total=number))
    end = runs_pb2.NodeOutcome(kind="end")
    end.output.list_value.values.add().number_value = number
    return [
        ("tool_call.params.x[1].y", runs_pb2.Step(tool_call=tool_call)),
        ("tool_result.result", runs_pb2.Step(tool_result=result)),
        ("node_outcome.assigned.total", runs_pb2.Step(node_outcome=outcome)),
        ("node_outcome.output[0]", runs_pb2.Step(node_outcome=end)),
    ]


@pytest.mark.parametrize("number", NON_FINITE, ids=["inf", "-inf", "nan"])
async def test_appending_a_non_finite_number_is_invalid_argument_naming_the_field(app: RunsApp, number: float) -> None:
    async with connect(app) as stub:
        run = await stub.CreateRun(create_request())
        for field, step in hostile_steps(number):
            step.sequence = 1
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[step]))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
            assert f"step 1 {field} is not a finite number" in (refused.value.details() or "")
        # Nothing was stored, and the run takes honest steps still.
        await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought("fine", 1)]))
        stored = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
        assert [step.WhichOneof("content") for step in stored.steps] == ["agent_thought"]


async def test_create_run_and_await_approval_refuse_non_finite_numbers(app: RunsApp) -> None:
    async with connect(app) as stub:
        [(field, step)] = hostile_steps(float("nan"))[2:3]
        step.sequence = 1
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateRun(create_request(steps=[step]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (refused.value.details() or "")


async def test_a_refused_call_over_the_link_fails_alone_and_the_link_goes_on(app: RunsApp) -> None:
    """Calls of every run share one link: the store's refusal of one answers that call, and the others go on."""
    async with connect(app) as stub:
        hostile = await stub.CreateRun(create_request("hostile"))
        honest = await stub.CreateRun(create_request("honest"))
        link = stub.ConnectExecutor()
        await link.write(execution_pb2.ConnectExecutorRequest(executor_id=EXECUTOR))
        await eventually(lambda: app.store.notices.is_connected(EXECUTOR))
        [(field, step)] = hostile_steps(float("inf"))[:1]
        step.sequence = 1
        for call_id, run_id, content in ((1, hostile.id, step), (2, honest.id, thought("still here", 1))):
            request = execution_pb2.AppendStepsRequest(run_id=run_id, steps=[content])
            await link.write(execution_pb2.ConnectExecutorRequest(
                call=execution_pb2.ExecutorCall(call_id=call_id, append_steps=request)
            ))
        answers = {}
        async with asyncio.timeout(5):
            while len(answers) < 2:
                notice = await link.read()
                if notice.HasField("call_result"):
                    answers[notice.call_result.call_id] = notice.call_result
        assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert f"step 1 {field} is not a finite number" in answers[1].error.message
        assert answers[2].WhichOneof("result") == "append_steps"
        link.cancel()


async def test_the_text_backslash_u0000_is_stored_and_a_real_nul_is_refused(app: RunsApp) -> None:
    """The NUL check reads the JSON text: `\\u0000` written out (as a model quoting JSON does, or an error message
    naming the character) is six plain characters, not a NUL, and a run's error step quoting it must be stored."""
    async with connect(app) as stub:
        run = await stub.CreateRun(create_request())
        quoted = runs_pb2.Step(sequence=1, error=runs_pb2.StepError(code="x", message="a NUL (\\u0000) in \\\\u0000"))
        await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[quoted]))
        for text_with_nul in ("a\x00b", "\\\x00"):
            request = execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought(text_with_nul, 2)])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.AppendSteps(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "NUL" in (refused.value.details() or "")
