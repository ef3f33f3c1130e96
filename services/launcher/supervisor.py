"""The launcher's process supervisor: starts the stack's processes, restarts one that crashes, stops them in order.

- Output: every line a process writes (stdout and stderr) is printed as `HH:MM:SS name | line`.
- A crash (any exit nobody asked for) is logged with its exit code or signal and the process restarts after a
  backoff that doubles from `backoff_initial` up to `backoff_max`. After more than `crash_limit` crashes within
  `crash_window` seconds the supervisor gives up on that process, says so, and keeps the others serving.
- Stop (SIGINT/SIGTERM to the supervisor, or `request_stop()`): processes stop in ascending `stop_order`, those
  with equal values together; each gets SIGTERM, then SIGKILL after its `stop_timeout`. A second request kills
  what is left at once.
- Each process runs in its own session (and process group), so a terminal's Ctrl-C reaches only the supervisor,
  which then stops them in order; signals go to the whole group, so nothing a process started is left behind.
"""

import asyncio
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from services.launcher.stack import ProcessSpec

#: The name the supervisor's own lines are prefixed with.
SELF_NAME = "launcher"
#: Seconds to wait for the rest of a process's output once it has exited (a grandchild may hold the pipe open).
OUTPUT_DRAIN_SECONDS = 1.0
#: Longest line passed through in one piece; longer output is split.
MAX_LINE_BYTES = 64 * 1024


def describe_exit(returncode: int | None) -> str:
    """`exit code 1`, `signal SIGKILL`: how a process ended, from asyncio's returncode (negative: a signal)."""
    if returncode is None:
        return "not started"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class _Child:
    spec: ProcessSpec
    #: The current (or last) process; None before the first start and after a start that failed.
    process: asyncio.subprocess.Process | None = None
    #: Times (loop.time()) of the crashes within the crash window.
    crashes: deque[float] = field(default_factory=deque)
    starts: int = 0
    #: Why the supervisor gave up on this process, once it has.
    down: str | None = None
    #: The exit code it stopped with on the way down (None: it was not running then).
    stop_code: int | None = None
    #: Held while a start is under way, so that a stop never misses a process being started.
    starting: asyncio.Lock = field(default_factory=asyncio.Lock)


class Supervisor:
    """Runs `specs` as child processes until asked to stop. See the module docstring for the behaviour."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 4.0,
        crash_limit: int = 5,
        crash_window: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        output: TextIO | None = None,
    ) -> None:
        names = [spec.name for spec in specs]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"process names must be present and unique, got {names}")
        self._children = {spec.name: _Child(spec) for spec in specs}
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self._env = {**(os.environ if env is None else env)}
        # Python children would otherwise block-buffer their stdout into our pipe.
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._cwd = cwd
        self._output = output if output is not None else sys.stdout
        self._width = max(len(name) for name in [*names, SELF_NAME])
        self._stop_requested = asyncio.Event()
        self._kill_requested = asyncio.Event()

    # --- what a caller (or a test) may look at --------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        """The pid of the running process `name`, or None while it is not running."""
        process = self._children[name].process
        return process.pid if process is not None and process.returncode is None else None

    def starts(self, name: str) -> int:
        """How many times `name` has been started."""
        return self._children[name].starts

    def is_down(self, name: str) -> bool:
        """Whether the supervisor gave up on `name` after repeated crashes."""
        return self._children[name].down is not None

    # --- running ------------------------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> int:
        """Start every process and supervise them until a stop is requested (SIGINT or SIGTERM when
        `handle_signals`, or `request_stop()`), then stop them in order. Returns 0 when every process stopped
        with exit code 0, else 1."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop, sig)
        tasks = [asyncio.create_task(self._supervise(child)) for child in self._children.values()]
        try:
            await self._stop_requested.wait()
            await self._stop_all()
            await asyncio.gather(*tasks)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            for task in tasks:
                task.cancel()
            # Only if we got here by an exception or cancellation: nothing may outlive the supervisor.
            for child in self._children.values():
                if child.process is not None:
                    self._signal(child.process, signal.SIGKILL)
        failed = [name for name, child in self._children.items() if child.stop_code != 0]
        if failed:
            self.say(f"stopped; not cleanly: {', '.join(failed)}")
            return 1
        self.say("stopped; every process exited with code 0")
        return 0

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        """The first call starts the ordered stop; the second kills every process still running."""
        received = f"{sig.name}: " if sig is not None else ""
        if not self._stop_requested.is_set():
            self.say(f"{received}stopping in order: {self._order_text()} (again to kill them at once)")
            self._stop_requested.set()
        elif not self._kill_requested.is_set():
            self.say(f"{received}killing every process still running (SIGKILL)")
            self._kill_requested.set()
            for child in self._children.values():
                if child.process is not None:
                    self._signal(child.process, signal.SIGKILL)

    async def _supervise(self, child: _Child) -> None:
        """Start `child` and restart it whenever it exits unasked, until the stop or too many crashes."""
        name = child.spec.name
        loop = asyncio.get_running_loop()
        while True:
            async with child.starting:
                if self._stop_requested.is_set():
                    return
                child.process = await self._start(child)
            process = child.process
            if process is not None:
                assert process.stdout is not None
                output = asyncio.create_task(self._copy_output(name, process.stdout))
                returncode = await process.wait()
                await self._drain(output)
                if self._stop_requested.is_set():
                    return  # asked to stop (or a crash racing the stop): _stop reports how it ended
                reason = describe_exit(returncode)
            else:
                reason = "it could not be started"

            now = loop.time()
            child.crashes.append(now)
            while now - child.crashes[0] > self.crash_window:
                child.crashes.popleft()
            crashes = len(child.crashes)
            if crashes > self.crash_limit:
                child.down = reason
                self.say(
                    f"{name} is DOWN: it crashed {crashes} times within {self.crash_window:g}s (last: {reason}); "
                    "not restarting it again, the other processes keep running"
                )
                if all(other.down is not None for other in self._children.values()):
                    self.say("every process is down")
                    self._stop_requested.set()
                return
            delay = min(self.backoff_initial * 2 ** (crashes - 1), self.backoff_max)
            self.say(
                f"{name} exited unexpectedly ({reason}); restarting it in {delay:g}s "
                f"(crash {crashes} within {self.crash_window:g}s; it is given up after {self.crash_limit + 1})"
            )
            try:
                await asyncio.wait_for(self._stop_requested.wait(), delay)
                return
            except TimeoutError:
                pass

    async def _start(self, child: _Child) -> asyncio.subprocess.Process | None:
        spec = child.spec
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                env={**self._env, **spec.env},
                cwd=self._cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Its own session and process group: a terminal's Ctrl-C reaches only us; we stop it in order.
                start_new_session=True,
            )
        except OSError as exc:
            self.say(f"{spec.name} could not be started: {exc}")
            return None
        child.starts += 1
        self.say(f"{spec.name} started (pid {process.pid})" + (f", start {child.starts}" if child.starts > 1 else ""))
        return process

    # --- stopping -----------------------------------------------------------------------------------------

    def _stages(self) -> list[list[_Child]]:
        orders = sorted({child.spec.stop_order for child in self._children.values()})
        return [[c for c in self._children.values() if c.spec.stop_order == order] for order in orders]

    def _order_text(self) -> str:
        return ", then ".join(" and ".join(c.spec.name for c in stage) for stage in self._stages())

    async def _stop_all(self) -> None:
        for stage in self._stages():
            await asyncio.gather(*(self._stop(child) for child in stage))

    async def _stop(self, child: _Child) -> None:
        """SIGTERM, then SIGKILL after the spec's stop timeout (or at once on a second stop request)."""
        name, timeout = child.spec.name, child.spec.stop_timeout
        async with child.starting:  # a start under way completes first, so its process is stopped too
            process = child.process
        if process is None:
            self.say(f"{name} was not running" + (f" (down: {child.down})" if child.down else ""))
            return
        if process.returncode is None:
            self._signal(process, signal.SIGTERM)
            if not await self._wait(process, timeout) and process.returncode is None:
                if not self._kill_requested.is_set():
                    self.say(f"{name} still running {timeout:g}s after SIGTERM: SIGKILL")
                self._signal(process, signal.SIGKILL)
                await process.wait()
            self.say(f"{name} stopped ({describe_exit(process.returncode)})")
        else:
            self.say(f"{name} was not running (last: {describe_exit(process.returncode)})")
        child.stop_code = process.returncode

    async def _wait(self, process: asyncio.subprocess.Process, timeout: float) -> bool:
        """Whether `process` exited within `timeout` (False early on a second stop request)."""
        exited = asyncio.ensure_future(process.wait())
        killing = asyncio.ensure_future(self._kill_requested.wait())
        try:
            await asyncio.wait({exited, killing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            killing.cancel()
        return process.returncode is not None

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        """Send `sig` to the process's whole group, unless it has already been reaped (its pid may be reused)."""
        if process.returncode is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass

    # --- output -------------------------------------------------------------------------------------------

    async def _copy_output(self, name: str, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(MAX_LINE_BYTES):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) >= MAX_LINE_BYTES:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._write(name, line.rstrip(b"\r").decode(errors="replace"))
        if pending:
            self._write(name, pending.decode(errors="replace"))

    @staticmethod
    async def _drain(output: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(output, OUTPUT_DRAIN_SECONDS)
        except TimeoutError:
            pass

    def say(self, message: str) -> None:
        """A line of the launcher's own among the processes' lines (`HH:MM:SS launcher | message`)."""
        self._write(SELF_NAME, message)

    def _write(self, name: str, line: str) -> None:
        self._output.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self._width)} | {line}\n")
        self._output.flush()
