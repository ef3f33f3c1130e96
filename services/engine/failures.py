"""Why a run failed: a stable code for its error step and the domain error that carries the status."""

from services.common import errors


class RunFailure(Exception):
    """The run cannot go on. `code` names the failure in the `error` step ("model_unreachable",
    "max_iterations" …); `error` is the domain error whose status a unary caller gets."""

    def __init__(self, code: str, error: errors.DomainError) -> None:
        super().__init__(str(error))
        self.code = code
        self.error = error


class StepTooLarge(errors.ResourceExhausted):
    """A step is larger than the run store takes (RUNS_MAX_STEP_BYTES), found before it was sent; the message
    names the step's largest field. The run that made it ends "step_too_large"."""
