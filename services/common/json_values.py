"""Checks of JSON-like Python values (dicts, lists, strings, numbers) that came from somewhere untrusted: a
model's tool-call arguments, a tool's result, a workflow expression. JSON has no NaN or Infinity, but Python's
json module reads `NaN`, `Infinity` and `1e999` (as inf), and float arithmetic makes them; protobuf's Struct then
carries them in binary and fails converting them to JSON. Imports nothing heavy: tool workers load it.
"""

import math
from typing import Any

from services.common.errors import InvalidArgument

#: How deeply a value that goes into a run's step may nest: protobuf's decoder refuses messages nested past 100
#: levels, a JSON level is two or three message levels (Value, Struct, its map entry), and a step travels inside
#: other messages. A value 32 objects deep, once sent, made the run store's side of the engine's link fail to parse
#: it, which ends the stream of every run.
MAX_STEP_VALUE_DEPTH = 20


def check_json_value(value: Any, field: str, max_depth: int | None = None) -> None:
    """InvalidArgument naming the place (`field.key[2]`) of the first NaN or infinity in a JSON-like value, or
    of the first container nested deeper than `max_depth` (None: no bound). Iterative: the depth is what may be
    hostile."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                break
        elif isinstance(item, dict | list | tuple):
            if max_depth is not None and depth >= max_depth:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    else:
        return
    where, problem = _first_problem(value, field, max_depth)
    raise InvalidArgument(f"{where} {problem}")


def _first_problem(value: Any, field: str, max_depth: int | None) -> tuple[str, str]:
    """Where the problem check_json_value found is, and what it is (walked again, with paths, only on failure)."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where, f"is {item}: JSON numbers must be finite (no NaN or Infinity)"
        if isinstance(item, dict | list | tuple):
            if max_depth is not None and depth >= max_depth:
                return where, f"nests deeper than {max_depth} levels"
            if isinstance(item, dict):
                pairs = [(child, f"{where}.{key}") for key, child in item.items()]
            else:
                pairs = [(child, f"{where}[{index}]") for index, child in enumerate(item)]
            stack.extend((child, path, depth + 1) for child, path in reversed(pairs))
    return field, "is not a JSON value"  # pragma: no cover - only called once check_json_value found a problem
