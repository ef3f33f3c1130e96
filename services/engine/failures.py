"""Why a run failed: a stable code for its error step and the domain error that carries the status."""

from services.common import errors


class RunFailure(Exception):
    """The run cannot go on. `code` names the failure in the `error` step ("model_unreachable",
    "max_iterations" …); `error` is the domain error whose status a unary caller gets."""

    def __init__(self, code: str, error: errors.DomainError) -> None:
        super().__init__(str(error))
        self.code = code
        self.error = error
