"""The tool worker process: where a tool's own code runs, one call at a time, away from the service's event loop.

The service (services.tools.worker_pool) starts each worker from multiprocessing's forkserver and talks to it over
a socket pair: it sends a `ToolCall`, the worker answers with a `ToolReply`. A worker:

* finds tools with its own ToolRegistry over the same folders as the service, so built-in tools and plugin files
  dropped in later run alike (the registry re-checks the files on every lookup);
* runs a synchronous tool (`execute`) in its main thread, and an async one (`run`) in a fresh event loop per call
  (`asyncio.run`): nothing a call leaves behind (tasks, a closed loop, a client bound to it) reaches the next
  call, and creating a loop costs far less than any tool call;
* bounds the result (`to_tool_output`) before sending it, so a tool returning 100 MB never crosses the socket;
* sends a domain error (InvalidArgument, NotFound, ...) back as the services.common.errors class it derives
  from, with its message; any other exception as Internal naming it, with the traceback for the service's log;
* lives under limits set once it starts (RLIMIT_AS: its address space; RLIMIT_CORE 0: no core files) and per call
  (RLIMIT_CPU: `cpu_seconds` more than it has used so far, since the limit counts the process's whole life). Past
  the CPU limit the kernel ends it with SIGXCPU; past the memory limit an allocation fails (MemoryError: the
  worker answers, then retires, since a failed allocation may have left a library half-way);
* dies with its parent (PR_SET_PDEATHSIG): its parent is the forkserver, which exits when the service does, so a
  service killed with SIGKILL leaves no worker behind.

Signals: SIGINT is ignored (Ctrl-C reaches the whole process group; the service decides when workers stop).
SIGTERM, which the service sends when a caller gives up (time limit, cancelled RPC), ends the worker at once
while it is idle or in a synchronous tool; during an async tool it cancels the call first, so the tool's
`except CancelledError`/`finally` runs, then the worker exits. The service follows with SIGKILL if it has not.

This module is preloaded by the forkserver: it imports only what every worker needs.
"""

import asyncio
import ctypes
import logging
import os
import pickle
import resource
import signal
import socket
import struct
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import errors
from services.common.errors import DomainError, Internal
from services.common.identity import Caller
from services.tools.base import BaseTool, ToolContext, ToolOutput
from services.tools.registry import ToolRegistry
from services.tools.results import to_tool_output
from services.tools.workspaces import call_context

log = logging.getLogger(__name__)

#: Framing of every message on the socket: its length, then its pickle.
_HEADER = struct.Struct("!Q")
#: Linux's prctl option that sends the process a signal when its parent dies.
_PR_SET_PDEATHSIG = 1
#: glibc's mallopt parameter for the most malloc arenas.
_M_ARENA_MAX = -8


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


@dataclass(frozen=True)
class ToolCall:
    """Run `tool_id` with `arguments` (already validated by the service) for `caller`, the RPC's authenticated
    identity: beside the arguments, never in them, so nothing a model writes into a call can choose whose workspace
    it uses."""

    tool_id: str
    arguments: dict[str, Any]
    caller: Caller | None = None


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
    return _HEADER.unpack(header)[0]


HEADER_SIZE = _HEADER.size


def _receive(sock: socket.socket) -> object:
    """The next message from the service; EOFError when it closed its end."""
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


# --- The worker's life ---------------------------------------------------------------------------------------------


def serve(sock: socket.socket, config: WorkerConfig) -> None:
    """The worker process's target: set its limits, load the tools, say Ready, then answer calls until the
    service closes the socket."""
    _prepare_process(config)
    registry = ToolRegistry(config.plugin_dirs)
    registry.refresh()
    sock.sendall(encode_message(Ready(os.getpid())))
    while True:
        try:
            call = _receive(sock)
        except EOFError:
            return
        assert isinstance(call, ToolCall), f"expected a ToolCall, got {type(call).__name__}"
        sock.sendall(encode_message(Started()))
        reply = run_call(registry, config, call)
        try:
            data = encode_message(reply)
        except Exception as exc:  # a domain error carrying something unpicklable
            data = encode_message(
                ToolReply(
                    error=Internal(
                        f"tool '{call.tool_id}' answered something that cannot "
                        f"be sent back: {type(exc).__name__}: {exc}"
                    )
                )
            )
        sock.sendall(data)
        if reply.retire:
            return


def _prepare_process(config: WorkerConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A process group of its own: a signal to the service's group (the launcher's SIGTERM, a terminal's Ctrl-C) is
    # the service's to handle; the pool ends its workers itself (SIGTERM to stop a call, SIGKILL at close).
    os.setpgid(0, 0)
    _die_with_parent()
    _one_malloc_arena()
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s [tools worker] %(message)s")
    # "tools available" once per worker adds nothing to the service's own line; a plugin that fails to load here
    # is still reported (it may fail only here, under the worker's limits).
    logging.getLogger("services.tools.registry").setLevel(max(logging.WARNING, logging.getLogger().level))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if config.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (config.memory_bytes, config.memory_bytes))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the forkserver) exits; elsewhere, do without."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _one_malloc_arena() -> None:
    """glibc reserves 64 MiB of address space for each thread's malloc arena: under RLIMIT_AS, a tool with a thread
    (file_io and asyncio.run's executor use one) would spend its limit on reservations. A worker runs one call at a
    time, so one arena shared by its threads costs nothing."""
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def _allow_cpu_for_one_call(cpu_seconds: int | None) -> None:
    """Set the soft RLIMIT_CPU to what this process has used so far plus `cpu_seconds` (whole seconds, as the
    kernel counts them); the hard limit stays as it was, so the next call can raise the soft one again."""
    if cpu_seconds is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used) + 1 + cpu_seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


# --- One call ------------------------------------------------------------------------------------------------------


def run_call(registry: ToolRegistry, config: WorkerConfig, call: ToolCall) -> ToolReply:
    """Run one call and describe how it ended; never raises (but SIGTERM during an async tool exits)."""
    try:
        tool = registry.get(call.tool_id)
        _allow_cpu_for_one_call(config.cpu_seconds)
        value = _invoke(tool, call.arguments, call_context(config.context, call.caller))
        return ToolReply(output=to_tool_output(tool.name, value, config.max_result_bytes))
    except DomainError as exc:
        return ToolReply(error=_portable(exc))
    except MemoryError:
        limit = f"{config.memory_bytes // (1024 * 1024)} MiB" if config.memory_bytes else "the machine's memory"
        return ToolReply(
            error=Internal(
                f"tool '{call.tool_id}' ran out of memory (its worker may use {limit}: TOOLS_WORKER_MEMORY_MB)"
            ),
            retire=True,
        )
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: a tool's exit() must not end the worker
        return ToolReply(
            error=Internal(f"tool '{call.tool_id}' failed: {type(exc).__name__}: {exc}"),
            traceback="".join(traceback.format_exception(exc)),
        )


def _invoke(tool: BaseTool, arguments: dict[str, Any], context: ToolContext) -> Any:
    if not tool.is_async():
        return tool.execute(**arguments)
    terminating = False

    async def run_cancellable() -> Any:
        # SIGTERM cancels the call, so the tool's cleanup runs; then the worker exits (no one waits for it).
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminating
            terminating = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        return await tool.run(arguments, context)

    try:
        return asyncio.run(run_cancellable())  # closing the loop puts SIGTERM back to its default
    finally:
        if terminating:
            os._exit(0)


def _portable(exc: DomainError) -> DomainError:
    """The error as its services.common.errors class with the same message (and retry_after), so that it pickles
    and unpickles in the service even when a plugin defined its own subclass."""
    for cls in type(exc).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            if cls is type(exc):
                return exc
            portable = cls(str(exc))
            if isinstance(exc, errors.ResourceExhausted) and isinstance(portable, errors.ResourceExhausted):
                portable.retry_after = exc.retry_after
            return portable
    return Internal(str(exc))
