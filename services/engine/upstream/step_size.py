"""How large a step is as the run store measures it (its content as JSON), checked before the step is sent: a
step over the store's limit (RUNS_MAX_STEP_BYTES) would be refused, or, worse, break the link that carries every
run's steps. The run store's client (upstream/runs_client.py) refuses it with StepTooLarge instead."""

import json
from typing import Any

from agentplatform.runs.v1 import runs_pb2
from services.common.rpc.protoconv import dict_from_message

#: The run store's default limit on a step (RUNS_MAX_STEP_BYTES); the engine reads the same setting.
DEFAULT_MAX_STEP_BYTES = 1024 * 1024

#: A step's JSON form weighs at most this many times its binary form, plus a constant for field names: text
#: escaped as \u0001 is 6 characters for 1 byte. Below that bound the exact (slower) measure is skipped.
JSON_PER_BINARY_BYTE = 6
JSON_NAMES_SLACK = 4096


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
