"""Bounding what a tool returns: a plain value becomes a ToolOutput whose result is JSON and whose text and
structured form each weigh at most a limit. Runs in the tool worker (so a huge result never crosses a socket) and
imports nothing heavy, since every worker loads it."""

import json
from typing import Any

from services.common.errors import Internal, InvalidArgument
from services.common.json_values import MAX_JSON_DEPTH, check_json_value
from services.tools.base import ToolOutput

#: The most a result may weigh (its text, and its structured form as JSON) before it is cut: the model reads the
#: text on every later turn, and the run store keeps both in a step of at most 1 MiB.
DEFAULT_MAX_RESULT_BYTES = 64 * 1024


def to_tool_output(tool_id: str, value: Any, max_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> ToolOutput:
    """Wrap a plain return value as a ToolOutput, make sure its result is JSON (else Internal), and bound it to
    `max_bytes`: a longer text is cut, with a marker that says so (the model must know it did not see
    everything); a structured result whose JSON is longer is dropped, the text standing for it. The result is
    encoded once, for all three."""
    given = value if isinstance(value, ToolOutput) else None
    result = given.result if given is not None else value
    try:
        # NaN, infinities and nesting a run's step cannot carry, by name (json.dumps only says "Out of range
        # float values", and a deep value fails later, in protobuf).
        check_json_value(result, "result", MAX_JSON_DEPTH)
        encoded = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except InvalidArgument as exc:
        raise Internal(f"tool '{tool_id}' returned a result a run cannot record: {exc}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise Internal(f"tool '{tool_id}' returned a result that is not JSON: {exc}") from None
    output = given or ToolOutput(value, value if isinstance(value, str) else encoded)
    if not isinstance(output.text, str):
        raise Internal(f"tool '{tool_id}' returned a non-text text of type {type(output.text).__name__}")
    text = output.text
    size = len(text.encode())
    if size > max_bytes:
        marker = f"\n[cut: the result was {size:,} bytes; the limit is {max_bytes:,}]"
        text = text.encode()[: max(0, max_bytes - len(marker.encode()))].decode(errors="ignore") + marker
    if result is not None and len(encoded.encode()) > max_bytes:
        result = None
    return output if (text, result) == (output.text, output.result) else ToolOutput(result, text)
