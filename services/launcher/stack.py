"""The processes of the local platform and how each is started: the one definition `make run` and the
end-to-end tests share."""

import math
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from services.agents.settings import AgentsSettings
from services.common.auth import Authenticator
from services.common.rpc.server import check_exposure
from services.common.settings import SettingsError, load_settings
from services.common.tracing import otlp_grpc_collector
from services.demo_model.settings import DemoModelSettings
from services.engine.settings import EngineSettings
from services.launcher.gateway_config import AdminSocket, TokenFromEnvironment, Upstream, render_gateway_config
from services.launcher.private_files import make_private, private_secrets, write_private
from services.launcher.settings import GatewaySettings, LauncherSettings
from services.runs.settings import RunsSettings
from services.tools.secret_codec import new_key
from services.tools.settings import ToolsSettings

#: Envoy's admin interface: a Unix socket in the directory of the gateway config (var/ for `make run`).
ADMIN_SOCKET_NAME = "envoy-admin.sock"

#: The tools service's encryption keys (TOOLS_SECRET_KEYS) when none are configured: made once, kept in the var
#: dir, since the secrets stored with them must stay readable across restarts.
TOOLS_SECRET_KEYS_FILE = "tools-secret-keys"

#: Model name the demo model serves.
DEMO_MODEL_NAME = "demo"


#: The order the stack stops in, by process name: lower stops first, equal numbers stop together. The gateway
#: goes first (no new requests come in), then the engine, which records the end of its in-flight runs in the
#: runs service while it shuts down; then what the engine calls (model, tools); the runs service last.
STOP_ORDER = {"gateway": 0, "engine": 1, "model": 2, "tools": 2, "agents": 2, "runs": 3}

#: Seconds a process gets between SIGTERM and SIGKILL, beyond its gRPC grace period (GRPC_GRACE_SECONDS).
STOP_MARGIN_SECONDS = 2.0
#: The engine's extra time: after its grace period it waits up to 5 s for the runs it stops to settle, then hands
#: them back to the run store (scheduler.py `shutdown`).
ENGINE_STOP_MARGIN_SECONDS = 7.0


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the stack: a name for log prefixes, its command line and extra environment, and how it
    stops: `stop_order` (lower stops first, equal values together) and `stop_timeout`, the seconds from SIGTERM
    to SIGKILL."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_order: int = 0
    stop_timeout: float = 5.0


@dataclass(frozen=True)
class Stack:
    """The stack's processes, and the addresses a person (or a test) uses to reach it."""

    processes: list[ProcessSpec]
    gateway_url: str
    #: The engine on ENGINE_PORT (the first of engine_addresses).
    engine_address: str
    #: Every engine process (ENGINE_REPLICAS), each on a port of its own; the gateway balances over them.
    engine_addresses: list[str]
    runs_address: str
    tools_address: str
    agents_address: str
    model_base_url: str
    uses_demo_model: bool
    #: Each process's /metrics URL, by process name (a port of 0 is a free one: the process logs it).
    metrics_urls: dict[str, str] = field(default_factory=dict)


def _reachable(host: str) -> str:
    """An address to connect to for a server bound to `host` (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def engine_ports(first: int, count: int, taken: set[int]) -> list[int]:
    """`count` ports for the engine processes: `first` (ENGINE_PORT), then the next ones up that no other
    process of the stack listens on."""
    if count > 1 and first == 0:
        raise SettingsError("ENGINE_REPLICAS above 1 needs a fixed ENGINE_PORT (the gateway must know every port)")
    ports = [first]
    candidate = first
    while len(ports) < count:
        candidate += 1
        if candidate > 65535:
            raise SettingsError(f"ENGINE_REPLICAS={count}: no room for that many engine ports from ENGINE_PORT={first}")
        if candidate not in taken:
            ports.append(candidate)
    return ports


def shared_start_rate(engine: EngineSettings, replicas: int) -> dict[str, str]:
    """Each of `replicas` engine processes' share of the per-user start rate, as its environment.

    An engine counts the runs a user starts in its own process (services.engine.execution.rate_limit), so N
    engines given the configured rate would let a user start N times as many. Shared out, a user's starts through
    the gateway, which balances them over the engines, stay within about the configured rate and burst (a burst
    split unevenly may be refused a few runs early)."""
    if replicas == 1:
        return {}
    return {
        "ENGINE_USER_RUNS_PER_SECOND": str(engine.user_runs_per_second / replicas),
        "ENGINE_USER_RUN_BURST": str(math.ceil(engine.user_run_burst / replicas)),
    }


def build_stack(gateway_config_path: Path) -> Stack:
    """Read every service's settings from the environment, write the Envoy config, and describe the processes
    to start. The demo model is included when LLM_BASE_URL is unset. Each service's own settings class is the
    one source of its defaults (hosts, ports).

    The config's directory (var/ for `make run`) is the launcher's private one (services.launcher.private_files):
    made 0700 with everything in it, the config written 0600 and holding no secret (Envoy reads the service
    token from its environment), the tools' encryption key kept there 0600 when none is configured."""
    var_dir = gateway_config_path.parent
    make_private(var_dir)
    # The secret the platform's processes present to each other (services.common.auth): the one configured, or a
    # new one for this start, so a stack given API keys needs nothing more to run.
    shared_env = {"PLATFORM_SERVICE_TOKEN": os.environ.get("PLATFORM_SERVICE_TOKEN") or secrets.token_urlsafe(32)}
    # The launcher shows its children's lines to a person, prefixed with their names: readable lines unless asked.
    shared_env["LOG_FORMAT"] = os.environ.get("LOG_FORMAT") or "text"
    tools_env: dict[str, str] = {}
    if not os.environ.get("TOOLS_SECRET_KEYS", "").strip():
        tools_env["TOOLS_SECRET_KEYS"] = ",".join(private_secrets(var_dir / TOOLS_SECRET_KEYS_FILE, new_key))
    runs, tools = load_settings(RunsSettings, **shared_env), load_settings(ToolsSettings, **shared_env, **tools_env)
    agents = load_settings(AgentsSettings, **shared_env)
    gateway = load_settings(GatewaySettings, **shared_env)
    launcher = load_settings(LauncherSettings)
    # Each service refuses an open address without keys; the gateway is the address people reach.
    check_exposure(Authenticator.from_settings(runs), gateway.host, "the gateway")
    uses_demo_model = not os.environ.get("LLM_BASE_URL", "").strip()
    engine_env: dict[str, str] = {}
    taken = {runs.port, tools.port, agents.port, gateway.port}
    if uses_demo_model:
        demo = load_settings(DemoModelSettings)
        taken.add(demo.port)
        engine_env |= {
            "LLM_BASE_URL": f"http://{_reachable(demo.host)}:{demo.port}/v1",
            "LLM_MODEL": DEMO_MODEL_NAME,
            "LLM_API_KEY": "demo",
        }
    engine = load_settings(EngineSettings, **engine_env)
    ports = engine_ports(engine.port, launcher.engine_replicas, taken)
    # Where each process serves /metrics: its service's setting; several engines take the ports up from theirs.
    metrics = {name: (service.host, service.metrics_port) for name, service in
               (("runs", runs), ("tools", tools), ("agents", agents))}
    engine_metrics_ports: list[int | None] = [engine.metrics_port] * len(ports)
    if engine.metrics_port:
        busy = {*taken, *ports, *(port for _, port in metrics.values() if port)}
        engine_metrics_ports = list(engine_ports(engine.metrics_port, len(ports), busy))
    python = sys.executable

    engine_env |= {
        "RUNS_ADDR": f"{_reachable(runs.host)}:{runs.port}",
        "TOOLS_ADDR": f"{_reachable(tools.host)}:{tools.port}",
        "AGENTS_ADDR": f"{_reachable(agents.host)}:{agents.port}",
    }
    # The agents service checks an agent's tools with the tools service and its model with the model endpoint.
    agents_env: dict[str, str] = {
        key: engine_env[key] for key in ("TOOLS_ADDR", "LLM_BASE_URL", "LLM_API_KEY") if key in engine_env
    }

    # GRPC_GRACE_SECONDS is one setting every service reads; the engine's copy stands for all of them.
    grace = engine.grpc_grace_seconds

    def spec(name: str, argv: list[str], env: dict[str, str] | None = None, kind: str = "") -> ProcessSpec:
        kind = kind or name
        margin = ENGINE_STOP_MARGIN_SECONDS if kind == "engine" else STOP_MARGIN_SECONDS
        env = shared_env | (env or {})
        return ProcessSpec(name, argv, env, stop_order=STOP_ORDER[kind], stop_timeout=grace + margin)

    processes = [
        spec("runs", [python, "-m", "services.runs"]),
        spec("tools", [python, "-m", "services.tools"], tools_env),
        spec("agents", [python, "-m", "services.agents"], agents_env),
    ]
    if uses_demo_model:
        processes.append(spec("model", [python, "-m", "services.demo_model"]))
    for number, port in enumerate(ports, start=1):
        # One engine keeps the plain name; several are engine-1, engine-2 ... in the logs.
        name = "engine" if len(ports) == 1 else f"engine-{number}"
        argv = [python, "-m", "services.engine"]
        replica_env = {"ENGINE_PORT": str(port)} | shared_start_rate(engine, len(ports))
        if (metrics_port := engine_metrics_ports[number - 1]) is not None:
            replica_env["ENGINE_METRICS_PORT"] = str(metrics_port)
            metrics[name] = (engine.host, metrics_port)
        processes.append(spec(name, argv, engine_env | replica_env, kind="engine"))
    engine_host = _reachable(engine.host)

    write_private(
        gateway_config_path,
        render_gateway_config(
            gateway,
            # Next to the config, in the launcher's var dir: only this user can reach Envoy's admin interface.
            admin=AdminSocket(gateway_config_path.parent.resolve() / ADMIN_SOCKET_NAME),
            engine=[Upstream(engine_host, port) for port in ports],
            runs=Upstream(_reachable(runs.host), runs.port),
            tools=Upstream(_reachable(tools.host), tools.port),
            agents=Upstream(_reachable(agents.host), agents.port),
            # Envoy gets the token in its environment (shared_env), so the file on disk holds no secret.
            service_token=TokenFromEnvironment("PLATFORM_SERVICE_TOKEN"),
            # With tracing on, Envoy's span per request is the first of the trace (the same OTEL_* variables).
            tracing=otlp_grpc_collector(),
        ),
    )
    envoy = str(Path(python).parent / "envoy")
    processes.append(
        spec(
            "gateway",
            # --base-id from the port: two stacks on one machine (a dev run and the tests) must not share
            # Envoy's shared-memory region.
            # misc:error: Envoy warns at every start that the Connect bridge's config is a work-in-progress API,
            # two long lines that say nothing to a person running the platform.
            [envoy, "-c", str(gateway_config_path), "--log-level", "warn", "--component-log-level", "misc:error",
             "--base-id", str(gateway.port)],
        )
    )
    return Stack(
        processes=processes,
        gateway_url=f"http://{_reachable(gateway.host)}:{gateway.port}",
        engine_address=f"{engine_host}:{ports[0]}",
        engine_addresses=[f"{engine_host}:{port}" for port in ports],
        runs_address=engine_env["RUNS_ADDR"],
        tools_address=engine_env["TOOLS_ADDR"],
        agents_address=engine_env["AGENTS_ADDR"],
        model_base_url=engine.llm_base_url,
        uses_demo_model=uses_demo_model,
        metrics_urls={
            name: f"http://{_reachable(host)}:{port}/metrics" for name, (host, port) in metrics.items() if port
        },
    )
