"""`make bench` (`python -m bench`): the whole stack as `make run` starts it, under the seed example's load,
beside a bare gRPC stream measured in the same run, on SQLite files (as `make run`) or, with --database postgres,
on a throwaway PostgreSQL server (a database per service; its processes' CPU is the stack's too). Progress goes
to stderr; the table, its legend, the issue's goals beside the figures and the verification count go to stdout.
Exits 1 when any run failed verification."""

import argparse
import signal
import sys
import time
from types import FrameType

from bench.cases import CASES, DATABASES, BenchConfig, BenchOutcome, limit_notes, run_bench
from bench.results import LEGEND, CaseResult, goal_lines, progress, results_table
from bench.stack import peak_rss_resettable

#: Runs (baseline: calls) per case: enough to be steady, and the whole bench done in a few minutes here.
DEFAULT_RUNS = {
    "baseline": 2000, "sequential": 30, "concurrent": 300, "burst": 1000, "delivery": 100, "burst2": 1000,
    "resume": 200,
}
#: --smoke: a handful per case, to show the bench works (the test runs it), not to measure.
SMOKE_RUNS = {
    "baseline": 64, "sequential": 3, "concurrent": 12, "burst": 10, "delivery": 5, "burst2": 10, "resume": 10,
}
#: --smoke: the resume case's engine lease, so that its killed engine's runs are resumed within seconds.
SMOKE_ENGINE_LEASE = 3.0
DEFAULT_CLIENTS, SMOKE_CLIENTS = 32, 4
DEFAULT_LATENCY, SMOKE_LATENCY = 1.0, 0.2
DEFAULT_DEADLINE, SMOKE_DEADLINE = 600.0, 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="a handful of runs per case, a 0.2 s model: checks the bench works, measures nothing")
    parser.add_argument("--runs", type=int, help="runs (baseline: calls) in every case "
                        f"(default: {', '.join(f'{key} {count}' for key, count in DEFAULT_RUNS.items())})")
    parser.add_argument("--clients", type=int,
                        help=f"concurrent clients of the baseline and the 0 ms case (default {DEFAULT_CLIENTS})")
    parser.add_argument("--latency", type=float,
                        help="seconds per model call in the burst, delivery and resume cases "
                        f"(default {DEFAULT_LATENCY:g})")
    parser.add_argument("--deadline", type=float,
                        help=f"each call's deadline, s; a run past it is an error (default {DEFAULT_DEADLINE:g})")
    parser.add_argument("--engine-lease", type=float,
                        help="ENGINE_LEASE_SECONDS in the resume case (default: the engine's own; --smoke: "
                        f"{SMOKE_ENGINE_LEASE:g})")
    parser.add_argument("--metrics", choices=("on", "off"), default="on",
                        help="off: the stack's processes with no-op Prometheus metrics, to price them "
                        "(bench/metrics_off; the platform's metrics are always on)")
    parser.add_argument("--database", choices=tuple(DATABASES), default="sqlite",
                        help="what the stack runs on: sqlite, files in the stack's folder as `make run` makes them; "
                        "postgres, a database per service (runs, tools, agents) on a throwaway server started as the "
                        "tests start theirs (PostgreSQL installed), its CPU in the 'CPU pg' column (default sqlite)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    for name in ("runs", "clients", "latency", "deadline", "engine_lease"):
        value = getattr(args, name)
        if value is not None and (value <= 0 if name != "latency" else value < 0):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def config_from(args: argparse.Namespace) -> BenchConfig:
    runs = SMOKE_RUNS if args.smoke else DEFAULT_RUNS
    return BenchConfig(
        cases=tuple(case for case in CASES if case in args.cases.split(",")),
        runs={key: args.runs or count for key, count in runs.items()},
        clients=args.clients or (SMOKE_CLIENTS if args.smoke else DEFAULT_CLIENTS),
        latency=args.latency if args.latency is not None else (SMOKE_LATENCY if args.smoke else DEFAULT_LATENCY),
        deadline=args.deadline or (SMOKE_DEADLINE if args.smoke else DEFAULT_DEADLINE),
        engine_lease=args.engine_lease or (SMOKE_ENGINE_LEASE if args.smoke else None),
        metrics=args.metrics == "on",
        database=args.database,
    )


def report(config: BenchConfig, outcome: BenchOutcome, seconds: float) -> bool:
    """Print the table and what goes with it; whether every run (and baseline call) was right."""
    results = outcome.results
    print(results_table(results))
    print()
    print(LEGEND)
    if goals := goal_lines(results):
        print("\nGoals against this run:")
        print("\n".join(goals))
    notes = list(outcome.notes)
    if "burst" in config.cases or "burst2" in config.cases:
        notes += limit_notes(config)
    if not peak_rss_resettable():
        notes.append("peak RSS could not be reset per case (/proc/<pid>/clear_refs): it is the peak since start")
    notes += outside_load_notes(results, config.cores)
    notes.append(f"{config.cores} cores; baseline server in a subprocess, called directly; stack cases through "
                 f"Envoy; the bench took {seconds:.0f} s")
    print("\nNotes:")
    print("\n".join(f"  {note}" for note in notes))
    for result in results:
        if result.problems:
            kinds = ", ".join(f"{count} {kind}" for kind, count in result.failure_kinds.items())
            print(f"\nProblems in {result.name} ({result.errors} runs{': ' + kinds if kinds else ''}); the first:")
            print("\n".join(f"  {problem}" for problem in result.problems))
    checked = sum(result.checked for result in results)
    passed = sum(result.verified for result in results)
    print(f"\nverified {passed}/{checked} runs")
    return passed == checked and not any(result.errors for result in results) and not any(
        note.startswith("warm-up run failed") for note in outcome.notes
    )


def outside_load_notes(results: list[CaseResult], cores: int) -> list[str]:
    """Cases during which other processes used a noticeable share of the machine (over 10 %)."""
    notes = []
    for result in results:
        share = result.outside_cpu_s / (result.wall_s * cores) if result.wall_s > 0 else 0.0
        if share > 0.1:
            notes.append(f"{result.name}: other processes used {result.outside_cpu_s:.1f} CPU s ({share:.0%} of the "
                         "machine) during the case: its figures are skewed")
    return notes


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a test's timeout, a CI runner) unwinds like Ctrl-C, so the stack is stopped, not orphaned.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    config = config_from(parse_args(argv))
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    try:
        outcome = run_bench(config)
    except KeyboardInterrupt:
        progress("interrupted: the stack was stopped")
        return 130
    except RuntimeError as error:  # the stack or the baseline server did not start; the message says why
        progress(f"FAILED: {error}")
        return 1
    ok = report(config, outcome, time.perf_counter() - started)
    progress(f"done in {time.perf_counter() - started:.0f} s" + ("" if ok else "; some runs FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
