"""A tools service the test can restart on one database (RunningTools), and the factory the HTTP and MCP tests'
`make_tools` fixtures are built on (tools_started_with): each folder subclasses RunningTools with its own
shorthands and passes its own default settings."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from services.tools.app import ToolsApp, start_tools
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory


@dataclass
class RunningTools:
    """A running tools service and its stub; `restart` stops it and starts another on the same database."""

    make: Callable[[], Awaitable[ToolsApp]]
    app: ToolsApp | None = None
    channel: grpc.aio.Channel | None = None
    stub: Any = None

    async def start(self) -> None:
        self.app = await self.make()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.app.port}")
        self.stub = tools_stubs(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.app is not None:
            await self.app.stop()
        self.app = self.channel = self.stub = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


ToolsT = TypeVar("ToolsT", bound=RunningTools)


@asynccontextmanager
async def tools_started_with(
    make_settings: SettingsFactory, defaults: dict[str, Any], kind: type[ToolsT]
) -> AsyncIterator[Callable[..., Awaitable[ToolsT]]]:
    """A function that starts tools services of `kind` (`defaults` plus its overrides, all on tmp_path's
    database); every one is stopped on the way out."""
    started: list[ToolsT] = []

    async def build(**overrides: Any) -> ToolsT:
        tools = kind(lambda: start_tools(make_settings(**{**defaults, **overrides})))
        started.append(tools)
        await tools.start()
        return tools

    yield build
    for tools in started:
        await tools.stop()
