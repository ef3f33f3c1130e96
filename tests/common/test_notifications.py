"""LISTEN/NOTIFY between processes of a service (services/common/db/notifications.py), on a real PostgreSQL: each
process hears the others and not itself, in order, and is told to catch up whenever it may have missed something
(its connection was cut, or another process dropped messages it could not send)."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from services.common.db import notifications as notifications_module
from services.common.db.database import asyncpg_dsn
from services.common.db.notifications import (
    APPLICATION_NAME,
    MAX_PAYLOAD_BYTES,
    LocalNotifications,
    PostgresNotifications,
    notifications_for,
)

pytestmark = pytest.mark.postgres

CHANNEL = "agentplatform_test"


class Ear:
    """What one subscriber heard."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.gaps = 0
        self.changed = asyncio.Event()

    def message(self, payload: str) -> None:
        self.messages.append(payload)
        self.changed.set()

    def gap(self) -> None:
        self.gaps += 1
        self.changed.set()

    async def until(self, condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest_asyncio.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[PostgresNotifications, Ear, PostgresNotifications, Ear]]:
    processes, ears = [], []
    for _ in range(2):
        notifications, ear = PostgresNotifications(postgres_url, ping_seconds=0.5), Ear()
        notifications.subscribe(CHANNEL, ear.message, ear.gap)
        await notifications.start()
        processes.append(notifications)
        ears.append(ear)
    yield processes[0], ears[0], processes[1], ears[1]
    for notifications in processes:
        await notifications.close()


async def test_each_process_hears_the_others_in_order_and_not_itself(pair) -> None:  # type: ignore[no-untyped-def]
    a, heard_by_a, b, heard_by_b = pair
    sent = [f"message {n}" for n in range(2000)]
    for payload in sent:
        a.publish(CHANNEL, payload)
    b.publish(CHANNEL, "from b")
    await heard_by_b.until(lambda: len(heard_by_b.messages) == len(sent))
    await heard_by_a.until(lambda: heard_by_a.messages == ["from b"])
    assert heard_by_b.messages == sent
    await asyncio.sleep(0.2)
    assert heard_by_a.messages == ["from b"], "a process must not hear its own messages"
    assert heard_by_a.gaps == heard_by_b.gaps == 0


async def test_equal_messages_are_all_delivered(pair) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL folds identical payloads of one transaction into one: each message is numbered, so the same
    delta sent twice arrives twice."""
    a, _, _, heard_by_b = pair
    for _ in range(3):
        a.publish(CHANNEL, "the same")
    await heard_by_b.until(lambda: len(heard_by_b.messages) >= 3)
    assert heard_by_b.messages == ["the same"] * 3


async def test_a_cut_connection_is_re_established_and_the_subscriber_catches_up(
    pair, postgres_url: str  # type: ignore[no-untyped-def]
) -> None:
    a, _, b, heard_by_b = pair
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        cut = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            APPLICATION_NAME,
        )
    finally:
        await admin.close()
    assert cut >= 2
    await heard_by_b.until(lambda: heard_by_b.gaps >= 1)
    await a.wait_connected()
    await b.wait_connected()
    a.publish(CHANNEL, "after the cut")
    await heard_by_b.until(lambda: "after the cut" in heard_by_b.messages)


async def test_messages_dropped_by_a_sender_make_the_others_catch_up(
    pair, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    a, _, _, heard_by_b = pair
    monkeypatch.setattr(notifications_module, "MAX_PENDING", 3)
    for n in range(5):  # one event-loop turn: the 4th finds 3 waiting, drops them and marks a gap
        a.publish(CHANNEL, f"m{n}")
    await heard_by_b.until(lambda: heard_by_b.messages == ["m3", "m4"] and heard_by_b.gaps == 1)


async def test_payloads_are_checked() -> None:
    for notifications in (LocalNotifications(), PostgresNotifications("postgresql+asyncpg://u@127.0.0.1:1/db")):
        with pytest.raises(ValueError, match="must not be empty"):
            notifications.publish(CHANNEL, "")
        with pytest.raises(ValueError, match="at most 7900 bytes"):
            notifications.publish(CHANNEL, "é" * (MAX_PAYLOAD_BYTES // 2 + 1))
        notifications.publish(CHANNEL, "x" * MAX_PAYLOAD_BYTES)  # the limit itself is fine


def test_sqlite_has_nobody_to_tell() -> None:
    assert isinstance(notifications_for("sqlite+aiosqlite:///var/x.db"), LocalNotifications)
    assert isinstance(notifications_for("postgresql+asyncpg://u@h/db"), PostgresNotifications)
    assert asyncpg_dsn("postgresql+asyncpg://u:p%40ss@h:5/db") == "postgresql://u:p%40ss@h:5/db"  # the password kept
