"""Change signals of the run store, and the deltas of forming steps: how committed writes and live deltas reach
the watchers of a run in this process (no gRPC here). `RunStore` signals every committed change; `watch.watch_run`
subscribes.


A signal means "look again". Signals from this process's own writes also carry what was committed (the steps,
the run), so a watcher that is caught up takes them without a query; whenever what a signal carries does not
follow on from the watcher's cursor without a gap (or carries nothing), the watcher queries the steps after its
cursor. So a missed or duplicated signal can cost a heartbeat of latency at most, never a lost or repeated step,
and a PostgreSQL LISTEN/NOTIFY source (which carries nothing) can replace the in-process `RunSignals` without
touching `watch_run`: with several runs replicas on one PostgreSQL, `services.runs.fanout` relays what this
replica signals to the others and applies theirs here (`changed_elsewhere`, `ended_elsewhere`, `publish_delta`
with `relay=False`, and `resync` when messages may have been missed).

Deltas are different: they are live only, never stored. The engine sends them as the model writes; they are
handed to the run's watchers and also kept, coalesced per forming step, until that step is stored, so a
watcher that attaches (or re-attaches) mid-step first gets what was written so far. A watcher that falls far
behind on deltas gets that coalesced state again instead of a backlog.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from services.common.run_vocabulary import ACTIVE_STATES
from services.common.step_delta import StepDelta, ToolCallDelta
from services.runs.records import RunRecord, StepRecord

#: Deltas one watcher may have waiting; past that it is resynchronised from the coalesced state.
MAX_QUEUED_DELTAS = 1000
#: Characters of forming text kept per run for late watchers; past that a late watcher sees only the step.
MAX_FORMING_CHARS = 1024 * 1024
#: Ended runs remembered so that deltas still on their way when a run ended are dropped, not kept for ever.
MAX_ENDED_RUNS = 10_000


class Subscription:
    """One watcher's registration for a run: "look again" flags and the deltas published since its last take.
    Create it BEFORE the first query."""

    def __init__(self) -> None:
        self._changed = False
        self._deltas: list[StepDelta] = []
        self._overflowed = False
        self._wake = asyncio.Event()
        self._committed = Committed()

    def _notify(self, steps: Sequence[StepRecord] = (), run: RunRecord | None = None, *, known: bool) -> None:
        if not self._changed:
            self._committed = Committed()
        self._changed = True
        self._committed.add(steps, run, known=known)
        self._wake.set()

    def _push(self, delta: StepDelta) -> None:
        if len(self._deltas) >= MAX_QUEUED_DELTAS:
            self._deltas.clear()
            self._overflowed = True
        self._deltas.append(delta)
        self._wake.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a change or a delta since the last `take`; False when `timeout` s passed quietly.

        A change signalled while the watcher was querying is not lost: its flag is still set, so this
        returns at once.
        """
        if self._changed or self._deltas or self._overflowed:
            return True
        try:
            # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that coincides with the event, and a watcher must always honour cancellation.
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    def drop_deltas(self) -> None:
        """Forget the deltas queued so far (keeping the "look again" flag): the caller has taken the coalesced
        state of the forming steps, which holds them already."""
        self._deltas.clear()
        self._overflowed = False
        if not self._changed:
            self._wake.clear()

    def take(self) -> tuple[Committed | None, list[StepDelta], bool]:
        """(what was committed since the last take, None if nothing; the deltas since the last take; whether
        deltas were dropped), and reset."""
        taken = self._committed if self._changed else None, self._deltas, self._overflowed
        self._changed, self._deltas, self._overflowed = False, [], False
        self._committed = Committed()
        self._wake.clear()
        return taken


class Committed:
    """What the signals since a watcher's last look carried: committed steps and the newest run record. `known`
    is False once any signal carried nothing (another process's write, a deletion): the watcher must query."""

    __slots__ = ("known", "run", "steps")

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self.run: RunRecord | None = None
        self.known = True

    def add(self, steps: Sequence[StepRecord], run: RunRecord | None, *, known: bool) -> None:
        self.known = self.known and known
        self.steps.extend(steps)
        if run is not None:
            self.run = run

    def following(self, cursor: int) -> list[StepRecord] | None:
        """The carried steps after `cursor` if they follow on from it without a gap; None if a query is needed."""
        if not self.known:
            return None
        steps = sorted((step for step in self.steps if step.sequence > cursor), key=lambda step: step.sequence)
        for expected, step in enumerate(steps, cursor + 1):
            if step.sequence != expected:
                return None
        if self.run is not None and self.run.state not in ACTIVE_STATES:
            # A finished run's record tells how many steps it has: the carried steps must reach them all.
            last = steps[-1].sequence if steps else cursor
            if last != self.run.step_count:
                return None
        return steps


@dataclass
class _FormingStep:
    """What has been written so far of one forming step."""

    text: list[str] = field(default_factory=list)
    tool_call_id: str = ""
    tool_name: str = ""
    arguments: list[str] = field(default_factory=list)
    is_tool_call: bool = False

    def add(self, delta: StepDelta) -> None:
        if delta.tool_call is None:
            self.text.append(delta.text or "")
            return
        self.is_tool_call = True
        self.tool_call_id = delta.tool_call.tool_call_id or self.tool_call_id
        self.tool_name += delta.tool_call.tool_name
        self.arguments.append(delta.tool_call.arguments)

    def coalesced(self, run_id: str, sequence: int) -> StepDelta:
        if self.is_tool_call:
            piece = ToolCallDelta(self.tool_call_id, self.tool_name, "".join(self.arguments))
            return StepDelta(run_id, sequence, tool_call=piece, replace=True)
        return StepDelta(run_id, sequence, text="".join(self.text), replace=True)


@dataclass
class _Channel:
    """A run's watchers, and its forming steps by sequence."""

    subscriptions: set[Subscription] = field(default_factory=set)
    forming: dict[int, _FormingStep] = field(default_factory=dict)
    forming_chars: int = 0

    def idle(self) -> bool:
        return not self.subscriptions and not self.forming


class Relay(Protocol):
    """Where a replica's signals go besides its own watchers: the other runs replicas (`fanout.RunFanout`)."""

    def changed(self, run_id: str, last_sequence: int) -> None:
        """The run changed; its steps up to `last_sequence` are stored (0: its state changed, no new step)."""

    def ended(self, run_id: str) -> None:
        """The run ended or was deleted."""

    def delta(self, delta: StepDelta) -> None:
        """A piece of a forming step."""


class RunSignals:
    """In-process change signals and deltas per run: writers call `steps_stored`, `notify` or `run_ended`
    after commit, the engine's link publishes deltas, watchers `subscribe`; each is also handed to the `relay`
    (the other replicas), when there is one.

    A run holds state only while it has watchers or forming steps, so disconnected watchers and finished
    runs leak nothing.
    """

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._relay: Relay | None = None

    @property
    def distributed(self) -> bool:
        """True when other replicas write runs too: a watcher here may then miss a change whose replica died
        between its commit and its announcement, so it also looks at every heartbeat."""
        return self._relay is not None

    def relay_to(self, relay: Relay) -> None:
        """Hand every signal from now on to `relay` too (set once, when the service starts)."""
        self._relay = relay

    def notify(self, run_id: str, run: RunRecord | None = None) -> None:
        """Wake every watcher of `run_id` to look again (call it after the change is committed), handing them the
        run as committed when the caller has it."""
        self._notify(run_id, (), run, known=run is not None)

    def _notify(self, run_id: str, steps: Sequence[StepRecord], run: RunRecord | None, *, known: bool) -> None:
        channel = self._channels.get(run_id)
        if channel is not None:
            for subscription in channel.subscriptions:
                subscription._notify(steps, run, known=known)

    def steps_stored(self, run_id: str, steps: Sequence[StepRecord]) -> None:
        """`steps` are committed: watchers get them, and they are no longer forming."""
        if not steps:
            return
        last_sequence = max(step.sequence for step in steps)
        if self._relay is not None:
            self._relay.changed(run_id, last_sequence)
        self._stored(run_id, last_sequence, steps, known=True)

    def changed_elsewhere(self, run_id: str, last_sequence: int) -> None:
        """Another replica committed a change of the run (its steps up to `last_sequence` are stored, when not 0):
        watchers here look again."""
        if last_sequence:
            self._stored(run_id, last_sequence, (), known=False)
        else:
            self._notify(run_id, (), None, known=False)

    def _stored(self, run_id: str, last_sequence: int, steps: Sequence[StepRecord], *, known: bool) -> None:
        channel = self._channels.get(run_id)
        if channel is None:
            return
        for sequence in [s for s in channel.forming if s <= last_sequence]:
            step = channel.forming.pop(sequence)
            channel.forming_chars -= sum(map(len, step.text)) + sum(map(len, step.arguments))
        self._notify(run_id, steps, None, known=known)
        self._drop_if_idle(run_id)

    def run_ended(self, run_id: str, run: RunRecord | None = None) -> None:
        """The run finished (`run`, as committed) or was deleted (None): nothing of it forms any more."""
        if self._relay is not None:
            self._relay.ended(run_id)
        self._end(run_id, run)

    def ended_elsewhere(self, run_id: str) -> None:
        """The run ended, or was deleted, through another replica: watchers here look again."""
        self._end(run_id, None)

    def _end(self, run_id: str, run: RunRecord | None) -> None:
        self._ended[run_id] = None
        if len(self._ended) > MAX_ENDED_RUNS:
            self._ended.popitem(last=False)
        channel = self._channels.get(run_id)
        if channel is None:
            return
        channel.forming.clear()
        channel.forming_chars = 0
        self._notify(run_id, (), run, known=run is not None)
        self._drop_if_idle(run_id)

    def publish_delta(self, delta: StepDelta, *, relay: bool = True) -> None:
        """Hand a delta to the run's watchers and keep it, coalesced, for watchers yet to come; and to the other
        replicas unless it came from one (`relay=False`). Deltas of a run that has ended (the engine sends them on
        their own stream, so some arrive after its FinishRun) are dropped: no step will ever be stored to release
        them."""
        if delta.run_id in self._ended:
            return
        if relay and self._relay is not None:
            self._relay.delta(delta)
        channel = self._channels.setdefault(delta.run_id, _Channel())
        size = len(delta.text or "") + (len(delta.tool_call.arguments) if delta.tool_call else 0)
        if channel.forming_chars + size <= MAX_FORMING_CHARS:
            channel.forming.setdefault(delta.sequence, _FormingStep()).add(delta)
            channel.forming_chars += size
        for subscription in channel.subscriptions:
            subscription._push(delta)

    def forming(self, run_id: str, after_sequence: int) -> list[StepDelta]:
        """What has been written so far of the run's forming steps after `after_sequence`, one delta each."""
        channel = self._channels.get(run_id)
        if channel is None:
            return []
        return [
            step.coalesced(run_id, sequence)
            for sequence, step in sorted(channel.forming.items())
            if sequence > after_sequence
        ]

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[Subscription]:
        """Register a watcher of `run_id` for the duration of the block (also when it is cancelled)."""
        channel = self._channels.setdefault(run_id, _Channel())
        subscription = Subscription()
        channel.subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            channel.subscriptions.discard(subscription)
            self._drop_if_idle(run_id)

    def resync(self) -> None:
        """Messages from the other replicas may have been lost: every watcher here looks again, and the forming
        steps of runs nobody here watches are forgotten (a lost "stored" or "ended" message would otherwise keep
        them for good; what forms from now on is kept again as it comes)."""
        for run_id, channel in list(self._channels.items()):
            if channel.subscriptions:
                self._notify(run_id, (), None, known=False)
            else:
                del self._channels[run_id]

    def watcher_count(self, run_id: str) -> int:
        """How many watchers `run_id` has now (for tests and metrics)."""
        channel = self._channels.get(run_id)
        return len(channel.subscriptions) if channel else 0

    def tracked_runs(self) -> int:
        """How many runs hold state here (for tests: it returns to 0 when nothing is watched or forming)."""
        return len(self._channels)

    def _drop_if_idle(self, run_id: str) -> None:
        channel = self._channels.get(run_id)
        if channel is not None and channel.idle():
            del self._channels[run_id]


