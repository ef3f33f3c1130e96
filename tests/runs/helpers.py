"""Helpers of the runs tests."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import update

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database, utcnow
from services.common.identity import LOCAL_USER
from services.runs.app import RunsApp
from services.runs.models import RunRow
from services.runs.records import NewRun
from tests.support.stubs import runs_stubs

#: The engine process the tests' runs are created under.
EXECUTOR = "engine-test-1"
#: A lease no test outlives: nothing is reaped unless a test expires it on purpose.
LEASE_SECONDS = 60.0
#: A well-formed run id no run has.
UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def connect(app: RunsApp) -> AsyncIterator[Any]:
    """The RunService and ExecutionService stubs (tests.support.stubs) over a real channel to `app`, closed with
    the block."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield runs_stubs(channel)


def new_run(query: str = "q", **overrides: Any) -> NewRun:
    """A NewRun under EXECUTOR's lease of LEASE_SECONDS; keyword arguments override any field."""
    fields: dict[str, Any] = {
        "user_query": query, "executor_id": EXECUTOR, "lease_seconds": LEASE_SECONDS, "owner": LOCAL_USER
    }
    return NewRun(**{**fields, **overrides})


def create_request(
    query: str = "what is 5 + 10?",
    *,
    model: str = "demo",
    executor_id: str = EXECUTOR,
    lease_seconds: float = LEASE_SECONDS,
    **fields: Any,
) -> execution_pb2.CreateRunRequest:
    """A CreateRunRequest under EXECUTOR's lease, owned by the development-mode user the tests' calls run as;
    keyword arguments set other request fields."""
    fields.setdefault("owner", LOCAL_USER)
    request = execution_pb2.CreateRunRequest(user_query=query, model=model, executor_id=executor_id, **fields)
    request.lease_duration.FromTimedelta(timedelta(seconds=lease_seconds))
    return request


def thought(text: str, sequence: int = 0) -> runs_pb2.Step:
    """An agent-thought step (the simplest step to append in tests)."""
    return runs_pb2.Step(sequence=sequence, agent_thought=runs_pb2.AgentThought(text=text))


async def expire_lease(database: Database, run_id: str) -> None:
    """Make a run's lease run out now, as if its engine had stopped renewing it a while ago."""
    async with database.write() as session:
        await session.execute(
            update(RunRow).where(RunRow.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )


async def set_columns(database: Database, run_id: str, **values: Any) -> None:
    """Write columns of a run row directly, bypassing the store's checks (e.g. rows from before a limit)."""
    async with database.write() as session:
        await session.execute(update(RunRow).where(RunRow.id == run_id).values(**values))


async def eventually(condition: Callable[[], Any], timeout: float = 3.0, interval: float = 0.02) -> None:
    """Wait until `condition()` is true (or an awaitable resolving to true); AssertionError after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
