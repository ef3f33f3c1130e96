"""Case f of `make bench` (issue 18): the engine process SIGKILLed with runs in flight, restarted by the launcher's
supervisor as in `make run`, and its runs resumed from their journals by the new engine once their leases run out.

Runs are started with StartRun (a StreamChat would die with the engine), then followed in the store. The case
reports, from the kill: when each run was taken over (its `resumed` step recorded) and when it progressed past
that (its next step), p50 and max over the runs in flight; and how many completed, each verified as a seed run
with exactly one resume marker (goal: all of them).
"""

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from bench.load import Channels
from bench.report import percentile
from bench.results import CaseResult, progress
from bench.stack import RunningStack, UsageMeter
from bench.verify import SEED_QUESTION, Verification, failure_kind, fetch_runs, seed_run_problems

#: Model latencies left to run between the last StartRun and the kill: every run is inside one of its three
#: model calls (the first ones begun are in their second).
IN_FLIGHT_LATENCIES = 0.5
#: How often the store is asked whether any run is still live.
POLL_SECONDS = 0.5
START_CONCURRENCY = 64
LIVE = (runs_pb2.RUN_STATE_QUEUED, runs_pb2.RUN_STATE_RUNNING, runs_pb2.RUN_STATE_WAITING)


@dataclass(frozen=True)
class Progress:
    """After the kill, per run in flight: seconds until it was taken over, and until its next step."""

    taken_over_s: list[float]
    next_step_s: list[float]
    #: Runs that had ended before the kill (they have nothing to resume).
    ended_before: int
    #: Runs in flight at the kill that never progressed again.
    stuck: int

    def summary(self) -> str:
        def span(values: Sequence[float]) -> str:
            return f"p50 {percentile(values, 0.5):.1f} s, max {max(values, default=float('nan')):.1f} s"

        ended = f"; {self.ended_before} had ended before the kill" if self.ended_before else ""
        stuck = f"; {self.stuck} never taken over" if self.stuck else ""
        return f"taken over {span(self.taken_over_s)}; next step {span(self.next_step_s)}{ended}{stuck}"


async def resume_case(stack: RunningStack, runs: int, latency: float, deadline: float, name: str) -> CaseResult:
    """Start `runs` runs, SIGKILL the engine while they are in flight, wait until none is live (the launcher
    restarts the engine), then measure and verify every run from the store."""
    async with Channels(stack.gateway) as channels:
        progress(f"{name}: starting {runs} runs")
        meter = UsageMeter(stack.all_pids())
        meter.start()
        started = time.perf_counter()
        run_ids, refused = await _start_runs(channels, runs)
        await asyncio.sleep(IN_FLIGHT_LATENCIES * latency)
        engine_pid = stack.pids["engine"]
        os.kill(engine_pid, signal.SIGKILL)
        killed_at = time.time()  # wall clock: compared with the steps' create_time, set by the run store
        progress(f"{name}: engine {engine_pid} SIGKILLed with {runs} runs started; waiting for them to end")
        runs_stub = runs_pb2_grpc.RunServiceStub(channels.next())
        await _until_none_live(runs_stub, time.perf_counter() + deadline)
        wall = time.perf_counter() - started
        usage = meter.stop()
        stored = await fetch_runs(channels.next(), run_ids)
    found = [run for run in stored.values() if isinstance(run, runs_pb2.Run)]
    measured = _progress(found, killed_at)
    verification = _verify(run_ids, stored, killed_at)
    verification.checked += len(refused)
    for n, error in enumerate(refused):
        verification.add(f"start {n}", [error], failure_kind(error, None))
    completed = sum(run.state == runs_pb2.RUN_STATE_COMPLETED for run in found)
    progress(f"{name}: {completed}/{runs} completed; {measured.summary()}; verified "
             f"{verification.passed}/{verification.checked}")
    return CaseResult(
        key="resume", name=name, runs=runs, errors=len(verification.problems), wall_s=wall,
        latency_ms=[_duration_ms(run) for run in found if run.HasField("complete_time")],
        cpu_s=usage.cpu, peak_rss=usage.peak_rss, outside_cpu_s=usage.outside_cpu,
        verified=verification.passed, checked=verification.checked, problems=verification.first(),
        failure_kinds=dict(verification.kinds.most_common()),
        comparison=f"{completed}/{runs} completed; {measured.summary()}",
    )


async def _start_runs(channels: Channels, runs: int) -> tuple[list[str], list[str]]:
    """The ids of the runs started, and the errors of the StartRun calls refused ("CODE: details")."""
    limit = asyncio.Semaphore(START_CONCURRENCY)

    async def start(n: int) -> str | grpc.aio.AioRpcError:
        async with limit:
            stub = engine_pb2_grpc.AgentServiceStub(channels.next())
            request = engine_pb2.StartRunRequest(message=SEED_QUESTION, metadata={"bench": f"resume {n}"})
            try:
                return (await stub.StartRun(request, timeout=60)).id
            except grpc.aio.AioRpcError as error:
                return error

    started = await asyncio.gather(*(start(n) for n in range(runs)))
    refused = [f"{item.code().name}: {item.details()}" for item in started if not isinstance(item, str)]
    return [item for item in started if isinstance(item, str)], refused


async def _until_none_live(stub: runs_pb2_grpc.RunServiceStub, deadline: float) -> None:
    """Wait until the store has no live run (the case runs on a stack of its own), or until `deadline`."""
    while time.perf_counter() < deadline:
        try:
            live = 0
            for state in LIVE:
                page = await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=1, state=state), timeout=30)
                live += len(page.runs)
            if not live:
                return
        except grpc.aio.AioRpcError as error:
            progress(f"ListRuns failed ({error.code().name}); asking again")
        await asyncio.sleep(POLL_SECONDS)
    progress("runs are still live at the deadline")


def _progress(found: Sequence[runs_pb2.Run], killed_at: float) -> Progress:
    taken_over, next_step, ended_before, stuck = [], [], 0, 0
    for run in found:
        if run.HasField("complete_time") and _seconds(run.complete_time) < killed_at:
            ended_before += 1
            continue
        marker = next((i for i, step in enumerate(run.steps) if step.HasField("resumed")), None)
        if marker is None:
            stuck += 1
            continue
        taken_over.append(_seconds(run.steps[marker].create_time) - killed_at)
        if marker + 1 < len(run.steps):
            next_step.append(_seconds(run.steps[marker + 1].create_time) - killed_at)
    return Progress(taken_over, next_step, ended_before, stuck)


def _verify(run_ids: Sequence[str], stored: dict[str, runs_pb2.Run | str], killed_at: float) -> Verification:
    """Each run a right seed run, with one resume marker if it was live at the kill and none if it had ended."""
    verification = Verification(checked=len(run_ids))
    for run_id in run_ids:
        found = stored[run_id]
        if isinstance(found, str):
            problems = [found]
        else:
            ended_before = found.HasField("complete_time") and _seconds(found.complete_time) < killed_at
            problems = seed_run_problems(found, resumes=0 if ended_before else 1)
        verification.add(run_id, problems, failure_kind(None, found))
    return verification


def _seconds(timestamp: Timestamp) -> float:
    return timestamp.ToNanoseconds() / 1e9


def _duration_ms(run: runs_pb2.Run) -> float:
    return (_seconds(run.complete_time) - _seconds(run.create_time)) * 1000
