"""A network partition (issues 17 and 18), for real (bench/scale/partition.py): an engine and its model in a network
namespace of the test's lose their link to the runs replicas and the tools service mid-run. Within the lease the
run is taken from the engine (orphaned: no executor, attempts 1); nothing the cut engine writes afterwards reaches
the store (though, its model beside it, it had its next step to write); once the link is back the engine lets the
run go, is offered it, resumes it under the next lease epoch after a resume marker and completes it, and answers a
new chat.

What would break it: a reaper that waited for the engine (the run held by it for ever), a store that took a late
append of a run taken from its engine (a step before the resume marker), a resume that repeated or skipped a step,
an engine that never recovered its channels. The partition is a real one: packets are lost, nothing is refused.
(Which of the engine's two ways of learning it lost the run comes first, a renewal's answer or a refused write,
depends on TCP's retransmission timers; tests/runs/test_fencing.py refuses each late write on its own.)"""

import os
from pathlib import Path

import pytest

from bench.scale.partition import LEASE_SECONDS, partition
from bench.store.databases import fresh_postgres_database
from tests.support.netns import can_make_namespaces

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture(autouse=True)
def _namespaces_allowed() -> None:
    """Skipped where network namespaces cannot be made (not root, no iproute2), unless REQUIRE_NETNS=1 (the CI)."""
    if (reason := can_make_namespaces()) is not None:
        if os.environ.get("REQUIRE_NETNS") == "1":
            pytest.fail(f"REQUIRE_NETNS=1 but {reason}")
        pytest.skip(reason)


async def test_a_partitioned_engine_is_fenced_and_its_run_resumed_without_its_late_writes(
    tmp_path: Path, postgres_url: str
) -> None:
    async with fresh_postgres_database(postgres_url) as database_url:
        figures = await partition(tmp_path, database_url)
    assert not figures.problems
    assert figures.taken_after_seconds < LEASE_SECONDS + 3
    assert figures.late_steps_stored == 0
    assert figures.engine_let_go in ("no longer held", "nothing more recorded")
    assert figures.end_state == "RUN_STATE_COMPLETED, attempts 1, epoch 2"
    assert figures.recovered
