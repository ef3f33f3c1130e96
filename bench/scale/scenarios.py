"""What the cluster (cluster.py) does under load and faults, as figures: each scenario returns a dataclass of what it
measured and a list of `problems` (a promise broken: a step lost, a run left RUNNING, an error a client should not
see). `make scale-demo` prints them; tests/scale/ asserts on them.

Chats go through Envoy, as clients' do; watchers, cancels and approvals go straight to a chosen runs replica, since
"through the other replica" is the point.
"""

import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from agentplatform.agents.v1 import agents_pb2, agents_pb2_grpc
from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from agentplatform.tools.v1 import tools_pb2, tools_pb2_grpc
from bench.scale.cluster import Cluster
from tests.support.processes import ServiceProcess

#: Three calculator calls (four model turns): the demo model answers 19.
QUESTION = "What is 2 plus 3, times 4, minus 1?"
ANSWER = "19"
#: What a client retries (the README's list): the call did not reach a server that could answer it.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE}
FINAL = {runs_pb2.RUN_STATE_COMPLETED, runs_pb2.RUN_STATE_FAILED, runs_pb2.RUN_STATE_CANCELLED}


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Stubs:
    """Stubs through Envoy (engine, tools) and to each runs replica directly."""

    engine: engine_pb2_grpc.AgentServiceStub
    tools: tools_pb2_grpc.ToolServiceStub
    agents: agents_pb2_grpc.AgentRegistryServiceStub
    runs: list[runs_pb2_grpc.RunServiceStub]
    #: Runs through Envoy, for reads that may go to any replica.
    any_runs: runs_pb2_grpc.RunServiceStub


@contextlib.asynccontextmanager
async def stubs(cluster: Cluster):  # type: ignore[no-untyped-def]
    async with contextlib.AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(grpc.aio.insecure_channel(cluster.gateway_address))
        runs = [
            runs_pb2_grpc.RunServiceStub(await stack.enter_async_context(grpc.aio.insecure_channel(r.address)))
            for r in cluster.runs
        ]
        yield Stubs(
            engine_pb2_grpc.AgentServiceStub(gateway), tools_pb2_grpc.ToolServiceStub(gateway),
            agents_pb2_grpc.AgentRegistryServiceStub(gateway), runs,
            runs_pb2_grpc.RunServiceStub(gateway),
        )


@dataclass
class StreamedChat:
    """One StreamChat as its client saw it: when each step and the end arrived."""

    run_id: str = ""
    executor_id: str = ""
    steps: dict[int, float] = field(default_factory=dict)
    final: runs_pb2.Run | None = None
    deltas: int = 0
    first_step: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    error: grpc.StatusCode | None = None


async def stream_chat(engine: engine_pb2_grpc.AgentServiceStub, chat: StreamedChat, **request: object) -> None:
    try:
        async for event in engine.StreamChat(engine_pb2.StreamChatRequest(message=QUESTION, **request), timeout=120):
            kind = event.WhichOneof("event")
            if kind == "run":
                if not chat.run_id:
                    chat.run_id, chat.executor_id = event.run.id, event.run.executor_id
                    chat.started.set()
                if event.run.state in FINAL:
                    chat.final = event.run
            elif kind == "step":
                chat.steps.setdefault(event.step.sequence, time.monotonic())
                chat.first_step.set()
            elif kind == "delta":
                chat.deltas += 1
    except grpc.aio.AioRpcError as exc:
        chat.error = exc.code()
    finally:
        chat.started.set()
        chat.first_step.set()


@dataclass
class Watched:
    attached: float = 0.0
    steps: dict[int, float] = field(default_factory=dict)
    sequences: list[int] = field(default_factory=list)
    final: runs_pb2.Run | None = None


async def watch(runs: runs_pb2_grpc.RunServiceStub, run_id: str, watched: Watched) -> None:
    async for event in runs.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id), timeout=120):
        kind = event.WhichOneof("event")
        if kind == "run" and not watched.attached:
            watched.attached = time.monotonic()
        elif kind == "step":
            watched.steps[event.step.sequence] = time.monotonic()
            watched.sequences.append(event.step.sequence)
        if kind == "run" and event.run.state in FINAL:
            watched.final = event.run
            return


# --- chats spread over the engines, watched live through every runs replica ----------------------------------


@dataclass
class SpreadFigures:
    chats: int
    chats_by_engine: list[int]
    #: What each run sends through the fan-out besides its ends: steps and deltas (StreamChat coalesces deltas that
    #: queue up, so these are at least as many as it shows).
    steps_per_run: float
    deltas_per_run: float
    #: Per runs replica: how long after the engine's own stream a watcher there got each live step (ms).
    delivery_p50_ms: list[float]
    delivery_p99_ms: list[float]
    problems: list[str]


async def spread_and_watch(cluster: Cluster, chats: int = 16) -> SpreadFigures:
    problems: list[str] = []
    async with stubs(cluster) as s:
        streamed = [StreamedChat() for _ in range(chats)]
        streams = [asyncio.create_task(stream_chat(s.engine, chat)) for chat in streamed]
        watchers: list[list[Watched]] = []
        watches = []
        for chat in streamed:
            await chat.started.wait()
            per_replica = [Watched() for _ in s.runs]
            watchers.append(per_replica)
            watches += [
                asyncio.create_task(watch(runs, chat.run_id, w)) for runs, w in zip(s.runs, per_replica, strict=True)
            ]
        await asyncio.gather(*streams)
        await asyncio.wait_for(asyncio.gather(*watches, return_exceptions=True), 30)
    delays: list[list[float]] = [[] for _ in cluster.runs]
    for chat, per_replica in zip(streamed, watchers, strict=True):
        if chat.error is not None or chat.final is None:
            problems.append(f"chat {chat.run_id or '?'} ended {chat.error or 'without its run'}")
            continue
        for replica, watched in enumerate(per_replica):
            if watched.final is None or watched.final.state != chat.final.state:
                problems.append(f"watcher on runs-{replica + 1} did not see run {chat.run_id} end")
            if watched.sequences != list(range(1, len(chat.steps) + 1)):
                problems.append(f"watcher on runs-{replica + 1} saw steps {watched.sequences} of run {chat.run_id}")
            for sequence, at in chat.steps.items():
                if at > watched.attached and sequence in watched.steps:
                    delays[replica].append(max(0.0, watched.steps[sequence] - at) * 1000)
    by_engine = Counter(chat.executor_id for chat in streamed)
    return SpreadFigures(
        chats, sorted(by_engine.values(), reverse=True),
        round(statistics.mean(len(chat.steps) for chat in streamed), 1),
        round(statistics.mean(chat.deltas for chat in streamed), 1),
        [round(percentile(d, 0.5), 1) for d in delays], [round(percentile(d, 0.99), 1) for d in delays], problems,
    )


# --- cancel and approval through the other replica ------------------------------------------------------------


@dataclass
class CancelFigures:
    #: From CancelRun sent through a runs replica to the chat's stream showing the run CANCELLED (ms).
    cancel_ms: list[float]
    problems: list[str]


async def cancel_through_each_replica(cluster: Cluster, cancels: int = 6) -> CancelFigures:
    problems: list[str] = []
    latencies: list[float] = []
    async with stubs(cluster) as s:
        for index in range(cancels):
            chat = StreamedChat()
            stream = asyncio.create_task(stream_chat(s.engine, chat))
            await chat.first_step.wait()
            asked = time.monotonic()
            await s.runs[index % len(s.runs)].CancelRun(runs_pb2.CancelRunRequest(run_id=chat.run_id, reason="demo"))
            await stream
            if chat.final is None or chat.final.state != runs_pb2.RUN_STATE_CANCELLED:
                problems.append(f"run {chat.run_id} ended {chat.final and chat.final.state} after its cancel")
                continue
            latencies.append(round((time.monotonic() - asked) * 1000, 1))
    if latencies and max(latencies) >= 1000:
        problems.append(f"a cancel took {max(latencies)} ms to stop its run (the promise: under 1 s)")
    return CancelFigures(latencies, problems)


@dataclass
class ApprovalFigures:
    approvals: int
    #: From ApproveStep through a runs replica to the run's next step (ms).
    resume_ms: list[float]
    problems: list[str]


async def set_requires_approval(cluster: Cluster, s: Stubs, tool_id: str, required: bool) -> None:
    tool = tools_pb2.Tool(id=tool_id, requires_approval=required)
    await s.tools.UpdateTool(tools_pb2.UpdateToolRequest(tool=tool, update_mask={"paths": ["requires_approval"]}))
    # Every tools replica must say so (settings reach them within a second), and every engine caches the tool list
    # for ENGINE_TOOLS_CACHE_SECONDS (2 s).
    deadline = time.monotonic() + 15
    for replica in cluster.tools:
        async with grpc.aio.insecure_channel(replica.address) as channel:
            stub = tools_pb2_grpc.ToolServiceStub(channel)
            while (await stub.GetTool(tools_pb2.GetToolRequest(tool_id=tool_id))).requires_approval != required:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{replica.name} did not see requires_approval={required} within 15 s")
                await asyncio.sleep(0.1)
    await asyncio.sleep(2.5)


async def approve_through_the_other_replica(cluster: Cluster) -> ApprovalFigures:
    problems: list[str] = []
    resumes: list[float] = []
    async with stubs(cluster) as s:
        await set_requires_approval(cluster, s, "calculator", True)
        try:
            chat = asyncio.ensure_future(s.engine.Chat(engine_pb2.ChatRequest(message=QUESTION), timeout=120))
            approved = 0
            while not chat.done():
                waiting = await s.runs[-1].ListRuns(runs_pb2.ListRunsRequest(state=runs_pb2.RUN_STATE_WAITING))
                if not waiting.runs:
                    await asyncio.sleep(0.05)
                    continue
                run = await s.runs[-1].GetRun(runs_pb2.GetRunRequest(run_id=waiting.runs[0].id))
                sequence = max(step.sequence for step in run.steps if step.HasField("approval_request"))
                asked = time.monotonic()
                await s.runs[approved % len(s.runs)].ApproveStep(
                    runs_pb2.ApproveStepRequest(run_id=run.id, sequence=sequence)
                )
                approved += 1
                while True:  # until the run takes its next step after the decision, on whichever engine
                    again = await s.runs[0].GetRun(runs_pb2.GetRunRequest(run_id=run.id))
                    if again.step_count > sequence + 1 or again.state in FINAL:
                        resumes.append(round((time.monotonic() - asked) * 1000, 1))
                        break
                    await asyncio.sleep(0.02)
            answer = await chat
            if ANSWER not in answer.response:
                problems.append(f"the approved chat answered {answer.response!r}")
        finally:
            await set_requires_approval(cluster, s, "calculator", False)
    if approved != 3:
        problems.append(f"{approved} approvals asked, 3 expected (one per calculator call)")
    if resumes and max(resumes) >= 1500:
        problems.append(f"a run took {max(resumes)} ms to resume after its approval")
    return ApprovalFigures(approved, resumes, problems)


# --- load, and faults under it -------------------------------------------------------------------------------


@dataclass
class LoadFigures:
    chats: int = 0
    answered: int = 0
    #: Client-visible errors after retrying what is retryable, by status code name.
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    run_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def steady_load(s: Stubs, figures: LoadFigures, stop: asyncio.Event, clients: int = 6) -> None:
    """`clients` chat loops through Envoy until `stop`, every other chat with a saved agent (which the engine reads
    from the agents service); a client retries a retryable error twice (with a request id, so a retry of a chat
    that did start is the same run)."""
    agent = await s.agents.CreateAgent(agents_pb2.CreateAgentRequest(
        agent=agents_pb2.Agent(display_name="Calculator", model="demo", tools=["calculator"])
    ))

    async def client(number: int) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            figures.chats += 1
            request = engine_pb2.ChatRequest(
                message=QUESTION, request_id=str(uuid.uuid4()), agent_id=agent.id if sent % 2 else ""
            )
            for attempt in range(3):
                try:
                    answer = await s.engine.Chat(request, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in RETRYABLE and attempt < 2:
                        figures.retries += 1
                        await asyncio.sleep(0.2)
                        continue
                    figures.errors[exc.code().name] = figures.errors.get(exc.code().name, 0) + 1
                    figures.problems.append(f"a chat failed {exc.code().name}: {exc.details()}")
                    break
                figures.answered += 1
                figures.run_ids.append(answer.run_id)
                if ANSWER not in answer.response:
                    figures.problems.append(f"run {answer.run_id} answered {answer.response!r}")
                break

    await asyncio.gather(*(client(number) for number in range(clients)))


async def check_runs(s: Stubs, figures: LoadFigures) -> None:
    """Every answered chat's run: COMPLETED, its steps 1..n once each, the three tool results the model asked for."""
    for run_id in figures.run_ids:
        run = await s.any_runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=10)
        sequences = [step.sequence for step in run.steps]
        if run.state != runs_pb2.RUN_STATE_COMPLETED:
            figures.problems.append(f"run {run_id} is {runs_pb2.RunState.Name(run.state)}")
        if sequences != list(range(1, len(sequences) + 1)):
            figures.problems.append(f"run {run_id} has steps {sequences}")
        if sum(step.HasField("tool_result") for step in run.steps) != 3:
            figures.problems.append(f"run {run_id} has {sum(s.HasField('tool_result') for s in run.steps)} results")


async def under_load(
    cluster: Cluster, fault: Callable[[], Awaitable[None]], settle: float = 2.0, clients: int = 6
) -> LoadFigures:
    """Steady load; after `settle` s, `fault()`; then `settle` s more; then every answered run is checked."""
    figures = LoadFigures()
    stop = asyncio.Event()
    async with stubs(cluster) as s:
        load = asyncio.create_task(steady_load(s, figures, stop, clients))
        await asyncio.sleep(settle)
        await fault()
        await asyncio.sleep(settle)
        stop.set()
        await load
        await check_runs(s, figures)
    return figures


async def restart_when_down(cluster: Cluster, process: ServiceProcess) -> ServiceProcess:
    return await asyncio.to_thread(cluster.restart, process)


async def kill_a_runs_replica(cluster: Cluster) -> LoadFigures:
    """SIGKILL runs-1 under load, start it again after a while: no step lost or repeated, no client error."""

    async def fault() -> None:
        victim = cluster.runs[0]
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(cluster.shape.lease_seconds + 1)  # longer than a lease: no reaper may fail a live run
        await restart_when_down(cluster, victim)

    figures = await under_load(cluster, fault)
    if figures.errors:
        figures.problems.append(f"clients saw {dict(figures.errors)}")
    return figures


@dataclass
class EngineKillFigures:
    runs_on_the_killed_engine: int
    #: From the SIGKILL to the last of its runs ending, resumed and completed by another engine (s).
    seconds_until_none_running: float
    end_states: dict[str, int]
    problems: list[str]


async def kill_an_engine(cluster: Cluster, chats: int = 8) -> EngineKillFigures:
    """SIGKILL one engine while its runs go: they do not stay RUNNING, but are resumed by the other engines once the
    lease runs out, and end COMPLETED there (issue 18)."""
    problems: list[str] = []
    async with stubs(cluster) as s:
        streamed = [StreamedChat() for _ in range(chats)]
        streams = [asyncio.create_task(stream_chat(s.engine, chat)) for chat in streamed]
        for chat in streamed:
            await chat.first_step.wait()
        executors = Counter(chat.executor_id for chat in streamed if chat.executor_id)
        victim_executor = executors.most_common(1)[0][0]
        victim_runs = [chat.run_id for chat in streamed if chat.executor_id == victim_executor]
        # Which engine process is it? Each names its executor id in its first log line.
        victim = next(engine for engine in cluster.engines if victim_executor in engine.log())
        killed = time.monotonic()
        await asyncio.to_thread(victim.kill)
        await asyncio.gather(*streams)
        states: Counter[str] = Counter()
        deadline = killed + cluster.shape.lease_seconds + 30
        while True:
            runs = [await s.any_runs.GetRun(runs_pb2.GetRunRequest(run_id=r)) for r in victim_runs]
            if all(run.state in FINAL for run in runs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        waited = round(time.monotonic() - killed, 1)
        for run in runs:
            states[runs_pb2.RunState.Name(run.state)] += 1
            if run.state not in FINAL:
                state = runs_pb2.RunState.Name(run.state)
                problems.append(f"run {run.id} still {state} {waited} s after its engine died")
            elif run.state != runs_pb2.RUN_STATE_COMPLETED or not run.attempts:
                problems.append(f"run {run.id} ended {runs_pb2.RunState.Name(run.state)} ({run.error_code}) after "
                                f"{run.attempts} resume(s); expected COMPLETED on another engine")
        await restart_when_down(cluster, victim)
    return EngineKillFigures(len(victim_runs), waited, dict(states), problems)


async def rolling_restart(cluster: Cluster) -> LoadFigures:
    """SIGTERM every replica of runs, tools, agents and the engine in turn, each started again and serving before
    the next, under steady load: no run lost, no client error beyond a retried UNAVAILABLE. (Envoy and the demo
    model are one process each here: restarting them is an outage, not a rolling restart.)"""

    async def fault() -> None:
        for group in (cluster.runs, cluster.tools, cluster.agents, cluster.engines):
            for index in range(len(group)):
                await asyncio.to_thread(group[index].stop)
                await restart_when_down(cluster, group[index])
                await asyncio.sleep(1.5)  # Envoy's health checks see it back (1 s interval)

    figures = await under_load(cluster, fault)
    if figures.errors:
        figures.problems.append(f"clients saw {dict(figures.errors)} after retrying")
    return figures


# --- one thread, two engines --------------------------------------------------------------------------------


@dataclass
class ThreadFigures:
    #: A second turn sent with REJECT through the other engine while the first runs.
    reject_code: str
    #: From the first turn's end to the ENQUEUEd turn's start, the turns on different engines (ms).
    enqueue_gap_ms: float
    #: From an INTERRUPT turn's creation on one engine to the end of the turn it interrupts on the other (ms).
    interrupt_stop_ms: float
    #: From the interrupted turn's end to the interrupting turn's start (ms).
    interrupt_gap_ms: float
    problems: list[str]


def _seconds(timestamp: object) -> float:
    return timestamp.ToNanoseconds() / 1e9  # type: ignore[attr-defined]


async def one_thread_two_engines(cluster: Cluster) -> ThreadFigures:
    """Turns of one thread sent to two engines at once obey its multitask strategy, whichever engine runs which."""
    problems: list[str] = []
    reject_code = "none"
    async with contextlib.AsyncExitStack() as stack:
        engines = [
            engine_pb2_grpc.AgentServiceStub(await stack.enter_async_context(grpc.aio.insecure_channel(e.address)))
            for e in cluster.engines[:2]
        ]
        runs = runs_pb2_grpc.RunServiceStub(
            await stack.enter_async_context(grpc.aio.insecure_channel(cluster.runs[0].address))
        )
        first = StreamedChat()
        first_stream = asyncio.create_task(stream_chat(engines[0], first))
        await first.first_step.wait()
        thread_id = (await runs.GetRun(runs_pb2.GetRunRequest(run_id=first.run_id))).thread_id
        try:
            await engines[1].Chat(engine_pb2.ChatRequest(
                message=QUESTION, thread_id=thread_id, multitask_strategy=runs_pb2.MULTITASK_STRATEGY_REJECT))
            problems.append("a REJECT turn was accepted while the thread had a run in progress")
        except grpc.aio.AioRpcError as exc:
            reject_code = exc.code().name
        second = StreamedChat()
        second_stream = asyncio.create_task(stream_chat(
            engines[1], second, thread_id=thread_id, multitask_strategy=runs_pb2.MULTITASK_STRATEGY_ENQUEUE))
        await asyncio.gather(first_stream)
        await second.first_step.wait()
        # The ENQUEUEd turn is running on the other engine: interrupt it from the first.
        third = StreamedChat()
        third_stream = asyncio.create_task(stream_chat(
            engines[0], third, thread_id=thread_id, multitask_strategy=runs_pb2.MULTITASK_STRATEGY_INTERRUPT))
        await asyncio.gather(second_stream, third_stream)
        turns = [await runs.GetRun(runs_pb2.GetRunRequest(run_id=chat.run_id)) for chat in (first, second, third)]
    states = [runs_pb2.RunState.Name(turn.state) for turn in turns]
    if states != ["RUN_STATE_COMPLETED", "RUN_STATE_CANCELLED", "RUN_STATE_COMPLETED"]:
        problems.append(f"the turns ended {states}; expected completed, cancelled (interrupted), completed")
    if len({first.executor_id, second.executor_id}) != 2:
        problems.append("the first two turns ran on one engine")
    enqueue_gap = (_seconds(turns[1].start_time) - _seconds(turns[0].complete_time)) * 1000
    interrupt_stop = (_seconds(turns[1].complete_time) - _seconds(turns[2].create_time)) * 1000
    interrupt_gap = (_seconds(turns[2].start_time) - _seconds(turns[1].complete_time)) * 1000
    if reject_code != "FAILED_PRECONDITION":
        problems.append(f"the REJECT turn got {reject_code}, expected FAILED_PRECONDITION")
    for what, milliseconds in (("enqueued turn began", enqueue_gap), ("interrupted turn stopped", interrupt_stop),
                               ("interrupting turn began", interrupt_gap)):
        if milliseconds >= 1000:
            problems.append(f"the {what} {milliseconds:.0f} ms late (the promise: within 1 s)")
    return ThreadFigures(reject_code, round(enqueue_gap, 1), round(interrupt_stop, 1), round(interrupt_gap, 1),
                         problems)
