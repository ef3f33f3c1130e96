"""A network partition (issue 17): an engine, with the model beside it, in a network namespace of the test's loses
its link to the runs replicas and the tools service in the middle of a run. Its lease runs out and a runs replica's
reaper takes the run from it (issue 18: orphaned, to be resumed by an engine, the run's attempts 1). The engine goes
on meanwhile (its model answers) and has the next step to write; when the link comes back, nothing of it is stored:
the engine lets the run go, then, offered it, resumes it under the next lease epoch from its steps and completes it,
and serves new chats again.

What would break it: a reaper that waited for the engine (the run held by it for ever), a store that took a late
append or finish of a run taken from its engine (a step before the resume marker that the cut engine wrote), an
engine that never recovered its channels.
Every process is real and the partition is a real one: packets are lost, nothing is refused. (Which of the
engine's two ways of learning it lost the run comes first, a renewal's answer or a write refused, depends on TCP's
retransmission timers; tests/runs/test_fencing.py refuses each late write on its own.)"""

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from bench.store.databases import fresh_postgres_database
from tests.conftest import free_port
from tests.support.keys import ALICE, AUTH, TOOLS_SECRET_KEY, as_
from tests.support.netns import can_make_namespaces, network_namespace
from tests.support.processes import ServiceProcesses

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture(autouse=True)
def _namespaces_allowed() -> None:
    """Skipped where network namespaces cannot be made (not root, no iproute2), unless REQUIRE_NETNS=1 (the CI)."""
    if (reason := can_make_namespaces()) is not None:
        if os.environ.get("REQUIRE_NETNS") == "1":
            pytest.fail(f"REQUIRE_NETNS=1 but {reason}")
        pytest.skip(reason)

QUESTION = "What is 2 plus 3, times 4, minus 1?"
LEASE_SECONDS = 4
#: Each model answer waits this long: the run is still going when the link is cut.
MODEL_LATENCY_SECONDS = 0.5


async def test_a_partitioned_engine_is_fenced_and_its_late_writes_are_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    async with fresh_postgres_database(postgres_url) as database_url:
        with network_namespace(subnet=61) as namespace, ServiceProcesses(tmp_path) as started:
            host = namespace.host_address  # the machine's end of the link: the services the engine needs
            model_port, tools_port, engine_port = free_port(), free_port(), free_port()
            runs_ports = [free_port(), free_port()]
            for name, port in zip("ab", runs_ports, strict=True):
                started.start(
                    f"runs-{name}", "services.runs",
                    {**AUTH, "RUNS_HOST": host, "RUNS_PORT": str(port), "DATABASE_URL": database_url,
                     "RUNS_REAPER_INTERVAL_SECONDS": "0.5"},
                    port, "agentplatform.runs.v1.RunService", host=host,
                )
            started.start(
                "tools", "services.tools",
                {**AUTH, "TOOLS_HOST": host, "TOOLS_PORT": str(tools_port),
                 "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/tools.db",
                 "TOOLS_WORKSPACE": str(tmp_path / "workspace"), "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY},
                tools_port, "agentplatform.tools.v1.ToolService", host=host,
            )
            # The model beside the engine, on its side of the link: the engine goes on with the run while cut off,
            # and has its next step to write when the link comes back.
            started.start(
                "model", "services.demo_model",
                {"DEMO_MODEL_HOST": namespace.inside_address, "DEMO_MODEL_PORT": str(model_port),
                 "DEMO_MODEL_LATENCY_SECONDS": str(MODEL_LATENCY_SECONDS)},
                model_port, None, host=namespace.inside_address, prefix=namespace.exec_prefix,
            )
            engine = started.start(
                "engine", "services.engine",
                {**AUTH, "ENGINE_HOST": namespace.inside_address, "ENGINE_PORT": str(engine_port),
                 "RUNS_ADDR": ",".join(f"{host}:{port}" for port in runs_ports), "TOOLS_ADDR": f"{host}:{tools_port}",
                 "LLM_BASE_URL": f"http://{namespace.inside_address}:{model_port}/v1", "LLM_MODEL": "demo",
                 "ENGINE_LEASE_SECONDS": str(LEASE_SECONDS), "ENGINE_USER_RUNS_PER_SECOND": "0"},
                engine_port, "agentplatform.engine.v1.AgentService", host=namespace.inside_address,
                prefix=namespace.exec_prefix,
            )
            async with (
                grpc.aio.insecure_channel(engine.address) as engine_channel,
                grpc.aio.insecure_channel(f"{host}:{runs_ports[1]}") as runs_channel,
            ):
                agent = engine_pb2_grpc.AgentServiceStub(engine_channel)
                runs = runs_pb2_grpc.RunServiceStub(runs_channel)
                chat = agent.StreamChat(
                    engine_pb2.StreamChatRequest(
                        message=QUESTION, on_disconnect=engine_pb2.DISCONNECT_POLICY_CONTINUE
                    ),
                    metadata=as_(ALICE),
                )
                run_id = ""
                async for event in chat:
                    if event.WhichOneof("event") == "run":
                        run_id = event.run.id
                    if event.WhichOneof("event") == "step":
                        break  # the first step is stored; the model is thinking now
                assert run_id

                namespace.cut()
                cut = time.monotonic()
                while True:
                    run = await runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=as_(ALICE), timeout=5)
                    if run.attempts:
                        break
                    assert time.monotonic() - cut < LEASE_SECONDS + 10, "the partitioned engine kept its run"
                    await asyncio.sleep(0.2)
                ended_after = time.monotonic() - cut
                assert (run.state, run.executor_id, run.attempts) == (runs_pb2.RUN_STATE_RUNNING, "", 1), run
                assert ended_after < LEASE_SECONDS + 3, ended_after
                at_the_end = [step.SerializeToString(deterministic=True) for step in run.steps]

                namespace.heal()
                # The engine learns it lost the run (its next renewal, or a write refused) and stops it; whatever it
                # wrote after the end was refused.
                deadline = time.monotonic() + 30
                while not any(
                    run_id in line and ("no longer held" in line or "nothing more recorded" in line)
                    for line in engine.log().splitlines()
                ):
                    assert time.monotonic() < deadline, f"the engine never let the run go:\n{engine.log()[-3000:]}"
                    await asyncio.sleep(0.2)
                chat.cancel()
                # Offered it again, the engine resumes it under the next epoch: its steps go on right after those
                # stored before the cut, from the resume marker; the late writes of the old lease were refused.
                deadline = time.monotonic() + 60
                while True:
                    after = await runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=as_(ALICE), timeout=5)
                    if after.state != runs_pb2.RUN_STATE_RUNNING:
                        break
                    assert time.monotonic() < deadline, f"the run was not resumed:\n{engine.log()[-3000:]}"
                    await asyncio.sleep(0.2)
                assert (after.state, after.attempts, after.lease_epoch) == (runs_pb2.RUN_STATE_COMPLETED, 1, 2), after
                stored = [step.SerializeToString(deterministic=True) for step in after.steps]
                assert stored[: len(at_the_end)] == at_the_end
                assert after.steps[len(at_the_end)].WhichOneof("content") == "resumed"
                assert [step.sequence for step in after.steps] == list(range(1, len(after.steps) + 1))

                # Healed, the engine serves again: a new chat through it is answered.
                answer = await agent.Chat(engine_pb2.ChatRequest(message=QUESTION), metadata=as_(ALICE), timeout=60)
                assert "19" in answer.response
