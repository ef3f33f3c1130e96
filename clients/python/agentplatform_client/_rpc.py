"""What every call of the SDK shares: where the platform is, who the caller is, the channel, and unary calls
with a deadline, retries with backoff (at least the server's RetryInfo hint) and typed errors.

Used by `AsyncClient` (aio.py) and the re-attaching streams (follow.py); nothing here is public API.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from agentplatform_client import errors

#: The gateway `make run` serves: Envoy, which routes plain gRPC (as well as grpc-web and Connect) to the services.
DEFAULT_ADDRESS = "127.0.0.1:8080"
ADDRESS_ENV = "AGENTPLATFORM_ADDRESS"
API_KEY_ENV = "AGENTPLATFORM_API_KEY"
#: The deadline of a unary call, retries included, unless the client or the call says otherwise.
DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How unary calls are retried: up to `max_attempts` attempts in all, waiting `initial_delay` seconds
    (doubled each time, with jitter, at most `max_delay`) or the server's RetryInfo hint, whichever is longer.

    Retried: UNAVAILABLE (the service or the connection was briefly gone) for calls that are safe to send again
    (reads; starts, which carry a request id; UpdateTool, which sets values; CancelRun), and RESOURCE_EXHAUSTED
    with a RetryInfo hint (a full run queue: the server asked to come back later) for any call, since the server
    refused it without doing it. Nothing else: an answer such as NOT_FOUND would be the same the second time."""

    max_attempts: int = 4
    initial_delay: float = 0.25
    max_delay: float = 5.0

    def delay(self, attempt: int, error: errors.ApiError | None = None) -> float:
        """The wait before attempt `attempt` + 1 (attempt 1 failed: the first retry)."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        jittered = ceiling / 2 + random.random() * ceiling / 2
        hint: float = error.retry_after or 0.0 if error is not None else 0.0
        return max(jittered, hint)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Target:
    """Where the platform is and how to reach it."""

    address: str
    secure: bool

    @classmethod
    def parse(cls, address: str | None) -> Target:
        """`host:port` (plain, as `make run` serves), `http://host:port`, or `https://host[:port]` (TLS)."""
        value = (address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS).strip().rstrip("/")
        if value.startswith("https://"):
            host = value.removeprefix("https://")
            return cls(host if ":" in host else f"{host}:443", True)
        return cls(value.removeprefix("http://"), False)

    def channel(self) -> grpc.aio.Channel:
        if self.secure:
            return grpc.aio.secure_channel(self.address, grpc.ssl_channel_credentials())
        return grpc.aio.insecure_channel(self.address)


def credentials(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata of an API key (`apk_...`) or a bearer token (a JWT): the argument, else
    AGENTPLATFORM_API_KEY, else none (a platform without AUTH_API_KEYS accepts anonymous calls)."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    key = key.strip().removeprefix("Bearer ").strip()
    return (("authorization", f"Bearer {key}"),) if key else ()


class Deadline:
    """One deadline over every attempt of a call (None: no deadline)."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def allows(self, wait: float) -> bool:
        """Whether waiting `wait` seconds still leaves time for another attempt."""
        return self.at is None or time.monotonic() + wait < self.at


async def call_unary(
    invoke: Callable[[float | None], Awaitable[T]],
    *,
    timeout: float | None,
    retry: RetryPolicy,
    idempotent: bool,
) -> T:
    """`invoke(timeout)` (one attempt of a unary call with that deadline), retried by `retry`; its failure as the
    SDK's typed exception."""
    deadline = Deadline(timeout)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await invoke(deadline.remaining())
        except grpc.RpcError as exc:
            error = errors.from_rpc_error(exc)
        if attempt >= retry.max_attempts or not retryable(error, idempotent):
            raise error
        wait = retry.delay(attempt, error)
        if not deadline.allows(wait):
            raise error
        await asyncio.sleep(wait)


def retryable(error: errors.ApiError, idempotent: bool) -> bool:
    if isinstance(error, errors.ResourceExhausted):
        return error.retry_after is not None
    return idempotent and isinstance(error, errors.Unavailable)


def stub_call(stub: Any, method: str, request: Any, metadata: tuple[tuple[str, str], ...]) -> Callable[
    [float | None], Awaitable[Any]
]:
    """One attempt of `stub.method(request)` as `call_unary` wants it."""

    def invoke(timeout: float | None) -> Awaitable[Any]:
        call: Awaitable[Any] = getattr(stub, method)(request, metadata=metadata, timeout=timeout)
        return call

    return invoke
