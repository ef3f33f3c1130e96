"""Fixtures of the MCP sources' tests: tools services with the FAST settings, stopped afterwards."""

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from tests.tools.conftest import SettingsFactory
from tests.tools.mcp_sources.helpers import FAST, Tools
from tests.tools.running_tools import tools_started_with


@pytest_asyncio.fixture
async def make_tools(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Awaitable[Tools]]]:
    """Start tools services (FAST settings plus overrides, all on tmp_path's database); stopped afterwards."""
    async with tools_started_with(make_settings, FAST, Tools) as build:
        yield build


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools()
