"""Admission ahead of execution (services/engine/execution/admission.py): a running run's model call waits while
new chats are being admitted, and never longer than the hold."""

import asyncio

from services.engine.execution.admission import Admissions


async def test_a_run_goes_on_at_once_when_no_chat_is_being_admitted() -> None:
    admissions = Admissions(hold_seconds=60)
    await asyncio.wait_for(admissions.wait_turn(), 5)  # would hang for a minute if it held
    assert admissions.in_flight == 0


async def test_a_run_waits_until_every_chat_being_admitted_is_admitted() -> None:
    admissions = Admissions(hold_seconds=60)
    order: list[str] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def admit(name: str, done: asyncio.Event) -> None:
        with admissions.admitting():
            await done.wait()
            order.append(name)

    async def run() -> None:
        await admissions.wait_turn()
        order.append("model call")

    admitting = [asyncio.create_task(admit("chat 1", first)), asyncio.create_task(admit("chat 2", second))]
    await asyncio.sleep(0)
    running = asyncio.create_task(run())
    await asyncio.sleep(0.01)
    assert order == [] and admissions.in_flight == 2
    first.set()
    await asyncio.sleep(0.01)
    assert order == ["chat 1"], "a chat still being admitted holds the run"
    second.set()
    await asyncio.wait_for(running, 5)
    await asyncio.gather(*admitting)
    assert order == ["chat 1", "chat 2", "model call"]


async def test_a_run_waits_no_longer_than_the_hold() -> None:
    admissions = Admissions(hold_seconds=0.05)
    never = asyncio.Event()

    async def admit() -> None:
        with admissions.admitting():
            await never.wait()

    admitting = asyncio.create_task(admit())
    await asyncio.sleep(0)
    await asyncio.wait_for(admissions.wait_turn(), 5)  # returns though the chat is still being admitted
    assert admissions.in_flight == 1
    admitting.cancel()
    await asyncio.gather(admitting, return_exceptions=True)
    assert admissions.in_flight == 0, "a start that fails or is cancelled is no longer counted"


async def test_a_hold_of_zero_never_waits() -> None:
    admissions = Admissions(hold_seconds=0)
    with admissions.admitting():
        await asyncio.wait_for(admissions.wait_turn(), 5)
