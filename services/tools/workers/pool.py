"""The pool of tool worker processes (services.tools.workers.worker): a tool's code never runs on the service's
event loop or in its threads, so a tool that blocks, loops, or eats memory costs one worker, which is killed and
replaced, never the service.

How it works. The pool has `size` slots. Each slot owns at most one worker process and loops: start a worker if
it has none (retrying with a growing pause while starting fails), take the next call from the queue, send it,
and wait for the reply, the worker's death, or the caller giving up:

* a reply is the call's outcome (an output or a domain error);
* the worker dying mid-call (os._exit, a segfault, SIGKILL from the OOM killer, SIGXCPU past the CPU limit) is
  Internal naming the tool and how the worker ended. Internal, not Unavailable: it is the tool's own doing and the
  same arguments would likely do it again, so it must not invite a retry;
* the caller giving up (its time limit, which covers waiting for a free worker too, or a cancelled RPC) stops the
  worker: SIGTERM (an async tool gets a CancelledError and may clean up), then SIGKILL after KILL_GRACE_SECONDS,
  and every process the call started with it (services.tools.workers.guardian: each worker is a guardian process
  that ends its runner's whole tree). A call whose caller gave up while it waited in the queue is never run.

A worker that dies while idle is replaced without failing anyone's call.

Health. The pool *cannot serve* when it has no live worker (started, ready, not dead) and its most recent attempt
to start one failed: the process could not be created, or it died or stayed silent for WORKER_START_SECONDS
before saying it was ready. Then calls fail at once with Unavailable (queued ones too) and the health listener
hears False; it hears True again as soon as a worker is ready. Workers being replaced after a kill, with the last
start having worked, do not count as "cannot serve": calls wait for them within their time limit.

Sizing against stuck calls. A call that hangs holds its worker until its time limit (TOOLS_TIMEOUT_SECONDS), so
with `size` workers, `size` hanging calls used to make every other call wait that long for a worker (three calls
to a stuck tool on two workers: an honest calculator call waited about the whole limit). Each tool may
therefore hold at most `per_tool` workers at once (TOOLS_WORKERS_PER_TOOL; by default one fewer than the pool, at
least one): its further calls wait in line (within their time limit, so a hung tool's backlog times out without
running) while calls to other tools pass them and take the worker it must leave free. What this guarantees: k hung
tools hold at most k x per_tool workers, so while that is below `size` a worker is free for the rest; with the
defaults one hung tool cannot starve the others, two distinct hung tools can (then raise TOOLS_WORKERS, or
lower TOOLS_WORKERS_PER_TOOL; a worker costs about 50 MB of memory while idle). TOOLS_WORKERS is 3 by default, so
that a tool may run two calls at once (two calls of one tool in one turn) and still leave a worker free. The cost: one
tool's own calls run at most `per_tool` at a time, so a single popular slow tool wants TOOLS_WORKERS above its
expected concurrency. A pool that grows on demand was not chosen: a hung tool would grow it to its bound just the
same, and idle extra workers would need retiring.

Why not pebble's ProcessPool (the obvious library; tried, 5.2.3): (1) a worker that dies while no task runs (the
OOM killer choosing an idle worker) puts the whole pool into a permanent error state ("Unexpected error within
the Pool" on every later schedule), against "the pool keeps serving"; (2) its stop terminates workers one after
the other, waiting up to 3 s each for SIGTERM before SIGKILL, so a stop with every worker stuck in C code takes
3 s x workers, past the shutdown grace; (3) queued tasks are pushed to the workers' pipe at once, so a task
whose caller gave up still starts, and a worker is then killed for it; (4) it runs three threads per pool in the
service. Each has a workaround, but together they are more code than this pool, which owns every step.

One worker's start and end are services.tools.workers.lifecycle's (its start method, forkserver, is explained
there); this module decides when. Used by the tools service's app and executor.
"""

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import DomainError, Internal, Unavailable
from services.common.identity import Caller
from services.tools import metrics
from services.tools.base import ToolOutput
from services.tools.workers.lifecycle import (
    GUARDIAN_SECONDS,
    WorkerProcess,
    WorkerStartError,
    end,
    forkserver_context,
    start_forkserver,
    start_worker,
    stop,
    wait_exited,
)
from services.tools.workers.protocol import END_NOW, KILL_GRACE_SECONDS, Started, ToolCall, ToolReply, WorkerConfig

log = logging.getLogger(__name__)

#: Pauses between failed attempts to start a worker: the first, and the longest.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0

HealthListener = Callable[[bool], Awaitable[None]]

_STOPPING = "the tools service is stopping; retry on another replica or after it restarts"
#: What _send_and_receive answers when the worker never took the call.
_NOT_TAKEN = object()


def default_per_tool(size: int) -> int:
    """One worker fewer than the pool (at least one): however many of its calls hang, one tool leaves a worker to
    the others."""
    return max(1, size - 1)


@dataclass(eq=False)
class _Call:
    tool_id: str
    arguments: dict[str, Any]
    caller: Caller | None
    idempotency_key: str
    future: asyncio.Future[ToolOutput] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ToolWorkerPool:
    """`size` worker processes running tool calls, one call per worker at a time (see the module docstring)."""

    def __init__(self, config: WorkerConfig, size: int, per_tool: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        if per_tool is not None and not 1 <= per_tool <= size:
            raise ValueError(f"a tool may use 1 to {size} workers, got {per_tool}")
        self._config = config
        self._size = size
        #: How many workers one tool's calls may hold at once (see "Sizing against stuck calls").
        self._per_tool = per_tool if per_tool is not None else default_per_tool(size)
        self._running: Counter[str] = Counter()
        self._context = forkserver_context()
        self._queue: deque[_Call] = deque()
        self._queued = asyncio.Event()
        self._workers: dict[int, WorkerProcess] = {}  # by slot
        self._last_start_error: str | None = None
        self._slots: list[asyncio.Task[None]] = []
        self._closing = False
        self._listener: HealthListener | None = None
        self._reported = True
        self._health_changed = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._first_starts: list[asyncio.Future[None]] = []

    # --- Life --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and wait until each is ready or failed its first start. Raises WorkerStartError when
        not a single worker could start: a service that cannot run any tool should say so and exit."""
        loop = asyncio.get_running_loop()
        start_forkserver()
        self._first_starts = [loop.create_future() for _ in range(self._size)]
        self._slots = [
            asyncio.create_task(self._slot(index), name=f"tools-worker-slot-{index}") for index in range(self._size)
        ]
        self._reporter = asyncio.create_task(self._report_health(), name="tools-worker-health")
        await asyncio.gather(*self._first_starts)
        if not self._workers:
            reason = self._last_start_error
            await self.close()
            raise WorkerStartError(f"no tool worker could start: {reason}")

    async def close(self) -> None:
        """Stop at once: every worker's process tree is killed (the server has stopped, nobody waits for a result)
        and the pool waits until they are gone; calls still waiting get Unavailable."""
        self._closing = True
        tasks = [*self._slots, *([self._reporter] if self._reporter else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_queued(Unavailable(_STOPPING))
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(end(worker, END_NOW, GUARDIAN_SECONDS) for worker in workers))

    def set_health_listener(self, listener: HealthListener) -> None:
        """Tell `listener` whether the pool can serve, now if it cannot, and on every change after."""
        self._listener = listener
        self._health_changed.set()

    @property
    def serving(self) -> bool:
        """False while the pool cannot serve (no live worker and the last start failed)."""
        return bool(self._workers) or self._last_start_error is None

    def load(self) -> tuple[int, int, int]:
        """(workers ready, workers running a call, calls waiting for a worker), for the service's metrics."""
        return len(self._workers), sum(self._running.values()), len(self._queue)

    def worker_pids(self) -> list[int]:
        """The PIDs of the live workers' runners, the processes that run tools' code (for tests and diagnostics)."""
        return sorted(worker.runner_pid or worker.pid for worker in self._workers.values())

    # --- Calls -------------------------------------------------------------------------------------------------

    async def run(
        self, tool_id: str, arguments: dict[str, Any], caller: Caller | None = None, idempotency_key: str = ""
    ) -> ToolOutput:
        """Run a call for `caller` (whose workspace it uses: services.tools.workspaces.tenancy), with its
        `idempotency_key` in its context, in the next free worker and return its output, or raise its domain error.
        The caller bounds the time (asyncio.timeout): cancelling this stops the worker running the call."""
        if self._closing:
            raise Unavailable(_STOPPING)
        if not self.serving:
            raise Unavailable(f"the tools service cannot start tool workers ({self._last_start_error}); retry later")
        call = _Call(tool_id, arguments, caller, idempotency_key)
        self._queue.append(call)
        self._queued.set()
        try:
            return await call.future
        finally:
            if not call.future.done():
                call.future.cancel()  # the slot sees it: drops the queued call, or stops the worker running it

    async def _next_call(self, worker: WorkerProcess) -> _Call | None:
        """The first call in line whose caller still waits and whose tool runs on fewer than `per_tool` workers
        (counted as taken), or None when the worker died first."""
        while not worker.exited.done():
            for call in [call for call in self._queue if call.future.done()]:
                self._queue.remove(call)  # abandoned while queued: never run
            for call in self._queue:
                if self._running[call.tool_id] < self._per_tool:
                    self._queue.remove(call)
                    self._running[call.tool_id] += 1
                    return call
            self._queued.clear()
            queued = asyncio.ensure_future(self._queued.wait())
            waiting: set[asyncio.Future[Any]] = {queued, worker.exited}
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                queued.cancel()
        return None

    def _fail_queued(self, error: DomainError) -> None:
        while self._queue:
            call = self._queue.popleft()
            if not call.future.done():
                call.future.set_exception(error)

    # --- Slots -------------------------------------------------------------------------------------------------

    async def _slot(self, index: int) -> None:
        worker: WorkerProcess | None = None
        failures = 0
        try:
            while True:
                if worker is None:
                    try:
                        worker = await start_worker(self._context, self._config)
                    except Exception as exc:  # WorkerStartError, or a bug here: either way, retry and report
                        failures += 1
                        reason = str(exc) if isinstance(exc, WorkerStartError) else f"{type(exc).__name__}: {exc}"
                        self._note_start(index, None, reason)
                        log.error(
                            "tool worker %d could not start (attempt %d): %s",
                            index,
                            failures,
                            reason,
                            exc_info=not isinstance(exc, WorkerStartError),
                        )
                        await asyncio.sleep(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (failures - 1)))
                        continue
                    failures = 0
                    self._note_start(index, worker, None)
                call = await self._next_call(worker)
                if call is None:
                    log.warning(
                        "tool worker %d (pid %d) ended while idle (%s); starting another",
                        index,
                        worker.pid,
                        worker.exit_description(),
                    )
                elif await self._run_on_guarded(worker, call):
                    continue
                self._workers.pop(index, None)
                self._health_changed.set()
                metrics.WORKER_REPLACEMENTS.inc()
                await stop(worker)
                worker = None
        except asyncio.CancelledError:
            if worker is not None and index not in self._workers:  # between a start and its bookkeeping
                await end(worker, END_NOW, GUARDIAN_SECONDS)
            raise

    def _note_start(self, index: int, worker: WorkerProcess | None, error: str | None) -> None:
        if worker is not None:
            self._workers[index] = worker
        self._last_start_error = error
        if not self.serving:
            self._fail_queued(Unavailable(f"the tools service cannot start tool workers ({error}); retry later"))
        self._health_changed.set()
        if not self._first_starts[index].done():
            self._first_starts[index].set_result(None)

    async def _run_on_guarded(self, worker: WorkerProcess, call: _Call) -> bool:
        """_run_on, where a bug of this module costs one call and one worker, never a slot of the pool."""
        try:
            return await self._run_on(worker, call)
        except Exception as exc:
            log.exception("tool worker %d: running '%s' failed in the pool itself", worker.pid, call.tool_id)
            _settle(call, error=Internal(f"tool '{call.tool_id}' could not be run: {type(exc).__name__}: {exc}"))
            return False
        finally:
            self._running[call.tool_id] -= 1
            if not self._running[call.tool_id]:
                del self._running[call.tool_id]
            self._queued.set()  # a call the per-tool cap held back may go now

    async def _run_on(self, worker: WorkerProcess, call: _Call) -> bool:
        """Run one call on `worker`; True when the worker may take another."""
        reply = asyncio.ensure_future(self._send_and_receive(worker, call))
        waiting: set[asyncio.Future[Any]] = {reply, call.future}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the pool is closing
            reply.cancel()
            _settle(call, error=Unavailable(_STOPPING))
            raise
        if not reply.done():  # the caller gave up (time limit or cancelled RPC): stop what the worker does
            reply.cancel()
            log.info("stopping tool worker %d running '%s': its caller gave up", worker.pid, call.tool_id)
            return False
        try:
            answer = reply.result()
        except (EOFError, ConnectionError):  # IncompleteReadError is an EOFError
            await wait_exited(worker, KILL_GRACE_SECONDS)
            how = worker.exit_description()
            log.error("tool '%s' ended its worker process (pid %d) with %s", call.tool_id, worker.pid, how)
            _settle(call, error=Internal(_crash_message(call.tool_id, how, self._config)))
            return False
        if answer is _NOT_TAKEN:
            log.warning("tool worker %d was gone before it took a call; starting another", worker.pid)
            return False
        if not isinstance(answer, ToolReply):
            _settle(call, error=Internal(f"tool '{call.tool_id}': its worker answered {type(answer).__name__}"))
            return False
        if answer.traceback:
            log.error("tool '%s' failed in worker %d:\n%s", call.tool_id, worker.pid, answer.traceback.rstrip())
        if answer.error is not None:
            _settle(call, error=answer.error)
        elif answer.output is None:  # the worker always sends one or the other (run_call); refused, not trusted
            _settle(call, error=Internal(f"tool '{call.tool_id}': its worker answered neither output nor error"))
        else:
            _settle(call, output=answer.output)
        return not answer.retire

    async def _send_and_receive(self, worker: WorkerProcess, call: _Call) -> object:
        try:
            await worker.send(ToolCall(call.tool_id, call.arguments, call.caller, call.idempotency_key))
            started = await worker.receive()
        except (EOFError, ConnectionError):
            # The worker was gone before it took the call (it died idle just now): the tool never ran, so the
            # call goes first in line for the next worker instead of failing.
            self._queue.appendleft(call)
            self._queued.set()
            return _NOT_TAKEN
        if not isinstance(started, Started):
            return started
        return await worker.receive()

    # --- Health ------------------------------------------------------------------------------------------------

    async def _report_health(self) -> None:
        """One reporter, so changes reach the listener in order and the last one always wins."""
        while True:
            await self._health_changed.wait()
            self._health_changed.clear()
            serving = self.serving
            if self._listener is None or serving == self._reported:
                continue
            self._reported = serving
            if serving:
                log.info("tool workers are serving again (%d live)", len(self._workers))
            else:
                log.error("tool workers cannot serve: %s", self._last_start_error)
            try:
                await self._listener(serving)
            except Exception:
                log.exception("reporting the tool workers' health failed")


def _settle(call: _Call, *, output: ToolOutput | None = None, error: BaseException | None = None) -> None:
    if call.future.done():
        return
    if error is not None:
        call.future.set_exception(error)
    elif output is not None:
        call.future.set_result(output)


def _crash_message(tool_id: str, how: str, config: WorkerConfig) -> str:
    if how == "signal SIGXCPU":
        return f"tool '{tool_id}' used more than its {config.cpu_seconds} s of CPU time (TOOLS_WORKER_CPU_SECONDS)"
    hint = ""
    if how == "signal SIGKILL":
        hint = " (the out-of-memory killer, or an operator)"
    return f"tool '{tool_id}' crashed its worker process: it ended with {how}{hint}"

