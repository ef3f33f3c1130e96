"""Helpers of the runs tests."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.runs.app import RunsApp


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def connect(app: RunsApp) -> AsyncIterator[runs_pb2_grpc.RunServiceStub]:
    """A RunService stub over a real channel to `app`, closed with the block."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield runs_pb2_grpc.RunServiceStub(channel)


def thought(text: str, sequence: int = 0) -> runs_pb2.Step:
    """An agent-thought step (the simplest step to append in tests)."""
    return runs_pb2.Step(sequence=sequence, agent_thought=runs_pb2.AgentThought(text=text))
