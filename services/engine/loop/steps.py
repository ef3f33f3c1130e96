"""A run's steps as the loop records them: the recorder that numbers and appends them, and how a run ended or
paused. Used by the agent loop, the workflow runner and the scheduler."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from services.common import errors
from services.common.run_vocabulary import COMPLETED
from services.engine.failures import RunFailure, StepTooLarge
from services.engine.journal import Appended, ApprovalRequest, ModelCall, Run, Step, StepContent, StepError
from services.engine.upstream.runs_client import RunsClient


@dataclass
class RunOutcome:
    """How a run ended, or paused: the run as the store left it, the answer when it completed, the failure when it
    did not. A run paused for approval is WAITING, neither answered nor failed: it resumes when decided."""

    run: Run
    answer: str = ""
    failure: RunFailure | None = None

    @property
    def waiting(self) -> bool:
        return self.run.waiting


def completed(final: Run, answer: str) -> RunOutcome:
    """How a run the engine finished COMPLETED ended in the store: completed, with its answer; or CANCELLED, when a
    cancel recorded meanwhile (through another replica, before it reached this engine) overruled the completion,
    as the store does: a cancel is final."""
    if final.state == COMPLETED:
        return RunOutcome(final, answer=answer)
    failure = RunFailure(final.error_code or "cancelled", errors.FailedPrecondition(final.error_message))
    return RunOutcome(final, failure=failure)


class RunPaused(Exception):
    """The run now waits for a person's approval (WAITING in the store); this engine lets it go."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.id} waits for approval")
        self.run = run


class StepRecorder:
    """Appends one run's steps, numbering them itself (1, 2, 3 …) so that a retried append is idempotent.

    An append is shielded from the run's cancellation: it completes (or fails) on its own, so the step that
    records the run's end can wait for it (`settle`) and take the next sequence without guessing whether the
    interrupted append was stored.
    """

    def __init__(
        self,
        runs: RunsClient,
        run_id: str,
        on_stored: Callable[[list[Step]], None] | None = None,
        recorded: int = 0,
        executor_id: str = "",
        epoch: int = 0,
    ) -> None:
        """`recorded`: how many steps the store has already (those created with the run, or before a pause);
        `executor_id`: the engine process holding the run's lease, and `epoch` the lease's epoch (every write
        carries it: the store refuses it once another engine took the run)."""
        self._runs = runs
        self.run_id = run_id
        self.executor_id = executor_id
        self.epoch = epoch
        #: The workflow node whose steps are being recorded ("" outside workflows): every step carries it.
        self.node_id = ""
        self._on_stored = on_stored
        self._last_sequence = recorded
        self._in_flight: asyncio.Future[Appended] | None = None

    @property
    def next_sequence(self) -> int:
        return self._last_sequence + 1

    async def record(
        self, content: StepContent, *, duration_seconds: float | None = None, model_call: ModelCall | None = None
    ) -> Step:
        """Store a step of `content` as the next one."""
        [stored] = await self.record_all([Step(content, duration_seconds=duration_seconds, model_call=model_call)])
        return stored

    async def record_all(self, steps: list[Step]) -> list[Step]:
        """Store steps known together (a thought and the tool calls it asks for) in one append, numbered in order.

        Raises RunFailure "step_too_large" for a step larger than the store takes (checked before it is sent:
        the run ends at once, naming the node and field), and "step_refused" when the store refuses the append as
        invalid: the run cannot go on without its record, and ending it now beats leaving it to the reaper. The
        step a run ends on (`error`) is exempt, so a failure never loops."""
        ending = any(isinstance(step.content, StepError) for step in steps)
        numbered = [
            replace(step, run_id=self.run_id, sequence=self.next_sequence + offset, node_id=self.node_id)
            for offset, step in enumerate(steps)
        ]
        self._in_flight = asyncio.ensure_future(
            self._runs.append_steps(self.run_id, numbered, epoch=self.epoch, check_size=not ending)
        )
        self._in_flight.add_done_callback(self._stored)
        try:
            appended = await asyncio.shield(self._in_flight)
        except StepTooLarge as exc:
            raise self._too_large(exc) from exc
        except (errors.InvalidArgument, errors.ResourceExhausted) as exc:
            if ending:
                raise
            raise self._refused(exc) from exc
        # The steps are stored (and counted by _stored, which ran first); the run stops after them.
        if appended.over_budget and not ending:
            raise RunFailure("budget_exceeded", errors.ResourceExhausted(f"the run stopped: {appended.over_budget}"))
        return appended.steps

    def _too_large(self, exc: StepTooLarge) -> RunFailure:
        where = f"node '{self.node_id}': " if self.node_id else ""
        return RunFailure("step_too_large", errors.ResourceExhausted(f"{where}{exc}"))

    def _refused(self, exc: errors.InvalidArgument | errors.ResourceExhausted) -> RunFailure:
        where = f"node '{self.node_id}': " if self.node_id else ""
        code = "step_too_large" if isinstance(exc, errors.ResourceExhausted) else "step_refused"
        return RunFailure(code, type(exc)(f"{where}the run store refused the step: {exc}"))

    def _stored(self, append: "asyncio.Future[Appended]") -> None:
        if not append.cancelled() and append.exception() is None:
            steps = append.result().steps
            self._last_sequence = max(self._last_sequence, steps[-1].sequence)
            if self._on_stored is not None:
                self._on_stored(steps)

    async def pause(self, request: ApprovalRequest) -> Run:
        """Record the approval-request step as the next one and leave the run WAITING in the store."""
        step = Step(request, run_id=self.run_id, sequence=self.next_sequence, node_id=self.node_id)
        try:
            run = await self._runs.await_approval(self.run_id, self.executor_id, step, epoch=self.epoch)
        except StepTooLarge as exc:
            raise self._too_large(exc) from exc
        except (errors.InvalidArgument, errors.ResourceExhausted) as exc:
            raise self._refused(exc) from exc
        # Not handed to `on_stored`: followers see the step, as stored, from the store (the run is no longer
        # this engine's to report).
        self._last_sequence = step.sequence
        return run

    async def settle(self) -> None:
        """Wait for an append interrupted by a cancellation, whatever its outcome, and count it if it was stored.
        A cancellation can arrive in the loop iteration the append's answer did, before its done callback ran."""
        if self._in_flight is not None:
            if not self._in_flight.done():
                await asyncio.wait({self._in_flight})
            self._stored(self._in_flight)
