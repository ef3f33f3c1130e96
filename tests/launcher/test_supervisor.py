"""The launcher's supervisor with real child processes and real signals: restarts, giving up, ordered stop."""

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

import pytest

from services.launcher.process_tree import alive
from services.launcher.stack import STOP_ORDER
from services.launcher.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.launcher.children import (
    child_spec,
    eventually,
    kill_leftovers,
    started_pids,
    stopped_names,
    wait_until,
)

#: Fast timings, so a test sees several restarts in a fraction of a second.
FAST = {"backoff_initial": 0.02, "backoff_max": 0.1, "crash_window": 10.0}


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """Where the test's children write what they do; whatever of them is still alive at the end is killed."""
    yield tmp_path
    kill_leftovers(tmp_path)


@asynccontextmanager
async def supervising(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[int]]:
    """The supervisor running on this loop (no signal handlers: the test process's own stay as they are)."""
    task = asyncio.create_task(supervisor.run(handle_signals=False))
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()  # run() kills its processes on the way out
            await asyncio.gather(task, return_exceptions=True)


async def test_a_killed_child_is_restarted_and_its_replacement_runs(folder: Path) -> None:
    output = io.StringIO()
    supervisor = Supervisor([child_spec("worker", folder)], **FAST, output=output)
    async with supervising(supervisor) as run:
        await eventually(lambda: len(started_pids(folder, "worker")) == 1, what="the first start")
        first = started_pids(folder, "worker")[0]
        # Its own session and process group, so a terminal's Ctrl-C would not reach it.
        assert os.getsid(first) == os.getpgid(first) == first

        os.kill(first, signal.SIGKILL)
        await eventually(lambda: len(started_pids(folder, "worker")) == 2, what="the restart")
        second = started_pids(folder, "worker")[1]
        assert second != first
        assert alive(second) and supervisor.pid("worker") == second and supervisor.starts("worker") == 2

        supervisor.request_stop()
        assert await asyncio.wait_for(run, 5) == 0
    log = output.getvalue()
    assert "worker exited unexpectedly (signal SIGKILL); restarting it in 0.02s" in log
    # Every line of a child comes prefixed with the time and its name, padded to the longest name ("launcher").
    assert re.search(r"^\d\d:\d\d:\d\d worker   \| worker up$", log, re.MULTILINE), log
    assert not alive(second)
    assert stopped_names(folder) == ["worker"]


async def test_a_child_that_keeps_crashing_is_given_up_and_the_others_keep_running(folder: Path) -> None:
    output = io.StringIO()
    specs = [child_spec("crasher", folder, "crash"), child_spec("steady", folder)]
    supervisor = Supervisor(specs, **FAST, crash_limit=3, output=output)
    async with supervising(supervisor) as run:
        await eventually(lambda: supervisor.is_down("crasher"), what="giving up on the crasher")
        await asyncio.sleep(0.3)  # longer than any backoff: a further restart would show now
        assert len(started_pids(folder, "crasher")) == 4  # the first start and 3 restarts
        [steady] = started_pids(folder, "steady")
        assert alive(steady) and supervisor.pid("steady") == steady

        supervisor.request_stop()
        # Not a clean stop: one process is down.
        assert await asyncio.wait_for(run, 5) == 1
    log = output.getvalue()
    assert log.count("crasher exited unexpectedly (exit code 3)") == 3
    assert "crasher is DOWN: it crashed 4 times within 10s (last: exit code 3)" in log
    assert stopped_names(folder) == ["steady"]


async def test_a_child_that_ignores_sigterm_is_killed_after_its_stop_timeout(folder: Path) -> None:
    output = io.StringIO()
    supervisor = Supervisor([child_spec("stubborn", folder, "ignore-term", stop_timeout=0.5)], **FAST, output=output)
    async with supervising(supervisor) as run:
        await eventually(lambda: len(started_pids(folder, "stubborn")) == 1, what="the start")
        [pid] = started_pids(folder, "stubborn")
        started = time.monotonic()
        supervisor.request_stop()
        assert await asyncio.wait_for(run, 5) == 1
        assert 0.5 <= time.monotonic() - started < 3
    assert not alive(pid)
    log = output.getvalue()
    assert "stubborn still running 0.5s after SIGTERM: SIGKILL" in log
    assert "stubborn stopped (signal SIGKILL)" in log


async def test_a_second_stop_request_kills_at_once(folder: Path) -> None:
    output = io.StringIO()
    supervisor = Supervisor([child_spec("stubborn", folder, "ignore-term", stop_timeout=60)], **FAST, output=output)
    async with supervising(supervisor) as run:
        await eventually(lambda: len(started_pids(folder, "stubborn")) == 1, what="the start")
        supervisor.request_stop()
        await asyncio.sleep(0.2)
        assert not run.done()  # still waiting out the stop timeout
        supervisor.request_stop()
        assert await asyncio.wait_for(run, 3) == 1
    assert "stubborn stopped (signal SIGKILL)" in output.getvalue()


def test_sigterm_stops_the_children_in_the_stacks_order_and_exits_0(folder: Path) -> None:
    """The supervisor as a real process: SIGTERM stops its children one stop_order after the other."""
    last = max(STOP_ORDER.values())
    # The earlier a child is to stop, the longer it takes: children signalled all at once would finish in the
    # reverse order.
    specs = [
        child_spec(name, folder, stop_delay=0.1 * (last - order), stop_order=order)
        for name, order in sorted(STOP_ORDER.items(), key=lambda item: -item[1])
    ]
    log_path = folder / "supervisor.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "tests.launcher.supervise", json.dumps([asdict(spec) for spec in specs])],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: all(started_pids(folder, name) for name in STOP_ORDER), what="every child to start")
        pids = [pid for name in STOP_ORDER for pid in started_pids(folder, name)]

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(10) == 0, log_path.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    stopped = stopped_names(folder)
    assert sorted(stopped) == sorted(STOP_ORDER)
    assert stopped == sorted(stopped, key=STOP_ORDER.__getitem__), stopped
    assert stopped[0] == "gateway" and stopped[1] == "engine" and stopped[-1] == "runs"
    assert not any(alive(pid) for pid in pids)
    assert "SIGTERM: stopping in order: gateway, then engine, then " in log_path.read_text()
