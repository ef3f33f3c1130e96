"""Property tests at the run store's boundary and at the engine's boundary with the model: generated JSON-like values
(NaN and infinities, deep nesting, huge strings, odd unicode) in the places a step carries JSON, and generated
tool-call arguments as a model may write them (`NaN`, `Infinity` and `1e999` included, which Python's json reads).

The promises: the store answers OK or INVALID_ARGUMENT (RESOURCE_EXHAUSTED for a message past gRPC's limit), never
INTERNAL, and always INVALID_ARGUMENT for a non-finite number; a run whose model writes such arguments ends at
once, FAILED with a code that says why, never left live and never "internal" or "interrupted"."""

import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database
from services.runs.app import RunsApp, start_runs
from services.runs.models import Base
from tests.engine.run_helpers import start_run, wait_final
from tests.runs.helpers import connect, create_request
from tests.support.platform import Platform, runs_settings, start_platform
from tests.support.scripted_llm import ScriptedLLM, tool_call_reply

SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50) | st.sampled_from(["\u0000", "\ud7ff\U0010ffff", "\u202e", "x" * 300_000])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def nested(value: Any, depth: int) -> Any:
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


DEEP_VALUES = st.builds(nested, VALUES, st.integers(0, 60))


def has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(has_non_finite(item) for item in value)
    return False


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunsApp]:
    """A runs server on SQLite, and on the session's PostgreSQL server (a database of its own)."""
    url = ""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        db = Database(url)
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await db.dispose()
    app = await start_runs(runs_settings(tmp_path, **({"DATABASE_URL": url} if url else {})))
    yield app
    await app.stop()


def steps_holding(value: Any) -> list[runs_pb2.Step]:
    """A step for each place a step holds JSON values, holding `value` (protobuf takes any double in binary)."""
    params = struct_pb2.Struct()
    params.update({"v": value})
    result = struct_pb2.Value()
    result.list_value.values.add().struct_value.CopyFrom(params)
    return [
        runs_pb2.Step(tool_call=runs_pb2.ToolCall(tool_name="t", tool_call_id="c", params=params)),
        runs_pb2.Step(tool_result=runs_pb2.ToolResult(tool_name="t", tool_call_id="c", result=result)),
        runs_pb2.Step(node_outcome=runs_pb2.NodeOutcome(kind="set_state", assigned=params)),
    ]


@given(value=DEEP_VALUES)
async def test_the_store_never_answers_internal_for_a_json_value(store_app: RunsApp, value: Any) -> None:
    try:
        steps = steps_holding(value)
        # A request is a level deeper than its step: protobuf may refuse to build it even when the step was built.
        requests = [execution_pb2.AppendStepsRequest(steps=[step]) for step in steps]
    except DecodeError:  # protobuf itself cannot build it (nested past its limit): there is nothing to send
        assume(False)
        raise
    allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
    async with connect(store_app) as stub:
        run = await stub.CreateRun(create_request())
        for request in requests:
            request.run_id = run.id
            try:
                await stub.AppendSteps(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in allowed, (exc.code(), exc.details())
                if has_non_finite(value):
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert "not a finite number" in (exc.details() or "")
            else:
                assert not has_non_finite(value)


#: Tool-call arguments as a model may write them: JSON with Python's extensions, numbers past a double, deep
#: nesting, and plain garbage.
RAW_ARGUMENTS = (
    VALUES.map(lambda value: json.dumps({"expression": value}, allow_nan=True))
    | st.builds(lambda power, sign: f'{{"x": {sign}1e{power}}}', st.integers(300, 100_000), st.sampled_from(["", "-"]))
    | st.builds(lambda depth: '{"x": ' + "[" * depth + "]" * depth + "}", st.integers(1, 50_000))
    | st.text(max_size=40)
)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[tuple[Platform, ScriptedLLM]]:
    async with ScriptedLLM() as llm, start_platform(tmp_path, llm.base_url) as started:
        yield started, llm


@settings(max_examples=20)
@given(arguments=RAW_ARGUMENTS)
async def test_a_run_ends_promptly_whatever_arguments_the_model_writes(
    platform: tuple[Platform, ScriptedLLM], arguments: str
) -> None:
    running, llm = platform
    # One reply: a run that goes on after the tool asks again and gets the scripted server's HTTP 500 (so no reply
    # is left over for the next example), ending it model_unavailable.
    llm.script(tool_call_reply("calculator", arguments))
    started = time.monotonic()
    run = await start_run(running, "compute")
    final = await wait_final(running, run.id, timeout=20)
    assert time.monotonic() - started < 20
    assert final.state in (runs_pb2.RUN_STATE_COMPLETED, runs_pb2.RUN_STATE_FAILED)
    # step_refused: text the store does not keep (a NUL character in a JSON string), refused by it;
    # step_too_large: arguments longer than a step may be (RUNS_MAX_STEP_BYTES).
    assert final.error_code in ("bad_model_response", "model_unavailable", "step_refused", "step_too_large"), (
        final.error_code, final.error_message
    )
