"""Helpers of the engine's run-lifecycle tests: following runs over gRPC, and a slow tool plugin."""

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.support.platform import Platform

FINAL_STATES = (runs_pb2.RUN_STATE_COMPLETED, runs_pb2.RUN_STATE_FAILED, runs_pb2.RUN_STATE_CANCELLED)

#: A tool plugin that sleeps `seconds` (asynchronously, so a cancelled call stops it), writing "started", then
#: "finished" or "cancelled" to the file `marker` when given: what the tool went through, seen from outside.
SLOW_TOOL_PLUGIN = textwrap.dedent('''
    import asyncio
    from pathlib import Path

    from services.tools.base import BaseTool


    class SlowTool(BaseTool):
        name = "slow"
        display_name = "Slow"
        description = "Waits a number of seconds, then answers"
        parameters = {
            "type": "object",
            "properties": {"seconds": {"type": "number"}, "marker": {"type": "string"}},
            "required": ["seconds"],
        }

        async def run(self, arguments, context):
            marker = Path(arguments["marker"]) if arguments.get("marker") else None
            if marker:
                marker.write_text("started")
            try:
                await asyncio.sleep(arguments["seconds"])
            except asyncio.CancelledError:
                if marker:
                    marker.write_text("cancelled")
                raise
            if marker:
                marker.write_text("finished")
            return f"waited {arguments['seconds']} s"
''')


def slow_tool_overrides(tmp_path: Path) -> dict[str, Any]:
    """Tools settings with a plugin folder holding the `slow` tool."""
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "slow_tool.py").write_text(SLOW_TOOL_PLUGIN)
    return {"TOOLS_PLUGIN_DIRS": str(folder)}


def kinds(steps: list[runs_pb2.Step]) -> list[str]:
    return [step.WhichOneof("content") or "" for step in steps]


def steps_of(events: list[runs_pb2.RunEvent]) -> list[runs_pb2.Step]:
    return [event.step for event in events if event.WhichOneof("event") == "step"]


async def get_run(platform: Platform, run_id: str) -> runs_pb2.Run:
    return await platform.runs_stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id))


async def start_run(platform: Platform, message: str, **fields: Any) -> runs_pb2.Run:
    return await platform.engine_stub.StartRun(engine_pb2.StartRunRequest(message=message, **fields))


async def watch(platform: Platform, run_id: str, after_sequence: int = 0) -> list[runs_pb2.RunEvent]:
    """Every event of WatchRun until the run's final event."""
    call = platform.runs_stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence))
    return [event async for event in call]


async def wait_final(platform: Platform, run_id: str, timeout: float = 10.0) -> runs_pb2.Run:
    """The run once it has ended (with its steps)."""
    async with asyncio.timeout(timeout):
        events = await watch(platform, run_id)
    assert events[-1].run.state in FINAL_STATES
    return await get_run(platform, run_id)


async def read_until(
    call: "grpc.aio.UnaryStreamCall[Any, runs_pb2.RunEvent]",
    condition: Callable[[runs_pb2.RunEvent], bool],
    into: list[runs_pb2.RunEvent],
    timeout: float = 10.0,
) -> runs_pb2.RunEvent:
    """Read events of a stream into `into` until one meets `condition`; return that one."""
    async with asyncio.timeout(timeout):
        while True:
            event = await call.read()
            assert event is not grpc.aio.EOF, f"the stream ended before the awaited event; got {into}"
            into.append(event)
            if condition(event):
                return event


async def read_rest(
    call: "grpc.aio.UnaryStreamCall[Any, runs_pb2.RunEvent]", timeout: float = 10.0
) -> list[runs_pb2.RunEvent]:
    """Read a stream begun with `read_until` to its end (gRPC forbids iterating a stream once read from)."""
    events: list[runs_pb2.RunEvent] = []
    async with asyncio.timeout(timeout):
        while (event := await call.read()) is not grpc.aio.EOF:
            events.append(event)
    return events


def is_step(kind: str) -> Callable[[runs_pb2.RunEvent], bool]:
    return lambda event: event.WhichOneof("event") == "step" and event.step.WhichOneof("content") == kind


def is_text_delta(event: runs_pb2.RunEvent) -> bool:
    return event.WhichOneof("event") == "delta" and event.delta.WhichOneof("part") == "text"


def _holds(path: Path, content: str) -> bool:
    return path.exists() and path.read_text() == content


async def wait_for_file(path: Path, content: str, timeout: float = 2.0) -> bool:
    """Wait until the file `path` holds exactly `content`; False if it still does not after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not _holds(path, content):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True
