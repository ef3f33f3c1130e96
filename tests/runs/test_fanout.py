"""Two runs replicas on one PostgreSQL database (services/runs/fanout.py): what is written through one reaches the
watchers and engines connected to the other, live, in order, with no gap and no duplicate; and a replica cut off
from PostgreSQL reports NOT_SERVING, then catches up."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from bench.store.databases import fresh_postgres_database
from services.common.db.database import asyncpg_dsn
from services.common.db.notifications import APPLICATION_NAME
from services.common.step_delta import StepDelta, ToolCallDelta
from services.runs.app import RunsApp, start_runs
from services.runs.checks import StoreLimits
from services.runs.fanout import RunFanout
from services.runs.records import NewStep
from services.runs.settings import RunsSettings
from services.runs.signals import RunSignals
from tests.runs.helpers import EXECUTOR, connect, create_request, eventually, expire_lease, new_run, thought

pytestmark = pytest.mark.postgres

PROMPTLY = 2.0


@dataclass
class Replicas:
    a: RunsApp
    b: RunsApp
    url: str


@pytest_asyncio.fixture
async def replicas(postgres_url: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    """Runs replicas A and B on one fresh PostgreSQL database, watch heartbeats every 0.3 s, no reaper passes."""
    async with fresh_postgres_database(postgres_url) as url:
        apps = [
            await start_runs(
                RunsSettings(
                    _env_file=None,
                    RUNS_PORT=0,
                    DATABASE_URL=url,
                    RUNS_WATCH_HEARTBEAT_SECONDS=0.3,
                    RUNS_CANCEL_WAIT_SECONDS=0,
                    # The tests reap when they mean to: a background pass would take runs from under them.
                    RUNS_REAPER_INTERVAL_SECONDS=60,
                )
            )
            for _ in range(2)
        ]
        try:
            yield Replicas(apps[0], apps[1], url)
        finally:
            for app in apps:
                await app.stop()


def event_kind(event: runs_pb2.RunEvent) -> str:
    return event.WhichOneof("event")


async def collect(call: Any, into: list[tuple[float, runs_pb2.RunEvent]]) -> None:
    async for event in call:
        if event_kind(event) != "heartbeat":
            into.append((time.monotonic(), event))


async def test_a_watcher_on_one_replica_gets_every_step_and_delta_written_through_the_other(
    replicas: Replicas,
) -> None:
    async with connect(replicas.a) as a, connect(replicas.b) as b:
        run = await a.CreateRun(create_request("count to five"))
        events: list[tuple[float, runs_pb2.RunEvent]] = []
        watcher = asyncio.create_task(collect(b.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id)), events))
        await eventually(lambda: replicas.b.store.signals.watcher_count(run.id) == 1)
        written: dict[str, float] = {}
        for n in range(1, 6):
            # A forming step's deltas, then the step: what an engine connected to A does.
            for piece in ("thinking about ", f"number {n}"):
                replicas.a.store.signals.publish_delta(StepDelta(run.id, n, text=piece))
            written[f"step {n}"] = time.monotonic()
            await a.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought(f"number {n}")]))
        await a.FinishRun(execution_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED))
        await asyncio.wait_for(watcher, PROMPTLY)

    steps = [event.step for _, event in events if event_kind(event) == "step"]
    assert [step.sequence for step in steps] == [1, 2, 3, 4, 5]  # in order, no gap, no duplicate
    deltas = [event.delta for _, event in events if event_kind(event) == "delta"]
    assert deltas, "deltas written through A must reach B's watcher"
    for n in range(1, 6):
        text = "".join(d.text for d in deltas if d.sequence == n)
        # A delta of a step already stored is not sent; those that were sent add up to a prefix of the step.
        assert f"thinking about number {n}".startswith(text)
    assert events[-1][1].run.state == runs_pb2.RUN_STATE_COMPLETED
    delivered = {event.step.agent_thought.text: at for at, event in events if event_kind(event) == "step"}
    latencies = sorted(delivered[f"number {n}"] - written[f"step {n}"] for n in range(1, 6))
    assert latencies[-1] < 1.0, f"steps took {latencies} s to reach the other replica's watcher"


async def test_a_long_delta_crosses_whole_in_pieces(replicas: Replicas) -> None:
    """PostgreSQL takes payloads under 8,000 bytes: a long delta goes in pieces and arrives whole, text and
    tool-call arguments alike, whatever the characters."""
    async with connect(replicas.a) as a, connect(replicas.b) as b:
        run = await a.CreateRun(create_request("write a lot"))
        call = b.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
        assert event_kind(await asyncio.wait_for(anext(aiter(call)), PROMPTLY)) == "run"
        await eventually(lambda: replicas.b.store.signals.watcher_count(run.id) == 1)
        text = "ünïcødé \u0000 \"quoted\" 🙂 " * 900  # ~24,000 characters, up to 6 bytes each in JSON
        arguments = '{"path": "' + "x" * 9000 + '"}'
        replicas.a.store.signals.publish_delta(StepDelta(run.id, 1, text=text))
        replicas.a.store.signals.publish_delta(
            StepDelta(run.id, 2, tool_call=ToolCallDelta("call_1", "file_io", arguments))
        )
        # Late watchers on B get the same, coalesced.

        await eventually(lambda: [d.text or d.tool_call.arguments for d in replicas.b.store.signals.forming(run.id, 0)]
                         == [text, arguments])
        received: dict[int, str] = {1: "", 2: ""}
        async with asyncio.timeout(PROMPTLY):
            async for event in call:
                if event_kind(event) == "delta":
                    delta = event.delta
                    received[delta.sequence] += delta.text if delta.sequence == 1 else delta.tool_call.arguments
                    if received == {1: text, 2: arguments}:
                        break
        call.cancel()


async def test_a_cancel_through_one_replica_reaches_the_engine_connected_to_the_other(replicas: Replicas) -> None:
    async with connect(replicas.a) as a, connect(replicas.b) as b:
        run = await a.CreateRun(create_request("a long job"))
        link = a.ConnectExecutor()
        await link.write(execution_pb2.ConnectExecutorRequest(executor_id=EXECUTOR))
        await eventually(lambda: replicas.a.store.notices.is_connected(EXECUTOR))
        asked = time.monotonic()
        await b.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="enough"))
        notice = await asyncio.wait_for(link.read(), 1.0)
        assert notice.cancel == execution_pb2.CancelNotice(run_id=run.id, reason="by local: enough")
        assert time.monotonic() - asked < 1.0
        link.cancel()


async def test_an_approval_through_one_replica_is_offered_to_an_engine_connected_to_the_other(
    replicas: Replicas,
) -> None:
    store_a = replicas.a.store
    run = await store_a.create_run(new_run("write my notes", steps=(NewStep("user-request", {"text": "write"}),)))
    await store_a.append_steps(run.id, [NewStep("tool-call", {"tool_name": "file_io", "tool_call_id": "call_1"})])
    request = NewStep("approval-request", {"prompt": "May I?", "tool_call_id": "call_1", "tool_name": "file_io"})
    await store_a.await_approval(run.id, EXECUTOR, request, None)
    async with connect(replicas.a) as a, connect(replicas.b) as b:
        link = a.ConnectExecutor()
        await link.write(execution_pb2.ConnectExecutorRequest(executor_id="engine-on-a"))
        await eventually(lambda: replicas.a.store.notices.is_connected("engine-on-a"))
        assert not replicas.b.store.notices.any_connected
        await b.ApproveStep(runs_pb2.ApproveStepRequest(run_id=run.id, sequence=3))
        notice = await asyncio.wait_for(link.read(), 1.0)
        assert notice.resume == execution_pb2.ResumeNotice(run_id=run.id)
        resumed = await a.ResumeRun(
            execution_pb2.ResumeRunRequest(run_id=run.id, executor_id="engine-on-a", lease_duration={"seconds": 30})
        )
        assert resumed.state == runs_pb2.RUN_STATE_RUNNING
        link.cancel()


async def health_of(app: RunsApp) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        return answer.status


async def test_a_replica_cut_from_postgresql_is_not_serving_then_catches_up(replicas: Replicas) -> None:
    async with connect(replicas.a) as a, connect(replicas.b) as b:
        run = await a.CreateRun(create_request("keep going"))
        events: list[tuple[float, runs_pb2.RunEvent]] = []
        watcher = asyncio.create_task(collect(b.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id)), events))
        await eventually(lambda: replicas.b.store.signals.watcher_count(run.id) == 1)
        admin = await asyncpg.connect(asyncpg_dsn(replicas.url))
        try:
            # Cut B's notifications connection (and A's: both reconnect), then write while they are away.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                APPLICATION_NAME,
            )
        finally:
            await admin.close()
        await a.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought("while cut off")]))
        await eventually(lambda: replicas.b.notifications.connected)
        await eventually(
            lambda: any(event_kind(e) == "step" and e.step.agent_thought.text == "while cut off" for _, e in events)
        )
        await a.FinishRun(execution_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED))
        await asyncio.wait_for(watcher, PROMPTLY)
    assert [e.step.sequence for _, e in events if event_kind(e) == "step"] == [1]
    assert await health_of(replicas.b) == health_pb2.HealthCheckResponse.SERVING


async def test_a_change_whose_message_is_lost_is_seen_at_the_next_heartbeat(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that dies between its commit and its message announces nothing: the other replica's watchers
    look again at every heartbeat."""
    async with connect(replicas.a) as a, connect(replicas.b) as b:
        run = await a.CreateRun(create_request("quietly"))
        events: list[tuple[float, runs_pb2.RunEvent]] = []
        watcher = asyncio.create_task(collect(b.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id)), events))
        await eventually(lambda: replicas.b.store.signals.watcher_count(run.id) == 1)
        monkeypatch.setattr(RunFanout, "_publish", lambda self, event: None)  # A says nothing from now on
        await a.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[thought("unannounced")]))
        await a.FinishRun(execution_pb2.FinishRunRequest(run_id=run.id, state=runs_pb2.RUN_STATE_COMPLETED))
        await asyncio.wait_for(watcher, 0.3 * 2 + PROMPTLY)
    assert [e.step.agent_thought.text for _, e in events if event_kind(e) == "step"] == ["unannounced"]
    assert events[-1][1].run.state == runs_pb2.RUN_STATE_COMPLETED


async def test_unreadable_messages_make_watchers_look_again(replicas: Replicas) -> None:
    """A message this version cannot read (a newer replica's, or damaged) is logged and costs a query, never an
    exception in the listener."""
    signals = replicas.b.store.signals
    fanout = signals._relay
    assert isinstance(fanout, RunFanout)
    for payload in ("not json", '["?", "x"]', '["c", 5, "x"]', '["c", "run", -1]', "[]", '["d", "run", 1]'):
        with signals.subscribe("run") as subscription:
            fanout._receive(payload)
            committed, _, _ = subscription.take()
            assert committed is not None and committed.following(0) is None, payload  # look again


async def test_two_replicas_reaping_at_once_end_each_expired_run_once(replicas: Replicas) -> None:
    """Every replica runs the reaper; SKIP LOCKED makes each expired run orphaned (one attempt more, to be resumed)
    by exactly one of them, whichever gets there first; and, at RUNS_MAX_ATTEMPTS, ended with one `interrupted`
    step."""
    runs = [await replicas.a.store.create_run(new_run(f"run {n}")) for n in range(40)]
    for run in runs:
        await expire_lease(replicas.a.db, run.id)
    passes = [store.reap_expired() for _ in range(3) for store in (replicas.a.store, replicas.b.store)]
    reaped = [run_id for ended in await asyncio.gather(*passes) for run_id in ended]
    assert sorted(reaped) == sorted(run.id for run in runs)  # each once, by one replica or the other
    for run in runs:
        stored = await replicas.b.store.get_run(run.id)
        assert (stored.state, stored.executor_id, stored.attempts) == ("running", "", 1)
    for store in (replicas.a.store, replicas.b.store):
        store.limits = StoreLimits(max_attempts=1)
    for run in runs:
        await replicas.a.store.resume_run(run.id, "engine-b", 60.0)
        await expire_lease(replicas.a.db, run.id)
    passes = [store.reap_expired() for _ in range(3) for store in (replicas.a.store, replicas.b.store)]
    reaped = [run_id for ended in await asyncio.gather(*passes) for run_id in ended]
    assert sorted(reaped) == sorted(run.id for run in runs)
    for run in runs:
        stored = await replicas.b.store.get_run(run.id)
        assert stored.state == "failed" and [step.type for step in stored.steps].count("error") == 1


def test_a_gap_forgets_what_forms_of_runs_nobody_here_watches() -> None:
    """Forming steps relayed from another replica are released by its "stored" or "ended" message; after a gap
    that message may be lost, so a resync drops them (watched runs keep theirs and look again)."""
    signals = RunSignals()
    signals.publish_delta(StepDelta("unwatched", 1, text="half a"), relay=False)
    signals.publish_delta(StepDelta("watched", 1, text="half b"), relay=False)
    with signals.subscribe("watched") as subscription:
        signals.resync()
        assert signals.forming("unwatched", 0) == [] and signals.forming("watched", 0) != []
        committed, _, _ = subscription.take()
        assert committed is not None and committed.following(0) is None  # looks again
    assert signals.tracked_runs() == 1  # the watched run's forming step, until it is stored or ends
