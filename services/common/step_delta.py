"""A piece of a step while a model writes it: the one domain type for it, shared by the engine (which makes them
and joins them, services/engine/deltas.py) and the run store (which hands them to a run's watchers,
services/runs/signals.py). Deltas are live only: never stored. Protos carry them on the wire; conversions live at
each service's gRPC edge."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call the model is forming."""

    tool_call_id: str = ""
    tool_name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class StepDelta:
    """A piece of the step with `sequence` while it forms: text, or a piece of a tool call."""

    run_id: str
    sequence: int
    text: str | None = None
    tool_call: ToolCallDelta | None = None
    #: True: this holds everything written so far of the step (replace what came before, don't append).
    replace: bool = False
