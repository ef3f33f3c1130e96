"""The platform's services as real processes (`python -m services.<name>`) on free loopback ports, for the tests of
replicas and failover: started with the test's environment plus their own settings, waited for until their gRPC
health says SERVING, killed with real signals, and stopped on exit.

    with ServiceProcesses(tmp_path) as started:
        runs_a = started.start("runs-a", "services.runs", {"RUNS_PORT": str(port), ...}, port, RUNS_SERVICE)
        runs_a.kill()  # SIGKILL
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from services.common.metrics import METRICS_PORT_SETTINGS
from services.common.rpc.health_probe import is_serving
from tests.conftest import REPO_ROOT

#: The developer's own settings must not leak into the processes under test.
SETTING_PREFIXES = (
    "LLM_", "DATABASE_URL", "TOOLS_", "RUNS_", "ENGINE_", "GATEWAY_", "DEMO_MODEL_", "CORS_", "AGENTS_", "AUTH_",
    "PLATFORM_",
)


#: Every service's /metrics on a free port: the default ports (9181 ...) would be taken by a second replica, or by a
#: stack of an earlier test still stopping. A test that scrapes one sets the port it wants.
METRICS_ON_FREE_PORTS = dict.fromkeys(METRICS_PORT_SETTINGS, "0")


@dataclass
class ServiceProcess:
    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process ends at once, as a crashed or evicted replica does."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ServiceProcesses:
    """Processes started by a test; every one still running is stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.started: list[ServiceProcess] = []

    def __enter__(self) -> "ServiceProcesses":
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        for started in reversed(self.started):
            started.stop()

    def start(
        self,
        name: str,
        module: str,
        env: dict[str, str],
        port: int,
        health_service: str | None,
        timeout: float = 60.0,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> ServiceProcess:
        """`python -m module` with the test's environment (less the platform's settings) plus `env`, its output in
        `<name>.log`; returns once `health_service` on `host`:`port` is SERVING (None: for a server that is not
        gRPC, once the port takes connections). `prefix` goes before the command (`ip netns exec <ns>`: the
        process runs in a network namespace of the test's, reached at `host`)."""
        environment = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
        environment |= {"PYTHONPATH": str(REPO_ROOT), **METRICS_ON_FREE_PORTS, **env}
        log_path = self._directory / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*prefix, sys.executable, "-m", module], cwd=self._directory, env=environment, stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = ServiceProcess(name, f"{host}:{port}", process, log_path)
        self.started.append(started)
        deadline = time.monotonic() + timeout
        while not _ready(host, port, health_service):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{started.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not serve within {timeout} s:\n{started.log()[-4000:]}")
            time.sleep(0.1)
        return started


def _ready(host: str, port: int, health_service: str | None) -> bool:
    if health_service is not None:
        return is_serving(f"{host}:{port}", health_service)
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0
