"""Fault test with a real `python -m services.tools` process: every tool worker stuck in a tool, then SIGTERM. The
service must exit within its grace period (plus the moment it takes to kill the workers) and leave no worker, nor
the forkserver and resource tracker multiprocessing started for it, behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from agentplatform.tools.internal.v1 import execution_pb2, execution_pb2_grpc
from services.common.rpc.health_probe import is_serving
from services.tools.servicer import SERVICE_NAME
from tests.conftest import REPO_ROOT, free_port
from tests.support.keys import TOOLS_SECRET_KEY
from tests.support.processes import METRICS_ON_FREE_PORTS
from tests.tools.test_process_trees import ROLES, SPAWNER, noted

#: What the test gives the in-flight calls on SIGTERM (GRPC_GRACE_SECONDS).
GRACE_SECONDS = 1.0
#: On top of the grace: killing the workers, closing the database, the interpreter's exit.
STOP_MARGIN_SECONDS = 1.5

STUCK_TOOL = """
    import os
    import time
    from pathlib import Path

    from services.tools.base import BaseTool


    class Stuck(BaseTool):
        name = "stuck"
        display_name = "Stuck"
        description = "Notes its worker's PID, then sleeps for an hour"
        parameters = {"type": "object", "properties": {"folder": {"type": "string"}}, "required": ["folder"]}

        def execute(self, folder):
            (Path(folder) / str(os.getpid())).touch()
            time.sleep(3600)
"""

NAP_TOOL = """
    import time

    from services.tools.base import BaseTool


    class Nap(BaseTool):
        name = "nap"
        display_name = "Nap"
        description = "Sleeps a little, then answers"
        parameters = {"type": "object", "properties": {}}

        def execute(self):
            time.sleep(0.6)
            return "rested"
"""

#: Settings of every service, so a developer's environment or .env cannot change the process under test.
SETTING_PREFIXES = ("TOOLS_", "AUTH_", "PLATFORM_", "GRPC_", "LOG_LEVEL", "DATABASE_URL")


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def descendants(root: int) -> set[int]:
    """Every live process below `root` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := parent_of(int(entry.name))) is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def tools_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`python -m services.tools` on a free port with two workers and the stuck tool; killed (with whatever it
    started) if the test leaves it running."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stuck.py").write_text(textwrap.dedent(STUCK_TOOL))
    (plugins / "nap.py").write_text(textwrap.dedent(NAP_TOOL))
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
    env |= {
        # The checkout under test, whatever an editable install elsewhere points at.
        "PYTHONPATH": str(REPO_ROOT),
        "TOOLS_HOST": "127.0.0.1",
        "TOOLS_PORT": str(port),
        "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}",
        "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY,
        "TOOLS_WORKSPACE": str(tmp_path / "workspace"),
        "TOOLS_PLUGIN_DIRS": str(plugins),
        "TOOLS_WORKERS": "2",
        "TOOLS_WORKERS_PER_TOOL": "2",  # so that one stuck tool can hold every worker, which these tests are about
        "TOOLS_TIMEOUT_SECONDS": "120",
        "GRPC_GRACE_SECONDS": str(GRACE_SECONDS),
        "LOG_LEVEL": "INFO",
        **METRICS_ON_FREE_PORTS,
    }
    log_path = tmp_path / "tools.log"
    with log_path.open("wb") as log:
        # cwd: tmp_path, so no .env of the checkout is read.
        # A session (and process group) of its own, as the launcher starts every service.
        process = subprocess.Popen(
            [sys.executable, "-m", "services.tools"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: set[int] = set()
    try:
        serving = wait_until(lambda: process.poll() is not None or is_serving(f"127.0.0.1:{port}", SERVICE_NAME), 30)
        if not serving or process.poll() is not None:
            pytest.fail(f"the tools service did not start; its log:\n{log_path.read_text()[-3000:]}")
        yield process, port, tmp_path
    finally:
        if process.poll() is None:
            started = descendants(process.pid)
            process.kill()
            process.wait()
        for pid in started:  # only what this test's service started
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_with_every_worker_stuck_exits_within_the_grace_and_leaves_no_process(
    tools_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, tmp_path = tools_process
    folder = tmp_path / "started"
    folder.mkdir()
    arguments = struct_pb2.Struct()
    arguments.update({"folder": str(folder)})
    request = execution_pb2.ExecuteToolRequest(tool_id="stuck", arguments=arguments)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = execution_pb2_grpc.ToolExecutionServiceStub(channel)
        calls = [stub.ExecuteTool.future(request, timeout=60) for _ in range(3)]  # two workers, one call waiting
        assert wait_until(lambda: len(list(folder.iterdir())) == 2, 15), "the workers never started the tool"
        workers = {int(path.name) for path in folder.iterdir()}
        helpers = descendants(process.pid)
        assert workers <= helpers  # the stuck workers, plus the forkserver and resource tracker

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=GRACE_SECONDS + 10)
        took = time.monotonic() - started

        assert code == 0
        assert took < GRACE_SECONDS + STOP_MARGIN_SECONDS, f"the stop took {took:.2f} s"
        assert not any(is_running(pid) for pid in workers)  # killed by the service itself, before it exited
        assert wait_until(lambda: not any(is_running(pid) for pid in helpers), 5), [
            pid for pid in helpers if is_running(pid)
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError):
                call.result(timeout=5)


def test_sigterm_to_the_service_group_lets_the_call_in_flight_finish_in_the_grace(
    tools_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    # The launcher stops a service by signalling its whole process group: the forkserver and the workers must not
    # die of it, or every call in flight fails at once and the pool restarts workers while the service stops.
    process, port, tmp_path = tools_process
    request = execution_pb2.ExecuteToolRequest(tool_id="nap")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = execution_pb2_grpc.ToolExecutionServiceStub(channel)
        call = stub.ExecuteTool.future(request, timeout=30)
        time.sleep(0.2)  # the call is in its worker (it sleeps 0.6 s)
        os.killpg(process.pid, signal.SIGTERM)
        assert call.result(timeout=10).text == "rested"
    assert process.wait(timeout=GRACE_SECONDS + 10) == 0
    log = (tmp_path / "tools.log").read_text()
    assert "ended while idle" not in log and "could not start" not in log, log[-2000:]


def test_a_service_killed_with_sigkill_leaves_nothing_its_tools_started(
    tools_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    """No code of the service runs after SIGKILL: the forkserver exits when its pipe closes, each worker's guardian
    hears it (PR_SET_PDEATHSIG) and ends everything below it, the double-forked daemon that left the session too."""
    process, port, tmp_path = tools_process
    (tmp_path / "plugins" / "spawner.py").write_text(textwrap.dedent(SPAWNER))  # picked up at the next lookup
    folder = tmp_path / "pids"
    folder.mkdir()
    arguments = struct_pb2.Struct()
    arguments.update({"folder": str(folder), "then": "hang"})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = execution_pb2_grpc.ToolExecutionServiceStub(channel)
        call = stub.ExecuteTool.future(execution_pb2.ExecuteToolRequest(tool_id="spawner", arguments=arguments))
        assert wait_until(lambda: set(noted(folder)) == set(ROLES), 15), noted(folder)
        pids = noted(folder)
        try:
            assert all(is_running(pid) for pid in pids.values())
            process.kill()
            process.wait()
            assert wait_until(lambda: not any(is_running(pid) for pid in pids.values()), 5), {
                role: pid for role, pid in pids.items() if is_running(pid)
            }
        finally:
            for pid in pids.values():  # only what this test's tool started
                if is_running(pid):
                    os.kill(pid, signal.SIGKILL)
        with pytest.raises(grpc.RpcError):
            call.result(timeout=5)
