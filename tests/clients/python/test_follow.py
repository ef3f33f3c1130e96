"""The re-attaching streams of the SDK (agentplatform_client/follow.py) against scripted streams, for what a stack
cannot stage on demand: a missing step read from the store, a stream that ends cleanly before the run, one that
goes silent, an answer that is not a break, the bound on attempts, and a chat left after its re-attach cancelled."""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from agentplatform_client import errors
from agentplatform_client._rpc import RetryPolicy
from agentplatform_client.follow import FollowPolicy, follow
from agentplatform_client.types import Run, RunEvent, RunState, Step
from tests.clients.python.fakes import FakeRpcError

RUN_ID = "run-1"
FAST = FollowPolicy(max_attempts=3, retry=RetryPolicy(initial_delay=0.001, max_delay=0.002), stall_timeout=0.2)
HANG = object()


def run_event(state: str) -> RunEvent:
    return RunEvent(run=Run(id=RUN_ID, state=RunState.Value(f"RUN_STATE_{state}")))


def step_event(sequence: int) -> RunEvent:
    return RunEvent(step=Step(run_id=RUN_ID, sequence=sequence))


class Stream:
    """A scripted streaming call: events, then EOF, an error (an RpcError), or HANG (silence)."""

    def __init__(self, *items: Any) -> None:
        self.items = list(items)
        self.cancelled = False

    async def read(self) -> Any:
        if not self.items:
            return grpc.aio.EOF
        item = self.items.pop(0)
        if item is HANG:
            await asyncio.sleep(3600)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


class Platform:
    """WatchRun answers from `streams` in turn; GetRun from `stored`; CancelRun recorded."""

    def __init__(self, *streams: Stream, stored: list[int] | None = None) -> None:
        self.streams = list(streams)
        self.watched: list[int] = []
        self.stored = stored or []
        self.cancelled: list[str] = []

    def watch(self, run_id: str, after: int, timeout: float | None) -> Stream:
        self.watched.append(after)
        return self.streams.pop(0)

    async def get_run(self, run_id: str, timeout: float | None) -> Run:
        return Run(id=run_id, steps=[Step(run_id=run_id, sequence=n) for n in self.stored])

    async def cancel_run(self, run_id: str) -> None:
        self.cancelled.append(run_id)


async def collect(platform: Platform, start: Callable[[float | None], Any] | None = None,
                  cancel: bool = False) -> list[RunEvent]:
    return [event async for event in follow(
        watch=platform.watch, get_run=platform.get_run, cancel_run=platform.cancel_run if cancel else None,
        start=start, run_id="" if start else RUN_ID, policy=FAST,
    )]


def sequences(events: list[RunEvent]) -> list[int]:
    return [event.step.sequence for event in events if event.HasField("step")]


async def test_a_missing_step_is_read_from_the_store() -> None:
    platform = Platform(Stream(run_event("RUNNING"), step_event(1), step_event(3), run_event("COMPLETED")),
                        stored=[1, 2, 3])
    assert sequences(await collect(platform)) == [1, 2, 3]


async def test_a_clean_end_a_cut_and_a_silence_are_re_attached_from_the_last_step_without_repeats() -> None:
    unavailable = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "upstream reset")
    platform = Platform(
        Stream(run_event("RUNNING"), step_event(1), step_event(2)),  # ends before the run did
        Stream(run_event("RUNNING"), step_event(2), step_event(3), unavailable),
        Stream(run_event("RUNNING"), step_event(4), HANG),
        Stream(run_event("RUNNING"), step_event(4), step_event(5), run_event("COMPLETED")),
    )
    events = await collect(platform)
    assert sequences(events) == [1, 2, 3, 4, 5]
    assert platform.watched == [0, 2, 3, 4]
    assert events[-1].run.state == RunState.Value("RUN_STATE_COMPLETED")


async def test_an_answer_is_raised_at_once_and_breaks_only_up_to_the_bound() -> None:
    platform = Platform(Stream(FakeRpcError(grpc.StatusCode.NOT_FOUND, "no run")))
    with pytest.raises(errors.NotFound):
        await collect(platform)
    assert platform.watched == [0]

    down = [Stream(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")) for _ in range(10)]
    platform = Platform(*down)
    with pytest.raises(errors.Unavailable):
        await collect(platform)
    assert len(platform.watched) == FAST.max_attempts + 1


async def test_a_chat_left_after_its_re_attach_is_cancelled_but_not_while_its_stream_is_live() -> None:
    chat = Stream(run_event("RUNNING"), step_event(1), FakeRpcError(grpc.StatusCode.UNAVAILABLE, "engine gone"))
    platform = Platform(Stream(step_event(2), HANG))
    followed = follow(watch=platform.watch, get_run=platform.get_run, cancel_run=platform.cancel_run,
                      start=lambda timeout: chat, policy=FollowPolicy(stall_timeout=0))
    assert sequences([await anext(followed) for _ in range(3)]) == [1, 2]
    await followed.aclose()
    assert platform.cancelled == [RUN_ID] and platform.watched == [1]

    live = Stream(run_event("RUNNING"), step_event(1), HANG)
    platform = Platform()
    followed = follow(watch=platform.watch, get_run=platform.get_run, cancel_run=platform.cancel_run,
                      start=lambda timeout: live, policy=FollowPolicy(stall_timeout=0))
    assert sequences([await anext(followed) for _ in range(2)]) == [1]
    await followed.aclose()
    # Leaving a live StreamChat cancels its call, which cancels the run on the engine: no CancelRun of ours.
    assert live.cancelled and platform.cancelled == []
