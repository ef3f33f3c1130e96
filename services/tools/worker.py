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
* runs as two processes: a *guardian*, the process the pool started, which runs no tool code, and the *runner*,
  its child, which does everything above (see "Process trees").

Process trees. A tool may start processes (subprocess, a double fork, a daemon that calls setsid to leave the
worker's process group and session); all of them end with the call. Both the guardian and the runner are child
subreapers (PR_SET_CHILD_SUBREAPER): an orphan is adopted by the nearest one above it instead of init, so every
process a call started stays a descendant of the runner while it lives, and of the guardian after. Then:

* after each call the runner SIGKILLs whatever is still below it (`end_descendants`: a scan of /proc's parent pids,
  repeated until nothing is left, so what a dying process forked meanwhile is caught too) before it answers; one
  waitid tells whether there is anything at all, so a call that started nothing pays one system call;
* when the runner ends, however (exit, crash, SIGXCPU, the OOM killer, the SIGKILL that follows a SIGTERM), the
  guardian first SIGKILLs the runner's process group, which the tool's processes are in unless they left it: one
  signal, so even a chain of processes each forking the next cannot outrun it; then it sweeps everything below
  itself as above (what left the group), then exits as the runner did (same exit code or signal), so the pool
  reads the runner's end as the worker's. A sweep in the runner that something outran retires the runner, which
  hands the rest to the guardian.

The guardian takes the pool's signals: SIGTERM (a caller gave up) goes on to the runner, followed by SIGKILL after
KILL_GRACE_SECONDS; END_NOW (SIGUSR1, the pool closing) is SIGKILL at once. The runner dies with the guardian
(PR_SET_PDEATHSIG SIGKILL) and the guardian gets END_NOW when its parent, the forkserver, exits with the service,
so a service killed with SIGKILL leaves no tool process behind either.

What is not guaranteed: a process started for the tool by someone else (a systemd unit, a container runtime, a
server it asked) is not the worker's; one the runner itself makes with clone(CLONE_PARENT) is the guardian's child,
so it ends with the worker, not with the call; and if the guardian is SIGKILLed (by an operator, or by the tool's
code, which runs as the same user), what the call started is adopted by init and survives. A cgroup would close
that last gap; it needs privileges or a delegated hierarchy the service does not assume.

Signals in the runner: SIGINT is ignored (Ctrl-C reaches the whole process group; the service decides when workers
stop). SIGTERM ends the runner at once while it is idle or in a synchronous tool; during an async tool it cancels
the call first, so the tool's `except CancelledError`/`finally` runs, then the runner exits.

This module is preloaded by the forkserver: it imports only what every worker needs.
"""

import asyncio
import ctypes
import logging
import multiprocessing.forkserver
import os
import pickle
import resource
import signal
import socket
import struct
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from services.common import errors
from services.common.errors import DomainError, Internal
from services.common.identity import Caller
from services.tools.base import BaseTool, ToolContext, ToolOutput
from services.tools.registry import ToolRegistry
from services.tools.results import to_tool_output
from services.tools.workspaces.tenancy import call_context

log = logging.getLogger(__name__)

#: Framing of every message on the socket: its length, then its pickle.
_HEADER = struct.Struct("!Q")
#: Linux's prctl options: a signal when the parent dies; adopt the orphans among one's descendants.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: Between the SIGTERM that stops a call and the SIGKILL that follows: time for an async tool's cleanup.
KILL_GRACE_SECONDS = 1.0
#: What the pool sends a worker's guardian to end the runner and its process tree at once, without the grace
#: (the pool is closing); also the guardian's parent-death signal.
END_NOW = signal.SIGUSR1
#: The signals the guardian takes synchronously (sigwaitinfo) instead of by handlers.
_GUARDED = {signal.SIGCHLD, signal.SIGTERM, END_NOW}
#: How long the guardian keeps killing a runaway tree (a fork bomb) before it gives up and says so.
_SWEEP_SECONDS = 5.0
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
    """The worker process's target: fork the runner and guard it (see "Process trees" above); the runner sets its
    limits, loads the tools, says Ready, then answers calls until the service closes the socket."""
    _prepare_guardian()
    runner = os.fork()
    if runner:
        sock.close()  # the runner's end only: its death must read as EOF in the service
        _guard(runner)
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
        # What the call started ends with it, before the caller hears the call is over. What outruns the scan (a
        # chain of processes each forking the next, faster than /proc can be read) is the guardian's: the runner
        # retires, and the guardian kills its process group at once.
        if _has_children() and not end_descendants():
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


def _prepare_guardian() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A process group of its own: a signal to the service's group (the launcher's SIGTERM, a terminal's Ctrl-C) is
    # the service's to handle; the pool ends its workers itself (SIGTERM to stop a call, END_NOW at close).
    os.setpgid(0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for signum in _GUARDED:
        signal.signal(signum, signal.SIG_DFL)
    # Blocked before the fork, so none is lost before _guard waits for them; the runner unblocks them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _GUARDED)
    _let_the_forkserver_go()
    _prctl(_PR_SET_PDEATHSIG, END_NOW)  # its parent is the forkserver, which exits with the service
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _let_the_forkserver_go() -> None:
    """Close the write end of the pipe that keeps the forkserver alive, which multiprocessing hands every process it
    forks (so that the child could start processes through it too: tools do not). The forkserver exits when all
    copies are closed; a worker stuck in a tool that kept its copy would keep the forkserver, and so itself, alive
    after the service died. Without it the forkserver exits with the service, and its death signals the guardian."""
    server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def _prepare_process(config: WorkerConfig) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _GUARDED)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)  # a group of its own, which the tool's processes join unless they leave it (see _guard)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # its parent is the guardian
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # a call's orphans stay its descendants, so end_descendants finds them
    _one_malloc_arena()
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s [tools worker] %(message)s")
    # "tools available" once per worker adds nothing to the service's own line; a plugin that fails to load here
    # is still reported (it may fail only here, under the worker's limits).
    logging.getLogger("services.tools.registry").setLevel(max(logging.WARNING, logging.getLogger().level))
    if config.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (config.memory_bytes, config.memory_bytes))


def _prctl(option: int, value: int) -> None:
    """Linux's prctl; elsewhere, do without."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, int(value), 0, 0, 0)
    except (OSError, AttributeError):
        pass


# --- Process trees -------------------------------------------------------------------------------------------------


def _guard(runner: int) -> NoReturn:
    """The guardian's life: wait for the runner to end, passing on the pool's signals (SIGTERM: the runner gets
    SIGTERM, then SIGKILL after KILL_GRACE_SECONDS; END_NOW: SIGKILL at once), then end every process left below
    it and exit as the runner did, so the pool reads the runner's exit status (exit code, or the signal) as the
    worker's. The runner is its child and is reaped here only, so signalling its pid can never reach another
    process."""
    deadline: float | None = None
    while not _has_ended(runner):  # (nothing is reaped before the runner: its pid must stay its own)
        if deadline is None:
            info = signal.sigwaitinfo(_GUARDED)
        else:
            info = signal.sigtimedwait(_GUARDED, max(0.0, deadline - time.monotonic()))
            if info is None:
                os.kill(runner, signal.SIGKILL)
                continue
        if info.si_signo == signal.SIGTERM and deadline is None:
            os.kill(runner, signal.SIGTERM)
            deadline = time.monotonic() + KILL_GRACE_SECONDS
        elif info.si_signo == END_NOW:
            os.kill(runner, signal.SIGKILL)
    # Not reaped yet, so the runner's pid, which is its process group's id, cannot have been given to another
    # process: one signal ends every process still in the group at once, even one forking as fast as it can.
    try:
        os.killpg(runner, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status = os.waitpid(runner, 0)
    end_descendants()
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL and SIGSTOP cannot be handled, nor changed
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def _has_ended(pid: int) -> bool:
    """Whether the child `pid` has ended (it is left unreaped)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _reap() -> None:
    """Reap every child that has ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _has_children() -> bool:
    """Whether this process has a child, live or not yet reaped (one system call: the common case costs nothing)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def end_descendants() -> bool:
    """SIGKILL every process below this one, and reap them; False when some survived _SWEEP_SECONDS of it.

    Both the runner and its guardian are child subreapers (PR_SET_CHILD_SUBREAPER): a process that double-forks
    and calls setsid leaves its process group and session, but when its parent exits it is adopted by the nearest
    subreaper above it, so it stays a descendant, and its parent pid leads back here. So "nothing left below" is
    "no child at all, live or unreaped" (one waitid), which a scan of /proc racing with forks cannot get wrong: the
    loop kills what each scan finds and reaps, until no child is left."""
    me = os.getpid()
    deadline = time.monotonic() + _SWEEP_SECONDS
    while True:
        _reap()
        if not _has_children():
            return True
        if time.monotonic() > deadline:
            log.error("tool worker %d: processes below it outlived %g s of SIGKILLs", me, _SWEEP_SECONDS)
            return False
        for pid in _live_descendants(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.002)


def _live_descendants(root: int) -> list[int]:
    """The processes below `root` that have not ended, from /proc's parent pids."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                fields = file.read().rpartition(b")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if fields and fields[0] not in (b"Z", b"X"):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        below = children.get(pending.pop(), [])
        found.extend(below)
        pending.extend(below)
    return found


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
            os._exit(0)  # what the call started is ended by the guardian, as after any death of the runner


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
