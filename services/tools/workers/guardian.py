"""The guardian of a tool worker, and how a call's processes end with it.

A worker runs as two processes: the *guardian*, the process the pool started, which runs no tool code, and the
*runner*, its child, which runs the calls (services.tools.workers.worker).

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

Used by services.tools.workers.worker, whose `serve` forks the runner and hands the guardian's life to `guard`.
"""

import ctypes
import logging
import multiprocessing.forkserver
import os
import resource
import signal
import time
from typing import NoReturn

from services.tools.workers.protocol import END_NOW, KILL_GRACE_SECONDS

log = logging.getLogger(__name__)

#: Linux's prctl options: a signal when the parent dies; adopt the orphans among one's descendants.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: The signals the guardian takes synchronously (sigwaitinfo) instead of by handlers.
GUARDED = {signal.SIGCHLD, signal.SIGTERM, END_NOW}
#: How long the guardian keeps killing a runaway tree (a fork bomb) before it gives up and says so.
_SWEEP_SECONDS = 5.0


def prepare_guardian() -> None:
    """Set up the guardian, before it forks the runner: its own process group, no core files, the guarded signals
    blocked (so none is lost before `guard` waits for them; the runner unblocks them), and it ends when the
    forkserver does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A process group of its own: a signal to the service's group (the launcher's SIGTERM, a terminal's Ctrl-C) is
    # the service's to handle; the pool ends its workers itself (SIGTERM to stop a call, END_NOW at close).
    os.setpgid(0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for signum in GUARDED:
        signal.signal(signum, signal.SIG_DFL)
    # Blocked before the fork, so none is lost before guard waits for them; the runner unblocks them.
    signal.pthread_sigmask(signal.SIG_BLOCK, GUARDED)
    _let_the_forkserver_go()
    prctl(PR_SET_PDEATHSIG, END_NOW)  # its parent is the forkserver, which exits with the service
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def _let_the_forkserver_go() -> None:
    """Close the write end of the pipe that keeps the forkserver alive, which multiprocessing hands every process it
    forks (so that the child could start processes through it too: tools do not). The forkserver exits when all
    copies are closed; a worker stuck in a tool that kept its copy would keep the forkserver, and so itself, alive
    after the service died. Without it the forkserver exits with the service, and its death signals the guardian."""
    server = multiprocessing.forkserver._forkserver
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        os.close(alive_fd)
        # multiprocessing's private state, changed on purpose (it has no public way to let go of the pipe); typeshed
        # does not declare it.
        server._forkserver_alive_fd = None  # type: ignore[attr-defined]


def prctl(option: int, value: int) -> None:
    """Linux's prctl; elsewhere, do without."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, int(value), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def guard(runner: int) -> NoReturn:
    """The guardian's life: wait for the runner to end, passing on the pool's signals (SIGTERM: the runner gets
    SIGTERM, then SIGKILL after KILL_GRACE_SECONDS; END_NOW: SIGKILL at once), then end every process left below
    it and exit as the runner did, so the pool reads the runner's exit status (exit code, or the signal) as the
    worker's. The runner is its child and is reaped here only, so signalling its pid can never reach another
    process."""
    deadline: float | None = None
    while not _has_ended(runner):  # (nothing is reaped before the runner: its pid must stay its own)
        info: signal.struct_siginfo | None
        if deadline is None:
            info = signal.sigwaitinfo(GUARDED)
        else:
            info = signal.sigtimedwait(GUARDED, max(0.0, deadline - time.monotonic()))
        if info is None:  # the grace after SIGTERM is over
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


def has_children() -> bool:
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
        if not has_children():
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
