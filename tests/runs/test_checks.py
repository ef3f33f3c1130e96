"""Bad input gets the same answer on SQLite and PostgreSQL: InvalidArgument naming the field, and nothing stored.

PostgreSQL refuses NUL characters in text and JSON, too-wide values and out-of-range integers that SQLite
would store; before the store checked its input these were INTERNAL errors there and successes on SQLite.
Each test runs its cases in a loop (one database per test, not per case, keeps the PostgreSQL run short);
a failure names the case.
"""

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.common.errors import InvalidArgument, OutOfRange
from services.runs.checks import MAX_SEQUENCE, StoreLimits
from services.runs.records import NewStep
from services.runs.store import RunStore
from services.runs.watch import watch_run
from tests.runs.helpers import EXECUTOR, new_run

NUL = "\x00"


async def assert_invalid(case: str, operation: Awaitable[object], expected: str) -> None:
    """`operation` raises InvalidArgument with a message matching `expected`; any other outcome names `case`."""
    try:
        await operation
    except InvalidArgument as exc:
        assert re.search(expected, str(exc)), f"{case}: {exc}"
    except Exception as exc:
        exc.add_note(f"case: {case}")
        raise
    else:
        pytest.fail(f"{case}: accepted")


BAD_CREATES: dict[str, tuple[dict[str, Any], str]] = {
    "nul-query": ({"user_query": f"what is{NUL}5 + 10?"}, r"user_query contains a NUL character"),
    "nul-metadata-value": ({"metadata": {"session": f"s{NUL}1"}}, r"metadata\['session'\] contains a NUL character"),
    "nul-metadata-key": ({"metadata": {f"ses{NUL}sion": "s1"}}, r"metadata key .* contains a NUL character"),
    "nul-model": ({"model": f"demo{NUL}"}, r"model contains a NUL character"),
    "long-model": ({"model": "m" * 201}, r"model is 201 characters long; the limit is 200"),
    "17-pairs": ({"metadata": {f"k{i}": "v" for i in range(17)}}, r"metadata has 17 pairs; at most 16"),
    "long-key": ({"metadata": {"k" * 65: "v"}}, r"metadata key .* is 65 characters long; the limit is 64"),
    "long-value": ({"metadata": {"k": "v" * 513}}, r"metadata\['k'\] is 513 characters long; the limit is 512"),
    "empty-key": ({"metadata": {"": "v"}}, r"metadata keys must not be empty"),
    "query-over-1-MiB": ({"user_query": "é" * 600_000}, r"user_query is larger than 1048576 bytes"),
    "nul-executor": ({"executor_id": f"engine{NUL}"}, r"executor_id contains a NUL character"),
    "long-executor": ({"executor_id": "e" * 65}, r"executor_id is 65 characters long; the limit is 64"),
    "nul-request-id": ({"request_id": f"6f1c2f7e-4f55-4c1e-9a1e-3f3b8f0d2a1{NUL}"}, r"request_id .* is not a valid"),
}


async def test_a_bad_create_is_invalid_argument_and_stores_nothing(store: RunStore) -> None:
    for case, (overrides, expected) in BAD_CREATES.items():
        await assert_invalid(case, store.create_run(new_run(**overrides)), expected)
    assert (await store.list_runs())[0] == []


async def test_the_largest_accepted_create_is_stored_on_every_backend(store: RunStore) -> None:
    metadata = {f"k{i:02}" + "k" * 60: "v" * 512 for i in range(16)}
    run = await store.create_run(new_run("q", model="m" * 200, metadata=metadata, executor_id="e" * 64))
    stored = await store.get_run(run.id)
    assert (stored.model, stored.metadata, stored.executor_id) == ("m" * 200, metadata, "e" * 64)


BAD_STEPS: dict[str, tuple[NewStep, str]] = {
    "nul-text": (NewStep("agent-thought", {"text": f"a{NUL}b"}), r"step 2 content contains a NUL character"),
    "nul-nested": (NewStep("tool-call", {"params": {"deep": [f"x{NUL}"]}}), r"step 2 content contains a NUL"),
    "nul-key": (NewStep("tool-call", {f"key{NUL}": 1}), r"step 2 content contains a NUL character"),
    # {"text": "..."} is 12 bytes around the text.
    "over-byte-limit": (
        NewStep("agent-thought", {"text": "x" * 2037}), r"step 2 content is 2049 bytes as JSON; the limit is 2048"
    ),
    "huge-sequence": (NewStep("agent-thought", {"text": "x"}, MAX_SEQUENCE + 1), r"step 2 has sequence 2147483648"),
    "nan": (NewStep("agent-thought", {"n": float("nan")}), r"step 2 content is not JSON-serialisable"),
}


async def test_a_bad_step_is_invalid_argument_and_stores_nothing(store: RunStore) -> None:
    limited = RunStore(store.database, store.signals, limits=StoreLimits(max_step_bytes=2048))
    run = await limited.create_run(new_run())
    for case, (step, expected) in BAD_STEPS.items():
        # The good step before the bad one is not stored either: a batch is one transaction.
        batch = [NewStep("agent-thought", {"text": "fine"}), step]
        await assert_invalid(case, limited.append_steps(run.id, batch), expected)
    assert (await limited.get_run(run.id)).step_count == 0
    [stored] = await limited.append_steps(run.id, [NewStep("agent-thought", {"text": "x" * 2036})])  # at the limit
    assert stored.sequence == 1
    await limited.close()


async def test_a_run_id_that_is_not_a_uuid_is_invalid_argument_everywhere(store: RunStore) -> None:
    calls: dict[str, Callable[[str], Awaitable[object]]] = {
        "get_run": lambda run_id: store.get_run(run_id),
        "append_steps": lambda run_id: store.append_steps(run_id, [NewStep("agent-thought", {"text": "a"})]),
        "finish_run": lambda run_id: store.finish_run(run_id, "completed"),
        "cancel_run": lambda run_id: store.cancel_run(run_id),
        "begin_run": lambda run_id: store.begin_run(run_id, EXECUTOR),
        "delete_run": lambda run_id: store.delete_run(run_id),
        "renew_leases": lambda run_id: store.renew_leases(EXECUTOR, [run_id]),
        "watch_run": lambda run_id: anext(watch_run(store, store.signals, run_id, 0, 30)),
    }
    # Longer than the 36-character id column, and with a NUL: what PostgreSQL refused with an internal error.
    for bad in ("run-1", "x" * 100, f"00000000-0000-4000-8000-00000000000{NUL}"):
        for name, call in calls.items():
            await assert_invalid(f"{name}({bad[:40]!r})", call(bad), "is not a valid run id")


async def test_a_cursor_out_of_the_sequence_range_is_invalid_argument(store: RunStore) -> None:
    run = await store.create_run(new_run())
    for after in (-1, MAX_SEQUENCE + 1, 2**63 - 1):
        expected = rf"after_sequence must be 0 to {MAX_SEQUENCE} .*, got {after}"
        await assert_invalid(f"after={after}", anext(watch_run(store, store.signals, run.id, after, 30)), expected)
    await store.finish_run(run.id, "completed")
    with pytest.raises(OutOfRange):  # the largest cursor is in range: past the end of a finished run
        await anext(watch_run(store, store.signals, run.id, MAX_SEQUENCE, 30))


BAD_WRITES: dict[str, tuple[Callable[[RunStore, str], Awaitable[object]], str]] = {
    "nul-message": (lambda s, run_id: s.finish_run(run_id, "failed", "boom", f"it{NUL}broke"),
                    "error_message contains a NUL"),
    "nul-code": (lambda s, run_id: s.finish_run(run_id, "failed", f"bo{NUL}om", "it broke"),
                 "error_code contains a NUL"),
    "long-code": (lambda s, run_id: s.finish_run(run_id, "failed", "c" * 65, "it broke"),
                  "error_code is 65 characters"),
    "nul-reason": (lambda s, run_id: s.cancel_run(run_id, f"stop{NUL}"), "reason contains a NUL"),
    "long-reason": (lambda s, run_id: s.cancel_run(run_id, "r" * 513), "reason is 513 characters long"),
    "nul-executor": (lambda s, run_id: s.begin_run(run_id, f"engine{NUL}"), "executor_id contains a NUL"),
    "long-executor": (lambda s, run_id: s.renew_leases("e" * 65, [run_id]), "executor_id is 65 characters long"),
}


async def test_bad_text_in_other_writes_is_invalid_argument(store: RunStore) -> None:
    run = await store.create_run(new_run())
    for case, (call, expected) in BAD_WRITES.items():
        await assert_invalid(case, call(store, run.id), expected)
    stored = await store.get_run(run.id)
    assert (stored.state, stored.cancel_requested, stored.steps) == ("running", False, [])
