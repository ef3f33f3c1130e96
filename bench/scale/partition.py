"""A network partition, for real: an engine and its model in a network namespace (tests/support/netns.py) lose their
link to the runs replicas and the tools service in the middle of a run, and get it back. Its own small cluster:
the partitioned processes reach the others at the machine's end of the link, so those listen there (with API keys,
since they are not on loopback). Needs root and iproute2; `make scale-demo partition` prints what it measured and
tests/scale/test_partition.py asserts on it.

The engine goes on while cut off (its model answers) and has its next step to write; its lease runs out and a runs
replica's reaper takes the run from it (orphaned: no executor, attempts 1, offered to engines). What is measured:
how long after the cut the run was taken, whether anything the cut engine wrote reached the store after that,
whether the engine let the run go once the link was back, whether the run was then resumed (by the healed engine,
the only one here, under the next lease epoch, after a resume marker) and completed, and whether the engine then
answered a new chat.
"""

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from bench.scale.cluster import ENGINE_SERVICE, RUNS_SERVICE, TOOLS_SERVICE
from bench.scale.scenarios import ANSWER, QUESTION
from tests.conftest import free_port
from tests.support.keys import ALICE, AUTH, TOOLS_SECRET_KEY, as_
from tests.support.netns import Namespace, network_namespace
from tests.support.processes import ServiceProcess, ServiceProcesses

LEASE_SECONDS = 4
#: Each model answer waits this long: the run is still going when the link is cut.
MODEL_LATENCY_SECONDS = 0.5


@dataclass
class PartitionFigures:
    lease_seconds: float = LEASE_SECONDS
    #: From the cut to the run being taken from the engine in the store (s).
    taken_after_seconds: float = 0.0
    #: The run in the end: state, attempts and lease epoch.
    end_state: str = ""
    #: Steps the store took from the cut engine after the run was taken (before the resume marker): must be 0.
    late_steps_stored: int = 0
    #: How the engine learnt it lost the run, from its log ("no longer held": a renewal said so; "nothing more
    #: recorded": a write was refused).
    engine_let_go: str = ""
    recovered: bool = False
    problems: list[str] = field(default_factory=list)


async def partition(workdir: Path, database_url: str, subnet: int = 61) -> PartitionFigures:
    figures = PartitionFigures()
    with network_namespace(subnet) as namespace, ServiceProcesses(workdir) as started:
        host = namespace.host_address
        model_port, tools_port, engine_port = free_port(), free_port(), free_port()
        runs_ports = [free_port(), free_port()]
        for name, port in zip("ab", runs_ports, strict=True):
            started.start(
                f"runs-{name}", "services.runs",
                {**AUTH, "RUNS_HOST": host, "RUNS_PORT": str(port), "DATABASE_URL": database_url,
                 "RUNS_REAPER_INTERVAL_SECONDS": "0.5"},
                port, RUNS_SERVICE, host=host,
            )
        started.start(
            "tools", "services.tools",
            {**AUTH, "TOOLS_HOST": host, "TOOLS_PORT": str(tools_port),
             "TOOLS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/tools.db",
             "TOOLS_WORKSPACE": str(workdir / "workspace"), "TOOLS_SECRET_KEYS": TOOLS_SECRET_KEY},
            tools_port, TOOLS_SERVICE, host=host,
        )
        inside = namespace.inside_address
        started.start(
            "model", "services.demo_model",
            {"DEMO_MODEL_HOST": inside, "DEMO_MODEL_PORT": str(model_port),
             "DEMO_MODEL_LATENCY_SECONDS": str(MODEL_LATENCY_SECONDS)},
            model_port, None, host=inside, prefix=namespace.exec_prefix,
        )
        engine = started.start(
            "engine", "services.engine",
            {**AUTH, "ENGINE_HOST": inside, "ENGINE_PORT": str(engine_port),
             "RUNS_ADDR": ",".join(f"{host}:{port}" for port in runs_ports), "TOOLS_ADDR": f"{host}:{tools_port}",
             "LLM_BASE_URL": f"http://{inside}:{model_port}/v1", "LLM_MODEL": "demo",
             "ENGINE_LEASE_SECONDS": str(LEASE_SECONDS), "ENGINE_USER_RUNS_PER_SECOND": "0"},
            engine_port, ENGINE_SERVICE, host=inside, prefix=namespace.exec_prefix,
        )
        async with (
            grpc.aio.insecure_channel(engine.address) as engine_channel,
            grpc.aio.insecure_channel(f"{host}:{runs_ports[1]}") as runs_channel,
        ):
            agent = engine_pb2_grpc.AgentServiceStub(engine_channel)
            runs = runs_pb2_grpc.RunServiceStub(runs_channel)
            await _cut_mid_run(namespace, agent, runs, engine, figures)
            if not figures.problems:
                # Healed, the engine serves again: a new chat through it is answered.
                answer = await agent.Chat(engine_pb2.ChatRequest(message=QUESTION), metadata=as_(ALICE), timeout=60)
                figures.recovered = ANSWER in answer.response
                if not figures.recovered:
                    figures.problems.append(f"after the partition the engine answered {answer.response!r}")
    return figures


async def _cut_mid_run(
    namespace: Namespace, agent: engine_pb2_grpc.AgentServiceStub, runs: runs_pb2_grpc.RunServiceStub,
    engine: ServiceProcess, figures: PartitionFigures,
) -> None:
    """Cut the link once the run's first step is stored, wait for the run to end in the store, heal, and see what
    the engine does."""
    chat = agent.StreamChat(
        engine_pb2.StreamChatRequest(message=QUESTION, on_disconnect=engine_pb2.DISCONNECT_POLICY_CONTINUE),
        metadata=as_(ALICE),
    )
    run_id = ""
    async for event in chat:
        if event.WhichOneof("event") == "run":
            run_id = event.run.id
        if event.WhichOneof("event") == "step":
            break  # the first step is stored; the model is thinking now
    namespace.cut()
    cut = time.monotonic()
    try:
        while True:
            run = await runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=as_(ALICE), timeout=5)
            if run.attempts:
                break
            if time.monotonic() - cut > LEASE_SECONDS + 10:
                figures.problems.append("the partitioned engine kept its run")
                return
            await asyncio.sleep(0.2)
        figures.taken_after_seconds = round(time.monotonic() - cut, 1)
        at_the_take = [step.SerializeToString(deterministic=True) for step in run.steps]
        if (run.state, run.executor_id) != (runs_pb2.RUN_STATE_RUNNING, ""):
            figures.problems.append(f"the run was {runs_pb2.RunState.Name(run.state)} under {run.executor_id!r} "
                                    "when taken; expected RUNNING under no engine")
    finally:
        namespace.heal()
    deadline = time.monotonic() + 30
    while not figures.engine_let_go:
        for line in engine.log().splitlines():
            if run_id in line and ("no longer held" in line or "nothing more recorded" in line):
                figures.engine_let_go = "no longer held" if "no longer held" in line else "nothing more recorded"
        if time.monotonic() > deadline:
            figures.problems.append("the engine never let the run go after the partition healed")
            return
        await asyncio.sleep(0.2)
    chat.cancel()
    # Offered the run again, the healed engine resumes it under the next lease epoch and completes it.
    deadline = time.monotonic() + 60
    while True:
        after = await runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=as_(ALICE), timeout=5)
        if after.state != runs_pb2.RUN_STATE_RUNNING:
            break
        if time.monotonic() > deadline:
            figures.problems.append("the run was not resumed after the partition healed")
            return
        await asyncio.sleep(0.2)
    figures.end_state = f"{runs_pb2.RunState.Name(after.state)}, attempts {after.attempts}, epoch {after.lease_epoch}"
    stored = [step.SerializeToString(deterministic=True) for step in after.steps]
    marker = next((index for index, step in enumerate(after.steps) if step.WhichOneof("content") == "resumed"), None)
    if marker is None:
        figures.problems.append("the resumed run has no resume marker")
        return
    figures.late_steps_stored = marker - len(at_the_take)
    if stored[: len(at_the_take)] != at_the_take or figures.late_steps_stored:
        figures.problems.append(f"the cut engine's writes reached the store after the run was taken: "
                                f"{len(at_the_take)} steps then, the marker at {marker + 1}")
    if [step.sequence for step in after.steps] != list(range(1, len(after.steps) + 1)):
        figures.problems.append(f"steps {[step.sequence for step in after.steps]}: a gap or a repeat")
    if (after.state, after.attempts, after.lease_epoch) != (runs_pb2.RUN_STATE_COMPLETED, 1, 2):
        figures.problems.append(f"the run ended {figures.end_state}; expected COMPLETED, attempts 1, epoch 2")
    if figures.taken_after_seconds >= LEASE_SECONDS + 3:
        figures.problems.append(
            f"the run was taken {figures.taken_after_seconds} s after the cut (lease {LEASE_SECONDS} s)"
        )
