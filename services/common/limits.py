"""A run's limits: the one domain type for them, shared by the engine (which enforces them), the run store
(which records them) and the agents service (whose agents set them). None means "not limited by this field".
Its conversion from and to the wire (agentplatform.runs.v1.RunLimits) is in services/common/rpc/protoconv.py."""

from dataclasses import dataclass

from pydantic import Field

from services.common import errors
from services.common.settings import ServiceSettings


@dataclass(frozen=True)
class RunLimits:
    """What one run may use before it is stopped FAILED with the limit's name as its error code."""

    max_model_calls: int | None = None
    max_duration_seconds: float | None = None
    max_total_tokens: int | None = None
    max_tool_calls: int | None = None


class RunLimitMaximums(ServiceSettings):
    """The most a run may be allowed: what a request or a saved agent may ask for at most. One set of settings,
    read by the engine (which runs within them) and the agents service (which refuses an agent beyond them)."""

    max_iterations_limit: int = Field(50, alias="ENGINE_MAX_ITERATIONS_LIMIT", ge=1, le=1000)
    run_timeout_limit_seconds: float = Field(3600.0, alias="ENGINE_RUN_TIMEOUT_LIMIT_SECONDS", gt=0)
    max_total_tokens_limit: int = Field(2_000_000, alias="ENGINE_MAX_TOTAL_TOKENS_LIMIT", ge=1)
    max_tool_calls_limit: int = Field(500, alias="ENGINE_MAX_TOOL_CALLS_LIMIT", ge=1)

    def maximum(self, field: str) -> float:
        """The maximum of a RunLimits field, by its name."""
        return {
            "max_model_calls": self.max_iterations_limit,
            "max_duration_seconds": self.run_timeout_limit_seconds,
            "max_total_tokens": self.max_total_tokens_limit,
            "max_tool_calls": self.max_tool_calls_limit,
        }[field]


def check_within(limits: RunLimits, maximums: RunLimitMaximums, prefix: str = "limits") -> None:
    """InvalidArgument naming the field (`limits.max_tool_calls`, as on the wire) for a limit that is not
    positive or above its maximum; None fields pass."""
    for field in ("max_model_calls", "max_duration_seconds", "max_total_tokens", "max_tool_calls"):
        value = getattr(limits, field)
        if value is None:
            continue
        name = field.removesuffix("_seconds")
        unit = " s" if name == "max_duration" else ""
        if value <= 0:
            raise errors.InvalidArgument(f"{prefix}.{name} must be positive, or unset for the default")
        if value > (maximum := maximums.maximum(field)):
            raise errors.InvalidArgument(
                f"{prefix}.{name} is {_number(value)}{unit}; this platform allows at most {_number(maximum)}{unit}"
            )


def _number(value: float) -> str:
    """2,000,000 rather than 2e+06; 2.5 as 2.5."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
