"""What the resume tests share (tests/e2e/test_resume*.py, issue 18): a run's steps read back, the engine started
again after its SIGKILL, the resumed seed run checked, and a scripted model that answers runs in parallel by
turn and counts the requests it served for each turn of each run.

The stack itself is the fault tests' (tests/e2e/faults.py), its lease and reaper interval short so that a killed
engine's runs are offered again within seconds.
"""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from threading import Lock
from typing import Any

import httpx

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.launcher.stack import ProcessSpec
from tests.e2e.conftest import RunningStack, wait_ready
from tests.e2e.faults import (
    FINAL,
    LEASE,
    REAP_MARGIN,
    REAPER_INTERVAL,
    assert_numbered,
    fault_stack,
    get_runs,
    kill,
    wait_for,
)
from tests.support.scripted_llm import Delayed, ModelReply, text_reply, tool_call_reply
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

#: The time a killed engine's runs take to be offered again: the lease, a reaper pass, margin.
ORPHANED_WITHIN = LEASE + REAPER_INTERVAL + REAP_MARGIN


@contextmanager
def resume_stack(workdir: Path, *extra: ProcessSpec, **settings: str | float) -> Iterator[RunningStack]:
    """The fault tests' stack with a short engine lease and a fast reaper (unless `settings` say otherwise), plus
    `settings`."""
    short = {"ENGINE_LEASE_SECONDS": LEASE, "RUNS_REAPER_INTERVAL_SECONDS": REAPER_INTERVAL}
    with fault_stack(workdir, *extra, **(short | settings)) as stack:
        yield stack


def kinds(run: runs_pb2.Run) -> list[str]:
    return [str(step.WhichOneof("content")) for step in run.steps]


def without_markers(run: runs_pb2.Run) -> list[runs_pb2.Step]:
    return [step for step in run.steps if step.WhichOneof("content") != "resumed"]


def markers(run: runs_pb2.Run) -> list[runs_pb2.Step]:
    """The run's `resumed` steps."""
    return [step for step in run.steps if step.WhichOneof("content") == "resumed"]


def done(runs: runs_pb2_grpc.RunServiceStub, run_ids: list[str]) -> list[runs_pb2.Run] | None:
    """The runs once none is live or waiting."""
    found = get_runs(runs, run_ids)
    return found if all(run.state in FINAL for run in found) else None


def in_state(
    runs: runs_pb2_grpc.RunServiceStub, run_ids: list[str], state: "runs_pb2.RunState"
) -> list[runs_pb2.Run] | None:
    """The runs once every one is in `state`."""
    found = get_runs(runs, run_ids)
    return found if all(run.state == state for run in found) else None


def restart_engine(stack: RunningStack) -> None:
    stack.start(stack.spec("engine"))
    wait_ready(stack, ["engine"])


def model_answers(stack: RunningStack) -> bool:
    try:
        return httpx.get(f"{stack.stack.model_base_url}/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_model(stack: RunningStack, spec: ProcessSpec) -> None:
    """The stack's demo model (SIGKILLed if it runs) started as `spec` says; returns once it answers."""
    if "model" in stack.processes:
        kill(stack, "model")
    stack.start(spec)
    wait_for("the demo model to answer", 15, lambda: model_answers(stack))


@contextmanager
def model_latency(stack: RunningStack, seconds: float) -> Iterator[None]:
    """The stack's demo model holding each reply back `seconds` inside the block (started again so), and as it was
    after it: a test of a module that shares the stack needs a model slower than the others'."""
    spec = stack.spec("model")
    start_model(stack, replace(spec, env=spec.env | {"DEMO_MODEL_LATENCY_SECONDS": str(seconds)}))
    try:
        yield
    finally:
        start_model(stack, spec)


def assert_resumed_seed_run(run: runs_pb2.Run, attempts: int = 1) -> None:
    """COMPLETED with the seed's timeline and answer, plus `attempts` resume markers, numbered 1..n."""
    assert run.state == runs_pb2.RUN_STATE_COMPLETED, (run.id, runs_pb2.RunState.Name(run.state), run.error_message)
    assert_numbered(run)
    assert timeline(without_markers(run)) == SEED_TIMELINE, timeline(list(run.steps))
    assert "45" in run.steps[-1].agent_response.text
    found = [step.resumed for step in markers(run)]
    assert [marker.attempt for marker in found] == list(range(1, attempts + 1))
    assert run.attempts == attempts
    assert all(marker.executor_id for marker in found)


# --- the model, by turn -----------------------------------------------------------------------------------------

#: The seed example's model replies, one per turn: add, multiply, answer.
SEED_TURNS = (
    tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}, content="First I add."),
    tool_call_reply("calculator", {"operation": "multiply", "x": 15, "y": 3}, content="Now I multiply."),
    text_reply("5 + 10 is 15, and 15 times 3 is 45."),
)
#: What a reply asked for the first time may become instead (held back, streamed slowly ...).
FirstTime = Callable[[ModelReply], ModelReply | Delayed]


def seed_question(n: int) -> str:
    """The seed question, told apart per run so that the model can count each run's turns."""
    return f"{SEED_QUESTION} (run {n})"


def question_of(body: dict[str, Any]) -> str:
    return str(next(message["content"] for message in body["messages"] if message["role"] == "user"))


def turn_of(body: dict[str, Any]) -> int:
    """The model turn a request asks for: how many replies of the model the conversation holds already."""
    return sum(1 for message in body["messages"] if message["role"] == "assistant")


@dataclass
class TurnModel:
    """A `pick` for ScriptedLLM: the replies of a run, turn by turn, by its user question (`turns_for`; the seed
    example's by default), each held back `latency` seconds; `first_time[question, turn]` changes the reply the
    first time that run asks for that turn. `served` counts the requests per (user question, turn): a resumed
    run must not ask for a recorded turn again."""

    turns_for: Callable[[str], Sequence[ModelReply | Delayed]] = lambda question: SEED_TURNS
    latency: float = 0.0
    first_time: dict[tuple[str, int], FirstTime] = field(default_factory=dict)
    served: Counter[tuple[str, int]] = field(default_factory=Counter)
    _lock: Lock = field(default_factory=Lock)

    def __call__(self, body: dict[str, Any]) -> ModelReply | Delayed:
        question, turn = question_of(body), turn_of(body)
        with self._lock:  # read from the test's thread while the model's loop writes
            self.served[question, turn] += 1
            first = self.served[question, turn] == 1
        turns = self.turns_for(question)
        reply = turns[min(turn, len(turns) - 1)]
        change = self.first_time.get((question, turn)) if first else None
        changed = change(reply) if change else reply
        if isinstance(changed, ModelReply) and self.latency:
            return Delayed(changed, self.latency)
        return changed

    def counts(self, question: str) -> list[int]:
        """The requests served for each turn of the run that asked `question`, in turn order."""
        with self._lock:
            return [self.served[question, turn] for turn in range(len(self.turns_for(question)))]


def start_asking(engine: engine_pb2_grpc.AgentServiceStub, *questions: str) -> list[str]:
    """A run started for each question; their ids."""
    return [engine.StartRun(engine_pb2.StartRunRequest(message=question), timeout=10).id for question in questions]
