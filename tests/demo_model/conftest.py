"""Fixtures: the demo model served on a free port, and a real openai SDK client for it."""

from collections.abc import AsyncIterator

import openai
import pytest

from services.common.settings import load_settings
from services.demo_model.app import DemoModelApp, start_demo_model
from services.demo_model.settings import DemoModelSettings
from tests.demo_model.helpers import sdk_client


@pytest.fixture
async def demo_model() -> AsyncIterator[DemoModelApp]:
    settings = load_settings(DemoModelSettings, DEMO_MODEL_PORT=0, DEMO_MODEL_CHUNK_DELAY_SECONDS=0)
    app = await start_demo_model(settings)
    yield app
    await app.stop()


@pytest.fixture
async def client(demo_model: DemoModelApp) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(demo_model.server.base_url) as sdk:
        yield sdk
