"""Executing one run the scheduler holds: the agent or workflow it runs (the revision it began with, when
resumed), after its thread's earlier turns, once its slot is free; and, when it is stopped (a cancel, a failure),
recording its end (at a shutdown, nothing: the run is handed back)."""

import asyncio
import logging

from services.common import errors
from services.common.run_vocabulary import FAILED, QUEUED, RUNNING
from services.engine.execution.active_run import ActiveRun
from services.engine.execution.thread_turns import earlier_turns
from services.engine.failures import RunFailure
from services.engine.loop.agent_loop import AgentLoop
from services.engine.loop.steps import RunOutcome, StepRecorder
from services.engine.settings import EngineSettings
from services.engine.upstream.agents_client import AgentsClient
from services.engine.upstream.runs_client import RunsClient
from services.engine.workflows.runner import WorkflowRunner, start_step

log = logging.getLogger(__name__)


class RunExecutor:
    """Runs held runs to their ends with the agent loop or the workflow runner."""

    def __init__(
        self,
        runs: RunsClient,
        agents: AgentsClient,
        loop: AgentLoop,
        workflows: WorkflowRunner,
        settings: EngineSettings,
        executor_id: str,
    ) -> None:
        self._runs = runs
        self._agents = agents
        self._loop = loop
        self._workflows = workflows
        self._settings = settings
        self.executor_id = executor_id

    async def run_to_end(self, active: ActiveRun) -> RunOutcome | None:
        """Execute a held run once its slot is free, to its end or pause; record how it was stopped. None when
        nothing could be recorded here (the run lost, the store away): the store's reaper then ends it."""
        recorder = StepRecorder(
            self._runs,
            active.run.id,
            on_stored=active.steps_stored,
            recorded=active.recorded,
            executor_id=self.executor_id,
            epoch=active.run.lease_epoch,
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
            history = None
            if active.run.thread_turn > 1:
                max_turns = self._settings.context_max_turns
                history = await earlier_turns(self._runs, active.run.id, active.chat.owner, max_turns)
            await active.slot
            run = active.run
            if run.state == QUEUED:
                # Shielded like appends: a stop that lands meanwhile learns from its outcome whether the run began.
                active.begin = asyncio.ensure_future(
                    self._runs.begin_run(run.id, self.executor_id, epoch=run.lease_epoch)
                )
                run = await asyncio.shield(active.begin)
                active.feed.run_changed(run)
            if active.workflow is not None:
                if not active.steps:  # created QUEUED: its inputs are recorded now it begins
                    start = start_step(active.inputs, active.workflow)
                    recorder.node_id = start.node_id
                    active.steps = [await recorder.record(start.content)]
                return await self._workflows.execute(
                    run, active.workflow, active.chat.owner, active.limits, recorder, active.steps, active.progress
                )
            return await self._loop.execute(
                run, active.chat, active.agent, active.limits, recorder, history, active.progress
            )
        except asyncio.CancelledError:
            if active.lost:
                return None  # the store ended or deleted the run; there is nothing to record
            if active.handing_back:
                # The engine shuts down and hands the run back for another to continue from its steps: record
                # nothing more; a BeginRun or an append in flight is answered first, so that the hand-back finds
                # the run as it is (a step being stored is not lost, and its work not redone).
                await self._began(active)
                await recorder.settle()
                return None
            if active.stop is None:
                raise  # not ours: the event loop is going away
            return await self._record_stop(active, recorder)
        except RunFailure as failure:
            # A resumed run that cannot go on as it began (its agent deleted meanwhile): it ends FAILED.
            log.warning("run %s failed (%s): %s", active.run.id, failure.code, failure)
            active.stop = (FAILED, failure.code, str(failure))
            return await self._record_stop(active, recorder)
        except errors.FailedPrecondition as exc:
            # The store refused a write on the run: "lease lost" (another engine took it, under a later epoch), or
            # the run ended there. It is no longer this engine's to execute or record: stop at once, record nothing.
            log.warning("run %s stopped here, nothing more recorded: %s", active.run.id, exc)
            active.lost = True
            return None
        except errors.DomainError as exc:
            # The store refused or stayed away past ENGINE_STORE_OUTAGE_SECONDS: the run cannot be recorded
            # from here. Dropping it stops its lease renewals, and the store's reaper ends it.
            log.error("run %s given up: %s", active.run.id, exc)
            return None
        except Exception as exc:
            log.exception("run %s hit an unexpected error", active.run.id)
            active.stop = (FAILED, "internal", f"the engine failed: {type(exc).__name__}: {exc}")
            return await self._record_stop(active, recorder)

    async def _record_stop(self, active: ActiveRun, recorder: StepRecorder) -> RunOutcome | None:
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
                final = await self._runs.finish_run(active.run.id, state, code, message, epoch=recorder.epoch)
        except errors.DomainError as exc:
            log.warning("could not record the end of run %s: %s", active.run.id, exc)
            return None
        return RunOutcome(final, failure=RunFailure(code, errors.FailedPrecondition(message)))

    async def _began(self, active: ActiveRun) -> bool:
        """Whether the store has the run RUNNING, so its end is an `error` step appended here. A queued run
        stopped before BeginRun took effect (even one just given a slot) is still QUEUED there."""
        if active.run.state == RUNNING:
            return True
        if active.begin is None:
            return False
        await asyncio.wait({active.begin})
        return not active.begin.cancelled() and active.begin.exception() is None
