"""An engine whose run was taken by another engine (its lease epoch moved on) stops executing it at once and records
nothing more: a real engine, tools and runs service on a real store.

The takeover is written to the store as a resume (or, later, the recovery of an orphaned run) writes it: another
executor id and the next lease epoch. The engine learns it from the store refusing its next write, or from its
next lease renewal, whichever comes first."""

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import utcnow
from tests.engine.run_helpers import get_run, kinds, slow_tool_overrides, start_run, wait_for_file
from tests.runs.helpers import eventually, set_columns
from tests.support.platform import Platform, start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply, tool_call_reply

ELSEWHERE = "engine-elsewhere"


async def take_over(platform: Platform, run_id: str) -> None:
    """Another engine takes the run's lease: its executor id, the next epoch, and a lease it would renew."""
    run = await get_run(platform, run_id)
    await set_columns(
        platform.runs.store.database, run_id, executor_id=ELSEWHERE, lease_epoch=run.lease_epoch + 1,
        lease_expires_at=utcnow() + timedelta(seconds=60),
    )


async def test_a_run_taken_by_another_engine_has_its_late_writes_refused_and_stops(tmp_path: Path) -> None:
    marker = tmp_path / "slow-tool-marker"
    script = [tool_call_reply("slow", {"seconds": 1.0, "marker": str(marker)}), text_reply("never asked for")]
    # A long lease: no renewal comes before the tool's result is written, so the write itself meets the fence.
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, tools_overrides=slow_tool_overrides(tmp_path), ENGINE_LEASE_SECONDS=60
    ) as platform:
        run = await start_run(platform, "wait for me")
        assert run.lease_epoch == 1
        assert await wait_for_file(marker, "started", timeout=5.0)
        await take_over(platform, run.id)
        assert await wait_for_file(marker, "finished", timeout=5.0)
        # The tool's result was refused ("lease lost"): the engine let the run go without recording anything.
        await eventually(lambda: platform.engine.scheduler.held_runs == 0, timeout=5.0)
        stored = await get_run(platform, run.id)
        assert kinds(stored.steps) == ["user_request", "agent_thought", "tool_call"]
        assert (stored.state, stored.executor_id, stored.lease_epoch) == (runs_pb2.RUN_STATE_RUNNING, ELSEWHERE, 2)
        assert len(llm.requests) == 1  # the model was not asked to go on


async def test_a_run_reported_fenced_by_a_renewal_is_stopped_at_the_first_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lease 1 s: renewals every third of a second. A run only lost (ended, deleted) is stopped at its second
    # report (it may have ended while the renewal was on its way); a fenced one at its first.
    async with ScriptedLLM(delayed(text_reply("too late"), 10.0)) as llm, \
            start_platform(tmp_path, llm.base_url, ENGINE_LEASE_SECONDS=1) as platform:
        store = platform.runs.store
        renew = store.renew_leases
        reports: list[float] = []  # when a renewal answered the engine that the run is lost

        async def counted(executor_id: str, run_ids: Sequence[str], epochs: Mapping[str, int] | None = None) -> Any:
            renewal = await renew(executor_id, run_ids, epochs)
            if run.id in renewal.lost_run_ids:
                reports.append(time.perf_counter())
            return renewal

        monkeypatch.setattr(store, "renew_leases", counted)
        run = await start_run(platform, "hello")
        assert await llm.wait_for(lambda: len(llm.requests) == 1)
        await take_over(platform, run.id)
        taken = time.perf_counter()
        assert await llm.wait_for(lambda: 0 in llm.aborted, timeout=3.0)
        print(f"fenced run stopped {time.perf_counter() - taken:.2f} s after the takeover (renewals every 0.33 s)")
        await eventually(lambda: platform.engine.scheduler.held_runs == 0)
        await asyncio.sleep(1.0)  # renewals go on (of no run): none names it again
        assert len(reports) == 1
        stored = await get_run(platform, run.id)
        assert kinds(stored.steps) == ["user_request"]
        assert (stored.state, stored.executor_id) == (runs_pb2.RUN_STATE_RUNNING, ELSEWHERE)
