"""The tool worker process: where a tool's own code runs, one call at a time, away from the service's event loop.

The service (services.tools.workers.pool) starts each worker from multiprocessing's forkserver and talks to it over
a socket pair (services.tools.workers.protocol): it sends a `ToolCall`, the worker answers with a `ToolReply`. A
worker:

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
* runs as two processes: a *guardian*, the process the pool started, which runs no tool code, and the *runner*,
  its child, which does everything above; services.tools.workers.guardian says how every process a call started
  ends with it.

Signals in the runner: SIGINT is ignored (Ctrl-C reaches the whole process group; the service decides when workers
stop). SIGTERM ends the runner at once while it is idle or in a synchronous tool; during an async tool it cancels
the call first, so the tool's `except CancelledError`/`finally` runs, then the runner exits.

This module is preloaded by the forkserver: it imports only what every worker needs.
"""

import asyncio
import ctypes
import logging
import os
import resource
import signal
import socket
import traceback
from dataclasses import replace
from typing import Any

from services.common import errors
from services.common.errors import DomainError, Internal
from services.common.logs import configure_logging
from services.tools.base import BaseTool, ToolContext
from services.tools.registry import ToolRegistry
from services.tools.results import to_tool_output
from services.tools.workers.guardian import (
    GUARDED,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    end_descendants,
    guard,
    has_children,
    prctl,
    prepare_guardian,
)
from services.tools.workers.protocol import Ready, Started, ToolCall, ToolReply, WorkerConfig, encode_message, receive
from services.tools.workspaces.tenancy import call_context

#: glibc's mallopt parameter for the most malloc arenas.
_M_ARENA_MAX = -8


def serve(sock: socket.socket, config: WorkerConfig) -> None:
    """The worker process's target: fork the runner and guard it (see "Process trees" above); the runner sets its
    limits, loads the tools, says Ready, then answers calls until the service closes the socket."""
    prepare_guardian()
    runner = os.fork()
    if runner:
        sock.close()  # the runner's end only: its death must read as EOF in the service
        guard(runner)
    _prepare_process(config)
    registry = ToolRegistry(config.plugin_dirs)
    registry.refresh()
    sock.sendall(encode_message(Ready(os.getpid())))
    while True:
        try:
            call = receive(sock)
        except EOFError:
            return
        assert isinstance(call, ToolCall), f"expected a ToolCall, got {type(call).__name__}"
        sock.sendall(encode_message(Started()))
        reply = run_call(registry, config, call)
        # What the call started ends with it, before the caller hears the call is over. What outruns the scan (a
        # chain of processes each forking the next, faster than /proc can be read) is the guardian's: the runner
        # retires, and the guardian kills its process group at once.
        if has_children() and not end_descendants():
            reply = replace(reply, retire=True)
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
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GUARDED)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)  # a group of its own, which the tool's processes join unless they leave it (see guardian.guard)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # its parent is the guardian
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # a call's orphans stay its descendants, so end_descendants finds them
    _one_malloc_arena()
    configure_logging(config.log_level, config.log_format, "tools-worker")
    # "tools available" once per worker adds nothing to the service's own line; a plugin that fails to load here
    # is still reported (it may fail only here, under the worker's limits).
    logging.getLogger("services.tools.registry").setLevel(max(logging.WARNING, logging.getLogger().level))
    if config.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (config.memory_bytes, config.memory_bytes))


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


def run_call(registry: ToolRegistry, config: WorkerConfig, call: ToolCall) -> ToolReply:
    """Run one call and describe how it ended; never raises (but SIGTERM during an async tool exits)."""
    try:
        tool = registry.get(call.tool_id)
        _allow_cpu_for_one_call(config.cpu_seconds)
        value = _invoke(tool, call.arguments, call_context(config.context, call.caller, call.idempotency_key))
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
            os._exit(0)  # what the call started is ended by the guardian, as after any death of the runner


def _portable(exc: DomainError) -> DomainError:
    """The error as its services.common.errors class with the same message (and retry_after), so that it pickles
    and unpickles in the service even when a plugin defined its own subclass."""
    for cls in type(exc).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            if cls is type(exc):
                return exc
            portable: DomainError = cls(str(exc))
            if isinstance(exc, errors.ResourceExhausted) and isinstance(portable, errors.ResourceExhausted):
                portable.retry_after = exc.retry_after
            return portable
    return Internal(str(exc))
