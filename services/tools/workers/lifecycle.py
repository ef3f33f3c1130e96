"""One tool worker's life, seen from the service: started from the forkserver (`start_worker`, waiting for its
Ready), talked to over its socket (`WorkerProcess`), and ended (`stop`: SIGTERM to its guardian, which gives the
call KILL_GRACE_SECONDS; `end`: a given signal, then SIGKILL when the guardian has not ended the worker's process tree
within its time). The worker's own side is services.tools.workers.worker and .guardian. Used by
services.tools.workers.pool, which decides when.

Start method: forkserver. The service runs grpc, which is not fork-safe; the forkserver is a fresh interpreter
(started by fork+exec) that preloads services.tools.workers.worker and forks workers from itself, so a replacement
takes milliseconds instead of a full interpreter start. Workers die with the forkserver (PR_SET_PDEATHSIG), and the
forkserver exits when the service does.
"""

import asyncio
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

from services.tools.workers import worker as worker_module
from services.tools.workers.protocol import (
    END_NOW,
    HEADER_SIZE,
    KILL_GRACE_SECONDS,
    Ready,
    WorkerConfig,
    decode_length,
    encode_message,
)

log = logging.getLogger(__name__)

#: How long a new worker may take to load its tools and say it is ready.
WORKER_START_SECONDS = 10.0
#: How long a worker's guardian may take to end the process tree below it, past which the pool SIGKILLs the
#: guardian itself (the tree may then survive: see services.tools.workers.guardian).
GUARDIAN_SECONDS = 2.0


class WorkerStartError(Exception):
    """A worker process could not be started or did not become ready; the message says why."""


def forkserver_context() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context workers are started from (see "Start method" above)."""
    context = multiprocessing.get_context("forkserver")
    # Read when the forkserver starts (once per process); it then forks workers with the tools code loaded.
    context.set_forkserver_preload([worker_module.__name__])
    return context


def start_forkserver() -> None:
    """Start the forkserver now, with SIGTERM ignored (a disposition exec keeps). Who stops the service (`make run`,
    a supervisor) signals its whole process group: the forkserver must outlive that SIGTERM, so that the workers
    finish the calls in flight during the service's grace period and nothing is restarted while it stops. The
    workers leave the group themselves (services.tools.workers.guardian). The forkserver still exits with the
    service (its pipe to the service closes), and the workers with it (PR_SET_PDEATHSIG)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal dispositions can only be changed here; then SIGTERM ends the forkserver as before
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(eq=False)
class WorkerProcess:
    """One live worker process and the service's end of its socket."""

    process: Any  # multiprocessing's Process of the forkserver context
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Done once the process has ended (its sentinel became readable).
    exited: asyncio.Future[None]
    #: Its exit code (negative: the signal that ended it), once known.
    exit_code: int | None = None
    #: The runner's pid (where tools' code runs), once the worker said Ready.
    runner_pid: int | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def send(self, message: object) -> None:
        self.writer.write(encode_message(message))
        await self.writer.drain()

    async def receive(self) -> object:
        """The next message; asyncio.IncompleteReadError (an EOFError) when the worker is gone."""
        size = decode_length(await self.reader.readexactly(HEADER_SIZE))
        return pickle.loads(await self.reader.readexactly(size))

    def exit_description(self) -> str:
        """How the process ended, for a message: 'exit code 1' or 'signal SIGKILL'."""
        if self.exit_code is None and self.exited.done():
            self.exit_code = self.process.exitcode  # reads the status the forkserver wrote
        code = self.exit_code
        if code is None:
            return "an unknown cause"
        if code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"


async def start_worker(context: multiprocessing.context.ForkServerContext, config: WorkerConfig) -> WorkerProcess:
    """Start one worker and wait for its Ready; WorkerStartError when it cannot."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    try:
        process = context.Process(
            target=worker_module.serve, args=(theirs, config), name="tools-worker", daemon=True
        )
        # Starting talks to the forkserver (and starts it the first time): blocking, so off the loop. Shielded,
        # so that a stop arriving meanwhile still learns of the process and kills it.
        starting = asyncio.ensure_future(asyncio.to_thread(process.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            await asyncio.wait({starting})
            if process.pid is not None:
                os.kill(process.pid, END_NOW)
            raise
        except OSError as exc:
            raise WorkerStartError(f"the process could not be created: {exc}") from exc
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the worker has its own copy; ours must go, or its death would not read as EOF
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(process.sentinel)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(process.sentinel, on_exit)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    worker = WorkerProcess(process, reader, writer, exited)
    try:
        async with asyncio.timeout(WORKER_START_SECONDS):
            hello = await worker.receive()
    except BaseException as exc:
        await end(worker, END_NOW, GUARDIAN_SECONDS)  # (keeps the exit status for the message)
        if isinstance(exc, TimeoutError):
            raise WorkerStartError(f"the worker did not get ready within {WORKER_START_SECONDS:g} s") from None
        if isinstance(exc, (EOFError, ConnectionError)):
            raise WorkerStartError(
                f"the worker ended while starting ({worker.exit_description()}); its log lines say why"
            ) from None
        raise
    if not isinstance(hello, Ready):
        await stop(worker)
        raise WorkerStartError(f"the worker said {type(hello).__name__} instead of Ready")
    worker.runner_pid = hello.pid
    return worker


def _signal(worker: WorkerProcess, signum: int) -> None:
    """Signal the worker unless it has ended (its PID may already belong to another process then)."""
    if worker.exited.done():
        return
    try:
        os.kill(worker.pid, signum)
    except ProcessLookupError:
        pass


async def wait_exited(worker: WorkerProcess, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await asyncio.shield(worker.exited)
    except TimeoutError:
        return False
    return True


async def stop(worker: WorkerProcess) -> None:
    """SIGTERM: the guardian passes it to the runner, SIGKILLs it after KILL_GRACE_SECONDS, then ends everything
    below it and exits; then release what the service held for it."""
    await end(worker, signal.SIGTERM, KILL_GRACE_SECONDS + GUARDIAN_SECONDS)


async def end(worker: WorkerProcess, signum: int, wait_seconds: float) -> None:
    """Send the worker's guardian `signum` (SIGTERM, or END_NOW for at once) and wait for it to end the worker's
    process tree and exit; SIGKILL it when it has not within `wait_seconds`. Then release the worker."""
    _signal(worker, signum)
    if not await wait_exited(worker, wait_seconds):
        log.error(
            "tool worker %d did not end its processes within %g s; killing it (what its tool started may survive)",
            worker.pid,
            wait_seconds,
        )
        _signal(worker, signal.SIGKILL)
    await _forget(worker, wait_seconds=2.0)


async def _forget(worker: WorkerProcess, wait_seconds: float) -> None:
    """Wait (bounded) for the process to end, then close the socket and release the Process."""
    await wait_exited(worker, wait_seconds)
    worker.writer.close()
    if worker.exited.done():
        worker.exit_description()  # keeps the exit status: the Process is closed next
        try:
            worker.process.join(0)
            worker.process.close()
        except ValueError:
            pass
    else:
        log.error("tool worker %d did not end after SIGKILL", worker.pid)
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
