"""Failover (issue 17): an engine dialing two runs replicas on one PostgreSQL (RUNS_ADDR a comma list) carries on
through the other when one is SIGKILLed while its runs are going. Every process is real: PostgreSQL, two runs
replicas, tools, the demo model, the engine; the chats come over the engine's gRPC API.

What would break it: a channel to one address (the runs died with their replica), calls not retried on
UNAVAILABLE (the run failed), lease renewals that kept trying the dead replica (the other replica's reaper failed
the runs `interrupted` after ENGINE_LEASE_SECONDS), an append retried as a second step (a duplicate sequence)."""

import asyncio
from pathlib import Path

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from bench.store.databases import fresh_postgres_database
from services.common import errors
from services.common.identity import LOCAL_USER, Caller
from services.common.rpc.channels import dial
from services.engine.journal import AgentResponse, AgentThought, NewRun, Run, RunEvent, Step, UserRequest
from services.engine.upstream.runs_client import RunsClient
from tests.conftest import free_port
from tests.support.keys import TOOLS_SECRET_KEY
from tests.support.processes import ServiceProcess, ServiceProcesses

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

RUNS_SERVICE = "agentplatform.runs.v1.RunService"
#: Three calculator calls: four model turns, each held back by the demo model's latency, so a run lasts seconds.
QUESTION = "What is 2 plus 3, times 4, minus 1?"
ANSWER = "19"
CHATS_BEFORE_THE_KILL = 12
CHATS_AFTER_THE_KILL = 6
#: Short, so a run whose lease stopped being renewed would be reaped within the test.
LEASE_SECONDS = 6


async def test_runs_carry_on_through_the_other_runs_replica_when_one_is_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    async with fresh_postgres_database(postgres_url) as database_url:
        with ServiceProcesses(tmp_path) as started:
            runs_ports = [free_port(), free_port()]
            replicas = [
                started.start(
                    f"runs-{name}", "services.runs",
                    {"RUNS_PORT": str(port), "DATABASE_URL": database_url, "RUNS_REAPER_INTERVAL_SECONDS": "0.5"},
                    port, RUNS_SERVICE,
                )
                for name, port in zip("ab", runs_ports, strict=True)
            ]
            tools_port, model_port, engine_port = free_port(), free_port(), free_port()
            started.start(
                "tools", "services.tools",
                {
                    "TOOLS_PORT": str(tools_port),
                    "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/tools.db",
                    "TOOLS_WORKSPACE": str(tmp_path / "workspace"),
                    "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY,
                },
                tools_port, "agentplatform.tools.v1.ToolService",
            )
            started.start(
                "model", "services.demo_model",
                {"DEMO_MODEL_PORT": str(model_port), "DEMO_MODEL_LATENCY_SECONDS": "0.4"},
                model_port, None,
            )
            started.start(
                "engine", "services.engine",
                {
                    "ENGINE_PORT": str(engine_port),
                    "RUNS_ADDR": ",".join(f"127.0.0.1:{port}" for port in runs_ports),
                    "TOOLS_ADDR": f"127.0.0.1:{tools_port}",
                    "LLM_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
                    "LLM_MODEL": "demo",
                    "ENGINE_LEASE_SECONDS": str(LEASE_SECONDS),
                    "ENGINE_USER_RUNS_PER_SECOND": "0",
                },
                engine_port, "agentplatform.engine.v1.AgentService",
            )

            # The replica the engine's executor link (its one long-lived stream) went to is the one killed: the
            # link must come back through the other.
            for _ in range(100):
                linked = [replica for replica in replicas if "executor engine-" in replica.log()]
                if linked:
                    break
                await asyncio.sleep(0.1)
            assert len(linked) == 1, [replica.log()[-2000:] for replica in replicas]
            killed = linked[0]
            survivor_port = runs_ports[1 - replicas.index(killed)]
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{engine_port}") as engine_channel,
                grpc.aio.insecure_channel(f"127.0.0.1:{survivor_port}") as survivor_channel,
            ):
                engine = engine_pb2_grpc.AgentServiceStub(engine_channel)
                survivor = runs_pb2_grpc.RunServiceStub(survivor_channel)

                async def ask() -> engine_pb2.ChatResponse:
                    return await engine.Chat(engine_pb2.ChatRequest(message=QUESTION), timeout=120)

                def chat() -> "asyncio.Task[engine_pb2.ChatResponse]":
                    return asyncio.create_task(ask())

                chats = [chat() for _ in range(CHATS_BEFORE_THE_KILL)]
                # Kill runs A while the runs are between their first and last steps.
                running: list[runs_pb2.Run] = []
                for _ in range(100):
                    listed = await survivor.ListRuns(runs_pb2.ListRunsRequest(page_size=100))
                    running = [run for run in listed.runs if run.state == runs_pb2.RUN_STATE_RUNNING]
                    if len(running) == CHATS_BEFORE_THE_KILL:
                        break
                    await asyncio.sleep(0.1)
                assert len(running) == CHATS_BEFORE_THE_KILL, listed
                await asyncio.sleep(0.5)
                killed.kill()
                chats += [chat() for _ in range(CHATS_AFTER_THE_KILL)]
                # Longer than a lease: a run whose renewals had stopped would be reaped meanwhile.
                await asyncio.sleep(LEASE_SECONDS + 2)

                answers = await asyncio.gather(*chats, return_exceptions=True)
                failures = [answer for answer in answers if isinstance(answer, BaseException)]
                assert not failures, failures
                for answer in answers:
                    assert isinstance(answer, engine_pb2.ChatResponse) and ANSWER in answer.response, answer
                    run = await survivor.GetRun(runs_pb2.GetRunRequest(run_id=answer.run_id))
                    assert run.state == runs_pb2.RUN_STATE_COMPLETED, run
                    sequences = [step.sequence for step in run.steps]
                    # Every step once, in order, no gap: user request, 3 x (thought, call, result), answer ...
                    assert sequences == list(range(1, len(sequences) + 1)), sequences
                    assert sum(step.HasField("tool_result") for step in run.steps) == 3, run
                listed = await survivor.ListRuns(runs_pb2.ListRunsRequest(page_size=100))
                assert len(listed.runs) == CHATS_BEFORE_THE_KILL + CHATS_AFTER_THE_KILL
                assert {run.state for run in listed.runs} == {runs_pb2.RUN_STATE_COMPLETED}
                survivor_log = next(replica for replica in replicas if replica is not killed).log()
                assert "executor engine-" in survivor_log and " connected" in survivor_log, survivor_log[-2000:]


async def test_a_watch_through_a_killed_runs_replica_attaches_again_through_the_other(
    tmp_path: Path, postgres_url: str
) -> None:
    """The engine's watch of a run (what Chat and StreamChat follow for a run another engine executes) breaks
    when its runs replica dies, and attaches again through the other after the last step it received: every
    step once, then the final run."""
    async with fresh_postgres_database(postgres_url) as database_url:
        with ServiceProcesses(tmp_path) as started:
            ports = [free_port(), free_port()]

            def start_replica(name: str, port: int) -> ServiceProcess:
                env = {"RUNS_PORT": str(port), "DATABASE_URL": database_url}
                return started.start(f"runs-{name}", "services.runs", env, port, RUNS_SERVICE)

            first = start_replica("a", ports[0])
            # The second replica is not up yet: the watch can only go to the first.
            async with dial(",".join(f"127.0.0.1:{port}" for port in ports)) as channel:
                client = RunsClient(channel, timeout=10, outage_seconds=60, service_token="")
                run = await client.create_run(
                    NewRun("watched", LOCAL_USER, "engine-test", LEASE_SECONDS * 10, queued=False, model="demo")
                )
                await client.append_steps(run.id, [Step(UserRequest("watched"), sequence=1)], epoch=run.lease_epoch)
                received: list[RunEvent] = []
                one_step = asyncio.Event()

                async def follow() -> None:
                    async for event in client.watch(run.id, Caller(LOCAL_USER)):
                        received.append(event)
                        if isinstance(event, Step):
                            one_step.set()

                watching = asyncio.create_task(follow())
                await asyncio.wait_for(one_step.wait(), 30)
                start_replica("b", ports[1])
                first.kill()
                # Through the second replica (the channel skips the first, which is gone).
                thoughts = [Step(AgentThought(f"thought {n}"), sequence=n) for n in (2, 3)]
                await client.append_steps(run.id, thoughts, epoch=run.lease_epoch)
                await client.append_steps(run.id, [Step(AgentResponse("done"), sequence=4)], epoch=run.lease_epoch)
                await client.finish_run(run.id, "completed", epoch=run.lease_epoch)
                await asyncio.wait_for(watching, 60)

    steps = [event.sequence for event in received if isinstance(event, Step)]
    assert steps == [1, 2, 3, 4], steps
    final = received[-1]
    assert isinstance(final, Run) and final.state == "completed", received[-3:]


async def test_a_runs_service_that_never_answers_is_unavailable_to_the_engine_not_a_deadline() -> None:
    """A store that accepts calls but answers none (overloaded, or stuck) is retried for the outage window, then
    reported as the runs service being unavailable: the engine's caller set no deadline, so DEADLINE_EXCEEDED
    would blame it (it was once what a chat got under load with the runs service down)."""

    async def never(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(3600)
        return b""

    class Silent(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(never)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Silent(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with dial(f"127.0.0.1:{port}") as channel:
            client = RunsClient(channel, timeout=0.2, outage_seconds=0.8, service_token="")
            started = asyncio.get_running_loop().time()
            with pytest.raises(errors.Unavailable, match="runs service"):
                await client.create_run(NewRun(user_query="hi", owner=LOCAL_USER, executor_id="e",
                                               lease_seconds=5, queued=False))
            assert asyncio.get_running_loop().time() - started < 5
    finally:
        await server.stop(None)
