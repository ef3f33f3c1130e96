"""Fixtures of the HTTP tools' tests (and the untrusted input tests beside them): tools services with the LOCAL
settings, stopped afterwards."""

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from tests.tools.conftest import SettingsFactory
from tests.tools.http_tools.helpers import LOCAL, Tools
from tests.tools.running_tools import tools_started_with


@pytest_asyncio.fixture
async def make_tools(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Awaitable[Tools]]]:
    """Start tools services (LOCAL settings plus overrides, all on tmp_path's database); stopped afterwards."""
    async with tools_started_with(make_settings, LOCAL, Tools) as build:
        yield build


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:
    return await make_tools()
