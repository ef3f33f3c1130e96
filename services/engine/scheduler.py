"""The engine's runs in the background: start, queue, execute, lease, cancel, shut down (no gRPC here).

- `start` creates the run in the store under this process's lease and returns it at once. At most
  ENGINE_MAX_CONCURRENT_RUNS execute at a time; more wait QUEUED, first come first served, up to
  ENGINE_MAX_QUEUED_RUNS; beyond that ResourceExhausted with a retry hint.
- A request id makes a start idempotent: the store returns the first attempt's run, and this process executes
  a run only if it holds the run's lease and is not executing it already.
- Every run held here (queued or running) has its lease renewed every third of ENGINE_LEASE_SECONDS in one
  RenewLeases call. The answer names runs lost (ended or deleted elsewhere: stopped here without recording)
  and runs to cancel.
- `cancel` stops a run wherever it is (waiting for a slot, on the model, in a tool call) and records it
  CANCELLED with the reason. Cancels arrive through the run store (ExecutorLink, lease renewals), whichever
  engine took the CancelRun, and locally when the client that started the run goes away.
- `shutdown` takes no new runs, ends queued runs FAILED "interrupted", gives running ones the grace period to
  finish, then interrupts the rest and records them FAILED "interrupted".
"""

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentplatform.agents.v1 import workflows_pb2
from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common import errors
from services.common.identity import Caller
from services.common.limits import RunLimits
from services.common.rpc.protoconv import (
    duration_from_seconds,
    limits_from_proto,
    limits_to_proto,
    multitask_to_proto,
    run_state_of,
)
from services.common.run_vocabulary import FINAL_STATES, LIVE_STATES
from services.engine.agent_loop import AgentLoop, RunOutcome, StepRecorder
from services.engine.agent_profile import DEFAULT_AGENT, AgentProfile, within_agent
from services.engine.clients import AgentsClient, RunsClient
from services.engine.failures import RunFailure
from services.engine.rate_limit import RunRateLimiter
from services.engine.run_feed import FeedFollower, RunFeed
from services.engine.run_progress import RunProgress, progress_from_steps
from services.engine.run_request import (
    ChatInput,
    WorkflowStart,
    resolve_limits,
    validate_chat,
    validate_workflow_start,
)
from services.engine.settings import EngineSettings
from services.engine.workflow_runner import WorkflowRunner, check_inputs, start_node_id, start_step

log = logging.getLogger(__name__)

#: How long an interrupted run may take to record its end at shutdown.
RECORD_END_SECONDS = 5.0
#: How much of a workflow's name and inputs a workflow run shows as its user query.
WORKFLOW_QUERY_CHARS = 1000



@dataclass
class _ActiveRun:
    """A run held by this process."""

    run: runs_pb2.Run
    chat: ChatInput
    limits: RunLimits
    #: The agent it executes as.
    agent: AgentProfile
    #: Its events as they happen here, for the StreamChat that started it.
    feed: RunFeed
    #: How many of its steps the store has already (those created with it).
    recorded: int = 0
    task: "asyncio.Task[RunOutcome | None] | None" = None
    #: Resolved when a slot is free for a queued run.
    slot: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: Why the run is being stopped: (state, code, message); None while it goes on.
    stop: tuple["runs_pb2.RunState", str, str] | None = None
    #: The store no longer holds the run for us (it ended or was deleted there): stop without recording.
    lost: bool = False
    #: The BeginRun call of a run created QUEUED, once its slot is free.
    begin: "asyncio.Future[runs_pb2.Run] | None" = None
    #: What the run did before it paused for approval, for a run resumed here; None for a run that starts now.
    progress: RunProgress | None = None
    #: For a workflow run: the workflow revision it executes, the inputs it was started with, and the steps it
    #: had when resumed here.
    workflow: workflows_pb2.Workflow | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    steps: list[runs_pb2.Step] = field(default_factory=list)


class RunScheduler:
    """The runs this engine process holds, and the slots they execute in."""

    def __init__(
        self,
        runs: RunsClient,
        agents: AgentsClient,
        loop: AgentLoop,
        workflows: WorkflowRunner,
        settings: EngineSettings,
        executor_id: str,
    ) -> None:
        self.executor_id = executor_id
        self._runs = runs
        self._agents = agents
        self._loop = loop
        self._workflows = workflows
        self._settings = settings
        self._active: dict[str, _ActiveRun] = {}
        self._waiting: deque[_ActiveRun] = deque()
        self._executing = 0
        #: Starts in flight that have reserved a slot or a queue place but whose run is not created yet.
        self._reserved_slots = 0
        self._reserved_queue = 0
        self._closing = False
        self._renewer: asyncio.Task[None] | None = None
        self._rate_limiter = RunRateLimiter(settings.user_runs_per_second, settings.user_run_burst)
        #: Runs offered to resume that this process is taking (ResumeRun in flight).
        self._resuming: set[str] = set()

    # --- starting ----------------------------------------------------------------------------------------

    async def start(self, chat: ChatInput, *, cancel_if_abandoned: bool = False) -> runs_pb2.Run:
        """Create a run and have it executed in the background; returns it QUEUED or RUNNING (or, for a retried
        request id, as the first attempt left it).

        Creating runs to completion even when the caller goes away mid-way, so a run is never created without
        this process knowing it; with `cancel_if_abandoned` such a run is then cancelled.
        """
        run, _ = await self._start_shielded(chat, cancel_if_abandoned, follow=False)
        return run

    async def start_followed(
        self, chat: ChatInput, *, cancel_if_abandoned: bool = False
    ) -> tuple[runs_pb2.Run, FeedFollower | None]:
        """As `start`, with a follower of the run's events from its creation on; None when the run is not
        executed by this call (a retried request id), whose events are then the store's to give."""
        return await self._start_shielded(chat, cancel_if_abandoned, follow=True)

    async def start_workflow(self, start: WorkflowStart) -> runs_pb2.Run:
        """Create a run of a saved workflow and have it executed in the background, as `start` does for an agent;
        returns it QUEUED or RUNNING. The workflow's own limits are the run's."""
        validate_workflow_start(start)
        workflow = await self._agents.workflow(start.workflow_id, start.workflow_revision, start.owner)
        check_inputs(workflow, start.inputs)
        limits = resolve_limits(limits_from_proto(workflow.limits), self._settings)
        query = f"{workflow.display_name}: {json.dumps(start.inputs, ensure_ascii=False)}"
        chat = ChatInput(
            message=query[:WORKFLOW_QUERY_CHARS],
            owner=start.owner,
            metadata=start.metadata,
            request_id=start.request_id,
            limits=limits,
        )
        self._rate_limiter.take(start.owner.user)
        starting = asyncio.ensure_future(self._start(chat, DEFAULT_AGENT, limits, False, workflow, start.inputs))
        run, _ = await asyncio.shield(starting)
        return run

    async def _start_shielded(
        self, chat: ChatInput, cancel_if_abandoned: bool, follow: bool
    ) -> tuple[runs_pb2.Run, FeedFollower | None]:
        validate_chat(chat, self._settings)
        agent = DEFAULT_AGENT
        if chat.agent_id:
            agent = await self._agents.profile(chat.agent_id, chat.agent_revision, chat.owner)
        limits = resolve_limits(within_agent(chat.limits, agent), self._settings)
        # Last, so a request refused for what it asks (bad limits, someone else's agent) costs the user nothing.
        self._rate_limiter.take(chat.owner.user)
        starting = asyncio.ensure_future(self._start(chat, agent, limits, follow))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            if cancel_if_abandoned:
                starting.add_done_callback(self._cancel_abandoned)
            raise

    def _cancel_abandoned(self, starting: "asyncio.Future[tuple[runs_pb2.Run, FeedFollower | None]]") -> None:
        if not starting.cancelled() and starting.exception() is None:
            run, _ = starting.result()
            self.cancel(run.id, "the client that started the run went away before it got the run")

    async def _start(
        self,
        chat: ChatInput,
        agent: AgentProfile,
        limits: RunLimits,
        follow: bool,
        workflow: workflows_pb2.Workflow | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> tuple[runs_pb2.Run, FeedFollower | None]:
        if self._closing:
            raise errors.Unavailable("this engine is shutting down and takes no new runs; retry")
        queued = self._executing + self._reserved_slots >= self._settings.max_concurrent_runs
        if queued and len(self._waiting) + self._reserved_queue >= self._settings.max_queued_runs:
            raise errors.ResourceExhausted(
                f"the engine is busy: {self._settings.max_concurrent_runs} runs executing and "
                f"{self._settings.max_queued_runs} queued (ENGINE_MAX_QUEUED_RUNS); retry in a few seconds",
                retry_after=2.0,
            )
        if queued:
            self._reserved_queue += 1
        else:
            self._reserved_slots += 1
        try:
            request = self._create_request(chat, agent, limits, queued)
            if workflow is not None:
                request.workflow_id, request.workflow_revision = workflow.id, workflow.revision
                request.ClearField("steps")
                if not queued:  # the inputs are stored with the run, in the start node's step
                    request.steps.append(start_step(inputs or {}, start_node_id(workflow)))
            run = await self._runs.create_run(request)
        finally:
            if queued:
                self._reserved_queue -= 1
            else:
                self._reserved_slots -= 1
        created_steps = list(run.steps)
        run.ClearField("steps")  # a run is handed out without steps, as WatchRun and GetRun's peers do
        if run_state_of(run.state) not in LIVE_STATES or run.executor_id != self.executor_id or run.id in self._active:
            return run, None  # a retried request id: the run is the first attempt's, executed there or ended
        active = _ActiveRun(
            run, chat, limits, agent, RunFeed(run), recorded=len(created_steps), workflow=workflow,
            inputs=inputs or {}, steps=created_steps,
        )
        # Before the run's task exists, so the follower misses nothing of it.
        follower = active.feed.follow() if follow else None
        active.feed.steps_stored(created_steps)
        self._active[run.id] = active
        if queued:
            self._waiting.append(active)
        else:
            self._executing += 1
            active.slot.set_result(None)
        active.task = asyncio.create_task(self._execute(active), name=f"run-{run.id}")
        log.info("run %s %s (model %s)", run.id, "queued" if queued else "started", run.model)
        return run, follower

    def _create_request(
        self, chat: ChatInput, agent: AgentProfile, limits: RunLimits, queued: bool
    ) -> execution_pb2.CreateRunRequest:
        return execution_pb2.CreateRunRequest(
            user_query=chat.message,
            owner=chat.owner.user,
            agent_id=agent.agent_id,
            agent_revision=agent.revision,
            # The request's model, else the agent's, else the engine's.
            model=chat.model or agent.model or self._settings.llm_model,
            metadata=chat.metadata,
            # Always an idempotency key: the create is retried when the store is slow or restarting, and without
            # one a retry after a lost answer would create a second run (left to the reaper).
            request_id=chat.request_id or str(uuid.uuid4()),
            state=runs_pb2.RUN_STATE_QUEUED if queued else runs_pb2.RUN_STATE_RUNNING,
            executor_id=self.executor_id,
            lease_duration=duration_from_seconds(self._settings.lease_seconds),
            limits=limits_to_proto(limits),
            thread_id=chat.thread_id,
            multitask_strategy=multitask_to_proto(chat.multitask),
            # A run that executes at once on a new thread has its first step, the user's request, stored with
            # it: one write fewer, and the step is there the moment the run is. A queued run records it when it
            # begins, and a run continuing a thread once it knows how much of the thread the model will see.
            steps=(
                []
                if queued or chat.thread_id
                else [runs_pb2.Step(sequence=1, user_request=runs_pb2.UserRequest(text=chat.message))]
            ),
        )

    # --- executing ---------------------------------------------------------------------------------------

    async def _execute(self, active: _ActiveRun) -> RunOutcome | None:
        outcome = None
        try:
            outcome = await self._execute_to_end(active)
            return outcome
        finally:
            if outcome is not None:
                active.feed.run_changed(outcome.run)
            active.feed.end()

    async def _execute_to_end(self, active: _ActiveRun) -> RunOutcome | None:
        recorder = StepRecorder(
            self._runs,
            active.run.id,
            on_stored=active.feed.steps_stored,
            recorded=active.recorded,
            executor_id=self.executor_id,
            max_step_bytes=self._settings.max_step_bytes,
        )
        try:
            if active.progress is not None and active.run.workflow_id:
                # A resumed workflow run executes the workflow revision it began with.
                try:
                    active.workflow = await self._agents.workflow(
                        active.run.workflow_id, active.run.workflow_revision, active.chat.owner
                    )
                except errors.DomainError as exc:
                    raise RunFailure("workflow_unavailable", exc) from exc
            elif active.progress is not None and active.chat.agent_id:
                # A resumed run executes as the agent revision it began with.
                chat = active.chat
                try:
                    active.agent = await self._agents.profile(chat.agent_id, chat.agent_revision, chat.owner)
                except errors.DomainError as exc:
                    raise RunFailure("agent_unavailable", exc) from exc
            # Before the slot: a run waiting for the earlier turns of its thread need not hold one meanwhile.
            history = await self._earlier_turns(active) if active.run.thread_turn > 1 else None
            await active.slot
            run = active.run
            if run.state == runs_pb2.RUN_STATE_QUEUED:
                # Shielded like appends: a stop that lands meanwhile learns from its outcome whether the run began.
                active.begin = asyncio.ensure_future(self._runs.begin_run(run.id, self.executor_id))
                run = await asyncio.shield(active.begin)
                active.feed.run_changed(run)
            if active.workflow is not None:
                if not active.steps:  # created QUEUED: its inputs are recorded now it begins
                    start = start_step(active.inputs, start_node_id(active.workflow))
                    recorder.node_id = start.node_id
                    active.steps = [await recorder.record(node_outcome=start.node_outcome)]
                return await self._workflows.execute(
                    run, active.workflow, active.chat.owner, active.limits, recorder, active.steps
                )
            return await self._loop.execute(
                run, active.chat, active.agent, active.limits, recorder, history, active.progress
            )
        except asyncio.CancelledError:
            if active.lost:
                return None  # the store ended or deleted the run; there is nothing to record
            if active.stop is None:
                raise  # not ours: the event loop is going away
            return await self._record_stop(active, recorder)
        except RunFailure as failure:
            # A resumed run that cannot go on as it began (its agent deleted meanwhile): it ends FAILED.
            log.warning("run %s failed (%s): %s", active.run.id, failure.code, failure)
            active.stop = (runs_pb2.RUN_STATE_FAILED, failure.code, str(failure))
            return await self._record_stop(active, recorder)
        except errors.DomainError as exc:
            # The store refused or stayed away past ENGINE_STORE_OUTAGE_SECONDS: the run cannot be recorded
            # from here. Dropping it stops its lease renewals, and the store's reaper ends it.
            log.error("run %s given up: %s", active.run.id, exc)
            return None
        except Exception as exc:
            log.exception("run %s hit an unexpected error", active.run.id)
            active.stop = (runs_pb2.RUN_STATE_FAILED, "internal", f"the engine failed: {type(exc).__name__}: {exc}")
            return await self._record_stop(active, recorder)
        finally:
            self._release(active)

    async def _earlier_turns(self, active: _ActiveRun) -> execution_pb2.ThreadHistory:
        """The earlier turns of the run's thread, once none of them is in progress (a run enqueued behind them,
        or interrupting them, waits here for their ends, followed in the store on behalf of the run's owner)."""
        while True:
            history = await self._runs.thread_history(active.run.id, self._settings.context_max_turns)
            live = [turn for turn in history.turns if run_state_of(turn.state) not in FINAL_STATES]
            if not live:
                return history
            for turn in live:
                log.info("run %s waits for run %s, an earlier turn of its thread", active.run.id, turn.id)
                try:
                    async with contextlib.aclosing(
                        self._runs.watch(turn.id, active.chat.owner, turn.step_count)
                    ) as events:
                        async for _ in events:
                            pass
                except errors.NotFound:
                    pass  # deleted meanwhile: nothing to wait for
                except errors.Unavailable:
                    await asyncio.sleep(1.0)  # the store restarting: look again

    async def _record_stop(self, active: _ActiveRun, recorder: StepRecorder) -> RunOutcome | None:
        assert active.stop is not None
        state, code, message = active.stop
        log.info("run %s stopped (%s): %s", active.run.id, code, message)
        began = await self._began(active)
        try:
            if began:
                final = await self._loop.end_run(recorder, state, code, message)
            else:
                # Still QUEUED: the store records the end step itself (for a cancel made through the store it
                # already has, and this is the idempotent repeat).
                final = await self._runs.finish_run(active.run.id, state, code, message)
        except errors.DomainError as exc:
            log.warning("could not record the end of run %s: %s", active.run.id, exc)
            return None
        return RunOutcome(final, failure=RunFailure(code, errors.FailedPrecondition(message)))

    async def _began(self, active: _ActiveRun) -> bool:
        """Whether the store has the run RUNNING, so its end is an `error` step appended here. A queued run
        stopped before BeginRun took effect (even one just given a slot) is still QUEUED there."""
        if active.run.state == runs_pb2.RUN_STATE_RUNNING:
            return True
        if active.begin is None:
            return False
        await asyncio.wait({active.begin})
        return not active.begin.cancelled() and active.begin.exception() is None

    def _release(self, active: _ActiveRun) -> None:
        self._active.pop(active.run.id, None)
        # Stopping a queued run cancels its task, and with it the slot the task awaits: done, but never held.
        if active.slot.done() and not active.slot.cancelled():
            self._executing -= 1
            self._admit_next()
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(active)
            active.slot.cancel()

    def _admit_next(self) -> None:
        while self._waiting and self._executing < self._settings.max_concurrent_runs:
            active = self._waiting.popleft()
            if active.slot.cancelled():
                continue  # stopped while it waited; its task records the end
            self._executing += 1
            active.slot.set_result(None)

    # --- resuming runs after an approval ------------------------------------------------------------------

    def resume(self, run_id: str) -> None:
        """The store offers a run whose approval was decided: take it and execute it from where it paused. Another
        engine may take it first; then this one does nothing."""
        if self._closing or run_id in self._active or run_id in self._resuming:
            return
        self._resuming.add(run_id)
        task = asyncio.create_task(self._resume(run_id), name=f"resume-{run_id}")
        task.add_done_callback(lambda _: self._resuming.discard(run_id))

    async def _resume(self, run_id: str) -> None:
        try:
            run = await self._runs.resume_run(run_id, self.executor_id, self._settings.lease_seconds)
        except (errors.FailedPrecondition, errors.NotFound) as exc:
            log.info("run %s not resumed here: %s", run_id, exc)
            return
        except errors.DomainError as exc:
            log.warning("could not resume run %s (it will be offered again): %s", run_id, exc)
            return
        steps = list(run.steps)
        run.ClearField("steps")
        owner = Caller(run.owner)
        chat = ChatInput(
            message=run.user_query,
            owner=owner,
            agent_id=run.agent_id,
            agent_revision=run.agent_revision,
            model=run.model,
            metadata=dict(run.metadata),
            limits=limits_from_proto(run.limits),
            thread_id=run.thread_id,
        )
        progress = progress_from_steps(steps)
        active = _ActiveRun(
            run, chat, chat.limits, DEFAULT_AGENT, RunFeed(run), recorded=len(steps), progress=progress, steps=steps
        )
        active.feed.steps_stored(steps)
        self._active[run.id] = active
        if self._executing < self._settings.max_concurrent_runs:
            self._executing += 1
            active.slot.set_result(None)
        else:
            self._waiting.append(active)
        active.task = asyncio.create_task(self._execute(active), name=f"run-{run.id}")
        log.info("run %s resumed after its approval", run.id)

    # --- stopping runs -----------------------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str) -> bool:
        """Stop a run held here and record it CANCELLED; False when this process does not hold it."""
        message = f"cancelled: {reason}" if reason else "cancelled on request"
        active = self._active.get(run_id)
        if active is not None:
            active.feed.cancel_requested()
        return self._stop(run_id, (runs_pb2.RUN_STATE_CANCELLED, "cancelled", message))

    def publish_delta(self, delta: runs_pb2.StepDelta) -> None:
        """Hand a delta of a run held here to the run's followers."""
        active = self._active.get(delta.run_id)
        if active is not None:
            active.feed.delta(delta)

    def _stop(self, run_id: str, stop: tuple["runs_pb2.RunState", str, str]) -> bool:
        active = self._active.get(run_id)
        if active is None or active.task is None:
            return False
        if active.stop is None:
            active.stop = stop
            active.task.cancel()
        return True

    async def outcome(self, run_id: str) -> RunOutcome | None:
        """Wait for a run held here to end; None when it is not held here or its end could not be recorded
        here. Cancelling the caller does not cancel the run."""
        active = self._active.get(run_id)
        if active is None or active.task is None:
            return None
        return await asyncio.shield(active.task)

    # --- leases ------------------------------------------------------------------------------------------

    def start_lease_renewals(self) -> None:
        self._renewer = asyncio.create_task(self._renew_leases(), name="lease-renewals")

    async def _renew_leases(self) -> None:
        interval = self._settings.lease_seconds / 3
        # Runs the store reported lost once. One is stopped when the next renewal reports it lost again: a run
        # that finished while the renewal was in flight is reported lost too, and is gone from here by then.
        suspects: set[str] = set()
        while True:
            await asyncio.sleep(interval)
            if not self._active:
                continue
            try:
                renewal = await self._runs.renew_leases(self.executor_id, list(self._active))
            except errors.DomainError as exc:
                log.warning("could not renew the leases of %d run(s): %s", len(self._active), exc)
                continue
            lost = {run_id for run_id in renewal.lost_run_ids if run_id in self._active}
            for run_id in lost & suspects:
                active = self._active[run_id]
                if active.task is not None:
                    log.warning("run %s is no longer held by this engine (ended or deleted in the store)", run_id)
                    active.lost = True
                    active.task.cancel()
            suspects = lost - suspects
            for notice in renewal.cancel:
                self.cancel(notice.run_id, notice.reason)

    # --- shutdown ----------------------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Take no new runs; let running ones finish within `grace` seconds, then end the rest FAILED
        "interrupted", recording each end before returning (bounded)."""
        self._closing = True
        interrupted = (runs_pb2.RUN_STATE_FAILED, "interrupted",
                       "the run was interrupted: its engine shut down before the run finished")
        for active in list(self._waiting):
            self._stop(active.run.id, interrupted)
        tasks = {active.task for active in self._active.values() if active.task is not None}
        if tasks:
            log.info("waiting up to %.1fs for %d run(s) to finish", grace, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for active in list(self._active.values()):
                self._stop(active.run.id, interrupted)
            if pending:
                await asyncio.wait(pending, timeout=RECORD_END_SECONDS)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    @property
    def held_runs(self) -> int:
        """Runs held here, executing or queued."""
        return len(self._active)
