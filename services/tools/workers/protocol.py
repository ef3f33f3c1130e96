"""What the tools service's worker pool and a tool worker say to each other: messages on their socket pair, each
its length then its pickle (the pool sends a ToolCall; the worker answers Started, then a ToolReply; Ready once when
it starts), and the signals the pool sends a worker's guardian (SIGTERM: stop the call, SIGKILL after
KILL_GRACE_SECONDS; END_NOW: at once). Used by both sides: services.tools.workers.pool and .process (the service's),
.worker and .guardian (the worker's)."""

import pickle
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import DomainError
from services.common.identity import Caller
from services.common.logs import LogFormat
from services.tools.base import ToolContext, ToolOutput

#: Framing of every message on the socket: its length, then its pickle.
_HEADER = struct.Struct("!Q")
#: Between the SIGTERM that stops a call and the SIGKILL that follows: time for an async tool's cleanup.
KILL_GRACE_SECONDS = 1.0
#: What the pool sends a worker's guardian to end the runner and its process tree at once, without the grace
#: (the pool is closing); also the guardian's parent-death signal.
END_NOW = signal.SIGUSR1


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to know, sent to it once when it starts (it must pickle)."""

    plugin_dirs: tuple[Path, ...]
    context: ToolContext
    max_result_bytes: int
    #: RLIMIT_AS of the worker, in bytes (None: no limit).
    memory_bytes: int | None
    #: CPU seconds one call may use (None: no limit).
    cpu_seconds: int | None
    log_level: str = "WARNING"
    #: The service's LOG_FORMAT: a worker's lines go to the service's stderr and must read like its own.
    log_format: LogFormat = "text"


@dataclass(frozen=True)
class ToolCall:
    """Run `tool_id` with `arguments` (already validated by the service) for `caller`, the RPC's authenticated
    identity: beside the arguments, never in them, so nothing a model writes into a call can choose whose workspace
    it uses."""

    tool_id: str
    arguments: dict[str, Any]
    caller: Caller | None = None
    #: The call's idempotency key, for the tool's context (beside the arguments too: the model does not write it).
    idempotency_key: str = ""


@dataclass(frozen=True)
class Ready:
    """The worker started and loaded its tools."""

    pid: int


@dataclass(frozen=True)
class Started:
    """The worker took the call and is about to run the tool: a worker that dies before saying so never ran it,
    and the service gives the call to another worker instead of blaming the tool."""


@dataclass(frozen=True)
class ToolReply:
    """How a call ended: an output, or an error (a services.common.errors class) with, for a tool's own bug, the
    traceback to log. `retire`: the worker exits after this reply and the service starts a fresh one."""

    output: ToolOutput | None = None
    error: DomainError | None = None
    traceback: str = ""
    retire: bool = False


# --- Messages ------------------------------------------------------------------------------------------------------


def encode_message(message: object) -> bytes:
    """A message as it travels: its length, then its pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def decode_length(header: bytes) -> int:
    """The payload length a message header announces."""
    (length,) = _HEADER.unpack(header)
    return int(length)


HEADER_SIZE = _HEADER.size


def receive(sock: socket.socket) -> object:
    """The next message from the service (blocking: the worker's side); EOFError when it closed its end."""
    return pickle.loads(_receive_exactly(sock, decode_length(_receive_exactly(sock, HEADER_SIZE))))


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the tools service closed the worker's socket")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
