"""Domain errors: plain exceptions the domain code raises when a caller can act on the problem.

They know nothing of gRPC; `services.common.rpc.interceptor` is the one place that maps them to status codes.
"""


class DomainError(Exception):
    """Base class. The message is shown to the caller, so it should say what to do."""


class InvalidArgument(DomainError):
    """The request itself is wrong (empty field, bad format, arguments not matching a schema)."""


class NotFound(DomainError):
    """The named resource (run, tool, file) does not exist."""


class AlreadyExists(DomainError):
    """The resource to create exists already, or a conflicting write came first."""


class Unauthenticated(DomainError):
    """The caller did not say who it is, or its credentials are not valid (a missing, unknown or revoked key)."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this (a user changing tool settings, a client calling an internal API)."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation (a finished run, a disabled tool)."""


class ResourceExhausted(DomainError):
    """A size or rate limit was hit; `retry_after` (seconds) hints when trying again may succeed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutOfRange(DomainError):
    """A position past the end of something that will not grow (a cursor beyond a finished run's last step)."""


class DeadlineExceeded(DomainError):
    """The work did not finish within its time limit."""


class Unavailable(DomainError):
    """A dependency (the model endpoint, another service) could not be reached; retrying may help."""


class Internal(DomainError):
    """Something failed that the caller cannot fix (a tool plugin's own bug); the message says what."""
