"""Whether a replica serves, from the conditions it depends on, reported over gRPC health (so that Envoy and the
kubelet take a replica that cannot do its job out of balancing).

A server is SERVING while every condition it depends on holds: the tools service needs its tool workers and, on
PostgreSQL, its notifications connection (without it, settings changed through another replica would go unseen).
`Readiness` combines the conditions; `serve_while` follows a notifications connection (services/common/db/
notifications.py) as one of them. Used by the tools service (services/tools/app.py); any service whose replicas
listen for each other's changes can use it the same way.
"""

import asyncio
import logging
from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

from services.common.db.notifications import Notifications

log = logging.getLogger(__name__)

#: How often `serve_while` looks at the connection. It finds a silent connection only by its ping (every few
#: seconds): looking more often than this only costs a wake-up.
POLL_SECONDS = 0.1
#: The name of the condition `serve_while` reports.
NOTIFICATIONS = "notifications"


class Readiness:
    """Reports SERVING for the whole server and each of `names` while every reported condition holds, NOT_SERVING
    while one does not. A condition never reported counts as holding. After the server's graceful shutdown began
    the health servicer keeps NOT_SERVING whatever is reported."""

    def __init__(self, health_servicer: health.aio.HealthServicer, names: Sequence[str]) -> None:
        self._health = health_servicer
        self._names = ("", *names)
        self._failing: set[str] = set()

    @property
    def serving(self) -> bool:
        return not self._failing

    async def report(self, condition: str, holds: bool) -> None:
        """Record whether `condition` holds, and tell the health servicer when the server's status changes."""
        was_serving = self.serving
        if holds:
            self._failing.discard(condition)
        else:
            self._failing.add(condition)
        if self.serving == was_serving:
            return
        status = health_pb2.HealthCheckResponse.SERVING if self.serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._names:
            await self._health.set(name, status)


async def serve_while(
    notifications: Notifications, readiness: Readiness, *, poll_seconds: float = POLL_SECONDS
) -> None:
    """Until cancelled: report the condition "notifications" as holding while `notifications.connected`. Run it as
    a task beside the server: `asyncio.create_task(serve_while(notifications, readiness))`."""
    connected = True
    while True:
        now = notifications.connected
        if now != connected:
            connected = now
            if connected:
                log.info("notifications connection back: serving again")
            else:
                log.warning("notifications connection away: NOT_SERVING until it is back (changes made through "
                            "other replicas would go unseen)")
            await readiness.report(NOTIFICATIONS, connected)
        await asyncio.sleep(poll_seconds)
