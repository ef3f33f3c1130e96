"""How the replicas of a service tell each other that something changed: PostgreSQL LISTEN/NOTIFY.

Used by the runs service (steps, deltas, run ends, cancel notices and resume offers reach the watchers and engines
connected to the other replicas: `services.runs.fanout`) and by the tools and agents services (a settings change
reaches every replica's cache). On SQLite there is one process per database, so `LocalNotifications` sends nothing
and the callers are written once for both.

`PostgresNotifications` keeps ONE dedicated asyncpg connection per process, outside SQLAlchemy's pool (a pooled
connection is reset and lent to others, which would drop its LISTENs). On it the process LISTENs on every
subscribed channel and sends with `pg_notify`, batched: the messages published within one event-loop turn go in
one statement per channel, in the order they were published.

A subscriber gets only the messages of OTHER processes (its own process already knows what it changed), and has to
be ready for what PostgreSQL does not promise across a broken connection:
- Notifications sent while this process's connection is away are lost (PostgreSQL queues them only for sessions
  that are listening). So after every reconnect each subscriber's `on_gap` is called, and it catches up by reading
  the state (a watcher queries from its cursor, a cache reloads).
- Messages this process could not send (its connection broke under them) are lost too; after reconnecting it sends
  a gap marker on those channels, and the subscribers of every other process call their `on_gap`.
- A connection that goes silent (a network partition: no error, no answer) is found by a ping every
  `ping_seconds`; until it is back, `connected` is False and the service reports NOT_SERVING.

PostgreSQL refuses a payload of 8,000 bytes or more; `publish` refuses one over `MAX_PAYLOAD_BYTES` (a bug in the
caller, which must split or send ids only).
"""

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from services.common import metrics
from services.common.db.database import asyncpg_dsn

log = logging.getLogger(__name__)

#: The largest payload `publish` takes, in UTF-8 bytes: PostgreSQL's limit (8,000) less this module's prefix.
MAX_PAYLOAD_BYTES = 7_900
#: Random bytes naming a process in its messages (hex: twice as many characters), then a message number.
ORIGIN_BYTES = 6
#: Messages waiting to be sent; past that the oldest are dropped and the channel gets a gap marker instead.
MAX_PENDING = 100_000
#: Reconnect backoff, doubling from the first to the last.
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0
#: The connection's name in pg_stat_activity, so an operator (or a test) can find it.
APPLICATION_NAME = "agentplatform-notifications"
#: The payload of a gap marker (after the origin prefix): "catch up, you may have missed messages from me".
_GAP = ""


class Notifications(Protocol):
    """What a service uses to hear about, and announce, changes that other replicas make."""

    def subscribe(self, channel: str, on_message: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        """Call `on_message(payload)` for each message another process publishes on `channel`, and `on_gap()`
        whenever messages may have been lost. Subscribe before `start`."""

    def publish(self, channel: str, payload: str) -> None:
        """Send `payload` (non-empty, at most MAX_PAYLOAD_BYTES in UTF-8) to the other processes' subscribers of
        `channel`; returns at once, the message goes with the next batch."""

    @property
    def connected(self) -> bool:
        """False while the connection is away (messages may be missed): the service is NOT_SERVING."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def check_payload(payload: str) -> None:
    if not payload:
        raise ValueError("a notification payload must not be empty (the empty payload marks a gap)")
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a notification payload must be at most {MAX_PAYLOAD_BYTES} bytes (PostgreSQL's limit), "
                         f"got {len(payload.encode())}")


class LocalNotifications:
    """One process per database (SQLite): there is nobody to tell and nothing to hear."""

    def subscribe(self, channel: str, on_message: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        pass

    def publish(self, channel: str, payload: str) -> None:
        check_payload(payload)

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class _Subscriber:
    on_message: Callable[[str], None]
    on_gap: Callable[[], None]


class PostgresNotifications:
    """LISTEN/NOTIFY on one dedicated asyncpg connection, re-established with backoff (see the module docstring)."""

    def __init__(self, database_url: str, *, ping_seconds: float = 2.0, connect_timeout: float = 5.0) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._ping_seconds = ping_seconds
        self._connect_timeout = connect_timeout
        #: Prefixes every payload so that a process can tell its own messages from the others'.
        self.origin = secrets.token_hex(ORIGIN_BYTES)
        self._numbers = itertools.count()
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._pending: dict[str, deque[str]] = {}
        self._pending_count = 0
        #: Channels whose messages were dropped (not sent): they get a gap marker once connected again.
        self._gaps: set[str] = set()
        self._wake = asyncio.Event()
        self._connection: Any = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- the interface -------------------------------------------------------------------------------------

    def subscribe(self, channel: str, on_message: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        self._subscribers.setdefault(channel, []).append(_Subscriber(on_message, on_gap))

    def publish(self, channel: str, payload: str) -> None:
        check_payload(payload)
        if self._pending_count >= MAX_PENDING:
            # The connection has been away a long time: what waits is stale; the others will be told to catch up.
            self._drop_pending()
        self._pending.setdefault(channel, deque()).append(payload)
        self._pending_count += 1
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Connect (waiting for PostgreSQL, with backoff) and start listening and sending."""
        self._task = asyncio.create_task(self._run(), name="notifications")
        await self.wait_connected()

    async def wait_connected(self) -> None:
        waiter = asyncio.ensure_future(self._connected.wait())
        assert self._task is not None
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            self._task.result()  # the task ended: raise why

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    # --- the connection ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        first = True
        while not self._closed:
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("cannot reach PostgreSQL for notifications (%s); trying again in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = FIRST_BACKOFF_SECONDS
            if not first:
                metrics.NOTIFICATIONS_RECONNECTS.inc()
                log.info("notifications connection re-established; catching up")
                # Whatever the others sent while this process was away is lost: every subscriber catches up.
                self._gaps.update(self._subscribers)
                for subscribers in self._subscribers.values():
                    for subscriber in subscribers:
                        _call(subscriber.on_gap)
            first = False
            self._connected.set()
            metrics.NOTIFICATIONS_CONNECTED.labels("postgresql").set(1)
            try:
                await self._serve()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("notifications connection lost (%s); reconnecting", exc)
            finally:
                self._connected.clear()
                metrics.NOTIFICATIONS_CONNECTED.labels("postgresql").set(0)
                await self._disconnect()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            for channel in self._subscribers:
                await connection.add_listener(channel, self._on_notification)
        except BaseException:
            await connection.close(timeout=1)
            raise
        connection.add_termination_listener(lambda _connection: self._wake.set())
        self._connection = connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()  # no goodbye: the connection may be the broken one

    async def _serve(self) -> None:
        """Send what is published, ping while quiet; returns (raises) when the connection is lost."""
        connection = self._connection
        while True:
            if connection.is_closed():
                raise ConnectionError("the server closed the connection")
            if self._gaps:
                gaps, self._gaps = self._gaps, set()
                try:
                    await self._send({channel: [_GAP] for channel in gaps})
                except BaseException:
                    self._gaps |= gaps
                    raise
            if self._pending_count:
                batch, self._pending, self._pending_count = self._pending, {}, 0
                try:
                    await self._send({channel: list(payloads) for channel, payloads in batch.items()})
                except BaseException:
                    self._gaps.update(batch)  # lost with the connection: the others are told to catch up
                    raise
                continue
            self._wake.clear()
            try:
                async with asyncio.timeout(self._ping_seconds):
                    await self._wake.wait()
            except TimeoutError:
                async with asyncio.timeout(self._ping_seconds):
                    await connection.fetchval("SELECT 1")

    async def _send(self, batch: dict[str, list[str]]) -> None:
        # Each payload gets the origin and a number of its own: PostgreSQL delivers identical payloads sent on one
        # channel in one transaction only once, and two equal messages (the same delta twice) are both meant.
        async with asyncio.timeout(max(self._ping_seconds, 5.0)):
            for channel, payloads in batch.items():
                numbered = [f"{self.origin}{next(self._numbers):x}:{payload}" for payload in payloads]
                await self._connection.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", channel, numbered
                )

    def _drop_pending(self) -> None:
        dropped = self._pending_count
        self._gaps.update(self._pending)
        self._pending, self._pending_count = {}, 0
        log.warning("dropped %d unsent notifications (PostgreSQL unreachable); the other replicas will catch up",
                    dropped)

    def _on_notification(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        prefix, separator, message = payload.partition(":")
        if not separator or len(prefix) <= 2 * ORIGIN_BYTES:
            log.warning("ignored a notification on %s without an origin: %.80r", channel, payload)
            return
        if prefix[: 2 * ORIGIN_BYTES] == self.origin:
            return
        for subscriber in self._subscribers.get(channel, ()):
            if message == _GAP:
                _call(subscriber.on_gap)
            else:
                _call(functools.partial(subscriber.on_message, message))


def _call(callback: Callable[[], None]) -> None:
    """A subscriber's failure is its own: log it, keep listening."""
    try:
        callback()
    except Exception:
        log.exception("a notification subscriber failed")


def notifications_for(database_url: str, *, ping_seconds: float = 2.0) -> Notifications:
    """PostgreSQL's LISTEN/NOTIFY for a PostgreSQL URL; nothing to send or hear for SQLite (one process)."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return PostgresNotifications(database_url, ping_seconds=ping_seconds)
    return LocalNotifications()
