"""JSON from someone we do not trust (the model's tool-call arguments, a tool's response or result, an MCP server's
result, a workflow expression's value): parsed with bounds, and checked before it goes into a run's step.

Two bounds, and why:
- Depth. Python's json parser recurses once per level of nesting, so 60,000 `[` end in a RecursionError; and a
  value that parses may still be too deep to cross the platform: protobuf (upb) refuses to decode a message nested
  more than 100 levels, a JSON level is two or three message levels inside a google.protobuf.Value (Value, Struct,
  its map entry), and a step travels inside other messages (ThreadHistory > Run > Step > ToolResult > Value). A
  value 32 objects deep, once sent, made the run store's side of the engine's link fail to parse it, which ended
  the stream of every run. MAX_JSON_DEPTH leaves room under that for a workflow that nests a result in its state.
- Finite numbers. JSON has no NaN or Infinity, but Python's json module reads `NaN`, `Infinity` and `1e999` (as
  inf), and float arithmetic makes them; protobuf's Struct carries them in binary and then fails converting them to
  JSON, which the run store does.

`parse_json` measures the depth before parsing (at C speed, outside strings) and refuses non-finite numbers while
parsing; `check_json_value` checks a value already in hand and names the place of the problem. Neither recurses.
Imports nothing heavy: tool workers load it.
"""

import json
import math
import re
from typing import Any

from services.common.errors import InvalidArgument

#: The deepest nesting of arrays and objects accepted (a scalar is depth 0, `[1]` depth 1). See the docstring.
MAX_JSON_DEPTH = 20


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


#: A JSON string with its escapes, its closing quote optional so that no match ever fails (a failing match would be
#: retried from every later quote: quadratic); possessive, so that nothing backtracks. Linear in the text.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_SQUARE = str.maketrans("{}", "[]")


class JsonInputError(ValueError):
    """JSON that is not accepted; the message says why (without quoting it)."""


class JsonTooDeep(JsonInputError):
    """JSON nested deeper than the bound."""


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, finite: bool = True) -> Any:
    """The value of a JSON text; JsonInputError when it is not JSON, nests deeper than `max_depth` (JsonTooDeep) or
    holds a number that is not finite. `finite=False` lets NaN and infinities through, for a caller that refuses
    them itself with check_json_value, which names where they are."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if _too_deep(text, max_depth):
        raise JsonTooDeep(f"nested deeper than {max_depth} levels")
    try:
        if not finite:
            return json.loads(text)
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JsonInputError:
        raise
    except ValueError as exc:  # JSONDecodeError, an integer of more than 4300 digits
        raise JsonInputError(f"not valid JSON: {exc}") from None


def check_depth(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """JsonInputError when a parsed value (dicts and lists) nests deeper than `max_depth`; walks it level by level,
    without recursion."""
    level, depth = [value], 0
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        if depth > max_depth:
            raise JsonTooDeep(f"nested deeper than {max_depth} levels")
        level = [item for container in containers for item in _children(container)]


def _children(container: dict[str, Any] | list[Any]) -> Any:
    return container.values() if isinstance(container, dict) else container


def _too_deep(text: str, max_depth: int) -> bool:
    """Whether json.loads would nest deeper than max_depth reading the text, found at C speed without parsing:
    outside strings, with every bracket made square, remove the innermost pairs ("[]") max_depth times; a pair
    left is one nested deeper. Unclosed openings (a truncated text) count too: more than max_depth of them would
    make the parser recurse as deep before it fails."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text)).translate(_SQUARE)
    for _ in range(max_depth):
        reduced = brackets.replace("[]", "")
        if len(reduced) == len(brackets):
            break
        brackets = reduced
    first_open = brackets.find("[")
    return first_open != -1 and (brackets.rfind("]") > first_open or brackets.count("[") > max_depth)


def _refuse_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number (only finite numbers are)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JsonInputError(f"the number {literal[:40]} is too large to be represented")
    return value
