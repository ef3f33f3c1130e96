"""Past one machine, proven with real processes (issue 17): one PostgreSQL, two runs replicas, two engines, two tools
replicas, the agents service, the demo model and Envoy (bench/scale/cluster.py), driven by the scenarios
`make scale-demo` prints (bench/scale/scenarios.py). Each test asserts on a scenario's figures; the tests share one
cluster and run in file order, each leaving it whole (a killed process is started again).

What would break each: a watcher that follows only its own replica (steps and ends written through the other never
arrive), cancel notices kept in one process (a cancel through the other replica waits for the next lease renewal),
an engine dialing one runs address (a SIGKILLed replica takes its runs down), a reaper that fails runs whose lease
is renewed through the other replica, an Envoy that keeps routing to a stopped engine."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scale import scenarios
from bench.scale.cluster import Cluster, ClusterShape, running_cluster
from bench.store.databases import create_postgres_database, drop_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

SHAPE = ClusterShape()


@pytest.fixture(scope="module")
def cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = asyncio.run(create_postgres_database(postgres_url))
    try:
        with running_cluster(tmp_path_factory.mktemp("cluster"), url, SHAPE) as started:
            yield started
    finally:
        asyncio.run(drop_postgres_database(url))


async def test_chats_spread_over_both_engines_and_every_runs_replica_streams_them_live(cluster: Cluster) -> None:
    figures = await scenarios.spread_and_watch(cluster, chats=16)
    assert not figures.problems
    assert len(figures.chats_by_engine) == 2 and min(figures.chats_by_engine) >= 3, figures
    # A watcher on either replica gets each step live: well under a second after the engine's own stream.
    assert max(figures.delivery_p99_ms) < 1000, figures


async def test_a_cancel_through_either_replica_stops_the_run_within_a_second(cluster: Cluster) -> None:
    figures = await scenarios.cancel_through_each_replica(cluster, cancels=4)
    assert not figures.problems
    assert len(figures.cancel_ms) == 4 and max(figures.cancel_ms) < 1000, figures


async def test_approvals_through_the_other_replica_resume_the_run_and_the_chat_returns(cluster: Cluster) -> None:
    figures = await scenarios.approve_through_the_other_replica(cluster)
    assert not figures.problems
    assert figures.approvals == 3 and max(figures.resume_ms) < 1500, figures


async def test_turns_of_one_thread_on_two_engines_obey_its_multitask_strategy(cluster: Cluster) -> None:
    figures = await scenarios.one_thread_two_engines(cluster)
    assert not figures.problems
    assert figures.reject_code == "FAILED_PRECONDITION"
    assert figures.enqueue_gap_ms < 1000 and figures.interrupt_stop_ms < 1000, figures


async def test_sigkill_of_a_runs_replica_under_load_loses_no_step_and_no_chat(cluster: Cluster) -> None:
    figures = await scenarios.kill_a_runs_replica(cluster)
    assert not figures.problems
    assert figures.answered == figures.chats > 0 and not figures.errors, figures


async def test_sigkill_of_an_engine_has_its_runs_completed_by_the_others(cluster: Cluster) -> None:
    figures = await scenarios.kill_an_engine(cluster)
    assert not figures.problems
    assert figures.runs_on_the_killed_engine >= 1
    # Resumed after the lease and the reaper's pass, then finished: a margin for the rest of the runs and the load.
    assert figures.seconds_until_none_running <= SHAPE.lease_seconds + 25, figures
    assert figures.end_states == {"RUN_STATE_COMPLETED": figures.runs_on_the_killed_engine}, figures


async def test_a_rolling_restart_under_load_loses_no_run(cluster: Cluster) -> None:
    figures = await scenarios.rolling_restart(cluster)
    assert not figures.problems
    # Every chat answered; a retried UNAVAILABLE (the engine that was stopping refused it) is all a client sees.
    assert figures.answered == figures.chats > 0 and not figures.errors, figures


def test_the_cluster_is_whole_after_the_faults(cluster: Cluster) -> None:
    for process in (*cluster.runs, *cluster.engines, *cluster.tools, *cluster.agents, cluster.gateway):
        assert process.process.poll() is None, f"{process.name} is not running"
    assert Path(cluster.gateway_admin).exists()
