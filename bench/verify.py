"""Is a run of the seed example right? Every run of every case is checked after its timing, from the store: a
fast wrong answer must not pass."""

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common.rpc.protoconv import dict_from_struct, python_from_value

#: The seed's worked example: two calculator calls, 5 + 10 = 15 then 15 * 3 = 45.
SEED_QUESTION = "What is 5 + 10, then multiply by 3?"
#: Its timeline, step by step, with three model calls (the thoughts and the response).
SEED_STEP_TYPES = (
    "user_request", "agent_thought", "tool_call", "tool_result",
    "agent_thought", "tool_call", "tool_result", "agent_response",
)
SEED_MODEL_CALLS = 3
SEED_TOOL_CALLS = (("add", 5, 10), ("multiply", 15, 3))
SEED_TOOL_RESULTS = (15, 45)
SEED_ANSWER = "45"
#: GetRun calls in flight at once while verifying, so that verification does not itself become a load test.
VERIFY_CONCURRENCY = 16
GET_RUN_TIMEOUT_SECONDS = 30.0


def seed_run_problems(run: runs_pb2.Run, resumes: int = 0) -> list[str]:
    """What is wrong with `run` as an answer to the seed question (nothing: an empty list). `resumes`: how many
    `resumed` steps it must carry (a run whose engine died under it), besides the seed's steps."""
    problems = []
    if run.state != runs_pb2.RUN_STATE_COMPLETED:
        detail = f" ({run.error_code}: {run.error_message})" if run.error_code or run.error_message else ""
        problems.append(f"state {runs_pb2.RunState.Name(run.state)}{detail}")
    markers = sum(step.HasField("resumed") for step in run.steps)
    if markers != resumes:
        problems.append(f"{markers} resume markers, expected {resumes}")
    steps = [step for step in run.steps if not step.HasField("resumed")]
    types = tuple(step.WhichOneof("content") for step in steps)
    if types != SEED_STEP_TYPES:
        problems.append(f"step types {list(types)}")
    sequences = [step.sequence for step in run.steps]
    if sequences != list(range(1, len(SEED_STEP_TYPES) + markers + 1)):
        problems.append(f"sequences {sequences}")
    model_calls = sum(step.HasField("model_call") for step in steps)
    if model_calls != SEED_MODEL_CALLS:
        problems.append(f"{model_calls} steps carry a model call, expected {SEED_MODEL_CALLS}")
    if not problems:
        problems += _content_problems(steps)
    return problems


def _content_problems(steps: Sequence[runs_pb2.Step]) -> list[str]:
    calls = [step.tool_call for step in steps if step.HasField("tool_call")]
    results = [step.tool_result for step in steps if step.HasField("tool_result")]
    called = tuple((p.get("operation"), p.get("x"), p.get("y")) for p in (dict_from_struct(c.params) for c in calls))
    if called != SEED_TOOL_CALLS or any(call.tool_name != "calculator" for call in calls):
        return [f"tool calls {called}"]
    returned = tuple(python_from_value(result.result) for result in results)
    if returned != SEED_TOOL_RESULTS:
        return [f"tool results {returned}"]
    if SEED_ANSWER not in steps[-1].agent_response.text:
        return [f"answer {steps[-1].agent_response.text!r} lacks {SEED_ANSWER}"]
    return []


def delivered_problems(sequences: Sequence[int]) -> list[str]:
    """What is wrong with the steps a stream delivered: each of the run's steps once, in order."""
    expected = list(range(1, len(SEED_STEP_TYPES) + 1))
    return [] if list(sequences) == expected else [f"the stream delivered steps {list(sequences)}"]


def failure_kind(call_error: str | None, stored: runs_pb2.Run | str | None) -> str:
    """A short name for why a run failed, to count failures by: the call's status, or the run's end."""
    if call_error:
        return call_error.split(":")[0]
    if stored is None:
        return "no run id"
    if isinstance(stored, str):
        return "GetRun failed"
    if stored.state != runs_pb2.RUN_STATE_COMPLETED:
        return f"{runs_pb2.RunState.Name(stored.state).removeprefix('RUN_STATE_')} {stored.error_code}".strip()
    return "wrong timeline"


@dataclass
class Verification:
    """The outcome of checking a case's runs: how many were checked, and what was wrong with the others."""

    checked: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)
    #: How many failed runs there are of each kind (see `failure_kind`).
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def passed(self) -> int:
        return self.checked - len(self.problems)

    def add(self, run_key: str, problems: list[str], kind: str) -> None:
        if problems:
            self.problems.setdefault(run_key, []).extend(problems)
            self.kinds[kind] += 1

    def first(self, limit: int = 3) -> list[str]:
        return [f"{key}: {'; '.join(found)}" for key, found in list(self.problems.items())[:limit]]


async def fetch_runs(channel: grpc.aio.Channel, run_ids: Sequence[str]) -> dict[str, runs_pb2.Run | str]:
    """GetRun (with its steps) for each id: the run, or why it could not be read."""
    stub = runs_pb2_grpc.RunServiceStub(channel)
    limit = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def fetch(run_id: str) -> runs_pb2.Run | str:
        async with limit:
            try:
                return await stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=GET_RUN_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                return f"GetRun failed: {error.code().name} {error.details()}"

    fetched = await asyncio.gather(*(fetch(run_id) for run_id in run_ids))
    return dict(zip(run_ids, fetched, strict=True))
