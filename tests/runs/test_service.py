"""RunService over real gRPC: a runs server on a free port, a real channel and the generated stub.

Creating runs (leases, request ids, bad input), appending and finishing, usage, deleting, run ids, restarts and
SQLite's durability. Listing is in test_service_listing.py, WatchRun in test_service_watch.py."""

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.runs.conftest import StartRuns
from tests.runs.helpers import EXECUTOR, UNKNOWN_RUN, connect, create_request, thought
from tests.runs.service_helpers import Stub, append, calculator_call, create_run, finish, rest_of


async def test_create_append_get_round_trips_steps_in_order(stub: Stub) -> None:
    run = await create_run(stub)
    assert run.state == runs_pb2.RUN_STATE_RUNNING and run.id and run.create_time.seconds > 0
    result = runs_pb2.Step(
        tool_result=runs_pb2.ToolResult(
            tool_name="calculator", tool_call_id="call_1", result=struct_pb2.Value(number_value=15), text="5 + 10 = 15"
        )
    )
    result.duration.FromMilliseconds(3)
    stored = await append(
        stub, run.id, runs_pb2.Step(user_request=runs_pb2.UserRequest(text="what is 5 + 10?")), calculator_call()
    )
    stored += await append(stub, run.id, result, runs_pb2.Step(agent_response=runs_pb2.AgentResponse(text="15")))
    assert [s.sequence for s in stored] == [1, 2, 3, 4]

    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [s.WhichOneof("content") for s in got.steps] == [
        "user_request",
        "tool_call",
        "tool_result",
        "agent_response",
    ]
    assert [s.sequence for s in got.steps] == [1, 2, 3, 4] and got.step_count == 4
    assert json_format.MessageToDict(got.steps[1].tool_call.params) == {"operation": "add", "x": 5, "y": 10}
    assert got.steps[2].tool_result.result.number_value == 15 and got.steps[2].duration.ToMilliseconds() == 3
    assert all(step.run_id == run.id for step in got.steps)


async def test_reappend_is_idempotent_and_conflicts_are_already_exists(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, calculator_call(), thought("adding"))
    [again] = await append(stub, run.id, calculator_call(sequence=1))
    assert again.sequence == 1 and again.tool_call.tool_name == "calculator"
    assert (await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).step_count == 2

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, thought("something else", sequence=2))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "step 2 of run" in exc.value.details() and "already stored with other content" in exc.value.details()


async def test_append_rejects_gaps_finished_runs_and_empty_steps(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, thought("b", sequence=5))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the next sequence is 2" in exc.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, runs_pb2.Step())
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("step 1 has no content; set one of user_request")

    await finish(stub, run.id)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await append(stub, run.id, thought("late"))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == f"run '{run.id}' is completed; steps can only be appended to a RUNNING run"


async def test_finish_run_once_and_failed_needs_a_code_and_a_message(stub: Stub) -> None:
    run = await create_run(stub)
    for state, code, message, expected in [
        (runs_pb2.RUN_STATE_FAILED, "", "", "error_code and error_message are required to finish a run as failed"),
        (runs_pb2.RUN_STATE_FAILED, "model_unavailable", "", "error_code and error_message are required"),
        (runs_pb2.RUN_STATE_FAILED, "", "the model went away", "error_code and error_message are required"),
        (runs_pb2.RUN_STATE_UNSPECIFIED, "", "", "state is required"),
        (runs_pb2.RUN_STATE_RUNNING, "", "", "can only be finished as completed, failed, cancelled"),
        (runs_pb2.RUN_STATE_QUEUED, "", "", "can only be finished as completed, failed, cancelled"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await finish(stub, run.id, state, code, message)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in exc.value.details()

    done = await finish(stub, run.id, runs_pb2.RUN_STATE_FAILED, "model_unavailable", "the model went away")
    assert done.state == runs_pb2.RUN_STATE_FAILED and done.HasField("complete_time")
    assert (done.error_code, done.error_message, done.executor_id) == ("model_unavailable", "the model went away", "")
    again = await finish(stub, run.id, runs_pb2.RUN_STATE_FAILED, "model_unavailable", "the model went away")
    assert again.complete_time == done.complete_time  # a retry, not a second end
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await finish(stub, run.id, runs_pb2.RUN_STATE_CANCELLED, "cancelled", "stop")
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already ended failed (model_unavailable)" in exc.value.details()


async def test_run_usage_is_summed_from_the_steps_model_calls(stub: Stub) -> None:
    run = await create_run(stub)
    assert run.usage.total_tokens == 0
    first = thought("adding")
    first.model_call.usage.prompt_tokens, first.model_call.usage.completion_tokens = 12, 3
    first.model_call.time_to_first_token.FromMilliseconds(150)
    first.model_call.latency.FromMilliseconds(900)
    answer = runs_pb2.Step(agent_response=runs_pb2.AgentResponse(text="15"))
    answer.model_call.usage.prompt_tokens, answer.model_call.usage.completion_tokens = 20, 5
    await append(stub, run.id, first, calculator_call())
    assert (await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).usage.total_tokens == 15  # current mid-run
    await append(stub, run.id, answer)
    done = await finish(stub, run.id)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (32, 8, 40)
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert got.steps[0].model_call.usage.total_tokens == 15
    assert got.steps[0].model_call.time_to_first_token.ToMilliseconds() == 150
    assert got.steps[0].model_call.latency.ToMilliseconds() == 900
    assert not got.steps[1].HasField("model_call") and got.steps[2].model_call.usage.total_tokens == 25


async def test_delete_then_get_is_not_found(stub: Stub) -> None:
    run = await create_run(stub)
    await append(stub, run.id, thought("a"))
    await stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id))
    for call in (
        stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id)),
        stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND and exc.value.details() == f"run '{run.id}' not found"


@pytest.mark.parametrize(
    ("run_id", "code", "expected"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "run_id is required"),
        ("../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT, "run_id '../etc/passwd' is not a valid run id (a UUID)"),
        (UNKNOWN_RUN, grpc.StatusCode.NOT_FOUND, f"run '{UNKNOWN_RUN}' not found"),
    ],
)
async def test_run_ids_are_validated(stub: Stub, run_id: str, code: grpc.StatusCode, expected: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id))
    assert exc.value.code() == code and exc.value.details() == expected
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await rest_of(stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id)))
    assert exc.value.code() == code and exc.value.details() == expected


async def test_steps_survive_a_restart(start_app: StartRuns, tmp_path: Path) -> None:
    database = tmp_path / "persistent.db"
    first = await start_app(database=database)
    async with connect(first) as stub:
        run = await create_run(stub)
        await append(stub, run.id, calculator_call(), thought("b"))
    await first.stop()

    second = await start_app(database=database)
    async with connect(second) as stub:
        got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [s.sequence for s in got.steps] == [1, 2] and got.steps[0].tool_call.params["x"] == 5


async def test_concurrent_appends_take_consecutive_sequences(stub: Stub) -> None:
    run = await create_run(stub)
    responses = await asyncio.gather(*(append(stub, run.id, thought(str(i))) for i in range(10)))
    assert sorted(step.sequence for [step] in responses) == list(range(1, 11))
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
    assert [s.sequence for s in got.steps] == list(range(1, 11)) and got.step_count == 10
    assert sorted(s.agent_thought.text for s in got.steps) == [str(i) for i in range(10)]


# --- creating: leases, request ids, bad input --------------------------------------------------------------


async def test_create_run_needs_an_executor_and_a_lease(stub: Stub) -> None:
    huge_lease = create_request()
    huge_lease.lease_duration.seconds = 2**62
    for request, expected in [
        (create_request(executor_id=""), "executor_id is required and must not be blank"),
        (create_request(lease_seconds=0), "lease_duration must be 1 s to 300 s, got 0 s"),
        (create_request(lease_seconds=301), "lease_duration must be 1 s to 300 s, got 301 s"),
        (create_request(state=runs_pb2.RUN_STATE_FAILED), "a run is created QUEUED or RUNNING, not failed"),
        # Durations beyond what a timedelta or a column holds (once INTERNAL), and beyond protobuf's own range.
        (huge_lease, "lease_duration.seconds must be within +-315,576,000,000 (google.protobuf.Duration), got "
                     "4611686018427387904"),
        (create_request(limits=runs_pb2.RunLimits(max_duration=duration_pb2.Duration(seconds=2**62))),
         "limits.max_duration.seconds must be within +-315,576,000,000 (google.protobuf.Duration), got "
         "4611686018427387904"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.CreateRun(request)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.value.details() == expected
    assert not (await stub.ListRuns(runs_pb2.ListRunsRequest())).runs


async def test_create_run_queued_then_begin_run(stub: Stub) -> None:
    limits = runs_pb2.RunLimits(max_model_calls=4, max_total_tokens=1000)
    limits.max_duration.FromSeconds(90)
    run = await create_run(stub, state=runs_pb2.RUN_STATE_QUEUED, limits=limits)
    assert run.state == runs_pb2.RUN_STATE_QUEUED and not run.HasField("start_time")
    assert run.executor_id == EXECUTOR and run.limits == limits
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.BeginRun(execution_pb2.BeginRunRequest(run_id=run.id, executor_id="engine-2"))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    begun = await stub.BeginRun(execution_pb2.BeginRunRequest(run_id=run.id, executor_id=EXECUTOR))
    assert begun.state == runs_pb2.RUN_STATE_RUNNING and begun.HasField("start_time")
    again = await stub.BeginRun(execution_pb2.BeginRunRequest(run_id=run.id, executor_id=EXECUTOR))
    assert again.start_time == begun.start_time


async def test_create_run_with_a_request_id_is_idempotent(stub: Stub) -> None:
    request_id = "3b241101-e2bb-4255-8caf-4136c566a962"
    first = await create_run(stub, "q", request_id=request_id, metadata={"session": "s1"})
    retried = await create_run(stub, "q", request_id=request_id, metadata={"session": "s1"})
    assert retried.id == first.id
    listed = await stub.ListRuns(runs_pb2.ListRunsRequest())
    assert [run.id for run in listed.runs] == [first.id]  # no second row

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create_run(stub, "another question", request_id=request_id)
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"request_id {request_id} was already used for a different request;" in (exc.value.details() or "")
    assert first.id not in (exc.value.details() or "")  # the first request may have been another user's
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create_run(stub, "q", request_id="attempt-1")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("request_id 'attempt-1' is not a valid")

    concurrent_id = "9a5c3e0e-1d4f-4c8b-a7a1-2f0f6b1d5e77"
    runs = await asyncio.gather(*(create_run(stub, "q", request_id=concurrent_id) for _ in range(5)))
    assert len({run.id for run in runs}) == 1
    assert len((await stub.ListRuns(runs_pb2.ListRunsRequest())).runs) == 2


async def test_bad_create_input_is_invalid_argument(stub: Stub) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"query": "what is\x005 + 10?"}, "user_query contains a NUL character"),
        ({"metadata": {"session": "s\x001"}}, "metadata['session'] contains a NUL character"),
        ({"model": "m" * 201}, "model is 201 characters long; the limit is 200"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata has 17 pairs; at most 16"),
    ]
    for fields, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await create_run(stub, **fields)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, expected
        assert exc.value.details().startswith(expected)
    assert not (await stub.ListRuns(runs_pb2.ListRunsRequest())).runs


async def test_bad_step_input_is_invalid_argument(stub: Stub) -> None:
    run = await create_run(stub)
    for step, expected in [
        (thought("a\x00b"), "step 1 content contains a NUL character"),
        (thought("x" * (1024 * 1024)), "step 1 content is 1048588 bytes as JSON; the limit is 1048576"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await append(stub, run.id, step)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.value.details().startswith(expected)
    assert (await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).step_count == 0


@pytest.mark.parametrize(("setting", "pragma"), [(None, 1), ("FULL", 2)])
async def test_sqlite_durability_is_normal_by_default_and_full_on_request(
    start_app: StartRuns, setting: str | None, pragma: int
) -> None:
    app = await start_app(**({"RUNS_SQLITE_SYNCHRONOUS": setting} if setting else {}))
    async with app.db.engine.connect() as connection:
        assert (await connection.exec_driver_sql("PRAGMA synchronous")).scalar() == pragma
        assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
