"""A failed gRPC call as the SDK sees it (status, message, trailing metadata with an optional RetryInfo), for the
SDK's tests that need no stack (test_retries.py, test_follow.py)."""

from datetime import timedelta

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class FakeRpcError(grpc.RpcError):
    """What a failed grpc.aio call raises: a status, the server's message and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None = None) -> None:
        self._code, self._message = code, message
        self._trailers: tuple[tuple[str, str | bytes], ...] = (("x-request-id", "req-1"),)
        if retry_after is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromTimedelta(timedelta(seconds=retry_after))
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
            self._trailers += tuple(rpc_status.to_status(status).trailing_metadata)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailers
