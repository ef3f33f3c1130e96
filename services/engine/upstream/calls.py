"""What the engine's clients of other services share: a unary call with a deadline whose failure surfaces as the
domain error matching its status (services.common.rpc.status), the error of a call made over the executor link,
and the backoff between attempts."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.common.rpc.status import error_from_rpc

ResponseT = TypeVar("ResponseT")

FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0


class CallError(Exception):
    """A call made over the executor link failed with this status (as a unary call would have)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


async def call_unary(
    service: str,
    call: Callable[..., Awaitable[ResponseT]],
    request: Any,
    timeout: float,
    metadata: tuple[tuple[str, str], ...],
    *,
    wait_for_ready: bool = False,
) -> ResponseT:
    """`call(request)` within `timeout` seconds; a failed call raises the domain error of its status, naming
    `service`."""
    try:
        return await call(request, timeout=timeout, metadata=metadata, wait_for_ready=wait_for_ready)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, service) from exc
