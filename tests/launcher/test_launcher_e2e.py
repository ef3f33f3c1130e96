"""`python -m services.launcher` (what `make run` runs) as a real process: it restarts a killed service, and
SIGINT (a terminal's Ctrl-C) stops every process it started."""

import os
import signal
from pathlib import Path

import pytest

from services.common.rpc.health_probe import is_serving
from services.launcher.process_tree import alive, children_of
from tests.conftest import free_port
from tests.launcher.children import launched, wait_until
from tests.support.processes import METRICS_ON_FREE_PORTS

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT = 60.0
#: The developer's own settings must not leak into the stack under test.
SETTING_PREFIXES = (
    "LLM_", "DATABASE_URL", "TOOLS_", "RUNS_", "ENGINE_", "GATEWAY_", "DEMO_MODEL_", "CORS_", "AGENTS_", "AUTH_",
    "PLATFORM_",
)


def pid_running(parent: int, module: str) -> int | None:
    """The pid of the child of `parent` running `python -m module`, if there is one."""
    pids = [pid for pid, argv in children_of(parent).items() if f"-m {module}" in " ".join(argv)]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def test_launcher_restarts_a_killed_service_and_stops_everything_on_sigint(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("RUNS", "TOOLS", "AGENTS", "ENGINE", "DEMO_MODEL", "GATEWAY")}
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
    env |= {f"{name}_PORT": str(port) for name, port in ports.items()} | METRICS_ON_FREE_PORTS
    env |= {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/runs.db",
        "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/tools.db",
        "AGENTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/agents.db",
        "TOOLS_WORKSPACE": str(tmp_path / "workspace"),
    }
    engine = (f"127.0.0.1:{ports['ENGINE']}", "agentplatform.engine.v1.AgentService")
    tools = (f"127.0.0.1:{ports['TOOLS']}", "agentplatform.tools.v1.ToolService")
    with launched(tmp_path, env) as launcher:

        def up() -> bool:
            assert launcher.process.poll() is None, f"the launcher exited with code {launcher.process.returncode}"
            return is_serving(*engine) and is_serving(*tools)

        try:
            wait_until(up, STARTUP_TIMEOUT, "the engine and tools")
            launcher.note_children()
            pid = launcher.process.pid
            killed = pid_running(pid, "services.tools")
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            wait_until(lambda: pid_running(pid, "services.tools") not in (None, killed), 10, "a new tools")
            wait_until(lambda: is_serving(*tools), STARTUP_TIMEOUT, "the restarted tools service")
            assert is_serving(*engine)
            launcher.note_children()
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"{exc}; launcher log:\n{launcher.log_tail()}") from None

        launcher.process.send_signal(signal.SIGINT)
        assert launcher.process.wait(30) == 0, launcher.log_tail()
        assert not [pid for pid in launcher.seen if alive(pid)]
        text = launcher.log_path.read_text()
        assert "tools exited unexpectedly (signal SIGKILL); restarting it" in text
        assert "stopping in order: gateway, then engine, then " in text
