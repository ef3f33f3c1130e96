"""The pool against stuck calls, through the real tools service: calls to a tool that hangs until its time limit
cannot take every worker (TOOLS_WORKERS_PER_TOOL), so an honest call to another tool answers at once."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.tools.app import start_tools
from services.tools.settings import ToolsSettings
from services.tools.workers.pool import default_per_tool
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request, write_plugin

TIME_LIMIT = 4.0
#: What an honest call may take while others hang: a worker's round trip, on a loaded machine.
HONEST_BOUND_SECONDS = 1.0

HANG = """
    import time

    from services.tools.base import BaseTool


    class Hang(BaseTool):
        name = "hang"
        display_name = "Hang"
        description = "Sleeps past any time limit"
        parameters = {"type": "object", "properties": {}}

        def execute(self):
            time.sleep(3600)


    class Nap(BaseTool):
        name = "nap"
        display_name = "Nap"
        description = "Sleeps 0.4 s"
        parameters = {"type": "object", "properties": {}}

        def execute(self):
            time.sleep(0.4)
            return "rested"
"""


@asynccontextmanager
async def tools_with_hang(make_settings: SettingsFactory, plugin_dir: Path, **overrides: Any) -> AsyncIterator[Any]:
    write_plugin(plugin_dir, "hang.py", HANG)
    settings = {"TOOLS_WORKERS": 2, "TOOLS_TIMEOUT_SECONDS": TIME_LIMIT, **overrides}
    app = await start_tools(make_settings(**settings))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield tools_stubs(channel)
    finally:
        await channel.close()
        await app.stop()


async def honest_latency(stub: Any, stuck: int) -> tuple[float, grpc.StatusCode]:
    """With `stuck` calls to `hang` in flight, how long a calculator call takes, and its status."""
    hanging = [asyncio.ensure_future(stub.ExecuteTool(execute_request("hang"))) for _ in range(stuck)]
    await asyncio.sleep(0.5)  # every hang call has reached a worker, or the line
    started = time.monotonic()
    code = grpc.StatusCode.OK
    try:
        await stub.ExecuteTool(execute_request("calculator", operation="add", x=2, y=3))
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    latency = time.monotonic() - started
    for call in hanging:
        call.cancel()
    await asyncio.gather(*hanging, return_exceptions=True)
    return latency, code


@pytest.mark.parametrize("stuck", [1, 3, 6])
async def test_an_honest_call_answers_at_once_while_one_tool_hangs_on_every_worker_it_may(
    make_settings: SettingsFactory, plugin_dir: Path, stuck: int
) -> None:
    async with tools_with_hang(make_settings, plugin_dir) as stub:
        latency, code = await honest_latency(stub, stuck)
    print(f"honest call with {stuck} stuck calls on 2 workers: {latency * 1000:.0f} ms")
    assert code == grpc.StatusCode.OK
    assert latency < HONEST_BOUND_SECONDS


async def test_without_the_cap_the_same_honest_call_waits_for_a_hung_calls_limit(
    make_settings: SettingsFactory, plugin_dir: Path
) -> None:
    """The old behaviour (a tool may take every worker), kept reachable with TOOLS_WORKERS_PER_TOOL=TOOLS_WORKERS:
    the bound above fails there, which is what makes it a test of the cap."""
    async with tools_with_hang(make_settings, plugin_dir, TOOLS_WORKERS_PER_TOOL=2) as stub:
        latency, code = await honest_latency(stub, 3)
    print(f"honest call with 3 stuck calls on 2 workers, no cap: {latency * 1000:.0f} ms ({code.name})")
    assert latency > 2 * HONEST_BOUND_SECONDS


async def test_a_capped_tools_own_calls_wait_their_turn_and_all_run(
    make_settings: SettingsFactory, plugin_dir: Path
) -> None:
    async with tools_with_hang(make_settings, plugin_dir) as stub:
        started = time.monotonic()
        answers = await asyncio.gather(*(stub.ExecuteTool(execute_request("nap")) for _ in range(3)))
        elapsed = time.monotonic() - started
    assert [answer.text for answer in answers] == ["rested"] * 3
    assert elapsed >= 3 * 0.4  # one worker each, in turn (the cost of the cap)


def test_the_default_cap_leaves_one_worker_to_the_other_tools() -> None:
    assert [default_per_tool(size) for size in (1, 2, 4, 64)] == [1, 1, 3, 63]


async def test_the_default_pool_runs_two_calls_of_a_tool_at_once_and_still_leaves_a_worker(
    make_settings: SettingsFactory, plugin_dir: Path
) -> None:
    """TOOLS_WORKERS=3 and a cap of 2 by default: two calls of one tool in one turn run together, and three hung
    calls leave the third worker to an honest call."""
    default_workers = ToolsSettings.model_fields["workers"].default
    assert default_workers == 3
    async with tools_with_hang(make_settings, plugin_dir, TOOLS_WORKERS=default_workers) as stub:
        started = time.monotonic()
        answers = await asyncio.gather(*(stub.ExecuteTool(execute_request("nap")) for _ in range(2)))
        assert [answer.text for answer in answers] == ["rested"] * 2
        assert time.monotonic() - started < 0.8  # at once, not 2 x 0.4 s
        latency, code = await honest_latency(stub, 3)
    assert code == grpc.StatusCode.OK
    assert latency < HONEST_BOUND_SECONDS
