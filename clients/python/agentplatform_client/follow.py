"""Following a run to its end across broken streams: the engine of `AsyncClient.stream_chat` and `.watch`.

Every step is stored before it is streamed, with a sequence 1, 2, 3 ... that never changes, and WatchRun replays
the steps after a cursor and then follows the run live. So when a stream breaks before the run has ended (its
engine died and another resumes the run, the gateway or the runs service restarted, the network dropped), the
follow re-attaches with WatchRun from the last sequence it yielded: the caller sees one stream, each step once,
in order. The same semantics as the TypeScript client's followChat/followRun (clients/web/src/follow.ts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from agentplatform_client import errors
from agentplatform_client._proto.agentplatform.runs.v1 import runs_pb2
from agentplatform_client._rpc import Deadline, RetryPolicy

log = logging.getLogger("agentplatform_client")

FINAL_STATES = frozenset({runs_pb2.RUN_STATE_COMPLETED, runs_pb2.RUN_STATE_FAILED, runs_pb2.RUN_STATE_CANCELLED})
#: How long the CancelRun of an abandoned chat may take.
CANCEL_TIMEOUT = 5.0


@dataclass(frozen=True)
class FollowPolicy:
    """How a follow re-attaches.

    `max_attempts` re-attaches in a row (the count starts again once an attempt delivers an event, so a long run
    survives any number of separate breaks), waiting as `retry` says between them (and at least the server's
    RetryInfo hint); a stream silent for `stall_timeout` seconds (three of the platform's 15 s heartbeats) is
    taken as broken, which catches connections that die without a word; 0 waits for ever."""

    max_attempts: int = 8
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(initial_delay=0.25, max_delay=5.0))
    stall_timeout: float = 45.0


@dataclass(frozen=True)
class Reattach:
    """What `on_reattach` is told before each re-attach."""

    #: The run being followed; empty when StreamChat broke before its first event (the start is retried).
    run_id: str
    #: The sequence of the last step yielded: WatchRun resumes after it.
    after_sequence: int
    #: 1 for the first attempt after a break, 2 for the next ...
    attempt: int
    #: The wait before this attempt, in seconds.
    delay: float
    #: Why the stream ended: the error of the break, or None when it ended cleanly before the run did.
    error: errors.ApiError | None


DEFAULT_FOLLOW = FollowPolicy()

#: Opens one stream: (timeout) -> a grpc.aio streaming call.
OpenStream = Callable[[float | None], Any]


class _Stalled(Exception):
    pass


async def follow(
    *,
    watch: Callable[[str, int, float | None], Any],
    get_run: Callable[[str, float | None], Any],
    cancel_run: Callable[[str], Any] | None,
    start: OpenStream | None,
    run_id: str = "",
    after_sequence: int = 0,
    timeout: float | None = None,
    policy: FollowPolicy = FollowPolicy(),
    on_reattach: Callable[[Reattach], None] | None = None,
) -> AsyncIterator[runs_pb2.RunEvent]:
    """The run's events, across breaks. `start` opens the chat (StreamChat), used until the run's id is known;
    `watch(run_id, after, timeout)` opens a WatchRun; `cancel_run(run_id)` is sent when the caller leaves a
    chat after a re-attach (leaving a live StreamChat cancels its run by itself). Raises what is not a break
    as it is, and the last error once `policy.max_attempts` re-attaches in a row have failed."""
    deadline = Deadline(timeout)
    last_sequence = after_sequence
    attempt = 0
    ended = False
    chat_live = False
    call: Any = None
    try:
        while True:
            if run_id == "" and start is not None:
                call = start(deadline.remaining())
                chat_live = True
            else:
                call = watch(run_id, last_sequence, deadline.remaining())
            failure: errors.ApiError | None = None
            try:
                while True:
                    event = await _read(call, policy.stall_timeout)
                    if event is None:
                        break
                    attempt = 0  # the platform answered: breaks from here on count afresh
                    kind = event.WhichOneof("event")
                    if kind == "run":
                        run_id = event.run.id
                        ended = event.run.state in FINAL_STATES
                        yield event
                    elif kind == "step":
                        sequence = event.step.sequence
                        if sequence <= last_sequence:
                            continue  # replayed: yielded already
                        if sequence != last_sequence + 1:
                            # Never skip a step: should one go missing, read it from the store, beside the stream.
                            for missing in await _missing_steps(get_run, run_id, last_sequence, sequence, deadline):
                                last_sequence = missing.sequence
                                yield runs_pb2.RunEvent(step=missing)
                        last_sequence = sequence
                        yield event
                    elif kind == "delta":
                        if event.delta.sequence > last_sequence:
                            yield event
                    else:
                        yield event
                    if ended:
                        return
            except _Stalled:
                failure = errors.Unavailable(
                    f"the stream of run {run_id or '(starting)'} sent nothing for {policy.stall_timeout:g} s"
                )
            except grpc.RpcError as exc:
                failure = errors.from_rpc_error(exc)
            except errors.ApiError as exc:  # reading missing steps from the store failed (DataLoss, a break ...)
                failure = exc
            finally:
                call.cancel()
            chat_live = False
            if failure is not None and not _is_break(failure, timeout is not None, run_id != ""):
                raise failure
            # The stream ended (broken, or cleanly) before the run's final event: re-attach.
            attempt += 1
            if attempt > policy.max_attempts:
                raise failure or errors.Unavailable(f"the stream of run {run_id} ended before the run did")
            delay = policy.retry.delay(attempt, failure)
            if not deadline.allows(delay):
                raise failure or errors.DeadlineExceeded(f"the follow of run {run_id} ran out of time")
            log.info("re-attaching to run %s after sequence %d in %.2fs: %s", run_id, last_sequence, delay, failure)
            if on_reattach is not None:
                on_reattach(Reattach(run_id, last_sequence, attempt, delay, failure))
            await asyncio.sleep(delay)
    finally:
        if call is not None:
            call.cancel()
        if not ended and not chat_live and cancel_run is not None and run_id != "":
            # A StreamChat caller who leaves cancels the run (on_disconnect CANCEL); after a re-attach through
            # WatchRun, which cancels nothing by itself, that is ours to do. Errors are not the leaver's concern.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cancel_run(run_id), CANCEL_TIMEOUT)


async def _read(call: Any, stall_timeout: float) -> runs_pb2.RunEvent | None:
    """The stream's next event, None at its end; _Stalled when it stays silent too long."""
    try:
        message = await (asyncio.wait_for(call.read(), stall_timeout) if stall_timeout > 0 else call.read())
    except TimeoutError:
        raise _Stalled() from None
    if message is grpc.aio.EOF:
        return None
    event: runs_pb2.RunEvent = message
    return event


async def _missing_steps(
    get_run: Callable[[str, float | None], Any], run_id: str, after: int, before: int, deadline: Deadline
) -> list[runs_pb2.Step]:
    """The stored steps strictly between `after` and `before`; DataLoss (a break: the follow re-attaches from
    `after`) if the store does not have every one yet."""
    run: runs_pb2.Run = await get_run(run_id, deadline.remaining())
    missing = [step for step in run.steps if after < step.sequence < before]
    if [step.sequence for step in missing] != list(range(after + 1, before)):
        raise errors.DataLoss(f"steps {after + 1} to {before - 1} of run {run_id} are missing")
    return missing


def _is_break(error: errors.ApiError, has_deadline: bool, run_known: bool) -> bool:
    """Whether a failed stream is a break worth re-attaching after, rather than an answer to raise:
    UNAVAILABLE (a service or its connection gone), UNKNOWN and INTERNAL (a stream cut off mid-response, as a
    proxy reports it), DATA_LOSS (steps missing in the store too: read them again); DEADLINE_EXCEEDED only of one
    call when the follow has no deadline of its own; RESOURCE_EXHAUSTED only once the run exists (a busy gateway
    refusing the re-attach; on the start it is the engine refusing a new run, which the caller decides about)."""
    code = error.code
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                grpc.StatusCode.DATA_LOSS):
        return True
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return not has_deadline
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return run_known
    return False
