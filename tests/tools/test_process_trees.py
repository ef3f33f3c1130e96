"""A tool call's whole process tree ends with it: children, grandchildren and a double-forked daemon that left the
worker's process group and session (setsid) are all gone once the call ends, however it ends (its time limit,
a normal return, a crash of its worker, the pool closing)."""

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.common.errors import DeadlineExceeded, Internal
from tests.tools.conftest import ExecutorEnv, write_plugin

MakeExecutor = Callable[..., "asyncio.Future[ExecutorEnv]"]

#: The processes a spawning call starts, by the name each notes its pid under.
ROLES = ("child", "grandchild", "daemon")

SPAWNER = '''
    import asyncio
    import os
    import subprocess
    import time
    from pathlib import Path

    from services.tools.base import BaseTool

    PARAMETERS = {
        "type": "object",
        "properties": {"folder": {"type": "string"}, "then": {"enum": ["hang", "return", "crash"]}},
        "required": ["folder", "then"],
    }


    def spawn(folder):
        """A child (sh) with a grandchild (sleep), and a daemon: double fork, setsid, exec sleep."""
        subprocess.Popen(["sh", "-c", 'touch "$1/child-$$"; sleep 3600 & touch "$1/grandchild-$!"; wait', "sh", folder])
        middle = os.fork()
        if middle == 0:
            os.setsid()
            if os.fork() == 0:
                Path(folder, f"daemon-{os.getpid()}").touch()
                os.execvp("sleep", ["sleep", "3600"])
            os._exit(0)
        os.waitpid(middle, 0)
        deadline = time.monotonic() + 10
        while len([name for name in os.listdir(folder) if "-" in name]) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)


    class Spawner(BaseTool):
        name = "spawner"
        display_name = "Spawner"
        description = "Starts processes, then hangs, returns or crashes its worker"
        parameters = PARAMETERS

        def execute(self, folder, then):
            spawn(folder)
            if then == "crash":
                os._exit(3)
            if then == "hang":
                time.sleep(3600)
            return "spawned"


    class AsyncSpawner(BaseTool):
        name = "async_spawner"
        display_name = "Async spawner"
        description = "Starts processes, then awaits forever (a SIGTERM cancels it)"
        parameters = PARAMETERS

        async def run(self, arguments, context):
            spawn(arguments["folder"])
            await asyncio.sleep(3600)
'''


CHAIN = """
    import os
    import time
    from pathlib import Path

    from services.tools.base import BaseTool


    class Chain(BaseTool):
        name = "chain"
        display_name = "Chain"
        description = "Starts a chain of processes, each forking the next and exiting, then hangs or returns"
        parameters = {
            "type": "object",
            "properties": {"folder": {"type": "string"}, "then": {"enum": ["hang", "return"]}},
            "required": ["folder", "then"],
        }

        def execute(self, folder, then):
            Path(folder, f"runner-{os.getpid()}").touch()
            if os.fork() == 0:
                links = 0
                while True:
                    links += 1  # each link inherits the count and goes on with it
                    if links % 20 == 0:  # how far the chain got, for the test to see it running
                        Path(folder, "links").write_text(str(links))
                    if os.fork():
                        os._exit(0)
            time.sleep(0.3)  # the chain is well under way
            if then == "hang":
                time.sleep(3600)
            return "chained"
"""


def group_members(pgid: int) -> list[int]:
    """The live processes of the process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def links_counted(folder: Path) -> int:
    """How far the chain tool's chain got (0 before its first note; a note being rewritten reads as empty)."""
    try:
        return int(Path(folder, "links").read_text() or 0)
    except FileNotFoundError:
        return 0


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def noted(folder: Path) -> dict[str, int]:
    """The pids the call's processes noted, by role."""
    return {path.name.split("-")[0]: int(path.name.split("-")[1]) for path in folder.glob("*-*")}


async def wait_for_notes(folder: Path) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while set(noted(folder)) != set(ROLES):
        assert time.monotonic() < deadline, f"the tool never started its processes: {noted(folder)}"
        await asyncio.sleep(0.02)
    return noted(folder)


async def none_left(pids: dict[str, int], within: float) -> dict[str, int]:
    """Wait up to `within` s for every process to end; those still running (empty when none)."""
    deadline = time.monotonic() + within
    while True:
        alive = {role: pid for role, pid in pids.items() if is_running(pid)}
        if not alive or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(0.02)


@pytest.fixture
def plugins(plugin_dir: Path) -> Path:
    write_plugin(plugin_dir, "spawner.py", SPAWNER)
    write_plugin(plugin_dir, "chain.py", CHAIN)
    return plugin_dir


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "pids"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> object:
    """Whatever a failing test leaves running, killed afterwards (only the pids its tools noted)."""
    yield
    folder = tmp_path / "pids"
    for pid in noted(folder).values() if folder.exists() else []:
        if is_running(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("tool", ["spawner", "async_spawner"])
async def test_at_the_time_limit_the_calls_whole_tree_ends(
    make_executor: MakeExecutor, plugins: Path, folder: Path, tool: str
) -> None:
    env = await make_executor(timeout_seconds=2.0)
    call = asyncio.ensure_future(env.executor.execute(tool, {"folder": str(folder), "then": "hang"}))
    pids = await wait_for_notes(folder)
    assert all(is_running(pid) for pid in pids.values())
    with pytest.raises(DeadlineExceeded):
        await call
    # The guardian SIGKILLs the runner KILL_GRACE_SECONDS (1 s) after the SIGTERM at most, then the tree at once.
    assert await none_left(pids, within=2.5) == {}
    again = folder / "again"
    again.mkdir()
    output, _ = await env.executor.execute("spawner", {"folder": str(again), "then": "return"})
    assert output.text == "spawned"  # the replaced worker serves


async def test_what_a_call_leaves_behind_ends_before_it_answers(
    make_executor: MakeExecutor, plugins: Path, folder: Path
) -> None:
    env = await make_executor()
    output, _ = await env.executor.execute("spawner", {"folder": str(folder), "then": "return"})
    assert output.text == "spawned"
    pids = noted(folder)
    assert set(pids) == set(ROLES)
    assert await none_left(pids, within=0) == {}  # already gone when the answer came


async def test_a_worker_that_crashes_takes_its_tree_with_it(
    make_executor: MakeExecutor, plugins: Path, folder: Path
) -> None:
    env = await make_executor()
    with pytest.raises(Internal, match="exit code 3"):
        await env.executor.execute("spawner", {"folder": str(folder), "then": "crash"})
    assert await none_left(noted(folder), within=1.0) == {}


async def test_closing_the_pool_ends_every_calls_tree(make_executor: MakeExecutor, plugins: Path, folder: Path) -> None:
    env = await make_executor(timeout_seconds=60)
    call = asyncio.ensure_future(env.executor.execute("spawner", {"folder": str(folder), "then": "hang"}))
    pids = await wait_for_notes(folder)
    started = time.monotonic()
    await env.workers.close()
    assert time.monotonic() - started < 1.5
    assert await none_left(pids, within=0) == {}
    call.cancel()


@pytest.mark.parametrize("then", ["hang", "return"])
async def test_a_chain_forking_as_fast_as_it_can_ends_with_the_call(
    make_executor: MakeExecutor, plugins: Path, folder: Path, then: str
) -> None:
    """Each process forks the next and exits: a scan of /proc may never catch up, but the runner's process group
    is killed with one signal once the runner has ended (at the time limit, or when it retires because its own
    sweep was outrun)."""
    # A time limit long enough for the test to see the chain running on a loaded machine before the limit ends it
    # (at 1.5 s the call was sometimes over, its tree rightly gone, before the first look).
    env = await make_executor(timeout_seconds=4)
    call = asyncio.ensure_future(env.executor.execute("chain", {"folder": str(folder), "then": then}))
    deadline = time.monotonic() + 10
    while not (notes := [name for name in os.listdir(folder) if name.startswith("runner-")]):
        assert time.monotonic() < deadline, "the chain tool never ran"
        await asyncio.sleep(0.02)
    [runner] = [int(name.split("-")[1]) for name in notes]
    try:
        if then == "hang":
            # The chain's links count how far they got: a count that grows is the chain running beside its runner
            # (a scan of /proc for the current link raced the forks, and lost for 3 s once on a loaded machine).
            first = links_counted(folder)
            while links_counted(folder) <= first:
                assert time.monotonic() < deadline, "the chain was never seen running beside its runner"
                await asyncio.sleep(0.02)
            with pytest.raises(DeadlineExceeded):
                await call
        else:
            assert (await call).output.text == "chained"
            # (the sweep after the call either caught the chain or retired the runner, handing it to the guardian)
        deadline = time.monotonic() + 8  # the runner's sweep may chase for 5 s before it retires
        while chain := [pid for pid in group_members(runner) if pid != runner]:  # (a runner that served stays)
            assert time.monotonic() < deadline, f"still running in the group: {chain}"
            await asyncio.sleep(0.05)
        # And no link is left anywhere (a scan may miss one between forks; the count would not):
        ended = links_counted(folder)
        await asyncio.sleep(0.5)
        assert links_counted(folder) == ended, "the chain still forks after the call ended"
    finally:
        for pid in group_members(runner):  # only the group this test's tool made
            if pid != runner:
                os.kill(pid, 9)
