"""The executor: enabled check, schema validation messages, time limits, tool failures and result wrapping."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from services.common.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from services.tools.base import ToolOutput
from services.tools.executor import DEFAULT_MAX_RESULT_BYTES, to_tool_output
from tests.tools.conftest import ExecutorEnv, write_plugin

TEST_TOOLS = '''
    import asyncio
    import time

    from services.tools.base import BaseTool

    OBJECT = {"type": "object", "properties": {"value": {}}}


    class SlowTool(BaseTool):
        name = "slow"
        display_name = "Slow"
        description = "Sleeps far longer than any test's time limit"
        parameters = OBJECT

        async def run(self, arguments, context):
            await asyncio.sleep(60)


    class SleepyTool(BaseTool):
        name = "sleepy"
        display_name = "Sleepy"
        description = "Blocks its worker thread briefly"
        parameters = OBJECT

        def execute(self, value=0.2):
            time.sleep(value)
            return "rested"


    class BuggyTool(BaseTool):
        name = "buggy"
        display_name = "Buggy"
        description = "Has a bug"
        parameters = OBJECT

        def execute(self, value=1):
            return value / 0


    class OwnTimeoutTool(BaseTool):
        name = "own_timeout"
        display_name = "Own timeout"
        description = "Raises TimeoutError itself, well within the limit"
        parameters = OBJECT

        async def run(self, arguments, context):
            raise TimeoutError("upstream timed out")


    class EchoTool(BaseTool):
        name = "echo"
        display_name = "Echo"
        description = "Returns its value as is"
        parameters = OBJECT

        def execute(self, value=None):
            return value
'''

MakeExecutor = Callable[..., Awaitable[ExecutorEnv]]


@pytest_asyncio.fixture
async def env(plugin_dir: Path, make_executor: MakeExecutor) -> ExecutorEnv:
    write_plugin(plugin_dir, "test_tools.py", TEST_TOOLS)
    return await make_executor(timeout_seconds=0.5)


async def test_a_valid_call_returns_output_and_duration(env: ExecutorEnv) -> None:
    output, duration = await env.executor.execute("calculator", {"operation": "add", "x": 5.0, "y": 10.0})
    assert output == ToolOutput(15, "5 + 10 = 15")
    assert 0 <= duration < 1


async def test_unknown_tool_is_not_found(env: ExecutorEnv) -> None:
    with pytest.raises(NotFound, match="tool 'nope' not found"):
        await env.executor.execute("nope", {})


async def test_a_disabled_tool_is_a_failed_precondition(env: ExecutorEnv) -> None:
    await env.store.update("calculator", enabled=False)
    with pytest.raises(FailedPrecondition, match="tool 'calculator' is disabled; enable it with UpdateTool"):
        await env.executor.execute("calculator", {"operation": "add", "x": 1.0, "y": 2.0})


async def test_schema_problems_are_listed_with_their_json_paths(env: ExecutorEnv) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await env.executor.execute("calculator", {"x": "abc", "y": 2.0})
    assert str(exc.value) == (
        "arguments do not match calculator's schema: 'operation' is a required property; "
        "at x: 'abc' is not of type 'number'"
    )


async def test_enum_and_extra_property_problems_are_named(env: ExecutorEnv) -> None:
    with pytest.raises(InvalidArgument, match=r"at operation: 'modulo' is not one of"):
        await env.executor.execute("calculator", {"operation": "modulo", "x": 1.0, "y": 2.0})
    with pytest.raises(InvalidArgument, match=r"Additional properties are not allowed \('mode' was unexpected\)"):
        await env.executor.execute("file_io", {"operation": "list", "mode": "fast"})


async def test_an_argument_the_function_does_not_take_is_invalid(env: ExecutorEnv) -> None:
    # The seed's calculator schema allows extra properties; the call itself must still refuse them.
    with pytest.raises(InvalidArgument, match="unexpected keyword argument 'z'"):
        await env.executor.execute("calculator", {"operation": "add", "x": 1.0, "y": 2.0, "z": 3.0})


async def test_a_slow_tool_hits_the_time_limit(env: ExecutorEnv) -> None:
    with pytest.raises(DeadlineExceeded, match=r"tool 'slow' did not finish within 0.5 s"):
        await env.executor.execute("slow", {})


async def test_a_tools_own_timeout_error_is_a_failure_not_our_deadline(env: ExecutorEnv) -> None:
    with pytest.raises(Internal, match="tool 'own_timeout' failed: TimeoutError: upstream timed out"):
        await env.executor.execute("own_timeout", {})


async def test_sync_tools_run_off_the_event_loop(make_executor: MakeExecutor, plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "test_tools.py", TEST_TOOLS)
    executor = (await make_executor(timeout_seconds=5)).executor
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    output, _ = await executor.execute("sleepy", {"value": 0.2})
    task.cancel()
    assert output.text == "rested"
    assert ticks >= 5  # the loop kept running while the tool slept in its thread


async def test_an_unexpected_exception_is_internal_and_logged(
    env: ExecutorEnv, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(Internal) as exc:
        await env.executor.execute("buggy", {"value": 1.0})
    assert str(exc.value) == "tool 'buggy' failed: ZeroDivisionError: float division by zero"
    assert "Traceback" in caplog.text
    # The executor keeps working afterwards.
    output, _ = await env.executor.execute("echo", {"value": "still here"})
    assert output.text == "still here"


@pytest.mark.parametrize(
    ("value", "result", "text"),
    [
        ("plain", "plain", "plain"),
        (3.5, 3.5, "3.5"),
        ({"a": [1, 2]}, {"a": [1, 2]}, '{"a": [1, 2]}'),
    ],
)
async def test_plain_return_values_are_wrapped(env: ExecutorEnv, value: object, result: object, text: str) -> None:
    output, _ = await env.executor.execute("echo", {"value": value})
    assert output == ToolOutput(result, text)


async def test_a_non_json_result_is_internal(plugin_dir: Path, make_executor: MakeExecutor) -> None:
    write_plugin(
        plugin_dir,
        "sets.py",
        '''
        from services.tools.base import BaseTool


        class SetTool(BaseTool):
            name = "sets"
            display_name = "Sets"
            description = "Returns a set"
            parameters = {"type": "object"}

            def execute(self):
                return {1, 2}
        ''',
    )
    with pytest.raises(Internal, match="tool 'sets' returned a result that is not JSON"):
        await (await make_executor()).executor.execute("sets", {})


def test_an_oversized_result_is_cut_with_a_marker() -> None:
    big = ToolOutput({"rows": ["x" * 100] * 100}, "é" * 5000)
    cut = to_tool_output("chatty", big, 1000)
    assert len(cut.text.encode()) <= 1000
    assert cut.text.endswith("[cut: the result was 10,000 bytes; the limit is 1,000]")
    assert cut.text.startswith("é" * 100)  # cut on a character boundary
    assert cut.result is None  # the structured form would not fit: the text stands for it
    small = ToolOutput(15, "5 + 10 = 15")
    assert to_tool_output("calculator", small, 1000) is small


async def test_the_executor_bounds_what_a_tool_returns(
    plugin_dir: Path, make_executor: MakeExecutor
) -> None:
    write_plugin(
        plugin_dir,
        "chatty.py",
        """
        from services.tools.base import BaseTool

        class Chatty(BaseTool):
            name = "chatty"
            display_name = "Chatty"
            description = "Says a lot"
            parameters = {"type": "object"}

            def execute(self):
                return "word " * 100_000
        """,
    )
    output, _ = await (await make_executor()).executor.execute("chatty", {})
    assert len(output.text.encode()) <= DEFAULT_MAX_RESULT_BYTES
    assert "[cut: the result was 500,000 bytes" in output.text
