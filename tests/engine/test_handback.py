"""An engine that stops hands its runs back (execution/scheduler.py `shutdown`), in process with real servers: when
the run store cannot be reached at that moment, the engine says so and stops anyway, and the store's reaper
resumes the run once its lease runs out, as after a crash. (Hand-backs that land: test_run_lifecycle.py, and with
real processes and SIGTERM tests/e2e/test_resume_handback.py.)"""

import asyncio
import logging
import time
from pathlib import Path

import pytest

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2
from services.engine.app import start_engine
from services.engine.execution.scheduler import HAND_BACK_RETRY_SECONDS, RECORD_END_SECONDS
from services.runs.app import start_runs
from services.tools.app import start_tools
from tests.conftest import free_port
from tests.engine.run_helpers import kinds
from tests.support.platform import engine_settings, grpc_channel, runs_settings, tools_settings
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply
from tests.support.stubs import runs_stubs

GRACE = 0.2
LEASE = 2.0


async def test_an_engine_that_cannot_reach_the_store_at_shutdown_leaves_its_runs_to_the_reaper(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.engine")
    port = free_port()
    settings = runs_settings(tmp_path, RUNS_PORT=port, RUNS_REAPER_INTERVAL_SECONDS=0.2)
    async with ScriptedLLM(delayed(text_reply("too late"), 5.0), text_reply("done")) as llm:
        runs = await start_runs(settings)
        tools = await start_tools(tools_settings(tmp_path))
        try:
            overrides = {"ENGINE_LEASE_SECONDS": LEASE, "ENGINE_STORE_OUTAGE_SECONDS": 1}
            engine = await start_engine(engine_settings(port, tools.port, llm.base_url, **overrides))
            async with grpc_channel(engine.port) as channel:
                run = await engine_pb2_grpc.AgentServiceStub(channel).StartRun(
                    engine_pb2.StartRunRequest(message="hello")
                )
            assert await llm.wait_for(lambda: len(llm.requests) == 1)
            await runs.stop()  # the store goes away while the run waits on its model

            started = time.monotonic()
            await engine.stop(GRACE)
            took = time.monotonic() - started
            assert took < GRACE + RECORD_END_SECONDS + HAND_BACK_RETRY_SECONDS + 1.0, took
            assert "could not hand 1 run(s) back to the store" in caplog.text
            assert run.id in caplog.text

            # The store comes back: the run's lease runs out, the reaper orphans it (an attempt: a crash, as far as
            # the store knows) and the next engine resumes it, with a marker that names no hand-back.
            runs = await start_runs(settings)
            successor = await start_engine(engine_settings(port, tools.port, llm.base_url))
            try:
                async with grpc_channel(port) as runs_channel:
                    stub = runs_stubs(runs_channel)
                    deadline = time.monotonic() + LEASE + 10
                    while (final := await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))).state in (
                        runs_pb2.RUN_STATE_RUNNING, runs_pb2.RUN_STATE_QUEUED
                    ):
                        assert time.monotonic() < deadline, final
                        await asyncio.sleep(0.1)
            finally:
                await successor.stop()
            assert final.state == runs_pb2.RUN_STATE_COMPLETED, final.error_message
            assert kinds(list(final.steps)) == ["user_request", "resumed", "agent_response"]
            assert (final.attempts, final.handbacks, final.steps[1].resumed.handed_back_by) == (1, 0, "")
        finally:
            await runs.stop()
            await tools.stop()
