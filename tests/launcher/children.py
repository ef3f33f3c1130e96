"""Throwaway child processes for the supervisor tests, and what the tests observe of them.

A child records every start by appending its pid to `<folder>/<name>.starts`, prints one line, and then, by
`mode`: "serve" waits for SIGTERM, on which it sleeps `stop_delay` seconds, appends its name to
`<folder>/stopped` and exits 0; "crash" exits 3 at once; "ignore-term" ignores SIGTERM.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.launcher.process_tree import alive, children_of
from services.launcher.stack import ProcessSpec

CHILD = """
import os, signal, sys, time
from pathlib import Path

name, folder, mode, stop_delay = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])


def on_sigterm(signum, frame):
    time.sleep(stop_delay)
    with open(folder / "stopped", "a") as file:
        file.write(name + "\\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore-term" else on_sigterm)
with open(folder / f"{name}.starts", "a") as file:
    file.write(f"{os.getpid()}\\n")
print(f"{name} up", flush=True)
if mode == "crash":
    sys.exit(3)
while True:
    signal.pause()
"""


def child_spec(
    name: str, folder: Path, mode: str = "serve", *, stop_delay: float = 0.0, stop_order: int = 0,
    stop_timeout: float = 5.0,
) -> ProcessSpec:
    argv = [sys.executable, "-c", CHILD, name, str(folder), mode, str(stop_delay)]
    return ProcessSpec(name, argv, stop_order=stop_order, stop_timeout=stop_timeout)


def started_pids(folder: Path, name: str) -> list[int]:
    """The pids of every start of child `name` so far, in order."""
    path = folder / f"{name}.starts"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def stopped_names(folder: Path) -> list[str]:
    """The names of the children that got SIGTERM (in "serve" mode), in the order they finished stopping."""
    path = folder / "stopped"
    return path.read_text().split() if path.exists() else []


@dataclass
class Launcher:
    """A running `python -m services.launcher` and every child pid seen so far (`note_children`)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    seen: set[int] = field(default_factory=set)

    def note_children(self) -> None:
        self.seen |= children_of(self.process.pid).keys()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@contextmanager
def launched(cwd: Path, env: dict[str, str]) -> Iterator[Launcher]:
    """`python -m services.launcher` in `cwd`, logging to cwd/launcher.log. On the way out a launcher still
    running is killed, and so is every child seen: they lead their own process groups, so a killed launcher
    would leave them running."""
    log_path = cwd / "launcher.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.launcher"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    launcher = Launcher(process, log_path)
    try:
        yield launcher
    finally:
        if process.poll() is None:
            launcher.note_children()
            process.kill()
            process.wait()
        kill_alive(launcher.seen, "")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """wait_until for code on an event loop (the supervisor under test runs on it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def kill_alive(pids: Iterable[int], marker: str) -> None:
    """SIGKILL the process group of each of `pids` still alive whose command line contains `marker` (ours, not a
    reused pid). Every child of a supervisor leads its own process group."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if alive(pid) and marker.encode() in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_leftovers(folder: Path) -> None:
    """SIGKILL every child started from `folder` that is still alive."""
    kill_alive([pid for starts in folder.glob("*.starts") for pid in started_pids(folder, starts.stem)], str(folder))
