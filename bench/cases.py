"""The cases of `make bench` (issue 6), each a row of the table:

a. baseline: a bare grpc.aio server stream of 8 messages, N concurrent clients (bench/baseline.py);
b. 0 ms model, 1 client, sequential StreamChat runs;
c. 0 ms model, N concurrent clients;
d. a slow model (1 s per call) on a fresh stack, every run's client started at once;
e. step delivery on that stack: runs started with StartRun, each followed by its own WatchRun;
f. resume (issue 18): on a fresh stack, runs in flight when the engine is SIGKILLed and restarted (bench/resume.py).

Every stack case goes through the Envoy gateway with native gRPC, and every run is verified from the store after
the timing (bench/verify.py). Each stack runs on new databases: SQLite files in its folder, or (`database`
"postgres") a database per service on one throwaway PostgreSQL server (bench/postgres.py).
"""

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import grpc

from agentplatform.runs.v1 import runs_pb2
from bench.baseline import bare_stream, baseline_server
from bench.load import Channels, ClientRun, all_at_once, closed_loop, start_and_watch, stream_chat
from bench.metrics_off import SHADOW_PATH
from bench.postgres import PostgresServer, throwaway_server
from bench.results import BASELINE_SERVER, DATABASE_SERVER, CaseResult, progress
from bench.resume import resume_case
from bench.stack import SELF, RunningStack, Usage, UsageMeter, launched_stack
from bench.verify import (
    SEED_MODEL_CALLS,
    Verification,
    delivered_problems,
    failure_kind,
    fetch_runs,
    seed_run_problems,
)
from services.engine.settings import EngineSettings

CASES = ("baseline", "sequential", "concurrent", "burst", "delivery", "burst2", "resume")
#: `--database`: the stack's databases, and how the table names them.
DATABASES = {"sqlite": "sqlite", "postgres": "postgresql"}
ZERO_LATENCY_CASES = ("sequential", "concurrent")
SLOW_MODEL_CASES = ("burst", "delivery")
#: The burst again on a stack with two engine processes (ENGINE_REPLICAS=2), beside the one-engine burst.
TWO_ENGINE_CASES = ("burst2",)
#: The engine's own defaults (the bench measures them; it never sets them).
ENGINE_MAX_CONCURRENT_RUNS: int = EngineSettings.model_fields["max_concurrent_runs"].default
ENGINE_MAX_QUEUED_RUNS: int = EngineSettings.model_fields["max_queued_runs"].default


@dataclass(frozen=True)
class BenchConfig:
    """What to run: the cases, runs (baseline: calls) per case, concurrent clients of the baseline and of the
    0 ms case, the slow model's latency, and the deadline of each call."""

    cases: tuple[str, ...]
    runs: dict[str, int]
    clients: int
    latency: float
    deadline: float
    #: ENGINE_LEASE_SECONDS of the resume case's stack; None: the engine's default. A killed engine's runs wait
    #: for their leases to run out, so this sets how soon they are resumed.
    engine_lease: float | None = None
    #: False: the stack's processes run with no-op Prometheus metrics (bench/metrics_off), to price them.
    metrics: bool = True
    #: A key of DATABASES: what every stack runs on.
    database: str = "sqlite"

    @property
    def database_label(self) -> str:
        """The database as the table's stack rows name it."""
        return DATABASES[self.database]

    def stack_settings(self, **settings: str) -> dict[str, str]:
        """`settings` for the stacks of this bench, with the metrics shadowed when they are off."""
        if not self.metrics:
            path = os.environ.get("PYTHONPATH", "")
            settings["PYTHONPATH"] = f"{SHADOW_PATH}{os.pathsep}{path}" if path else str(SHADOW_PATH)
        return settings

    @property
    def cores(self) -> int:
        return len(os.sched_getaffinity(0))


@dataclass
class BenchOutcome:
    results: list[CaseResult]
    #: Lines worth reading beside the table: limits in force, processes that restarted, warm-ups that failed.
    notes: list[str]


Load = Callable[[], Awaitable[list[ClientRun]]]


@dataclass(frozen=True)
class Measured:
    runs: list[ClientRun]
    wall_s: float
    usage: Usage


async def _measure(meter: UsageMeter, load: Load) -> Measured:
    meter.start()
    started = time.perf_counter()
    runs = await load()
    wall = time.perf_counter() - started
    return Measured(runs, wall, meter.stop())


def run_bench(config: BenchConfig) -> BenchOutcome:
    """Run the chosen cases in order, on a fresh stack per model latency."""
    outcome = BenchOutcome([], [])
    baseline = None
    if "baseline" in config.cases:
        baseline = run_baseline(config)
        outcome.results.append(baseline)
    stacks = (
        (0.0, 1, ZERO_LATENCY_CASES), (config.latency, 1, SLOW_MODEL_CASES), (config.latency, 2, TWO_ENGINE_CASES)
    )
    with ExitStack() as resources:
        server = None
        if config.database == "postgres" and set(config.cases) - {"baseline"}:
            server = resources.enter_context(throwaway_server())
            outcome.notes.append("databases: a database per service on a throwaway PostgreSQL server (fsync=off, as "
                                 "the tests start it), new for each stack; CPU pg = all its processes")
        for latency, engines, keys in stacks:
            chosen = [key for key in keys if key in config.cases]
            if not chosen:
                continue
            progress(f"starting the stack (python -m services.launcher) with a {latency:g} s model, {engines} "
                     f"engine(s), on {config.database_label}")
            with _stack_on(server, config, latency, engines) as stack:
                progress(f"stack ready: {', '.join(f'{name} {pid}' for name, pid in stack.pids.items())}")
                results, notes = asyncio.run(_stack_cases(stack, config, chosen, latency, baseline))
            outcome.results += results
            outcome.notes += notes
        if "resume" in config.cases:
            result, notes = run_resume(config, server)
            outcome.results.append(result)
            outcome.notes += notes
    return outcome


@contextmanager
def _stack_on(
    server: PostgresServer | None, config: BenchConfig, latency: float, engines: int = 1, **settings: str
) -> Iterator[RunningStack]:
    """A stack with this bench's settings and `settings`, on SQLite files (no `server`) or on a new database per
    service on `server`, whose processes are then measured with the stack's; the databases are dropped once the
    stack has stopped."""
    if server is None:
        with launched_stack(latency, engines, config.stack_settings(**settings)) as stack:
            yield stack
        return
    with server.service_databases() as databases, launched_stack(
        latency, engines, config.stack_settings(**settings, **databases), {DATABASE_SERVER: server.pid}
    ) as stack:
        yield stack


# --- a: the bare stream -----------------------------------------------------------------------------------


def run_baseline(config: BenchConfig) -> CaseResult:
    calls, clients = config.runs["baseline"], config.clients
    progress(f"a. bare stream: {calls} calls, {clients} clients, server in a subprocess")
    with baseline_server() as server:
        return asyncio.run(_baseline(server.address, server.pid, calls, clients, config.deadline))


async def _baseline(address: str, pid: int, calls: int, clients: int, deadline: float) -> CaseResult:
    async with Channels(address) as channels:
        await closed_loop(channels, bare_stream, clients, clients, deadline)  # warm-up: streams and buffers
        meter = UsageMeter({BASELINE_SERVER: pid, SELF: os.getpid()})
        measured = await _measure(meter, partial(closed_loop, channels, bare_stream, calls, clients, deadline))
    failed = [call for call in measured.runs if call.error]
    return CaseResult(
        key="baseline", name=f"a. bare stream, {clients} clients", runs=calls, errors=len(failed),
        wall_s=measured.wall_s, latency_ms=[call.latency_ms for call in measured.runs],
        cpu_s=measured.usage.cpu, outside_cpu_s=measured.usage.outside_cpu,
        problems=[f"{call.key}: {call.error}" for call in failed[:3]],
        comparison="reference",
    )


# --- b to e: the stack ------------------------------------------------------------------------------------


async def _stack_cases(
    stack: RunningStack, config: BenchConfig, keys: Sequence[str], latency: float, baseline: CaseResult | None
) -> tuple[list[CaseResult], list[str]]:
    results, notes = [], []
    async with Channels(stack.gateway) as channels:
        notes += await _warm_up(channels, config.deadline)
        for key in keys:
            stack.refresh_pids()  # a process restarted in an earlier case is measured under its new pid
            name, load = _case_load(key, channels, config, latency)
            result = await _stack_case(stack, channels, key, f"{name}, {config.database_label}", load)
            if key == "concurrent" and baseline is not None:
                result.comparison = _against_baseline(result, baseline)
            if key in ("burst", "burst2"):
                _set_ideal(result, latency, config.cores)
            if key == "delivery":
                result.comparison = f"{len(result.delivery_ms)} live steps"
            results.append(result)
            stack.keep_log |= result.errors > 0
            if changed := stack.refresh_pids():
                notes.append(f"{result.name}: {', '.join(changed)} crashed during the case (the launcher's log "
                             "says why): left out of its CPU and RSS figures")
                progress(notes[-1])
    return results, notes


def _case_load(key: str, channels: Channels, config: BenchConfig, latency: float) -> tuple[str, Load]:
    """The row name of case `key` and its load."""
    runs, clients, deadline = config.runs[key], config.clients, config.deadline
    model = f"{latency * 1000:g} ms model" if latency < 1 else f"{latency:g} s model"
    if key == "sequential":
        return f"b. {model}, 1 client", partial(closed_loop, channels, stream_chat, runs, 1, deadline)
    if key == "concurrent":
        return f"c. {model}, {clients} clients", partial(closed_loop, channels, stream_chat, runs, clients, deadline)
    if key == "burst":
        return f"d. {model}, {runs:,} at once", partial(all_at_once, channels, stream_chat, runs, deadline)
    if key == "burst2":
        return f"d2. {model}, {runs:,} at once, 2 engines", partial(all_at_once, channels, stream_chat, runs, deadline)
    if key == "delivery":
        return f"e. step delivery, {runs:,} watched, {model}", partial(
            all_at_once, channels, start_and_watch, runs, deadline
        )
    raise ValueError(f"unknown case {key!r}")


async def _warm_up(channels: Channels, deadline: float) -> list[str]:
    """One seed run before measuring (first connections, imports, caches); verified, not counted."""
    run = await stream_chat(channels.next(), "warm-up", deadline)
    verification = await verify_runs(channels.next(), [run])
    if verification.problems:
        progress(f"the warm-up run failed: {verification.first()}")
        return [f"warm-up run failed: {'; '.join(verification.first())}"]
    progress(f"warm-up run ok ({run.latency_ms:.0f} ms)")
    return []


async def _stack_case(stack: RunningStack, channels: Channels, key: str, name: str, load: Load) -> CaseResult:
    """Measure `load` on the stack, then verify every run it made."""
    progress(f"{name}: running")
    measured = await _measure(UsageMeter(stack.all_pids()), load)
    progress(f"{name}: {len(measured.runs)} runs in {measured.wall_s:.1f} s; verifying each from the store")
    verification = await verify_runs(channels.next(), measured.runs)
    progress(f"{name}: verified {verification.passed}/{verification.checked} runs")
    runs = measured.runs
    return CaseResult(
        key=key, name=name, runs=len(runs), errors=len(verification.problems), wall_s=measured.wall_s,
        latency_ms=[run.latency_ms for run in runs if run.error is None],
        ttfs_ms=[ms for run in runs if (ms := run.time_to_first_step_ms) is not None],
        delivery_ms=[ms for run in runs for ms in run.delivery_ms],
        cpu_s=measured.usage.cpu, peak_rss=measured.usage.peak_rss, start_rss=measured.usage.start_rss,
        outside_cpu_s=measured.usage.outside_cpu, verified=verification.passed, checked=verification.checked,
        problems=verification.first(), failure_kinds=dict(verification.kinds.most_common()),
    )


def _against_baseline(result: CaseResult, baseline: CaseResult) -> str:
    """Runs/s and server-side CPU per run, each relative to the bare stream's."""
    speed = result.runs_per_s / baseline.runs_per_s if baseline.runs_per_s > 0 else math.nan
    cpu = result.server_cpu_ms / baseline.server_cpu_ms if baseline.server_cpu_ms > 0 else math.nan
    return f"{speed:.3f}x calls/s, {cpu:.1f}x CPU"


def _set_ideal(result: CaseResult, latency: float, cores: int) -> None:
    result.ideal_s = SEED_MODEL_CALLS * latency
    result.cpu_floor_s = result.total_cpu_s / cores
    bound = max(result.ideal_s, result.cpu_floor_s)
    result.comparison = (f"ideal {result.ideal_s:.1f} s, floor {result.cpu_floor_s:.1f} s: "
                         f"wall {result.wall_s / bound:.1f}x")


# --- f: the engine killed -----------------------------------------------------------------------------------


def run_resume(config: BenchConfig, server: PostgresServer | None) -> tuple[CaseResult, list[str]]:
    runs, latency = config.runs["resume"], config.latency
    lease = "its default lease" if config.engine_lease is None else f"a {config.engine_lease:g} s lease"
    name = f"f. engine SIGKILLed, {runs:,} in flight, {latency:g} s model, {config.database_label}"
    lease_setting = {} if config.engine_lease is None else {"ENGINE_LEASE_SECONDS": str(config.engine_lease)}
    progress(f"starting the stack with a {latency:g} s model, the engine on {lease}, for the resume case")
    with _stack_on(server, config, latency, **lease_setting) as stack:
        result = asyncio.run(resume_case(stack, runs, latency, config.deadline, name))
        stack.keep_log |= result.errors > 0
    notes = [f"{name}: the engine's CPU and RSS are left out (it was killed; the launcher restarted it), the "
             f"engine on {lease}: a killed engine's runs are resumed once their leases run out"]
    return result, notes


# --- verification -----------------------------------------------------------------------------------------


async def verify_runs(channel: grpc.aio.Channel, runs: Sequence[ClientRun]) -> Verification:
    """Check every run from the store (GetRun with its steps) and what its stream delivered; a run whose call
    failed is a failure too."""
    stored = await fetch_runs(channel, [run.run_id for run in runs if run.run_id])
    verification = Verification(checked=len(runs))
    for run in runs:
        problems = [run.error] if run.error else []
        found = stored.get(run.run_id)
        if found is None:
            problems.append("no run id reached the client")
        else:
            problems += [found] if isinstance(found, str) else seed_run_problems(found)
            if run.error is None:
                problems += delivered_problems(run.sequences)
                if run.final_state != runs_pb2.RUN_STATE_COMPLETED:
                    problems.append(f"the stream ended on {runs_pb2.RunState.Name(run.final_state)}")
        verification.add(f"{run.key} {run.run_id}".strip(), problems, failure_kind(run.error, found))
    return verification


def limit_notes(config: BenchConfig) -> list[str]:
    """What bounds the slow-model case by design, before any code is slow."""
    runs = config.runs["burst"]
    batches = math.ceil(runs / ENGINE_MAX_CONCURRENT_RUNS)
    notes = [
        f"engine defaults: ENGINE_MAX_CONCURRENT_RUNS={ENGINE_MAX_CONCURRENT_RUNS}, "
        f"ENGINE_MAX_QUEUED_RUNS={ENGINE_MAX_QUEUED_RUNS}: {runs:,} runs of {SEED_MODEL_CALLS} x {config.latency:g} s "
        f"need at least {batches} x {SEED_MODEL_CALLS * config.latency:g} s = "
        f"{batches * SEED_MODEL_CALLS * config.latency:g} s with one engine",
    ]
    notes.append("a queued run's TTFS includes its wait in the queue: its first step (user-request) is recorded "
                 "when it begins")
    if runs > ENGINE_MAX_CONCURRENT_RUNS + ENGINE_MAX_QUEUED_RUNS:
        notes.append(f"{runs:,} runs exceed the engine's running + queued limit: expect RESOURCE_EXHAUSTED")
    return notes
