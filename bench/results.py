"""What a case measured, and how the bench prints it: progress on stderr; on stdout the one table, a legend,
the issue's goals beside the figures, and the verification count."""

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.report import fmt, percentile, table

MIB = 1024 * 1024
#: The PostgreSQL server a stack runs on (`--database postgres`), its every process: on SQLite that work is done
#: inside the services' own processes, so on PostgreSQL it counts as the platform's too.
DATABASE_SERVER = "postgres"
#: Processes whose CPU makes up the "sum" column of a stack case: the platform itself, behind the gateway.
PLATFORM = ("engine", "runs", "tools", "envoy", DATABASE_SERVER)
#: What drives the platform: the demo model, the load client, and the launcher relaying the logs.
DRIVERS = ("model", "client", "launcher")
#: The baseline's processes: its server stands where the platform does.
BASELINE_SERVER = "server"

HEADERS = (
    "case", "runs", "errors", "wall s", "runs/s", "lat p50 ms", "lat p99 ms", "TTFS p50 ms", "TTFS p99 ms",
    "deliv p50 ms", "deliv p99 ms", "CPU engine", "CPU runs", "CPU tools", "CPU envoy", "CPU pg", "CPU sum",
    "CPU other", "RSS engine", "RSS runs", "vs baseline / ideal",
)

LEGEND = """\
Columns: runs = runs (baseline: calls) the case made; errors = runs with a non-OK status or that failed
verification; wall s = from the first call to the end of the last; runs/s = runs / wall; lat = a call's whole
duration (StreamChat to its end; StartRun to the end of the watch); TTFS = time to first step, from the call's
start to the first RunEvent carrying a step; deliv = step delivery, a WatchRun client's receive wall-clock time
minus the step's create_time (set by the run store when it records the step), for steps recorded while the watch
was open; CPU * = CPU ms per run of each process (utime+stime from /proc over the case; pg = the PostgreSQL
server's processes under --database postgres, its backends included), sum = engine + runs + tools + envoy + pg
(baseline: the bare server), other = demo model + load client + launcher (baseline: the client);
RSS = peak RSS in MiB during the case; vs baseline = runs/s and CPU sum relative to the bare stream's calls/s
and server CPU per call; ideal = 3 model calls x latency, floor = CPU s of all processes (model and client
included) / cores, and wall / max(ideal, floor). Case f: wall = from the first StartRun until no run is live; lat =
each run's create to complete time in the store; its last column: the runs completed, and from the SIGKILL until
each run in flight was taken over by the restarted engine (its `resumed` step) and until its next step.
Goals (issue 22, which replaced issue 6's): 1,000 runs @1 s: zero errors, wall <= 1.1 x max(3 s, CPU s / 2),
TTFS p99 < 1.5 s, engine RSS < 150 MiB per 1,000 live runs; 0 ms model, 32 clients: >= 60 runs/s, <= 25 ms CPU
per run summed; step delivery p99 < 20 ms.
Goal (issue 18): every run in flight when the engine is SIGKILLed completes, resumed once."""


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class CaseResult:
    """One row of the table, and what was wrong with its runs."""

    key: str
    name: str
    runs: int
    errors: int
    wall_s: float
    latency_ms: list[float] = field(default_factory=list)
    ttfs_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    #: CPU seconds over the case, by process name (stack cases: PLATFORM + DRIVERS; baseline: server, client).
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    #: Each process's RSS when the case began, at rest.
    start_rss: dict[str, int] = field(default_factory=dict)
    #: CPU seconds other processes on the machine used during the case (not ours: a shared machine's noise).
    outside_cpu_s: float = 0.0
    #: Runs checked from the store and how many passed (the baseline's calls are not runs: 0 and 0).
    verified: int = 0
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    #: Failed runs by kind ("FAILED interrupted", "UNAVAILABLE", ...), most frequent first.
    failure_kinds: dict[str, int] = field(default_factory=dict)
    #: The last column: against the baseline, or the ideal and the CPU floor.
    comparison: str = "-"
    #: For the burst: the wall time with no waiting (3 model calls x latency), and the CPU floor (CPU s of all
    #: processes / cores).
    ideal_s: float = float("nan")
    cpu_floor_s: float = float("nan")

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.wall_s if self.wall_s > 0 else float("nan")

    def cpu_ms_per_run(self, *kinds: str) -> float:
        """CPU per run of these kinds of process (every engine for "engine": `engine`, `engine#2` ...)."""
        cpu = sum(seconds for name, seconds in self.cpu_s.items() if _kind(name) in kinds)
        return cpu * 1000 / self.runs if self.runs else float("nan")

    def measured(self, kind: str) -> bool:
        """Whether the CPU of a process of this kind was measured over the case."""
        return any(_kind(name) == kind for name in self.cpu_s)

    def peak_rss_of(self, kind: str) -> int | None:
        """The largest peak RSS of a process of this kind (each engine's own, not their sum)."""
        peaks = [peak for name, peak in self.peak_rss.items() if _kind(name) == kind]
        return max(peaks) if peaks else None

    def engine_rss_per_thousand(self) -> tuple[float, float] | None:
        """Engine memory per 1,000 live runs, in MiB, for a case whose runs are all live at once (a burst): every
        engine's peak RSS summed, and the growth of that sum over the RSS the engines had at rest, each times
        1,000 / runs. None when an engine was not measured."""
        peaks = {name: peak for name, peak in self.peak_rss.items() if _kind(name) == "engine"}
        if not peaks or not self.runs or any(name not in self.start_rss for name in peaks):
            return None
        per_thousand = 1000 / self.runs / MIB
        grown = sum(peak - self.start_rss[name] for name, peak in peaks.items())
        return sum(peaks.values()) * per_thousand, grown * per_thousand

    @property
    def server_cpu_ms(self) -> float:
        """CPU per run of the server side: the platform's processes, or the bare server."""
        return self.cpu_ms_per_run(*(PLATFORM if BASELINE_SERVER not in self.cpu_s else (BASELINE_SERVER,)))

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())

    def row(self) -> list[str]:
        baseline = BASELINE_SERVER in self.cpu_s
        # A process left out of the measure (killed or restarted during the case) shows "-", not 0.
        per_process = ["-"] * len(PLATFORM) if baseline else [
            fmt(self.cpu_ms_per_run(name), 2) if self.measured(name) else "-" for name in PLATFORM
        ]
        other = ("client",) if baseline else DRIVERS
        rss = ["-" if (peak := self.peak_rss_of(kind)) is None else fmt(peak / MIB, 0) for kind in ("engine", "runs")]
        return [
            self.name, fmt(self.runs), fmt(self.errors), fmt(self.wall_s, 2), fmt(self.runs_per_s),
            *_percentiles(self.latency_ms), *_percentiles(self.ttfs_ms), *_percentiles(self.delivery_ms),
            *per_process, fmt(self.server_cpu_ms, 2), fmt(self.cpu_ms_per_run(*other), 2), *rss, self.comparison,
        ]


def _kind(name: str) -> str:
    """A process's kind from its name: `engine#2` is an engine (bench.stack names replicas so)."""
    return name.split("#", 1)[0]


def _percentiles(values: Sequence[float]) -> list[str]:
    return [fmt(percentile(values, 0.5)), fmt(percentile(values, 0.99))]


def results_table(results: Sequence[CaseResult]) -> str:
    return table(HEADERS, [result.row() for result in results])


def goal_lines(results: Sequence[CaseResult]) -> list[str]:
    """The issue's goals beside the figures of this run (information, not assertions)."""
    by_key = {result.key: result for result in results}
    lines = []
    if (burst := by_key.get("burst")) and (two := by_key.get("burst2")) and two.wall_s > 0:
        lines.append(f"  {two.name}: {burst.wall_s / two.wall_s:.2f}x the one-engine burst's speed "
                     f"(wall {burst.wall_s:.1f} s -> {two.wall_s:.1f} s)")
    if burst := by_key.get("burst"):
        lines.append(_goal(f"{burst.name}: errors {burst.errors}", burst.errors == 0))
        bound = 1.1 * max(burst.ideal_s, burst.cpu_floor_s)
        lines.append(_goal(f"{burst.name}: wall {burst.wall_s:.1f} s <= 1.1 x max(ideal, floor) = {bound:.1f} s",
                           burst.wall_s <= bound))
        ttfs = percentile(burst.ttfs_ms, 0.99)
        lines.append(_goal(f"{burst.name}: TTFS p99 {ttfs:.0f} ms < 1500 ms", ttfs < 1500))
    for key in ("burst", "burst2"):
        if (case := by_key.get(key)) and (memory := case.engine_rss_per_thousand()) is not None:
            total, grown = memory
            lines.append(_goal(f"{case.name}: engine RSS per 1,000 live runs {total:.0f} MiB < 150 MiB (every "
                               f"engine's peak, summed; {grown:.0f} MiB of it grown over the engines at rest)",
                               total < 150))
    if concurrent := by_key.get("concurrent"):
        lines.append(_goal(f"{concurrent.name}: {concurrent.runs_per_s:.1f} runs/s >= 60",
                           concurrent.runs_per_s >= 60))
        lines.append(_goal(f"{concurrent.name}: CPU sum {concurrent.server_cpu_ms:.1f} ms per run <= 25 ms",
                           concurrent.server_cpu_ms <= 25))
    if delivery := by_key.get("delivery"):
        p99 = percentile(delivery.delivery_ms, 0.99)
        lines.append(_goal(f"{delivery.name}: delivery p99 {p99:.1f} ms < 20 ms", p99 < 20))
    if resume := by_key.get("resume"):
        lines.append(_goal(f"{resume.name}: {resume.verified}/{resume.checked} runs completed, each resumed once "
                           "if it was in flight", resume.verified == resume.checked))
    return lines


def _goal(text: str, met: bool) -> str:
    return f"  [{'met' if met else 'MISSED'}] {text}"

