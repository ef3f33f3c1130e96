"""What the run store accepts: sizes, characters and shapes, checked before anything reaches the database.

The store trusts no caller, the platform's own engine included. Every check raises InvalidArgument with a
message naming the field, and runs before the database sees the value, so SQLite and PostgreSQL give the
same answer (PostgreSQL refuses NUL characters in text and JSON that SQLite would store).
"""

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from services.common.checks import check_metadata, check_text, parse_uuid
from services.common.errors import InvalidArgument
from services.common.identity import MAX_USER_ID
from services.common.limits import RunLimits
from services.common.run_vocabulary import FINAL_STATES, RUN_STATES, MultitaskStrategy
from services.runs.models import STEP_TYPES
from services.runs.records import NewRun, NewStep

MAX_USER_QUERY_BYTES = 1024 * 1024
MAX_MODEL_CHARS = 200  # the column's width
MAX_ERROR_MESSAGE_CHARS = 16 * 1024
MAX_ERROR_CODE_CHARS = 64
MAX_EXECUTOR_ID_CHARS = 64
MAX_CANCEL_REASON_CHARS = 512
MIN_LEASE_SECONDS = 1.0
MAX_LEASE_SECONDS = 300.0
#: Sequences are stored as 32-bit integers; a cursor above this can name no step.
MAX_SEQUENCE = 2**31 - 1


@dataclass(frozen=True)
class StoreLimits:
    """Limits that are settings (RUNS_MAX_STEP_BYTES, RUNS_MAX_ATTEMPTS)."""

    max_step_bytes: int = 1024 * 1024
    #: How many times a run whose engine stopped is resumed; stopped once more, it ends FAILED "interrupted".
    max_attempts: int = 3


def parse_run_id(run_id: str, field: str = "run_id") -> str:
    """The canonical form of a run id (a UUID); InvalidArgument when it is empty or not a UUID."""
    return parse_uuid(run_id, field, "run")


def check_run_state(state: str) -> None:
    if state not in RUN_STATES:
        raise InvalidArgument(f"unknown run state {state!r}; use one of {', '.join(RUN_STATES)}")


def check_executor_id(executor_id: str) -> None:
    check_text("executor_id", executor_id, MAX_EXECUTOR_ID_CHARS, required=True)


#: The largest value each limit's column holds (32-bit counts, 64-bit tokens, milliseconds of a duration).
MAX_LIMITS = {
    "max_model_calls": 2**31 - 1,
    "max_duration_seconds": (2**63 - 1) // 1000,
    "max_total_tokens": 2**63 - 1,
    "max_tool_calls": 2**31 - 1,
}


def check_limits(limits: RunLimits) -> None:
    for name, value in dataclasses.asdict(limits).items():
        if value is not None and not 0 < value <= MAX_LIMITS[name]:
            field = name.removesuffix("_seconds")  # the wire's name: max_duration, a Duration
            raise InvalidArgument(f"limits.{field} must be positive and at most {MAX_LIMITS[name]} (or unset), "
                                  f"got {value:g}")


#: Lease epochs are stored as 64-bit integers.
MAX_LEASE_EPOCH = 2**63 - 1


def check_lease_epoch(epoch: int) -> None:
    if not 0 <= epoch <= MAX_LEASE_EPOCH:
        raise InvalidArgument(f"lease_epoch must be 0 (none) or the epoch of the caller's lease (1 to "
                              f"{MAX_LEASE_EPOCH}), got {epoch}")


def check_lease_seconds(seconds: float) -> None:
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(
            f"lease_duration must be {MIN_LEASE_SECONDS:g} s to {MAX_LEASE_SECONDS:g} s, got {seconds:g} s"
        )


def checked_new_run(run: NewRun, limits: StoreLimits) -> NewRun:
    """`run` validated; the request id in canonical form, its steps numbered 1, 2 ..."""
    check_text("user_query", run.user_query, MAX_USER_QUERY_BYTES, required=True)
    if len(run.user_query.encode()) > MAX_USER_QUERY_BYTES:
        raise InvalidArgument(f"user_query is larger than {MAX_USER_QUERY_BYTES} bytes")
    check_text("model", run.model, MAX_MODEL_CHARS)
    check_metadata(run.metadata)
    check_executor_id(run.executor_id)
    check_text("owner", run.owner, MAX_USER_ID, required=True)
    if run.agent_id:
        parse_uuid(run.agent_id, "agent_id", "agent")
    if run.agent_revision < 0 or (run.agent_revision == 0) != (not run.agent_id):
        raise InvalidArgument("agent_revision must be the revision (1, 2 ...) of agent_id, or 0 with no agent")
    check_lease_seconds(run.lease_seconds)
    if run.state not in ("queued", "running"):
        raise InvalidArgument(f"a run is created QUEUED or RUNNING, not {run.state}")
    check_limits(run.limits)
    request_id = parse_run_id(run.request_id, "request_id") if run.request_id else ""
    thread_id = parse_uuid(run.thread_id, "thread_id", "thread") if run.thread_id else ""
    workflow_id = parse_uuid(run.workflow_id, "workflow_id", "workflow") if run.workflow_id else ""
    if run.workflow_revision < 0 or (run.workflow_revision == 0) != (not workflow_id):
        raise InvalidArgument("workflow_revision must be the revision (1, 2 ...) of workflow_id, or 0 with none")
    if workflow_id and (thread_id or run.agent_id):
        raise InvalidArgument("a workflow run has no thread and no agent of its own: leave thread_id and agent_id "
                              "empty")
    _check_hex("trace_id", run.trace_id, 32)
    _check_hex("trace_span_id", run.trace_span_id, 16)
    if bool(run.trace_id) != bool(run.trace_span_id):
        raise InvalidArgument("trace_id and trace_span_id go together: give both or neither")
    strategies = [strategy.value for strategy in MultitaskStrategy]
    if run.multitask not in strategies:
        raise InvalidArgument(f"unknown multitask strategy {run.multitask!r}; use one of {', '.join(strategies)}")
    if run.steps and run.state != "running":
        raise InvalidArgument(
            "steps can only be created with a RUNNING run; a QUEUED run gets its steps once it begins"
        )
    if len(run.steps) > MAX_STEPS_PER_CREATE:
        raise InvalidArgument(f"at most {MAX_STEPS_PER_CREATE} steps with a create, got {len(run.steps)}")
    steps = []
    for position, step in enumerate(run.steps, 1):
        if step.sequence not in (0, position):
            raise InvalidArgument(f"step {position} of a create has sequence {step.sequence}; use 0 or {position}")
        steps.append(dataclasses.replace(checked_step(position, step, limits), sequence=position))
    return dataclasses.replace(
        run, request_id=request_id, thread_id=thread_id, workflow_id=workflow_id, steps=tuple(steps)
    )


#: Steps one CreateRun may carry.
MAX_STEPS_PER_CREATE = 10


def _check_hex(field: str, value: str, digits: int) -> None:
    """A W3C trace or span id: `digits` lowercase hex digits, not all zero (the invalid id); or ""."""
    if value and (len(value) != digits or value.strip("0123456789abcdef") or not value.strip("0")):
        raise InvalidArgument(f"{field} must be {digits} lowercase hex digits, not all zero (a W3C trace context id)")


def request_fingerprint(run: NewRun) -> str:
    """What makes two creates "the same request" for AIP-155: everything but the executor, its lease and the
    initial state (which depends on how busy the engine was when each attempt arrived). The owner is part of
    it: one user's request id never finds another user's run. Nor the trace: each attempt of a create may be in a
    trace of its own."""
    payload = [
        run.owner, run.agent_id, run.agent_revision, run.user_query, run.model, sorted(run.metadata.items()),
        dataclasses.asdict(run.limits),
    ]
    if run.thread_id or run.multitask != "reject":
        # Only then, so fingerprints stored before threads existed still match their retries.
        payload += [run.thread_id, run.multitask]
    if run.workflow_id:
        payload += [run.workflow_id, run.workflow_revision]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


#: A NUL's escape in JSON text: `\u0000` after an even number of backslashes (after an odd number, the backslash
#: is itself escaped, and the text is the six characters `\u0000`, which is fine to store).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

#: Longest workflow node id a step may carry (the agents service allows 64).
MAX_NODE_ID_CHARS = 64


def checked_step(position: int, step: NewStep, limits: StoreLimits) -> NewStep:
    """`step` validated, with its content in the form the database hands back (for idempotency checks)."""
    if step.type not in STEP_TYPES:
        raise InvalidArgument(f"step {position} has unknown type {step.type!r}; use one of {', '.join(STEP_TYPES)}")
    if step.sequence < 0 or step.sequence > MAX_SEQUENCE:
        raise InvalidArgument(f"step {position} has sequence {step.sequence}; use 0 (assign the next) or 1 to "
                              f"{MAX_SEQUENCE}")
    if step.duration_ms is not None and step.duration_ms < 0:
        raise InvalidArgument(f"step {position} has a negative duration ({step.duration_ms} ms)")
    if step.node_id:
        check_text(f"step {position} node_id", step.node_id, MAX_NODE_ID_CHARS)
    if step.model_call is not None:
        usage = step.model_call.usage
        if min(usage.prompt_tokens, usage.completion_tokens) < 0:
            raise InvalidArgument(f"step {position} has negative token counts")
        if not 0 <= step.model_call.cached_prompt_tokens <= usage.prompt_tokens:
            raise InvalidArgument(
                f"step {position}: model_call.cached_prompt_tokens must be 0 to its prompt tokens "
                f"({usage.prompt_tokens}), got {step.model_call.cached_prompt_tokens}"
            )
        check_text(f"step {position} model_call.model", step.model_call.model, MAX_MODEL_CHARS)
    try:
        # ensure_ascii: a NUL anywhere in the content shows as the escape \u0000, so one search finds it.
        encoded = json.dumps(step.content, allow_nan=False, ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"step {position} content is not JSON-serialisable: {exc}") from None
    if _NUL_ESCAPE.search(encoded):
        raise InvalidArgument(f"step {position} content contains a NUL character (\\u0000), which cannot be stored")
    if len(encoded) > limits.max_step_bytes:
        raise InvalidArgument(
            f"step {position} content is {len(encoded)} bytes as JSON; the limit is {limits.max_step_bytes} "
            "(RUNS_MAX_STEP_BYTES)"
        )
    # Round-tripped so that a retried step compares equal to what a JSON column returns (tuples become lists).
    content: Any = json.loads(encoded)
    if not isinstance(content, dict):
        raise InvalidArgument(f"step {position} content must be a JSON object")
    return dataclasses.replace(step, content=content)


def check_finish(state: str, error_code: str, error_message: str) -> None:
    if state not in FINAL_STATES:
        raise InvalidArgument(f"a run can only be finished as {', '.join(FINAL_STATES)}, got {state!r}")
    check_text("error_message", error_message, MAX_ERROR_MESSAGE_CHARS)
    check_text("error_code", error_code, MAX_ERROR_CODE_CHARS)
    if state == "completed":
        if error_message or error_code:
            raise InvalidArgument("error_message and error_code must be empty for a completed run")
    elif not error_message.strip() or not error_code.strip():
        raise InvalidArgument(f"error_code and error_message are required to finish a run as {state}; say what "
                              "went wrong")
