"""The SDK's exceptions: every failed call surfaces as an `ApiError` subclass chosen by its gRPC status code.

One mapping, here (`ERROR_BY_CODE`), used by the async and sync clients alike and by the CLI for its exit
codes. Each error carries the status `code`, the server's `message` (which says what to do), the request id the
platform answered with (`request_id`, to find the call in the server's logs) and, when the server sent a
google.rpc.RetryInfo (a full run queue, a busy gateway), `retry_after` in seconds.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2

#: The trailer gRPC servers put the rich status (google.rpc.Status) in.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


class ApiError(Exception):
    """A call the platform (or the connection to it) answered with a status other than OK."""

    #: The status this class stands for (the base class: whatever the call ended with).
    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.status
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(ApiError):
    status = grpc.StatusCode.CANCELLED


class InvalidArgument(ApiError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ApiError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ApiError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    status = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ApiError):
    status = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ApiError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ApiError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ApiError):
    status = grpc.StatusCode.ABORTED


class OutOfRange(ApiError):
    status = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ApiError):
    status = grpc.StatusCode.UNIMPLEMENTED


class Internal(ApiError):
    status = grpc.StatusCode.INTERNAL


class Unavailable(ApiError):
    status = grpc.StatusCode.UNAVAILABLE


class DataLoss(ApiError):
    status = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ApiError):
    status = grpc.StatusCode.UNAUTHENTICATED


#: Status code -> exception class; a code not listed (UNKNOWN) is a plain ApiError.
ERROR_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    cls.status: cls
    for cls in (
        Cancelled, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied, ResourceExhausted,
        FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated,
    )
}


def error_for(
    code: grpc.StatusCode, message: str, *, request_id: str = "", retry_after: float | None = None
) -> ApiError:
    """The exception for a status."""
    return ERROR_BY_CODE.get(code, ApiError)(
        message or code.name, code=code, request_id=request_id, retry_after=retry_after
    )


def from_rpc_error(error: grpc.RpcError) -> ApiError:
    """The exception for a failed gRPC call (aio or sync: both are grpc.Call objects with a status)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    message = error.details() if callable(getattr(error, "details", None)) else str(error)
    trailers = _metadata(error)
    return error_for(
        code or grpc.StatusCode.UNKNOWN,
        message or "",
        request_id=_text(trailers.get("x-request-id", b"")),
        retry_after=retry_delay(trailers.get(STATUS_DETAILS_KEY)),
    )


def _metadata(error: grpc.RpcError) -> dict[str, str | bytes]:
    trailing = getattr(error, "trailing_metadata", None)
    try:
        pairs = trailing() if callable(trailing) else None
    except Exception:  # a call that failed before it had trailers
        pairs = None
    return {key: value for key, value in pairs or ()}


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def retry_delay(status_details: str | bytes | None) -> float | None:
    """The delay of the google.rpc.RetryInfo in a serialized google.rpc.Status, in seconds (None without one).

    google.rpc.Status is {int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3;}: its
    fields are read by hand rather than shipping googleapis-common-protos for three fields."""
    if not isinstance(status_details, bytes):
        return None
    try:
        for field, value in _length_delimited_fields(status_details):
            if field != 3:
                continue
            detail = any_pb2.Any.FromString(value)
            if detail.type_url != RETRY_INFO_TYPE:
                continue
            # RetryInfo is {google.protobuf.Duration retry_delay = 1;}.
            for inner_field, inner in _length_delimited_fields(detail.value):
                if inner_field == 1:
                    delay = duration_pb2.Duration.FromString(inner)
                    return delay.seconds + delay.nanos / 1e9
    except (ValueError, IndexError):
        return None  # a malformed status is no hint; the error itself still stands
    return None


def _length_delimited_fields(data: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a serialized message, as (field number, bytes); other fields skipped."""
    fields: list[tuple[int, bytes]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(data, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _varint(data, position)
            fields.append((field, data[position : position + length]))
            position += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
