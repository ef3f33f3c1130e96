"""The engine's runs in the background: start, queue, execute, lease, cancel, shut down.

- `start` creates the run in the store under this process's lease and returns it at once. At most
  ENGINE_MAX_CONCURRENT_RUNS execute at a time; more wait QUEUED, first come first served, up to
  ENGINE_MAX_QUEUED_RUNS; beyond that ResourceExhausted with a retry hint.
- A request id makes a start idempotent: the store returns the first attempt's run, and this process executes
  a run only if it holds the run's lease and is not executing it already.
- Each held run executes in a task of its own (execution/run_executor.py) once it has a slot, and every run held
  here (queued or running) has its lease renewed (execution/leases.py).
- `cancel` stops a run wherever it is (waiting for a slot, on the model, in a tool call) and records it
  CANCELLED with the reason. Cancels arrive through the run store (ExecutorLink, lease renewals), whichever
  engine took the CancelRun, and locally when the client that started the run goes away.
- `shutdown` takes no new runs and hands the runs it holds back to the store, for another engine (or this one,
  restarted) to continue from their steps at once: queued runs at once, running ones when they have not finished
  within the grace period. A run stopped at the end of the grace has its task cancelled and nothing more recorded
  here; what it was doing is redone or held as after a crash (the journal's rules, loop/run_progress.py). When
  the store cannot be reached, their leases run out and its reaper has them resumed, later.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import Any

from services.common import errors, logs
from services.common.identity import Caller
from services.common.limits import RunLimits
from services.common.run_vocabulary import CANCELLED, LIVE_STATES
from services.common.step_delta import StepDelta
from services.engine import metrics, spans
from services.engine.agent_profile import DEFAULT_AGENT, AgentProfile, within_agent
from services.engine.execution.active_run import ActiveRun, Stop
from services.engine.execution.leases import LeaseRenewer
from services.engine.execution.rate_limit import RunRateLimiter
from services.engine.execution.run_executor import RunExecutor
from services.engine.execution.run_feed import FeedFollower, RunFeed
from services.engine.journal import NewRun, Run, Step, UserRequest
from services.engine.loop.run_progress import progress_from_steps
from services.engine.loop.steps import RunOutcome
from services.engine.run_request import (
    ChatInput,
    WorkflowStart,
    resolve_limits,
    validate_chat,
    validate_workflow_start,
)
from services.engine.settings import EngineSettings
from services.engine.upstream.agents_client import AgentsClient
from services.engine.upstream.runs_client import RunsClient
from services.engine.workflow_graph import SavedWorkflow
from services.engine.workflows.runner import check_inputs, start_step

log = logging.getLogger(__name__)

#: How long the runs stopped at shutdown may take to settle (their task cancelled, a BeginRun or an append in
#: flight answered) before they are handed back to the store.
RECORD_END_SECONDS = 5.0
#: How long a hand-back is retried while the store is unavailable; then the runs' leases run out instead.
HAND_BACK_RETRY_SECONDS = 2.0
#: How much of a workflow's name and inputs a workflow run shows as its user query.
WORKFLOW_QUERY_CHARS = 1000



class RunScheduler:
    """The runs this engine process holds, and the slots they execute in."""

    def __init__(self, runs: RunsClient, agents: AgentsClient, executor: RunExecutor, settings: EngineSettings) -> None:
        """`executor` runs each held run (under the lease of its `executor_id`, this engine process's)."""
        self.executor_id = executor.executor_id
        self._runs = runs
        self._agents = agents
        self._settings = settings
        self._executor = executor
        self._active: dict[str, ActiveRun] = {}
        self._waiting: deque[ActiveRun] = deque()
        self._executing = 0
        #: Starts in flight that have reserved a slot or a queue place but whose run is not created yet.
        self._reserved_slots = 0
        self._reserved_queue = 0
        self._closing = False
        #: Set at the end of the shutdown's grace, when every run still held is handed back.
        self._handing_back_all = False
        self._renewer: LeaseRenewer | None = None
        self._rate_limiter = RunRateLimiter(settings.user_runs_per_second, settings.user_run_burst)
        #: Runs offered to resume that this process is taking (ResumeRun in flight).
        self._resuming: set[str] = set()
        metrics.RUNS_EXECUTING.set_function(lambda: self._executing)
        metrics.RUNS_QUEUED.set_function(lambda: len(self._waiting))

    # --- starting ----------------------------------------------------------------------------------------

    async def start(self, chat: ChatInput, *, cancel_if_abandoned: bool = False) -> Run:
        """Create a run and have it executed in the background; returns it QUEUED or RUNNING (or, for a retried
        request id, as the first attempt left it).

        Creating runs to completion even when the caller goes away mid-way, so a run is never created without
        this process knowing it; with `cancel_if_abandoned` such a run is then cancelled.
        """
        run, _ = await self._start_shielded(chat, cancel_if_abandoned, follow=False)
        return run

    async def start_followed(
        self, chat: ChatInput, *, cancel_if_abandoned: bool = False
    ) -> tuple[Run, FeedFollower | None]:
        """As `start`, with a follower of the run's events from its creation on; None when the run is not
        executed by this call (a retried request id), whose events are then the store's to give."""
        return await self._start_shielded(chat, cancel_if_abandoned, follow=True)

    async def start_workflow(self, start: WorkflowStart) -> Run:
        """Create a run of a saved workflow and have it executed in the background, as `start` does for an agent;
        returns it QUEUED or RUNNING. The workflow's own limits are the run's."""
        validate_workflow_start(start)
        workflow = await self._agents.workflow(start.workflow_id, start.workflow_revision, start.owner)
        check_inputs(workflow, start.inputs)
        limits = resolve_limits(workflow.limits, self._settings)
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
    ) -> tuple[Run, FeedFollower | None]:
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

    def _cancel_abandoned(self, starting: "asyncio.Future[tuple[Run, FeedFollower | None]]") -> None:
        if not starting.cancelled() and starting.exception() is None:
            run, _ = starting.result()
            self.cancel(run.id, "the client that started the run went away before it got the run")

    async def _start(
        self,
        chat: ChatInput,
        agent: AgentProfile,
        limits: RunLimits,
        follow: bool,
        workflow: SavedWorkflow | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> tuple[Run, FeedFollower | None]:
        accepted_at = time.perf_counter()
        if self._closing:
            raise errors.Unavailable("this engine is shutting down and takes no new runs; retry")
        queued = self._executing + self._reserved_slots >= self._settings.max_concurrent_runs
        if queued and len(self._waiting) + self._reserved_queue >= self._settings.max_queued_runs:
            metrics.RATE_LIMITED.labels("engine_busy").inc()
            raise errors.ResourceExhausted(
                f"the engine is busy: {self._settings.max_concurrent_runs} runs executing and "
                f"{self._settings.max_queued_runs} queued (ENGINE_MAX_QUEUED_RUNS); retry in a few seconds",
                retry_after=2.0,
            )
        if queued:
            self._reserved_queue += 1
        else:
            self._reserved_slots += 1
        # The run's span begins before the run exists, so the trace it records is the one its creation is in.
        span = spans.run_span(
            agent_id=agent.agent_id, thread_id=chat.thread_id, workflow_id=workflow.id if workflow else "",
            model=chat.model or agent.model or self._settings.llm_model,
        )
        try:
            new = self._new_run(chat, agent, limits, queued, spans.traceparent(span))
            if workflow is not None:
                new = replace(
                    new,
                    workflow_id=workflow.id,
                    workflow_revision=workflow.revision,
                    # A RUNNING run has its inputs stored with it, in the start node's step.
                    steps=() if queued else (start_step(inputs or {}, workflow),),
                )
            with spans.current(span, end=False):
                run = await self._runs.create_run(new)
        except BaseException as exc:
            spans.end(span, type(exc).__name__)
            raise
        finally:
            if queued:
                self._reserved_queue -= 1
            else:
                self._reserved_slots -= 1
        created_steps = list(run.steps)
        run = replace(run, steps=())  # a run is handed out without steps, as WatchRun and GetRun's peers do
        if run.state not in LIVE_STATES or run.executor_id != self.executor_id or run.id in self._active:
            spans.end(span)
            return run, None  # a retried request id: the run is the first attempt's, executed there or ended
        spans.name_run(span, run.id)
        active = ActiveRun(
            run, chat, limits, agent, RunFeed(run), recorded=len(created_steps), workflow=workflow,
            inputs=inputs or {}, steps=created_steps, accepted_at=accepted_at, span=span,
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
        metrics.RUNS_STARTED.labels(metrics.agent_label(run.agent_id)).inc()
        log.info("run %s %s (model %s)", run.id, "queued" if queued else "started", run.model)
        return run, follower

    def _new_run(
        self, chat: ChatInput, agent: AgentProfile, limits: RunLimits, queued: bool, traceparent: str
    ) -> NewRun:
        return NewRun(
            user_query=chat.message,
            owner=chat.owner.user,
            executor_id=self.executor_id,
            lease_seconds=self._settings.lease_seconds,
            queued=queued,
            agent_id=agent.agent_id,
            agent_revision=agent.revision,
            # The request's model, else the agent's, else the engine's.
            model=chat.model or agent.model or self._settings.llm_model,
            metadata=chat.metadata,
            # Always an idempotency key: the create is retried when the store is slow or restarting, and without
            # one a retry after a lost answer would create a second run (left to the reaper).
            request_id=chat.request_id or str(uuid.uuid4()),
            limits=limits,
            thread_id=chat.thread_id,
            multitask=chat.multitask,
            # A run that executes at once on a new thread has its first step, the user's request, stored with
            # it: one write fewer, and the step is there the moment the run is. A queued run records it when it
            # begins, and a run continuing a thread once it knows how much of the thread the model will see.
            steps=() if queued or chat.thread_id else (Step(UserRequest(chat.message), sequence=1),),
            traceparent=traceparent,
        )

    # --- executing ---------------------------------------------------------------------------------------

    async def _execute(self, active: ActiveRun) -> RunOutcome | None:
        # Every line logged while this task executes the run, and in the tasks it starts, names the run.
        logs.run_id.set(active.run.id)
        outcome = None
        try:
            try:
                # The run's span is current in its task, so the spans of its model and tool calls are its children.
                with spans.current(active.span, end=False):
                    outcome = await self._executor.run_to_end(active)
            finally:
                self._release(active)
            return outcome
        finally:
            if outcome is not None:
                active.feed.run_changed(outcome.run)
                _count_end(outcome.run)
            active.feed.end()
            spans.end(active.span, outcome.failure.code if outcome is not None and outcome.failure else "")

    def _release(self, active: ActiveRun) -> None:
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

    # --- resuming runs after an approval, or after their engine stopped ------------------------------------

    def resume(self, run_id: str) -> None:
        """The store offers a run whose approval was decided, or whose engine stopped (its lease ran out): take it
        and execute it from where its steps say it got. Another engine may take it first; then this one does
        nothing."""
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
        if self._handing_back_all:
            # Taken (ResumeRun was in flight) after this engine handed back what it held at the end of its grace:
            # give it back too. One taken earlier in the shutdown executes within the grace like the others.
            await self._hand_back({run.id: run.lease_epoch})
            return
        steps = list(run.steps)
        run = replace(run, steps=())
        owner = Caller(run.owner)
        chat = ChatInput(
            message=run.user_query,
            owner=owner,
            agent_id=run.agent_id,
            agent_revision=run.agent_revision,
            model=run.model,
            metadata=dict(run.metadata),
            limits=run.limits,
            thread_id=run.thread_id,
        )
        progress = progress_from_steps(steps)
        # The store counts the runs it took from an engine that stopped (attempts) and those an engine handed back
        # at its shutdown (handbacks); a resume that recorded no marker for the latest of them (this one, or one
        # whose engine stopped too before recording it) records it now.
        handed_back = run.handbacks > progress.handbacks
        orphaned = handed_back or run.attempts > progress.resumes - progress.handbacks
        metrics.RUNS_RESUMED.labels("handed_back" if handed_back else "orphaned" if orphaned else "approval").inc()
        if orphaned:
            # What runs again and what waits for a person is decided where the run's tools are known (the loop).
            progress.taking_over = (self.executor_id, run.attempts)
            if handed_back:
                progress.handed_back_by = run.handed_back_by
                log.info("run %s taken over: engine %s handed it back at its shutdown", run.id, run.handed_back_by)
            else:
                log.warning("run %s taken over from an engine that stopped (resume %d)", run.id, run.attempts)
        span = spans.run_span(
            agent_id=run.agent_id, thread_id=run.thread_id, workflow_id=run.workflow_id, model=run.model,
            resumed_from=run.traceparent,
        )
        spans.name_run(span, run.id)
        active = ActiveRun(
            run, chat, chat.limits, DEFAULT_AGENT, RunFeed(run), recorded=len(steps), progress=progress, steps=steps,
            span=span,
        )
        active.feed.steps_stored(steps)
        self._active[run.id] = active
        if self._executing < self._settings.max_concurrent_runs:
            self._executing += 1
            active.slot.set_result(None)
        else:
            self._waiting.append(active)
        active.task = asyncio.create_task(self._execute(active), name=f"run-{run.id}")
        if not orphaned:
            log.info("run %s resumed after its approval", run.id)

    # --- stopping runs -----------------------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str) -> bool:
        """Stop a run held here and record it CANCELLED; False when this process does not hold it."""
        message = f"cancelled: {reason}" if reason else "cancelled on request"
        active = self._active.get(run_id)
        if active is not None:
            active.feed.cancel_requested()
        return self._stop(run_id, (CANCELLED, "cancelled", message))

    def publish_delta(self, delta: StepDelta) -> None:
        """Hand a delta of a run held here to the run's followers."""
        active = self._active.get(delta.run_id)
        if active is not None:
            active.feed.delta(delta)

    def _stop(self, run_id: str, stop: Stop) -> bool:
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
        self._renewer = LeaseRenewer(self._runs, self.executor_id, self._settings.lease_seconds / 3)
        self._renewer.start(self._leases, self._lose, self.cancel)

    def _leases(self) -> dict[str, int]:
        """The runs held here, each with the epoch of its lease."""
        return {run_id: active.run.lease_epoch for run_id, active in self._active.items()}

    def _lose(self, run_id: str) -> None:
        """The store no longer holds the run for this engine (ended or deleted there, or taken by another engine):
        stop it at once without recording anything."""
        active = self._active.get(run_id)
        if active is not None and active.task is not None:
            log.warning("run %s is no longer held by this engine (ended, deleted or taken by another engine in the "
                        "store)", run_id)
            active.lost = True
            metrics.RUNS_LOST.inc()
            active.task.cancel()

    # --- shutdown ----------------------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Take no new runs; hand the queued ones back to the store at once, let running ones finish within
        `grace` seconds, then stop the rest (nothing more recorded here) and hand them back (bounded)."""
        self._closing = True
        queued = list(self._waiting)
        handing_queued = None
        if queued:
            log.info("handing %d queued run(s) back to the store", len(queued))
            # During the grace, not before it: a store that is away costs the running runs none of their time.
            handing_queued = asyncio.ensure_future(self._stop_and_hand_back(queued))
        queued_ids = {active.run.id for active in queued}
        held = [active for active in self._active.values() if active.run.id not in queued_ids]
        tasks = {active.task for active in held if active.task is not None}
        if tasks:
            log.info("waiting up to %.1fs for %d run(s) to finish", grace, len(tasks))
            await asyncio.wait(tasks, timeout=grace)
        if handing_queued is not None:
            await handing_queued
        self._handing_back_all = True
        running = [active for active in self._active.values() if active.run.id not in queued_ids]
        if running:
            log.info("handing %d run(s) that did not finish within %.1fs back to the store", len(running), grace)
            await self._stop_and_hand_back(running)
        if self._renewer is not None:
            await self._renewer.stop()

    @property
    def closing(self) -> bool:
        """True once this engine shuts down: the runs it held are handed back, not ended, when their calls stop."""
        return self._closing

    async def _stop_and_hand_back(self, runs: list[ActiveRun]) -> None:
        """Stop `runs` without recording anything more for them, wait (bounded) until their tasks are done and
        their writes in flight settled, then hand them back to the store under the epochs they were held at."""
        epochs = {active.run.id: active.run.lease_epoch for active in runs}
        tasks = set()
        for active in runs:
            if active.task is None or active.task.done():
                continue
            tasks.add(active.task)
            if active.stop is None:  # a run being cancelled records its end first; the store then refuses it
                active.handing_back = True
                active.task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=RECORD_END_SECONDS)
            if pending:
                log.warning("%d run(s) did not stop within %.1fs; handed back anyway (the store fences their late "
                            "writes)", len(pending), RECORD_END_SECONDS)
        # A run whose task ended by itself meanwhile (finished, paused for approval, lost) is no longer held: the
        # store refuses it, which is harmless.
        await self._hand_back(epochs)

    async def _hand_back(self, epochs: dict[str, int]) -> None:
        try:
            handed = await self._runs.hand_back_runs(self.executor_id, epochs, HAND_BACK_RETRY_SECONDS)
        except errors.DomainError as exc:
            log.warning("could not hand %d run(s) back to the store (%s): their leases run out in at most %.0fs and "
                        "the store's reaper has them resumed then: %s", len(epochs), type(exc).__name__,
                        self._settings.lease_seconds, ", ".join(epochs))
            return
        if handed.handed_back_run_ids:
            log.info("handed %d run(s) back for other engines to continue: %s", len(handed.handed_back_run_ids),
                     ", ".join(sorted(handed.handed_back_run_ids)))
        if handed.ended_run_ids:
            log.info("the store ended %d run(s) handed back (cancel pending, or not resumable): %s",
                     len(handed.ended_run_ids), ", ".join(sorted(handed.ended_run_ids)))

    @property
    def held_runs(self) -> int:
        """Runs held here, executing or queued."""
        return len(self._active)


def _count_end(run: Run) -> None:
    """Count a run that ended (or paused for a decision) here in the engine's metrics."""
    agent = metrics.agent_label(run.agent_id)
    if run.waiting:
        metrics.RUNS_PAUSED.labels(agent).inc()
    elif run.state not in LIVE_STATES:
        metrics.RUNS_FINISHED.labels(agent, run.state, run.error_code).inc()
        if run.created_at is not None and run.completed_at is not None:
            metrics.RUN_DURATION.labels(run.state).observe((run.completed_at - run.created_at).total_seconds())
