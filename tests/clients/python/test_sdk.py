"""The Python SDK (clients/python, agentplatform_client) against the whole stack behind Envoy, as its users
reach it: a streamed chat equals the stored run; list iterators page; tools are disabled and enabled; a bad API
key is the typed exception; `watch` of a run whose runs service is SIGKILLed and restarted mid-watch yields
each step once, 1..n, identical to the stored run; and so does `stream_chat` whose engine is SIGKILLed mid-run
(the restarted engine resumes the run: one `resumed` step)."""

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

from agentplatform_client import AsyncClient, Client, Reattach, errors
from agentplatform_client.types import Run, RunEvent, RunState
from tests.clients.python.stack import gateway_address, keyed_gateway_stack, restart
from tests.e2e.conftest import RunningStack
from tests.e2e.faults import assert_numbered
from tests.support.keys import ADMIN, ALICE, BOB
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # A model slow enough (0.5 s a turn) for a run to be in flight while its runs service restarts.
    with keyed_gateway_stack(tmp_path_factory.mktemp("sdk"), DEMO_MODEL_LATENCY_SECONDS="0.5") as running:
        yield running


@pytest.fixture(scope="module")
def alice(stack: RunningStack) -> Iterator[Client]:
    with Client(gateway_address(stack), api_key=ALICE) as client:
        yield client


def steps_of(events: list[RunEvent]) -> list[int]:
    return [event.step.sequence for event in events if event.HasField("step")]


async def test_a_streamed_chat_is_the_stored_run_and_its_answer(stack: RunningStack) -> None:
    async with AsyncClient(gateway_address(stack), api_key=ALICE) as client:
        events = [event async for event in client.stream_chat(SEED_QUESTION)]
        final = events[-1]
        assert final.HasField("run") and final.run.state == RunState.Value("RUN_STATE_COMPLETED"), final
        stored = await client.get_run(final.run.id)
        assert_numbered(stored)
        streamed = [event.step for event in events if event.HasField("step")]
        assert streamed == list(stored.steps)
        assert timeline(streamed) == SEED_TIMELINE
        assert any(event.HasField("delta") for event in events), "no delta: the answer was not streamed"

        result = await client.chat(SEED_QUESTION)
        stored = await client.get_run(result.run.id)
        assert result.steps == list(stored.steps)
        assert result.answer and result.answer == stored.steps[-1].agent_response.text
        assert "45" in result.answer


def test_list_runs_iterates_over_every_page(stack: RunningStack) -> None:
    with Client(gateway_address(stack), api_key=BOB) as bob:
        started = [bob.start_run(f"What is {n} + 1?").id for n in range(5)]
        paged = [run.id for run in bob.list_runs(page_size=2)]
        # Bob's runs only, newest first, each once, over three pages of two.
        assert paged == list(reversed(started)), paged
        assert [run.id for run in bob.list_runs(page_size=2, limit=3)] == paged[:3]
        for run_id in started:
            bob.cancel_run(run_id)


def test_tools_are_disabled_and_enabled_by_an_admin_and_not_by_a_user(stack: RunningStack, alice: Client) -> None:
    with Client(gateway_address(stack), api_key=ADMIN) as admin:
        assert admin.disable_tool("calculator").enabled is False
        try:
            assert admin.get_tool("calculator").enabled is False
            assert "calculator" not in [tool.id for tool in alice.list_tools(enabled_only=True)]
            assert "calculator" in [tool.id for tool in alice.list_tools(page_size=1)]
        finally:
            assert admin.enable_tool("calculator").enabled is True
        assert "calculator" in [tool.id for tool in alice.list_tools(enabled_only=True)]

    with pytest.raises(errors.PermissionDenied) as denied:
        alice.disable_tool("calculator")
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED and denied.value.message
    with pytest.raises(errors.NotFound):
        alice.get_tool("no-such-tool")


def test_a_bad_or_missing_api_key_is_unauthenticated(stack: RunningStack, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(gateway_address(stack), api_key="apk_not-a-key") as stranger:
        with pytest.raises(errors.Unauthenticated) as refused:
            stranger.get_run("any")
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.message and "UNAUTHENTICATED" in str(refused.value)
        with pytest.raises(errors.Unauthenticated):
            list(stranger.stream_chat(SEED_QUESTION))

    # The key and the address from the environment.
    monkeypatch.setenv("AGENTPLATFORM_API_KEY", ALICE)
    monkeypatch.setenv("AGENTPLATFORM_ADDRESS", gateway_address(stack))
    with Client() as from_env:
        assert [tool.id for tool in from_env.list_tools(limit=1)]
    monkeypatch.delenv("AGENTPLATFORM_API_KEY")
    with Client() as anonymous, pytest.raises(errors.Unauthenticated):
        anonymous.get_run("any")


def test_watch_goes_on_across_a_restart_of_the_runs_service(stack: RunningStack, alice: Client) -> None:
    run = alice.start_run(SEED_QUESTION)
    reattaches: list[Reattach] = []
    events: list[RunEvent] = []
    started = time.monotonic()
    for event in alice.watch(run.id, timeout=60, on_reattach=reattaches.append):
        events.append(event)
        if event.HasField("step") and event.step.sequence == 3 and not reattaches:
            restart(stack, "runs")
    elapsed = time.monotonic() - started

    sequences = steps_of(events)
    stored = alice.get_run(run.id)
    assert sequences == list(range(1, len(stored.steps) + 1)), sequences
    assert [event.step for event in events if event.HasField("step")] == list(stored.steps)
    assert timeline(list(stored.steps)) == SEED_TIMELINE
    final: Run = events[-1].run
    assert final.state == RunState.Value("RUN_STATE_COMPLETED"), events[-1]
    assert reattaches and reattaches[0].run_id == run.id and reattaches[0].after_sequence >= 3, reattaches
    print(f"watch across a runs restart: {len(reattaches)} re-attach(es), run followed in {elapsed:.1f}s")

    # An unknown run is not a break: NOT_FOUND at once, no re-attach.
    with pytest.raises(errors.NotFound):
        list(alice.watch("00000000-0000-0000-0000-000000000000", on_reattach=reattaches.append))


async def test_stream_chat_goes_on_when_its_engine_is_killed_and_restarted(stack: RunningStack) -> None:
    # The chat's stream runs through the engine: SIGKILLed mid-run, the stream breaks; the SDK re-attaches with
    # WatchRun, and the restarted engine resumes the run once its lease has run out.
    reattaches: list[Reattach] = []
    events: list[RunEvent] = []
    async with AsyncClient(gateway_address(stack), api_key=ALICE) as client:
        async for event in client.stream_chat(SEED_QUESTION, timeout=60, on_reattach=reattaches.append):
            events.append(event)
            if event.HasField("step") and event.step.sequence == 3 and not reattaches:
                await asyncio.to_thread(restart, stack, "engine")
        stored = await client.get_run(events[-1].run.id)

    assert events[-1].run.state == RunState.Value("RUN_STATE_COMPLETED"), events[-1]
    streamed = [event.step for event in events if event.HasField("step")]
    assert [step.sequence for step in streamed] == list(range(1, len(stored.steps) + 1))
    assert streamed == list(stored.steps)
    kinds = [step.WhichOneof("content") for step in streamed]
    assert kinds.count("resumed") == 1, kinds
    assert timeline([step for step in streamed if not step.HasField("resumed")]) == SEED_TIMELINE
    assert reattaches and reattaches[0].run_id == stored.id, reattaches
