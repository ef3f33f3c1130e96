"""What the engine checks before a value or a step goes to the run store, so that a run whose model, tool or
workflow produced something the store cannot take ends FAILED at once with a code that says why, instead of the
store refusing the write (or, worse, the write breaking the link that carries every run's steps).

- Values (tool-call arguments, tool results, workflow state): finite numbers only (JSON has no NaN or Infinity),
  nested at most MAX_JSON_DEPTH deep (services/common/json_values.py says why).
- Steps: their content, as the JSON the store keeps, at most the store's limit (RUNS_MAX_STEP_BYTES).
"""

import json
from typing import Any

from agentplatform.runs.v1 import runs_pb2
from services.common.json_values import MAX_JSON_DEPTH, check_json_value
from services.common.rpc.protoconv import dict_from_message

#: The run store's default limit on a step (RUNS_MAX_STEP_BYTES); the engine reads the same setting.
DEFAULT_MAX_STEP_BYTES = 1024 * 1024

#: A step's JSON form weighs at most this many times its binary form, plus a constant for field names: text
#: escaped as \u0001 is 6 characters for 1 byte. Below that bound the exact (slower) measure is skipped.
JSON_PER_BINARY_BYTE = 6
JSON_NAMES_SLACK = 4096


def check_value(value: Any, field: str) -> None:
    """InvalidArgument naming the place in `field` of a non-finite number or of nesting past MAX_JSON_DEPTH."""
    check_json_value(value, field, MAX_JSON_DEPTH)


def oversized(step: runs_pb2.Step, max_bytes: int) -> str | None:
    """Why `step` is larger than the store takes (its content as JSON, measured as the store measures it), naming
    the largest field; None when it fits."""
    if step.ByteSize() * JSON_PER_BINARY_BYTE + JSON_NAMES_SLACK <= max_bytes:
        return None
    case = step.WhichOneof("content")
    if case is None:
        return None
    content = dict_from_message(getattr(step, case), case, preserving_proto_field_name=True)
    size = _json_size(content)
    if size <= max_bytes:
        return None
    field, field_size = _largest(content, case)
    return (f"the {case.replace('_', '-')} step would be {size:,} bytes as JSON, {field} {field_size:,} of them; "
            f"the run store takes at most {max_bytes:,} bytes per step (RUNS_MAX_STEP_BYTES)")


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=True))  # as services/runs/checks.py measures a step


def _largest(content: dict[str, Any], case: str) -> tuple[str, int]:
    """The largest field of a step's content, one level into a map of values (a node's `assigned.xs`)."""
    field, value = max(content.items(), key=lambda item: _json_size(item[1]))
    name = f"{case}.{field}"
    if isinstance(value, dict) and value:
        key, inner = max(value.items(), key=lambda item: _json_size(item[1]))
        return f"{name}.{key}", _json_size(inner)
    return name, _json_size(value)
