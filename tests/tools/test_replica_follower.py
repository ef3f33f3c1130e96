"""How a tools replica re-reads what the others changed (services/tools/replicas.py), without PostgreSQL: a poke
re-reads at once, pokes during a re-read make one more, a failed re-read is retried, a message of an unknown kind
re-reads everything; and a re-read that overlapped a change committed here reads again rather than dropping it."""

import asyncio
from pathlib import Path

from services.common.db.database import Database
from services.common.db.notifications import LocalNotifications
from services.tools.http.destinations import DestinationPolicy
from services.tools.http.sources import HttpToolSource
from services.tools.http.specs import HttpToolSpec, HttpToolStore, http_tool
from services.tools.replicas import Follower, ReplicaChanges
from services.tools.secret_codec import SecretCodec, use_codec
from services.tools.tool_settings import ToolSettingsStore
from tests.support.keys import TOOLS_SECRET_KEY

POLICY = DestinationPolicy.parse(["127.0.0.1"], False)


def spec(name: str) -> HttpToolSpec:
    return http_tool(name, description="d", url="http://127.0.0.1:9/x", method="GET", destinations=POLICY)


async def test_a_poke_re_reads_at_once_and_pokes_during_a_re_read_make_one_more() -> None:
    calls: list[float] = []
    release = asyncio.Event()

    async def sync() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            await release.wait()

    follower = Follower("things", sync, period=3600)
    follower.start()
    try:
        follower.poke()
        await asyncio.sleep(0.05)
        assert len(calls) == 1
        for _ in range(5):  # during the first re-read: one more after it, not five
            follower.poke()
        release.set()
        await asyncio.sleep(0.05)
        assert len(calls) == 2
    finally:
        await follower.close()


async def test_a_failed_re_read_is_retried() -> None:
    attempts = 0
    done = asyncio.Event()

    async def sync() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise OSError("the database is away")
        done.set()

    follower = Follower("things", sync, period=3600)
    follower.start()
    try:
        follower.poke()
        async with asyncio.timeout(5):  # 0.5 s, then 1 s
            await done.wait()
        assert attempts == 3
    finally:
        await follower.close()


class HeardBy(LocalNotifications):
    """Notifications whose subscriber the test calls by hand."""

    def subscribe(self, channel, on_message, on_gap) -> None:  # type: ignore[no-untyped-def,override]
        self.on_message, self.on_gap = on_message, on_gap


def test_messages_re_read_their_kind_and_the_unknown_or_a_gap_everything() -> None:
    notifications = HeardBy()
    changes = ReplicaChanges(notifications)
    heard: list[str] = []
    for kind in ("tool_settings", "http_tool", "mcp_server"):
        changes.follow(kind, lambda kind=kind: heard.append(kind))  # type: ignore[misc]
    notifications.on_message("http_tool forecast")
    assert heard == ["http_tool"]
    heard.clear()
    notifications.on_message("prompt_template greeting")  # a newer replica's kind
    assert sorted(heard) == ["http_tool", "mcp_server", "tool_settings"]
    heard.clear()
    notifications.on_gap()
    assert sorted(heard) == ["http_tool", "mcp_server", "tool_settings"]


async def test_a_re_read_that_overlapped_a_create_here_reads_again_instead_of_dropping_the_tool(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}")
    use_codec(database, SecretCodec.parse(TOOLS_SECRET_KEY))
    await ToolSettingsStore(database).migrate()
    creating, commit = asyncio.Event(), asyncio.Event()
    read, release = asyncio.Event(), asyncio.Event()

    class SlowStore(HttpToolStore):
        async def create(self, spec: HttpToolSpec) -> HttpToolSpec:
            creating.set()
            await commit.wait()
            return await super().create(spec)

        async def all(self) -> list[HttpToolSpec]:
            rows = await super().all()
            if not release.is_set():
                read.set()
                await release.wait()
            return rows

    source = HttpToolSource(SlowStore(database), POLICY, timeout_seconds=5, max_result_bytes=65536)
    try:
        # The create is under way when the re-read starts, and commits after the re-read has read the table.
        create = asyncio.create_task(source.create(spec("forecast")))
        await creating.wait()
        sync = asyncio.create_task(source.sync())
        await read.wait()
        commit.set()
        await create
        assert source.find("http__forecast") is not None
        release.set()
        await sync
        assert source.find("http__forecast") is not None, "the re-read dropped a tool created meanwhile"
    finally:
        await source.close()
        await database.dispose()
