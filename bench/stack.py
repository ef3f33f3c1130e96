"""The whole platform as users run it (`python -m services.launcher`, what `make run` runs), on free ports with
its databases in a temporary folder, and what each of its processes uses (CPU time, peak RSS), read from /proc.

The launcher starts every service in its own session, so its children are found by walking /proc and told
apart by their command lines. Nothing here tunes the services: the bench measures their defaults.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from bench.results import progress
from services.common.metrics import METRICS_PORT_SETTINGS
from services.common.rpc.health_probe import is_serving
from services.launcher.process_tree import children_of

#: The services' own settings that must not leak in from the caller's environment (nor from a .env: the
#: launcher runs in the temporary folder, where there is none), so that the defaults are what is measured.
SETTING_PREFIXES = (
    "LLM_", "DATABASE_URL", "TOOLS_", "RUNS_", "ENGINE_", "GATEWAY_", "ENVOY_", "DEMO_MODEL_", "CORS_",
    "LOG_LEVEL", "GRPC_GRACE_SECONDS", "AUTH_", "PLATFORM_", "AGENTS_",
)
#: The stack's processes by the module (or binary) their command line runs.
PROCESS_MODULES = {
    "services.runs": "runs",
    "services.engine": "engine",
    "services.tools": "tools",
    "services.agents": "agents",
    "services.demo_model": "model",
}
STACK_PROCESSES = ("engine", "runs", "tools", "agents", "model", "envoy")
#: How the second and later processes of one kind are named (`engine#2`): results add them up under their kind.
REPLICA_MARK = "#"
STARTUP_TIMEOUT_SECONDS = 60.0
#: The launcher stops its processes one stage after another, each within its stop timeout (at most ~25 s).
STOP_TIMEOUT_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SELF = "client"
LAUNCHER = "launcher"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the services cannot report a port they picked themselves)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- what a process uses --------------------------------------------------------------------------------------


def cpu_seconds(pid: int, *, reaped: bool = False) -> float | None:
    """User + system CPU time `pid` has used so far (threads included), from /proc/<pid>/stat; with `reaped`, plus
    that of its children that ended and were waited for. None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15, cutime and cstime 16 and 17
    # (1-based, man proc).
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of `pid` and of every process under it, live or ended: a service's helper processes (the tools
    service's worker processes and their forkserver) are its cost too. None when `pid` is gone."""
    total = cpu_seconds(pid, reaped=True)
    if total is None:
        return None
    for child in children_of(pid):
        total += tree_cpu_seconds(child) or 0.0
    return total


def peak_rss_bytes(pid: int) -> int | None:
    """The peak resident set size of `pid` (VmHWM) since it started or since `reset_peak_rss`; None when it is
    gone."""
    return _status_bytes(pid, "VmHWM:")


def rss_bytes(pid: int) -> int | None:
    """The resident set size of `pid` now (VmRSS); None when it is gone."""
    return _status_bytes(pid, "VmRSS:")


def _status_bytes(pid: int, field: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return None


def reset_peak_rss(pid: int) -> bool:
    """Start a new peak RSS period for `pid` (Linux ≥ 4.0, our own processes); False when refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_resettable() -> bool:
    """Whether peak RSS can be measured per case here (else it is the peak since each process started)."""
    return reset_peak_rss(os.getpid())


@dataclass(frozen=True)
class Usage:
    """CPU seconds per process name over a stretch of time, and each process's peak RSS in it."""

    cpu: dict[str, float]
    peak_rss: dict[str, int]
    #: Each process's RSS when the stretch began (at rest, before the case's load).
    start_rss: dict[str, int]
    #: CPU seconds the whole machine used meanwhile (every process, ours included).
    machine_cpu: float

    @property
    def outside_cpu(self) -> float:
        """CPU seconds used by processes not measured here: other work on a shared machine skews the figures."""
        return max(0.0, self.machine_cpu - sum(self.cpu.values()))


def machine_cpu_seconds() -> float:
    """CPU time the machine has spent busy (all but idle and iowait), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class UsageMeter:
    """Measures what the named processes use between `start()` and `stop()`. A process that is gone by then
    (crashed, restarted under a new pid) is left out: `RunningStack.refresh_pids` tells which."""

    def __init__(self, pids: Mapping[str, int], *, own_only: Collection[str] = (LAUNCHER, SELF)) -> None:
        """`own_only`: processes measured without the processes under them (the launcher: its children are the
        stack's processes, measured one by one; this client)."""
        self._pids = dict(pids)
        self._own_only = frozenset(own_only)
        self._before: dict[str, float] = {}
        self._start_rss: dict[str, int] = {}
        self._machine_before = 0.0

    def start(self) -> None:
        for pid in self._pids.values():
            reset_peak_rss(pid)
        self._start_rss = {name: rss for name, pid in self._pids.items() if (rss := rss_bytes(pid)) is not None}
        self._before = {name: cpu for name, pid in self._pids.items() if (cpu := self._cpu(name, pid)) is not None}
        self._machine_before = machine_cpu_seconds()

    def stop(self) -> Usage:
        cpu, peak_rss = {}, {}
        for name, before in self._before.items():
            pid = self._pids[name]
            if (now := self._cpu(name, pid)) is not None and (peak := peak_rss_bytes(pid)) is not None:
                cpu[name], peak_rss[name] = now - before, peak
        start_rss = {name: rss for name, rss in self._start_rss.items() if name in peak_rss}
        return Usage(cpu=cpu, peak_rss=peak_rss, start_rss=start_rss,
                     machine_cpu=machine_cpu_seconds() - self._machine_before)

    def _cpu(self, name: str, pid: int) -> float | None:
        return cpu_seconds(pid) if name in self._own_only else tree_cpu_seconds(pid)


# --- the launcher's children ----------------------------------------------------------------------------------


def process_name(argv: list[str]) -> str | None:
    """Which process of the stack runs `argv`: `python -m services.engine` is the engine, and so on."""
    if argv and Path(argv[0]).name == "envoy":
        return "envoy"
    if "-m" in argv[:-1]:
        return PROCESS_MODULES.get(argv[argv.index("-m") + 1])
    return None


def process_kind(name: str) -> str:
    """`engine` for `engine` and `engine#2`."""
    return name.split(REPLICA_MARK, 1)[0]


def stack_pids(launcher_pid: int) -> dict[str, int]:
    """The launcher's children by name (see `process_name`); several of a kind (ENGINE_REPLICAS) are `engine`,
    `engine#2` ..., in pid order."""
    pids: dict[str, int] = {}
    for pid, argv in sorted(children_of(launcher_pid).items()):
        kind = process_name(argv)
        if kind is None:
            continue
        name, number = kind, 1
        while name in pids:
            number += 1
            name = f"{kind}{REPLICA_MARK}{number}"
        pids[name] = pid
    return pids


# --- the running stack ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    runs: int
    tools: int
    engine: int
    model: int
    gateway: int
    agents: int

    @classmethod
    def free(cls, engines: int = 1) -> "Ports":
        """Free ports; with several `engines`, ENGINE_PORT's next ports (where the launcher puts the others) are
        free too."""
        while True:
            ports = cls(*(free_port() for _ in range(6)))
            others = {ports.runs, ports.tools, ports.model, ports.gateway, ports.agents}
            if all(_port_free(ports.engine + n) and ports.engine + n not in others for n in range(1, engines)):
                return ports

    def engines(self, count: int) -> list[int]:
        return [self.engine + n for n in range(count)]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stack_environment(
    workdir: Path, ports: Ports, model_latency: float, engines: int = 1, settings: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The launcher's environment: the caller's, less any service setting, plus free ports, databases in
    `workdir`, `engines` engine processes, and the demo model (no LLM_BASE_URL) answering after `model_latency`
    seconds in one piece; then `settings` (a case that measures a setting's effect; the databases on PostgreSQL,
    bench/postgres.py)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SETTING_PREFIXES)}
    return env | {
        "ENGINE_REPLICAS": str(engines),
        "RUNS_PORT": str(ports.runs),
        "TOOLS_PORT": str(ports.tools),
        "AGENTS_PORT": str(ports.agents),
        "ENGINE_PORT": str(ports.engine),
        "DEMO_MODEL_PORT": str(ports.model),
        "GATEWAY_PORT": str(ports.gateway),
        # /metrics on free ports: the defaults may be taken by a `make run` on the same machine.
        **dict.fromkeys(METRICS_PORT_SETTINGS, "0"),
        # The benchmark measures the platform, not its guards: one user starts every run (development mode's
        # 'local'), far past the per-user limit, and the burst is above the gateway's global rate limit.
        "ENGINE_USER_RUNS_PER_SECOND": "0",
        "GATEWAY_RATE_LIMIT_PER_SECOND": "1000000",
        "GATEWAY_RATE_LIMIT_BURST": "1000000",
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/runs.db",
        "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/tools.db",
        "AGENTS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/agents.db",
        "TOOLS_WORKSPACE": str(workdir / "workspace"),
        "DEMO_MODEL_LATENCY_SECONDS": str(model_latency),
        "DEMO_MODEL_CHUNK_DELAY_SECONDS": "0",
        **(settings or {}),
    }


@dataclass
class RunningStack:
    """A launcher and its children, running."""

    workdir: Path
    ports: Ports
    launcher: subprocess.Popen[bytes]
    engines: int = 1
    #: Stack process name -> pid, as found once the stack was ready (and by `refresh_pids`).
    pids: dict[str, int] = field(default_factory=dict)
    #: Keep the launcher's log after the stop (it is kept anyway when the stack logged warnings or errors).
    keep_log: bool = False
    #: Processes outside the launcher whose CPU is the stack's too, by name (the PostgreSQL server it runs on).
    outside_pids: dict[str, int] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.ports.gateway}"

    @property
    def runs_address(self) -> str:
        return f"127.0.0.1:{self.ports.runs}"

    def all_pids(self) -> dict[str, int]:
        """Every process whose CPU counts: the stack's, its database server's, the launcher (it relays their logs)
        and this client."""
        return self.pids | self.outside_pids | {LAUNCHER: self.launcher.pid, SELF: os.getpid()}

    def refresh_pids(self) -> list[str]:
        """Take in the launcher's children as they are now; the names of those that changed pid or are gone
        (they crashed and the launcher restarted them, or gave up on them)."""
        now = stack_pids(self.launcher.pid)
        changed = [name for name, pid in self.pids.items() if now.get(name) != pid]
        self.pids = now
        return changed

    def log_path(self) -> Path:
        return self.workdir / "launcher.log"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path().read_text(errors="replace")[-chars:]

    def log_problems(self, limit: int = 5) -> tuple[int, list[str]]:
        """How many log lines are warnings, errors or tracebacks, and the first `limit` of them."""
        marks = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        # Development mode says so at start, as a warning, in every `make run`: expected here, not a problem.
        expected = "development mode: no API keys configured"
        lines = [line for line in self.log_path().read_text(errors="replace").splitlines()
                 if any(mark in line for mark in marks) and expected not in line]
        return len(lines), lines[:limit]


def _routed(gateway: str) -> bool:
    """Envoy routes native gRPC to all three services. The engine's answer to a blank message (INVALID_ARGUMENT)
    proves the route without starting a run; Envoy does not route the health service."""
    with grpc.insecure_channel(gateway) as channel:
        try:
            tools_pb2_grpc.ToolServiceStub(channel).ListTools(tools_pb2.ListToolsRequest(), timeout=2)
            runs_pb2_grpc.RunServiceStub(channel).ListRuns(runs_pb2.ListRunsRequest(page_size=1), timeout=2)
            engine_pb2_grpc.AgentServiceStub(channel).StartRun(engine_pb2.StartRunRequest(message=""), timeout=2)
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    return False


def _wait_ready(stack: RunningStack) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    checks = [
        (f"127.0.0.1:{stack.ports.runs}", "agentplatform.runs.v1.RunService"),
        (f"127.0.0.1:{stack.ports.tools}", "agentplatform.tools.v1.ToolService"),
        *((f"127.0.0.1:{port}", "agentplatform.engine.v1.AgentService") for port in stack.ports.engines(stack.engines)),
    ]
    for address, service in checks:
        while not is_serving(address, service):
            _check_alive(stack, deadline, f"{service} at {address} did not become SERVING")
            time.sleep(0.1)
    while not _routed(stack.gateway):
        _check_alive(stack, deadline, "the Envoy gateway did not route native gRPC to the services")
        time.sleep(0.2)
    expected = set(STACK_PROCESSES) | {f"engine{REPLICA_MARK}{n}" for n in range(2, stack.engines + 1)}
    while set(stack_pids(stack.launcher.pid)) != expected:
        _check_alive(stack, deadline, f"the launcher's children are not all there: {stack_pids(stack.launcher.pid)}")
        time.sleep(0.1)
    stack.pids = stack_pids(stack.launcher.pid)


def _check_alive(stack: RunningStack, deadline: float, what: str) -> None:
    if stack.launcher.poll() is not None:
        raise RuntimeError(f"the launcher exited ({stack.launcher.returncode}); its log:\n{stack.log_tail()}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"{what} within {STARTUP_TIMEOUT_SECONDS:g}s; the launcher's log:\n{stack.log_tail()}")


def _kill_everything(stack: RunningStack) -> None:
    """SIGKILL the launcher and each child's process group (each child leads its own session, so killing the
    launcher's group alone would leave them running)."""
    for pid in stack_pids(stack.launcher.pid).values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(stack.launcher.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stack.launcher.wait()


def _stop(stack: RunningStack) -> int | None:
    """Ctrl-C, as a person stops `make run`; the launcher's exit code, or None when it hung and was killed."""
    if stack.launcher.poll() is not None:
        return stack.launcher.returncode
    stack.launcher.send_signal(signal.SIGINT)
    try:
        return stack.launcher.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_everything(stack)
        return None


@contextmanager
def launched_stack(
    model_latency: float, engines: int = 1, settings: Mapping[str, str] | None = None,
    outside_pids: Mapping[str, int] | None = None,
) -> Iterator[RunningStack]:
    """`python -m services.launcher` in a temporary folder with `engines` engine processes, ready to serve;
    stopped (Ctrl-C) and cleaned up on the way out. The launcher's log stays in the folder until then (see
    `RunningStack.log_problems`). `outside_pids`: processes the launcher did not start whose CPU is measured
    with the stack's (`RunningStack.outside_pids`)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    ports = Ports.free(engines)
    env = stack_environment(workdir, ports, model_latency, engines, settings)
    try:
        with open(workdir / "launcher.log", "wb") as log:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "services.launcher"], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        stack = RunningStack(workdir, ports, launcher, engines, outside_pids=dict(outside_pids or {}))
        try:
            _wait_ready(stack)
            yield stack
        finally:
            _report_stop(stack, _stop(stack))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _report_stop(stack: RunningStack, code: int | None) -> None:
    """Say how the stack stopped and what it logged that needs reading; keep its log out of the temporary folder
    when there is something to read in it."""
    if code is None:
        progress(f"the launcher did not stop within {STOP_TIMEOUT_SECONDS:g}s of Ctrl-C: killed it and its children")
    elif code != 0:
        progress(f"the launcher exited {code} (a process did not stop cleanly); its log ends:\n{stack.log_tail(1500)}")
    count, first = stack.log_problems()
    if count:
        # Some lines list hundreds of run ids: the start says what happened.
        shown = [line if len(line) <= 300 else line[:300] + " ..." for line in first]
        progress(f"the stack logged {count} warning/error lines; the first:\n  " + "\n  ".join(shown))
    if stack.keep_log or count or code != 0:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = Path(tempfile.gettempdir()) / f"bench-launcher-{stamp}-{stack.ports.gateway}.log"
        shutil.copyfile(stack.log_path(), kept)
        progress(f"the launcher's log is kept in {kept}")
