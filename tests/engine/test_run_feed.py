"""StreamChat follows the run it started from the engine's own feed: the same events WatchRun would send, in
order, without asking the store; and from the store when the feed ends without the run's end."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.run_vocabulary import CANCELLED, QUEUED, RUNNING
from services.common.step_delta import StepDelta
from services.engine.execution.run_feed import FeedFollower, RunFeed
from services.engine.journal import AgentThought, Run, Step
from services.engine.upstream.run_messages import event_to_proto
from tests.support.platform import start_platform
from tests.support.scripted_llm import ScriptedLLM, delayed, text_reply, tool_call_reply
from tests.support.seed import SEED_QUESTION

RUN = "00000000-0000-4000-8000-000000000001"


def run(state: str = RUNNING) -> Run:
    return Run(id=RUN, state=state)


def step(sequence: int) -> Step:
    return Step(AgentThought(text=str(sequence)), run_id=RUN, sequence=sequence)


def delta(sequence: int, text: str) -> StepDelta:
    return StepDelta(run_id=RUN, sequence=sequence, text=text)


async def events_of(follower: FeedFollower, heartbeat: float = 30.0) -> AsyncIterator[runs_pb2.RunEvent]:
    """The follower's events as StreamChat sends them."""
    async for event in follower.events(heartbeat):
        yield event_to_proto(event)


async def test_a_feed_gives_the_run_then_its_events_in_order_and_drops_stale_deltas() -> None:
    feed = RunFeed(run(QUEUED))
    follower = feed.follow()
    feed.run_changed(run())
    feed.delta(delta(1, "Hel"))
    feed.delta(delta(1, "lo"))
    feed.steps_stored([step(1)])
    feed.delta(delta(1, "late"))  # its step is stored: stale
    feed.steps_stored([step(1), step(2)])  # a retried append's answer repeats step 1
    feed.cancel_requested()
    feed.run_changed(run(CANCELLED))
    feed.steps_stored([step(3)])  # after the end: nothing more
    events = [event async for event in events_of(follower)]
    summary = [
        (e.WhichOneof("event"), e.run.state if e.HasField("run") else e.step.sequence or e.delta.text) for e in events
    ]
    assert summary == [
        # The two pieces waited together: they come as one delta.
        ("run", runs_pb2.RUN_STATE_QUEUED), ("run", runs_pb2.RUN_STATE_RUNNING), ("delta", "Hello"),
        ("step", 1), ("step", 2), ("run", runs_pb2.RUN_STATE_RUNNING), ("run", runs_pb2.RUN_STATE_CANCELLED),
    ]
    assert events[5].run.cancel_requested
    assert follower.finished and follower.last_sequence == 2


async def test_a_follower_that_keeps_up_gets_each_piece_and_pieces_of_different_steps_stay_apart() -> None:
    feed = RunFeed(run())
    follower = feed.follow()
    events = aiter(events_of(follower))
    assert (await anext(events)).HasField("run")
    feed.delta(delta(1, "Hel"))
    assert (await anext(events)).delta.text == "Hel"
    feed.delta(delta(1, "lo"))
    feed.delta(delta(2, "next"))
    assert [(await anext(events)).delta.text for _ in range(2)] == ["lo", "next"]


async def test_a_feed_that_ends_without_the_final_run_says_where_the_follower_got_to() -> None:
    feed = RunFeed(run())
    follower = feed.follow()
    feed.steps_stored([step(1), step(2)])
    feed.end()  # e.g. the run's end could not be recorded from this engine
    assert [e.WhichOneof("event") async for e in events_of(follower)] == ["run", "step", "step"]
    assert (follower.finished, follower.last_sequence) == (False, 2)


async def test_a_quiet_feed_sends_heartbeats_with_the_cursor() -> None:
    feed = RunFeed(run())
    follower = feed.follow()
    feed.steps_stored([step(1)])
    events = aiter(events_of(follower, 0.05))
    assert [(await anext(events)).WhichOneof("event") for _ in range(2)] == ["run", "step"]
    heartbeat = await asyncio.wait_for(anext(events), 1)
    assert heartbeat.heartbeat.last_sequence == 1


async def test_stream_chat_follows_its_run_without_watching_the_store(tmp_path: Path) -> None:
    script = [
        tool_call_reply("calculator", {"operation": "add", "x": 5, "y": 10}),
        delayed(tool_call_reply("calculator", {"operation": "multiply", "x": 15, "y": 3}), 0.3),
        text_reply("The result is 45."),
    ]
    async with ScriptedLLM(*script) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_WATCH_HEARTBEAT_SECONDS=0.1
    ) as platform:
        call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message=SEED_QUESTION))
        events = []
        async for event in call:
            events.append(event)
            # The run store has no watcher of the run: the engine sends what it recorded itself.
            assert platform.runs.store.signals.watcher_count(events[0].run.id) == 0
        kinds = [event.WhichOneof("event") for event in events]
        assert "heartbeat" in kinds  # while the model took 0.3 s
        steps = [event.step for event in events if event.HasField("step")]
        stored = await platform.runs_stub.GetRun(runs_pb2.GetRunRequest(run_id=events[0].run.id))
        assert steps == list(stored.steps) and len(steps) == 8  # exactly what the store has, as stored
        final = events[-1].run
        assert (final.state, final.step_count, final.usage) == (runs_pb2.RUN_STATE_COMPLETED, 8, stored.usage)


async def test_a_retried_stream_chat_follows_the_first_attempts_run_through_the_store(tmp_path: Path) -> None:
    request_id = "3b0c8f0e-9d1e-4f57-8a55-6f1d2c3b4a59"
    async with ScriptedLLM(delayed(text_reply("the answer"), 0.5)) as llm, start_platform(tmp_path, llm.base_url) as \
            platform:
        request = engine_pb2.StreamChatRequest(
            message="hello", request_id=request_id, on_disconnect=engine_pb2.DISCONNECT_POLICY_CONTINUE
        )
        first = platform.engine_stub.StreamChat(request)
        started = await anext(aiter(first))
        first.cancel()  # the client lost its stream; the run goes on (CONTINUE)
        retried = [event async for event in platform.engine_stub.StreamChat(request)]
        assert retried[0].run.id == started.run.id
        assert retried[-1].run.state == runs_pb2.RUN_STATE_COMPLETED
        steps = [event.step.WhichOneof("content") for event in retried if event.HasField("step")]
        assert steps == ["user_request", "agent_response"]
        assert len(llm.requests) == 1  # one run, executed once


async def test_stream_chat_whose_run_is_deleted_mid_run_ends_with_not_found_from_the_store(tmp_path: Path) -> None:
    # The engine stops a run the store reports lost (twice; lease 1 s, renewals every third of it); its feed ends
    # without the run's end, and StreamChat asks the store, which no longer has the run.
    async with ScriptedLLM(delayed(text_reply("too late"), 10.0)) as llm, start_platform(
        tmp_path, llm.base_url, ENGINE_LEASE_SECONDS=1
    ) as platform:
        call = platform.engine_stub.StreamChat(engine_pb2.StreamChatRequest(message="hello"))
        events = aiter(call)
        run = (await anext(events)).run
        assert (await anext(events)).step.HasField("user_request")
        await platform.runs_stub.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run.id))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(5):
                async for _ in events:
                    pass
        assert ended.value.code() == grpc.StatusCode.NOT_FOUND
