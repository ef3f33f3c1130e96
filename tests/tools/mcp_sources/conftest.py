"""Fixtures of the MCP sources' tests: tools services with the FAST settings, stopped afterwards."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from services.tools.app import start_tools
from tests.tools.conftest import SettingsFactory
from tests.tools.mcp_sources.helpers import FAST, Tools


@pytest_asyncio.fixture
async def make_tools(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Awaitable[Tools]]]:
    """Start tools services (FAST settings plus overrides, all on tmp_path's database); stopped afterwards."""
    started: list[Tools] = []

    async def build(**overrides: Any) -> Tools:
        tools = Tools(lambda: start_tools(make_settings(**{**FAST, **overrides})))
        started.append(tools)
        await tools.start()
        return tools

    yield build
    for tools in started:
        await tools.stop()


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools()
