"""Token usage: the one domain type for it, shared by the engine (per model call) and the run store (per step
and per run). Protos carry it on the wire; conversions live at each service's gRPC edge."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Tokens of one model call, or summed over several."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)
