"""A run's limits: the one domain type for them, shared by the engine (which enforces them) and the run store
(which records them). None means "not limited by this field"."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RunLimits:
    """What one run may use before it is stopped FAILED with the limit's name as its error code."""

    max_model_calls: int | None = None
    max_duration_seconds: float | None = None
    max_total_tokens: int | None = None
    max_tool_calls: int | None = None
