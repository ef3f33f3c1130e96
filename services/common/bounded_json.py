"""JSON from someone we do not trust (a tool's response, an MCP server's result, the model's tool-call arguments),
parsed with bounds: how deeply it nests, and only finite numbers.

Python's json parser recurses once per level of nesting, so 60,000 `[` end in a RecursionError; and a value that
parses may still be too deep to cross the platform: protobuf (upb) refuses to decode a message nested more than
100 levels, and each level of a JSON object inside a google.protobuf.Value takes three of them (Value, Struct, its
map entry), so a tool result inside a run's step (ThreadHistory > Run > Step > ToolResult > Value) must stay
under 33 levels. MAX_JSON_DEPTH leaves room under that for a workflow that nests a result in its state.

The depth is measured before anything is parsed (at C speed, outside strings), and a parsed value's
depth without recursion, so neither can be made to recurse. NaN and ±Infinity are refused too: JSON has no such
numbers (Python's parser accepts the literals, and 1e999 becomes infinity), and the run store cannot take them.
"""

import json
import math
import re
from typing import Any

#: The deepest nesting of arrays and objects accepted (a scalar is depth 0, `[1]` depth 1). See the docstring.
MAX_JSON_DEPTH = 24

#: A JSON string with its escapes, its closing quote optional so that no match ever fails (a failing match would be
#: retried from every later quote: quadratic); possessive, so that nothing backtracks. Linear in the text.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_SQUARE = str.maketrans("{}", "[]")


class JsonInputError(ValueError):
    """JSON that is not accepted; the message says why (without quoting it)."""


class JsonTooDeep(JsonInputError):
    """JSON nested deeper than the bound."""


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The value of a JSON text; JsonInputError when it is not JSON, nests deeper than `max_depth` or holds a
    number that is not finite."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if _too_deep(text, max_depth):
        raise JsonTooDeep(f"nested deeper than {max_depth} levels")
    try:
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
