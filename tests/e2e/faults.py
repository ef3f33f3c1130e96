"""What the fault tests share (tests/e2e/test_faults.py, test_client_faults.py, test_resume*.py,
test_client_follow.py): the stack as separate processes killed with real signals, made whole again for the next
test of a module that shares one stack, and ways to look at its runs."""

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.launcher.stack import ProcessSpec
from tests.e2e.conftest import (
    STARTUP_TIMEOUT,
    RunningStack,
    build_stack_in,
    local_origin,
    stack_environment,
    wait_ready,
    wait_serving,
)
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

LIVE = (runs_pb2.RUN_STATE_QUEUED, runs_pb2.RUN_STATE_RUNNING)
FINAL = (runs_pb2.RUN_STATE_COMPLETED, runs_pb2.RUN_STATE_FAILED, runs_pb2.RUN_STATE_CANCELLED)
#: Steps of the seed example: user request, then (thought, tool call, tool result) twice, then the answer.
SEED_STEPS = 8
#: How often the tests look at the runs while they wait.
POLL_SECONDS = 0.05
T = TypeVar("T")

ENGINE_SERVICE = "agentplatform.engine.v1.AgentService"


# --- the stack ---------------------------------------------------------------------------------------------


def stack_env(workdir: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a stack on free 127.0.0.1 ports with its databases in `workdir`, plus `settings`."""
    return stack_environment(workdir, DEMO_MODEL_CHUNK_DELAY_SECONDS="0.01", **settings)


@contextmanager
def fault_stack(workdir: Path, *extra: ProcessSpec, **settings: str | float) -> Iterator[RunningStack]:
    """Runs, tools, demo model (unless LLM_BASE_URL is set) and engine as separate processes (the launcher's
    definitions), after the `extra` ones; every one killed on the way out."""
    env = stack_env(workdir, {key: str(value) for key, value in settings.items()})
    stack = build_stack_in(workdir, env)
    running = RunningStack(stack, workdir, env, page_port=0)
    names = [spec.name for spec in stack.processes if spec.name != "gateway"]
    try:
        for spec in [*extra, *(running.spec(name) for name in names)]:
            running.start(spec)
        wait_ready(running, names)
        yield running
    finally:
        for name in list(running.processes):
            kill(running, name)


@contextmanager
def gateway_stack(workdir: Path, page_port: int = 0, **settings: str) -> Iterator[RunningStack]:
    """The whole stack as `make run` starts it, Envoy included, with short leases (a killed engine's run is
    offered again within about 3 s) and `settings`; ready once every process, every engine of ENGINE_REPLICAS
    included, serves; every process killed on the way out. With a `page_port`, the gateway's CORS policy allows
    the page a browser test serves there."""
    cors = {"CORS_ALLOWED_ORIGINS": local_origin(page_port)} if page_port else {}
    env = stack_env(workdir, {
        "ENGINE_LEASE_SECONDS": str(LEASE),
        "RUNS_REAPER_INTERVAL_SECONDS": str(REAPER_INTERVAL),
        **cors,
        **settings,
    })
    stack = build_stack_in(workdir, env)
    running = RunningStack(stack, workdir, env, page_port=page_port)
    try:
        for spec in stack.processes:
            running.start(spec)
        wait_ready(running, [spec.name for spec in stack.processes])
        # wait_ready knows the engine by its one-engine name; with ENGINE_REPLICAS they are engine-1, engine-2 …
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for name, address in zip(engine_names(running), stack.engine_addresses, strict=True):
            wait_serving(address, ENGINE_SERVICE, deadline, running.processes[name])
        yield running
    finally:
        for name in list(running.processes):
            kill(running, name)


def engine_names(stack: RunningStack) -> list[str]:
    """The engine processes' names, in the order of `Stack.engine_addresses`."""
    return [spec.name for spec in stack.stack.processes if spec.name == "engine" or spec.name.startswith("engine-")]


def fault_stack_processes(stack: RunningStack) -> list[str]:
    """The names of the processes `fault_stack` starts (all but Envoy)."""
    return [spec.name for spec in stack.stack.processes if spec.name != "gateway"]


def made_whole(stack: RunningStack, names: Iterable[str], timeout: float = 15) -> None:
    """The stack as the next test of a module sharing it expects to find it, whatever the test before did or
    where it failed: the processes `names` running (a killed one started again, one held with SIGSTOP let go) and
    no run left live or waiting (each cancelled, and ended, so that no engine works on it later)."""
    for process in stack.processes.values():
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
    for name in [name for name, process in stack.processes.items() if process.poll() is not None]:
        stack.processes.pop(name)
    missing = [name for name in names if name not in stack.processes]
    for name in missing:
        stack.start(stack.spec(name))
    wait_ready(stack, missing)
    with grpc.insecure_channel(stack.stack.runs_address) as channel:
        runs = runs_pb2_grpc.RunServiceStub(channel)
        left = [run.id for run in list_runs(runs) if run.state not in FINAL]
        for run_id in left:
            runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=5)
        wait_for("the runs a test left to end", timeout, lambda: all(
            run.state in FINAL for run in get_runs(runs, left)
        ))


def kill(stack: RunningStack, name: str) -> None:
    """SIGKILL a process of the stack and reap it."""
    process = stack.processes.pop(name)
    process.kill()
    process.wait()


def logs(stack: RunningStack, *names: str) -> str:
    names = names or tuple(sorted(path.stem for path in stack.workdir.glob("*.log")))
    return "\n".join(f"--- {name} log\n{stack.log(name)[-4000:]}" for name in names)


@contextmanager
def explained(stack: RunningStack, *names: str) -> Iterator[None]:
    """A failed assertion or wait inside the block comes with the tails of the processes' logs."""
    try:
        yield
    except (AssertionError, TimeoutError, grpc.RpcError) as exc:
        raise AssertionError(f"{exc}\n{logs(stack, *names)}") from exc


@contextmanager
def clients(stack: RunningStack) -> Iterator[tuple[engine_pb2_grpc.AgentServiceStub, runs_pb2_grpc.RunServiceStub]]:
    with grpc.insecure_channel(stack.stack.engine_address) as engine, \
            grpc.insecure_channel(stack.stack.runs_address) as runs:
        yield engine_pb2_grpc.AgentServiceStub(engine), runs_pb2_grpc.RunServiceStub(runs)


# --- looking at runs ---------------------------------------------------------------------------------------


def wait_for(what: str, timeout: float, look: Callable[[], T | None]) -> T:
    """Call `look` until it returns something other than None (or False); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = look()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_SECONDS)


def get_runs(runs: runs_pb2_grpc.RunServiceStub, run_ids: list[str]) -> list[runs_pb2.Run]:
    return [runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=5) for run_id in run_ids]


def list_runs(runs: runs_pb2_grpc.RunServiceStub, state: "runs_pb2.RunState" = runs_pb2.RUN_STATE_UNSPECIFIED
              ) -> list[runs_pb2.Run]:
    found, token = [], ""
    while True:
        page = runs.ListRuns(runs_pb2.ListRunsRequest(page_size=1000, page_token=token, state=state), timeout=5)
        found += page.runs
        if not (token := page.next_page_token):
            return found


def ended(runs: runs_pb2_grpc.RunServiceStub, run_ids: list[str]) -> list[runs_pb2.Run] | None:
    """The runs with their steps once every one of them has ended; None while one is live."""
    found = get_runs(runs, run_ids)
    return found if all(run.state not in LIVE for run in found) else None


def assert_numbered(run: runs_pb2.Run) -> None:
    """Steps 1..N, no gap, no duplicate, N the run's step count."""
    sequences = [step.sequence for step in run.steps]
    assert sequences == list(range(1, len(sequences) + 1)), f"run {run.id} has steps {sequences}"
    assert run.step_count == len(sequences)


def assert_seed_answer(run: runs_pb2.Run) -> None:
    assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.id, runs_pb2.RunState.Name(run.state), run.error_message)
    assert_numbered(run)
    assert len(run.steps) == SEED_STEPS
    assert timeline(list(run.steps)) == SEED_TIMELINE
    assert "45" in run.steps[-1].agent_response.text


def assert_ended_on_error(run: runs_pb2.Run, state: "runs_pb2.RunState", code: str) -> None:
    """A run ended `state` with `code`, its last step the matching `error` step, its lease gone."""
    assert (runs_pb2.RunState.Name(run.state), run.error_code) == (runs_pb2.RunState.Name(state), code), (
        run.id, run.error_message
    )
    assert_numbered(run)
    last = run.steps[-1]
    assert last.WhichOneof("content") == "error", f"run {run.id} ends on a {last.WhichOneof('content')} step"
    assert (last.error.code, last.error.message) == (code, run.error_message)
    assert [step.WhichOneof("content") for step in run.steps].count("error") == 1
    assert run.HasField("complete_time") and not run.executor_id


def start_runs(engine: engine_pb2_grpc.AgentServiceStub, count: int) -> list[str]:
    return [
        engine.StartRun(engine_pb2.StartRunRequest(message=SEED_QUESTION, metadata={"n": str(n)}), timeout=10).id
        for n in range(count)
    ]


#: The engines' lease and the store's reaper interval in the tests that wait for the reaper.
LEASE = 2.0
REAPER_INTERVAL = 0.5
#: Time for the reaper's write and our polling, beyond the lease and one reaper interval.
REAP_MARGIN = 2.0
