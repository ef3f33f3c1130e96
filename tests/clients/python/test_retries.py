"""The SDK's retries and error mapping without a stack: a RESOURCE_EXHAUSTED carrying the server's RetryInfo (as
services/common/rpc/interceptor.py sends it) is retried after at least the delay it asks for; UNAVAILABLE is
retried only for calls that are safe to repeat; other statuses are raised at once, as their typed exception."""

import time

import grpc
import pytest

from agentplatform_client import RetryPolicy, errors
from agentplatform_client._rpc import call_unary
from tests.clients.python.fakes import FakeRpcError


class Script:
    """An attempt function that fails with `failures` in turn, then answers "ok"; it records when it was called."""

    def __init__(self, *failures: FakeRpcError) -> None:
        self.failures = list(failures)
        self.calls: list[float] = []

    async def __call__(self, timeout: float | None) -> str:
        self.calls.append(time.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


FAST = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.02)


def test_the_retry_info_of_a_status_is_read() -> None:
    error = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_after=1.5))
    assert isinstance(error, errors.ResourceExhausted)
    assert (error.code, error.message, error.request_id, error.retry_after) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", "req-1", 1.5)
    assert errors.from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "no run")).retry_after is None
    assert errors.retry_delay(b"\xff\xff") is None  # garbage is no hint


async def test_resource_exhausted_with_a_hint_waits_at_least_the_hint() -> None:
    script = Script(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_after=0.3))
    assert await call_unary(script, timeout=5, retry=FAST, idempotent=False) == "ok"
    assert len(script.calls) == 2 and script.calls[1] - script.calls[0] >= 0.3


async def test_unavailable_is_retried_only_when_the_call_is_safe_to_repeat() -> None:
    script = Script(*[FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")] * 2)
    assert await call_unary(script, timeout=5, retry=FAST, idempotent=True) == "ok"
    assert len(script.calls) == 3

    script = Script(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls"))
    with pytest.raises(errors.Unavailable):
        await call_unary(script, timeout=5, retry=FAST, idempotent=False)
    assert len(script.calls) == 1


async def test_other_statuses_and_exhausted_attempts_raise_the_typed_error() -> None:
    script = Script(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad page token"))
    with pytest.raises(errors.InvalidArgument, match="bad page token"):
        await call_unary(script, timeout=5, retry=FAST, idempotent=True)
    assert len(script.calls) == 1

    script = Script(*[FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")] * 10)
    with pytest.raises(errors.Unavailable):
        await call_unary(script, timeout=5, retry=FAST, idempotent=True)
    assert len(script.calls) == FAST.max_attempts

    # A hint longer than the deadline leaves: the error now, not a wait past the deadline.
    script = Script(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_after=30))
    started = time.monotonic()
    with pytest.raises(errors.ResourceExhausted):
        await call_unary(script, timeout=1, retry=FAST, idempotent=True)
    assert time.monotonic() - started < 1
