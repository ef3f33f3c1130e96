"""Steps as the engine records them: one tool-using turn of the agent, repeated."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.usage import Usage
from services.runs.records import ModelCallStats, NewRun, NewStep

#: The engine process the benchmark's runs are created under, and its lease (longer than any case).
EXECUTOR = "engine-bench-1"
LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class StepTemplate:
    type: str
    content: dict[str, Any]
    duration_ms: float | None = None
    model_call: ModelCallStats | None = None


#: The model thinks, calls the calculator, gets the result and answers: the engine's steps for
#: "What is 5 + 10, then multiply by 3?", the README's example, with the content the engine stores.
TURN = (
    StepTemplate(
        "agent-thought",
        {"text": "I should add 5 and 10 first, then multiply the sum by 3."},
        duration_ms=640.0,
        model_call=ModelCallStats(Usage(412, 38), time_to_first_token_ms=210.0, latency_ms=640.0),
    ),
    StepTemplate(
        "tool-call",
        {
            "tool_name": "calculator",
            "tool_call_id": "call_8f2c41d9a6b7",
            "params": {"expression": "(5 + 10) * 3"},
            "raw_arguments": '{"expression": "(5 + 10) * 3"}',
        },
    ),
    StepTemplate(
        "tool-result",
        {"tool_name": "calculator", "tool_call_id": "call_8f2c41d9a6b7", "result": 45, "text": "45"},
        duration_ms=0.4,
    ),
    StepTemplate(
        "agent-response",
        {"text": "5 + 10 is 15, and 15 multiplied by 3 is 45."},
        duration_ms=520.0,
        model_call=ModelCallStats(Usage(468, 21), time_to_first_token_ms=180.0, latency_ms=520.0),
    ),
)


def template(sequence: int) -> StepTemplate:
    return TURN[(sequence - 1) % len(TURN)]


def new_step(sequence: int) -> NewStep:
    """The step with `sequence` (explicit, as the engine sends it: a retry is then idempotent)."""
    step = template(sequence)
    return NewStep(step.type, step.content, sequence, step.duration_ms, step.model_call)


def new_run(query: str = "What is 5 + 10, then multiply by 3?") -> NewRun:
    return NewRun(
        user_query=query,
        owner="bench",
        executor_id=EXECUTOR,
        lease_seconds=LEASE_SECONDS,
        model="demo",
        metadata={"user": "bench", "channel": "web"},
    )


def step_row(run_id: str, sequence: int, created_at: datetime) -> tuple[Any, ...]:
    """The run_steps row of `new_step(sequence)`, in the column order of STEP_COLUMNS, for driver inserts."""
    step = template(sequence)
    call = step.model_call
    return (
        run_id,
        sequence,
        step.type,
        json.dumps(step.content),
        created_at,
        step.duration_ms,
        call.usage.prompt_tokens if call else None,
        call.usage.completion_tokens if call else None,
        call.time_to_first_token_ms if call else None,
        call.latency_ms if call else None,
    )


STEP_COLUMNS = (
    "run_id",
    "sequence",
    "type",
    "content",
    "created_at",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "time_to_first_token_ms",
    "model_latency_ms",
)
