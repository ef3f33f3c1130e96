"""The whole platform as `make run` starts it: separate processes (runs, tools, demo model, engine, Envoy)
from the launcher's own process definitions, on free ports, with databases in a temporary folder."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.common.rpc.health_probe import is_serving
from services.launcher.stack import ProcessSpec, Stack, build_stack
from tests.conftest import free_port
from tests.support.processes import METRICS_ON_FREE_PORTS

STARTUP_TIMEOUT = 60.0
SETTING_PREFIXES = (
    "LLM_", "DATABASE_URL", "TOOLS_", "RUNS_", "ENGINE_", "GATEWAY_", "DEMO_MODEL_", "CORS_", "AUTH_", "PLATFORM_",
    "AGENTS_", "GRPC_", "LOG_LEVEL", "OTEL_",
)


def local_origin(port: int) -> str:
    """The browser origin of a page served on 127.0.0.1:port."""
    return f"http://127.0.0.1:{port}"


@dataclass
class RunningStack:
    stack: Stack
    workdir: Path
    env: dict[str, str]
    #: A free port for a web page the browser test serves; its origin is allowed by the gateway's CORS policy.
    page_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, spec: ProcessSpec) -> None:
        log = open(self.workdir / f"{spec.name}.log", "ab")
        self.processes[spec.name] = subprocess.Popen(
            spec.argv, env={**self.env, **spec.env}, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )

    def spec(self, name: str) -> ProcessSpec:
        return next(spec for spec in self.stack.processes if spec.name == name)

    def stop(self, name: str, timeout: float = 10) -> int:
        """SIGTERM, as honcho sends on Ctrl-C; returns the exit code."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def url(self, method: str) -> str:
        return f"{self.stack.gateway_url}/{method}"

    @property
    def page_origin(self) -> str:
        return local_origin(self.page_port)


def build_stack_in(workdir: Path, env: dict[str, str]) -> Stack:
    """The launcher's process definitions for exactly `env` (nothing of the test run's own environment), with
    the Envoy config written into `workdir`."""
    with pytest.MonkeyPatch.context() as patch:
        for key in os.environ:
            if key not in env:
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return build_stack(workdir / "envoy.yaml")


def wait_serving(
    address: str, service: str, deadline: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    while not is_serving(address, service):
        if process is not None and process.poll() is not None:
            # A process that died (a port taken, a bad setting) will not become SERVING: say so now, with its log.
            raise TimeoutError(f"{service} exited with code {process.returncode} before it served")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} at {address} did not become SERVING")
        time.sleep(0.1)


def wait_gateway(running: RunningStack, deadline: float) -> None:
    """Envoy is up and routes to the tools service: a grpc-web call is answered by the service itself, with
    grpc-status 0, or 16 (UNAUTHENTICATED) when the stack has API keys and the probe none."""
    while True:
        try:
            response = httpx.post(
                running.url("agentplatform.tools.v1.ToolService/ListTools"),
                content=b"\x00\x00\x00\x00\x00",
                headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
                timeout=2,
            )
            # A refusal comes trailers-only: its status is in the headers rather than in a trailer frame.
            status = response.headers.get("grpc-status") or (b"grpc-status:0" in response.content and "0")
            if response.status_code == 200 and status in ("0", "16"):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the Envoy gateway did not start routing")
        time.sleep(0.2)


def wait_ready(running: RunningStack, names: list[str]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    stack = running.stack
    checks = {
        "runs": (stack.runs_address, "agentplatform.runs.v1.RunService"),
        "tools": (stack.tools_address, "agentplatform.tools.v1.ToolService"),
        "agents": (stack.agents_address, "agentplatform.agents.v1.AgentRegistryService"),
        "engine": (stack.engine_address, "agentplatform.engine.v1.AgentService"),
    }
    try:
        for name in names:
            if name in checks:
                wait_serving(*checks[name], deadline, running.processes.get(name))
        if "gateway" in names:
            wait_gateway(running, deadline)
    except TimeoutError:
        logs = "\n".join(f"--- {n}\n{running.log(n)[-3000:]}" for n in running.processes)
        raise TimeoutError(f"stack did not start; logs:\n{logs}") from None


def stack_environment(workdir: Path, **settings: str) -> dict[str, str]:
    """The environment of a stack in `workdir`: only these settings (none of the developer's own LLM_,
    DATABASE_URL ... variables leak in), free ports, databases and workspace in `workdir`, then `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
    return env | {
        "RUNS_PORT": str(free_port()),
        "TOOLS_PORT": str(free_port()),
        "AGENTS_PORT": str(free_port()),
        "ENGINE_PORT": str(free_port()),
        "DEMO_MODEL_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/runs.db",
        "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/tools.db",
        "AGENTS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/agents.db",
        "TOOLS_WORKSPACE": str(workdir / "workspace"),
        **METRICS_ON_FREE_PORTS,
        **settings,
    }


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    """Settings a test module adds to its stack's environment (override it in the module, e.g. API keys)."""
    return {}


@pytest.fixture(scope="module")
def platform_stack(
    tmp_path_factory: pytest.TempPathFactory, stack_settings: dict[str, str]
) -> Iterator[RunningStack]:
    workdir = tmp_path_factory.mktemp("stack")
    page_port = free_port()
    env = stack_environment(
        workdir,
        # A model that takes a moment per streamed piece, like a real one, so steps visibly arrive mid-run.
        DEMO_MODEL_CHUNK_DELAY_SECONDS="0.03",
        # The defaults (the frontend's dev servers) plus the page a real browser loads in test_browser.py.
        CORS_ALLOWED_ORIGINS="http://localhost:3000,http://localhost:5173," + local_origin(page_port),
        **stack_settings,
    )
    stack = build_stack_in(workdir, env)
    running = RunningStack(stack, workdir, env, page_port)
    try:
        for spec in stack.processes:
            running.start(spec)
        wait_ready(running, [spec.name for spec in stack.processes])
        yield running
    finally:
        for name in list(running.processes):
            try:
                running.stop(name)
            except subprocess.TimeoutExpired:
                pass
