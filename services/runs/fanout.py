"""The runs replicas of one PostgreSQL database tell each other what their watchers and engines must know: steps
stored, runs changed and ended, deltas of forming steps, cancel notices and resume offers (no gRPC here).

A watcher or an engine is connected to one replica, and the run it cares about may be written through another.
Each replica hands what it signals (`signals.RunSignals`) and what no engine connected to it can take
(`executors.ExecutorNotices`) to a `RunFanout`, which publishes it on one PostgreSQL channel
(`services.common.db.notifications`); every other replica's `RunFanout` applies it to its own signals and notices.

Messages carry ids, not content: a watcher told "run R has its steps up to 7 stored" reads them from the database
from its own cursor, as it does after any signal it cannot take as it is (see `signals`). So a message lost or
repeated costs a query, never a lost or repeated step. The exceptions are the deltas, which are never stored and
travel whole (split to fit PostgreSQL's 8,000-byte payload), and cancel notices, which carry their reason.

What can be missed, and what covers it:
- this replica's connection to PostgreSQL breaks: on reconnect every watcher here looks again (`resync`), and
  the other replicas do the same if this one dropped messages it could not send;
- a replica dies between a commit and its message: its watchers elsewhere look at their next heartbeat
  (`RunSignals.distributed`), engines get a missed cancel with their next lease renewal, and a missed resume offer
  is made again by the reaper of a replica with engines;
- deltas sent while a connection was away are lost: the step they formed arrives whole, as when a watcher
  falls behind.

The wire format, one payload = newline-separated JSON arrays, one event each:
    ["c", run_id, last_sequence]     the run changed; steps up to last_sequence stored (0: no new step)
    ["e", run_id]                    the run ended or was deleted
    ["d", run_id, sequence, text, replace]                               a text delta (text may be null)
    ["t", run_id, sequence, tool_call_id, tool_name, arguments, replace]  a tool-call delta
    ["x", executor_id, run_id, reason]  cancel, for the engine `executor_id`
    ["o", run_id]                    a run ready to resume, for any engine
"""

import json
import logging
from typing import Any

from services.common.db.notifications import MAX_PAYLOAD_BYTES, Notifications
from services.common.step_delta import StepDelta, ToolCallDelta
from services.runs.executors import ExecutorNotices
from services.runs.records import CancelNotice
from services.runs.signals import RunSignals

log = logging.getLogger(__name__)

#: The PostgreSQL channel every runs replica of a database LISTENs on.
CHANNEL = "agentplatform_runs"
#: Characters of a delta's text (or arguments) per event: JSON may spend up to 6 bytes on a character (\\u0000),
#: so 1,000 of them and the event's ids stay under the payload limit.
DELTA_CHUNK_CHARS = 1000
#: Characters of a cancel reason carried (the reason is at most 512 characters plus who asked, checked at entry).
MAX_REASON_CHARS = 1000

Event = list[Any]


def _delta_events(delta: StepDelta) -> list[Event]:
    """A delta as events, split into chunks that each fit a payload; only the first chunk may replace."""
    if delta.tool_call is None:
        text = delta.text
        if text is None or len(text) <= DELTA_CHUNK_CHARS:
            return [["d", delta.run_id, delta.sequence, text, delta.replace]]
        return [
            ["d", delta.run_id, delta.sequence, text[start:start + DELTA_CHUNK_CHARS], delta.replace and start == 0]
            for start in range(0, len(text), DELTA_CHUNK_CHARS)
        ]
    call = delta.tool_call
    arguments = call.arguments
    starts = range(0, max(len(arguments), 1), DELTA_CHUNK_CHARS)
    return [
        ["t", delta.run_id, delta.sequence, call.tool_call_id, call.tool_name if start == 0 else "",
         arguments[start:start + DELTA_CHUNK_CHARS], delta.replace and start == 0]
        for start in starts
    ]


class RunFanout:
    """One replica's end of the fan-out: a `signals.Relay` and an `executors.NoticeRelay` that publish, and the
    subscriber that applies the other replicas' messages (see the module docstring)."""

    def __init__(self, notifications: Notifications, signals: RunSignals, notices: ExecutorNotices) -> None:
        self._notifications = notifications
        self._signals = signals
        self._notices = notices
        notifications.subscribe(CHANNEL, self._receive, self._catch_up)
        signals.relay_to(self)
        notices.relay_to(self)

    # --- what this replica tells the others ---------------------------------------------------------------

    def changed(self, run_id: str, last_sequence: int) -> None:
        self._publish(["c", run_id, last_sequence])

    def ended(self, run_id: str) -> None:
        self._publish(["e", run_id])

    def delta(self, delta: StepDelta) -> None:
        for event in _delta_events(delta):
            self._publish(event)

    def cancel(self, executor_id: str, notice: CancelNotice) -> None:
        self._publish(["x", executor_id, notice.run_id, notice.reason[:MAX_REASON_CHARS]])

    def offer_resume(self, run_id: str) -> None:
        self._publish(["o", run_id])

    def _publish(self, event: Event) -> None:
        # One event per payload; the notifications layer sends all the payloads of one event-loop turn in one
        # statement, so packing several events into a payload would save little.
        payload = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            # Only a delta with ids far longer than any the store accepts gets here: drop it, as a delta that
            # cannot be sent is dropped anywhere (the step it forms arrives whole).
            log.warning("a fan-out event of %d bytes does not fit a notification; dropped: %.120r",
                        len(payload.encode()), payload)
            return
        self._notifications.publish(CHANNEL, payload)

    # --- what the others tell this replica ---------------------------------------------------------------

    def _receive(self, payload: str) -> None:
        try:
            event = json.loads(payload)
            self._apply(event)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            # A message this version cannot read (a newer replica's, or damaged): look again, lose nothing.
            log.warning("unreadable fan-out message (%s): %.200r; watchers here look again", exc, payload)
            self._catch_up()

    def _apply(self, event: Event) -> None:
        kind = event[0]
        if kind == "c":
            self._signals.changed_elsewhere(_text(event[1]), _number(event[2]))
        elif kind == "e":
            self._signals.ended_elsewhere(_text(event[1]))
        elif kind == "d":
            text = None if event[3] is None else _text(event[3])
            delta = StepDelta(_text(event[1]), _number(event[2]), text=text, replace=bool(event[4]))
            self._signals.publish_delta(delta, relay=False)
        elif kind == "t":
            call = ToolCallDelta(_text(event[3]), _text(event[4]), _text(event[5]))
            delta = StepDelta(_text(event[1]), _number(event[2]), tool_call=call, replace=bool(event[6]))
            self._signals.publish_delta(delta, relay=False)
        elif kind == "x":
            self._notices.cancel_here(_text(event[1]), CancelNotice(_text(event[2]), _text(event[3])))
        elif kind == "o":
            self._notices.offer_here(_text(event[1]))
        else:
            raise ValueError(f"unknown event kind {kind!r}")

    def _catch_up(self) -> None:
        self._signals.resync()


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _number(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"expected a sequence number, got {value!r}")
    return value
