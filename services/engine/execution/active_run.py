"""What the scheduler holds of each run it has (queued, executing or stopping): the run, what it executes, its
feed, its slot, and why it is being stopped."""

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from services.common.limits import RunLimits
from services.engine import metrics
from services.engine.agent_profile import AgentProfile
from services.engine.execution.run_feed import RunFeed
from services.engine.journal import Run, Step
from services.engine.loop.run_progress import RunProgress
from services.engine.loop.steps import RunOutcome
from services.engine.run_request import ChatInput
from services.engine.workflow_graph import SavedWorkflow

#: Why a run is being stopped: (the state it ends in, its error code, the message).
Stop = tuple[str, str, str]


@dataclass
class ActiveRun:
    """A run held by this process."""

    run: Run
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
    stop: Stop | None = None
    #: The store no longer holds the run for us (it ended or was deleted there): stop without recording.
    lost: bool = False
    #: This engine shuts down and hands the run back to the store: stop without recording.
    handing_back: bool = False
    #: The BeginRun call of a run created QUEUED, once its slot is free.
    begin: "asyncio.Future[Run] | None" = None
    #: What the run did before it paused for approval, for a run resumed here; None for a run that starts now.
    progress: RunProgress | None = None
    #: For a workflow run: the workflow revision it executes, the inputs it was started with, and the steps it
    #: had when resumed here.
    workflow: SavedWorkflow | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    #: When this engine was asked for the run (time.perf_counter), until its first step after the creation's is
    #: stored: the run's time to first step. None for a resumed run, and once observed.
    accepted_at: float | None = None
    #: Its span here (invoke_agent or invoke_workflow), ended with its task; None with tracing off.
    span: trace.Span | None = None

    def steps_stored(self, steps: list[Step]) -> None:
        """Steps the run's recorder stored: to its followers, and the first of them to the time-to-first-step."""
        if self.accepted_at is not None and steps:
            metrics.TIME_TO_FIRST_STEP.observe(time.perf_counter() - self.accepted_at)
            self.accepted_at = None
        self.feed.steps_stored(steps)
