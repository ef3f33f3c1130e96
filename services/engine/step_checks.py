"""What the engine checks of a value before it goes into a step (tool-call arguments, tool results, workflow
state), so that a run whose model, tool or workflow produced something the store cannot take ends FAILED at once
with a code that says why, instead of the store refusing the write: finite numbers only (JSON has no NaN or
Infinity), nested at most MAX_JSON_DEPTH deep (services/common/json_values.py says why). The size of a whole step
is checked where it becomes the store's message (upstream/step_size.py).
"""

from typing import Any

from services.common.json_values import MAX_JSON_DEPTH, check_json_value


def check_value(value: Any, field: str) -> None:
    """InvalidArgument naming the place in `field` of a non-finite number or of nesting past MAX_JSON_DEPTH."""
    check_json_value(value, field, MAX_JSON_DEPTH)
