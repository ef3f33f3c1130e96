"""Fixtures of the HTTP tools' tests (and the untrusted input tests beside them): tools services with the LOCAL
settings, stopped afterwards."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from services.tools.app import start_tools
from tests.tools.conftest import SettingsFactory
from tests.tools.http_tools.helpers import LOCAL, Tools


@pytest_asyncio.fixture
async def make_tools(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Awaitable[Tools]]]:
    """Start tools services (LOCAL settings plus overrides, all on tmp_path's database); stopped afterwards."""
    started: list[Tools] = []

    async def build(**overrides: Any) -> Tools:
        tools = Tools(lambda: start_tools(make_settings(**{**LOCAL, **overrides})))
        started.append(tools)
        await tools.start()
        return tools

    yield build
    for tools in started:
        await tools.stop()


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools()
