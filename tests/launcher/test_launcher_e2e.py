"""`python -m services.launcher` (what `make run` runs) as a real process: it prints its banner and "ready" line
only once everything answers, with every service in it and the migrations one line each; it restarts a killed
service, and SIGINT (a terminal's Ctrl-C) stops every process it started."""

import os
import re
import signal
from pathlib import Path

import pytest

from services.common.rpc.health_probe import is_serving
from services.launcher.__main__ import READY
from services.launcher.process_tree import alive, children_of
from services.launcher.readiness import gateway_routes
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


#: The process names the banner lists, each with its address.
BANNER_ROWS = ("gateway", "rest", "openapi", "engine", "runs", "tools", "agents", "model")
#: Each service's line once it serves: the banner must come after all of them.
SERVING_LINES = (
    r"runs +\| .* runs service listening on", r"tools +\| .* tools service listening on",
    r"agents +\| .* agents service listening on", r"engine +\| .* engine engine-\S+ listening on",
)


def check_start_up(log: str, ports: dict[str, int]) -> None:
    """The banner after every service's serving line, each service in it with its address, the migrations one
    line per schema, and the ready line the last of the start-up."""
    banner_at = log.index("Agent platform: every service answers its health check")
    for serving in SERVING_LINES:
        found = re.search(serving, log)
        assert found is not None and found.start() < banner_at, serving
    banner = log[banner_at:].split("\n\n")[0].splitlines()[1:]
    rows = {row.split()[0]: row.split()[1] for row in banner}
    assert rows.keys() == set(BANNER_ROWS), banner
    gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
    assert rows["agents"] == f"127.0.0.1:{ports['AGENTS']}" and rows["gateway"] == gateway
    assert (rows["rest"], rows["openapi"]) == (f"{gateway}/api", f"{gateway}/api/openapi.json")
    # The ready line follows the banner's last line (its Ctrl-C hint), and nothing of the start-up comes after.
    after_banner = log[log.index("Ctrl-C stops everything", banner_at):].splitlines()[1:]
    ready = next(line for line in after_banner if line.strip())
    assert re.fullmatch(rf"\d\d:\d\d:\d\d launcher \| {READY} the platform answers at http://127.0.0.1:\d+ .*", ready)
    assert " started (pid " not in log[log.index(ready):]
    assert "Running upgrade" not in log, "Alembic's line per migration belongs at DEBUG"
    assert len(re.findall(r"schema services\.\w+:migrations migrated from revision \(none\) to \d+", log)) == 3


def test_launcher_is_ready_then_restarts_a_killed_service_and_stops_everything_on_sigint(tmp_path: Path) -> None:
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

        def ready() -> bool:
            assert launcher.process.poll() is None, f"the launcher exited with code {launcher.process.returncode}"
            return f"launcher | {READY}" in launcher.log_path.read_text()

        try:
            wait_until(ready, STARTUP_TIMEOUT, "the ready line")
            # Printed once everything answered: it all answers now.
            assert is_serving(*engine) and is_serving(*tools)
            assert is_serving(f"127.0.0.1:{ports['AGENTS']}", "agentplatform.agents.v1.AgentRegistryService")
            assert gateway_routes(f"http://127.0.0.1:{ports['GATEWAY']}")
            check_start_up(launcher.log_path.read_text(), ports)
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
