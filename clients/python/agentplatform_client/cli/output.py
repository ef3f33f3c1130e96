"""How the CLI prints: messages as JSON for scripts (`--json`), exit codes from gRPC statuses, and the small
Rich helpers the commands share."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

from agentplatform_client import errors

#: A failed call exits with EXIT_STATUS_BASE + its gRPC status code number (NOT_FOUND 5 -> 15, UNAVAILABLE 14
#: -> 24, UNAUTHENTICATED 16 -> 26 ...), so a script can tell them apart; 1 is a run that ended FAILED or
#: CANCELLED (chat, runs watch), 2 a usage error (Click's), 130 an interrupt (Ctrl-C).
EXIT_STATUS_BASE = 10
EXIT_RUN_NOT_COMPLETED = 1
EXIT_INTERRUPTED = 130


def exit_code(error: errors.ApiError) -> int:
    """The exit code of a failed call: EXIT_STATUS_BASE + its status code number."""
    number: int = error.code.value[0] if isinstance(error.code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN.value[0]
    return EXIT_STATUS_BASE + number


def as_dict(message: Message) -> dict[str, Any]:
    """A message in the proto3 JSON mapping (what `buf curl` prints), with every field, false and 0 included."""
    result: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


def print_json(value: Message | Sequence[Message] | dict[str, Any]) -> None:
    """One JSON document on stdout."""
    if isinstance(value, Message):
        data: Any = as_dict(value)
    elif isinstance(value, Sequence):
        data = [as_dict(item) for item in value]
    else:
        data = value
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def print_json_line(message: Message) -> None:
    """One event of a stream as a line of JSON (NDJSON), flushed at once."""
    sys.stdout.write(json.dumps(as_dict(message)) + "\n")
    sys.stdout.flush()


def console() -> Console:
    """stdout, as the command's output (created per command, so it writes where stdout is now)."""
    return Console(highlight=False)


def error_console() -> Console:
    return Console(stderr=True, highlight=False)
