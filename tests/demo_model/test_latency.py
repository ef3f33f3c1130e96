"""DEMO_MODEL_LATENCY_SECONDS: the demo model waits before each reply, so runs stay in flight long enough for
tests to hit them with faults (tests/e2e/test_faults.py); DEMO_MODEL_SLOW_SECONDS: the same for a message that
says "slowly", so a person can watch and cancel a run (docs/runs.md)."""

import time

from services.common.settings import load_settings
from services.demo_model.app import start_demo_model
from services.demo_model.settings import DemoModelSettings
from tests.demo_model.helpers import CALCULATOR_TOOL, sdk_client
from tests.support.seed import SEED_QUESTION

LATENCY = 0.3


def test_no_latency_by_default() -> None:
    assert DemoModelSettings.model_fields["latency_seconds"].default == 0


async def test_every_reply_waits_the_latency_before_it_starts() -> None:
    settings = load_settings(
        DemoModelSettings, DEMO_MODEL_PORT=0, DEMO_MODEL_CHUNK_DELAY_SECONDS=0, DEMO_MODEL_LATENCY_SECONDS=LATENCY
    )
    app = await start_demo_model(settings)
    try:
        async with sdk_client(app.server.base_url) as client:
            messages = [{"role": "user", "content": SEED_QUESTION}]
            started = time.monotonic()
            stream = await client.chat.completions.create(
                model="demo", messages=messages, tools=[CALCULATOR_TOOL], stream=True  # type: ignore[arg-type]
            )
            first = await anext(aiter(stream))
            assert time.monotonic() - started >= LATENCY, "the first streamed chunk comes after the latency"
            assert first.choices
            async for _ in stream:
                pass

            started = time.monotonic()
            reply = await client.chat.completions.create(model="demo", messages=messages)  # type: ignore[arg-type]
            assert time.monotonic() - started >= LATENCY, "a reply that is not streamed waits too"
            assert reply.choices
    finally:
        await app.stop()


async def test_a_message_that_says_slowly_waits_the_slow_pace_and_others_do_not() -> None:
    """DEMO_MODEL_SLOW_SECONDS: the pace docs/runs.md's cancel example asks for with "Slowly: ..."."""
    settings = load_settings(
        DemoModelSettings, DEMO_MODEL_PORT=0, DEMO_MODEL_CHUNK_DELAY_SECONDS=0, DEMO_MODEL_SLOW_SECONDS=LATENCY * 3
    )
    app = await start_demo_model(settings)
    try:
        async with sdk_client(app.server.base_url) as client:
            for question, slow in ((f"Slowly: {SEED_QUESTION}", True), (SEED_QUESTION, False)):
                messages = [{"role": "user", "content": question}]
                started = time.monotonic()
                reply = await client.chat.completions.create(
                    model="demo", messages=messages, tools=[CALCULATOR_TOOL]  # type: ignore[arg-type]
                )
                took = time.monotonic() - started
                assert (took >= LATENCY * 3) is slow, (question, took)
                # The pace changes nothing of the answer: the same first calculator call.
                assert reply.choices[0].message.tool_calls
    finally:
        await app.stop()
