"""The single mapping between domain errors and gRPC status codes, used in both directions.

Servers answer a raised domain error with its status (`services.common.rpc.interceptor`); clients turn a status
they receive back into the domain error (`error_from_rpc`), so a NOT_FOUND from the runs service surfaces
from the engine as NOT_FOUND too.
"""

import grpc

from services.common import errors

STATUS_BY_ERROR: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Internal: grpc.StatusCode.INTERNAL,
}

_ERROR_BY_STATUS = {code: cls for cls, code in STATUS_BY_ERROR.items()}


def status_for(exc: errors.DomainError) -> grpc.StatusCode:
    """The status code of a domain error (its nearest mapped base class)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN


def error_from_rpc(exc: grpc.aio.AioRpcError, service: str) -> errors.DomainError:
    """The domain error for a failed call to `service`; unmapped codes count as Unavailable."""
    return error_from_status(exc.code(), exc.details() or "", service)


def error_from_status(code: grpc.StatusCode, details: str, service: str) -> errors.DomainError:
    """The domain error for a status `service` answered; unmapped codes count as Unavailable."""
    cls = _ERROR_BY_STATUS.get(code, errors.Unavailable)
    return cls(f"{service}: {details or code.name}")


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The status code with this google.rpc.Code number (UNKNOWN for a number gRPC does not know)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
