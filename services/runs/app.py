"""Start and stop the runs service: database, store, watch signals and the gRPC server."""

import asyncio
from dataclasses import dataclass

import grpc

from agentplatform.runs.internal.v1 import execution_pb2, execution_pb2_grpc
from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common.auth import Authenticator
from services.common.db.database import Database
from services.common.db.notifications import Notifications, notifications_for
from services.common.db.sqlite_claim import SqliteClaim, claim_sqlite_file
from services.common.pages import PageTokens
from services.common.rpc.server import RunningServer, ServiceBinding, start_server
from services.common.rpc.serving import Readiness, serve_while
from services.runs.checks import StoreLimits
from services.runs.execution_servicer import ExecutionServicer
from services.runs.executors import ExecutorNotices
from services.runs.fanout import RunFanout
from services.runs.models import MIGRATIONS
from services.runs.reaper import LeaseReaper
from services.runs.retention import RetentionPolicy
from services.runs.retention_sweep import RetentionSweep
from services.runs.servicer import RunServicer
from services.runs.settings import RunsSettings
from services.runs.signals import RunSignals
from services.runs.store import RunStore

SERVICE_NAME = runs_pb2.DESCRIPTOR.services_by_name["RunService"].full_name
EXECUTION_SERVICE_NAME = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name


@dataclass
class RunsApp:
    """A running runs service and the resources it owns."""

    server: RunningServer
    db: Database
    store: RunStore
    reaper: LeaseReaper
    execution: ExecutionServicer
    #: How this replica hears the others (nothing to hear on SQLite).
    notifications: Notifications
    #: Reports NOT_SERVING while the notifications connection is away.
    health_watch: asyncio.Task[None]
    #: Deletes finished runs past the retention policy's age (does nothing without a policy).
    retention: RetentionSweep | None = None
    #: This process's claim of its SQLite file (None on PostgreSQL).
    claim: SqliteClaim | None = None

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 0) -> None:
        """Stop serving (in-flight RPCs get `grace` seconds), then close the database."""
        await self.reaper.stop()
        if self.retention is not None:
            await self.retention.stop()
        self.health_watch.cancel()
        await asyncio.gather(self.health_watch, return_exceptions=True)
        self.execution.close_links()
        await self.server.stop(grace)
        await self.store.close()  # commits the writes still queued
        await self.notifications.close()  # after the last writes' messages had their chance to go
        await self.db.dispose()  # after store operations orphaned by cancelled RPCs have finished
        if self.claim is not None:
            self.claim.release()


async def start_runs(settings: RunsSettings) -> RunsApp:
    """Open the database, create missing tables, start the lease reaper and serve RunService (public) and
    ExecutionService (internal) on settings.host:settings.port."""
    auth = Authenticator.from_settings(settings)
    # On SQLite, one runs process per file: watches, cancel notices and the reaper live in its memory.
    claim = claim_sqlite_file(settings.database_url, "DATABASE_URL")
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    notifications = notifications_for(settings.database_url)
    try:
        # The schema is the migrations' (services/runs/migrations); a database made before they existed is
        # adopted as revision 0001.
        await db.migrate(MIGRATIONS, adopt=("runs", "0001"))
        signals, notices = RunSignals(), ExecutorNotices()
        # On PostgreSQL, several runs replicas may share the database: each tells the others what their watchers
        # and engines must know (services/runs/fanout.py). Listening before serving: nothing is missed.
        RunFanout(notifications, signals, notices)
        await notifications.start()
        store = RunStore(
            db,
            signals,
            notices,
            StoreLimits(max_step_bytes=settings.max_step_bytes, max_attempts=settings.max_attempts),
            PageTokens.from_settings(settings),
        )
        reaper = LeaseReaper(store, settings.reaper_interval_seconds)
        await reaper.start()
        policy = RetentionPolicy(settings.retention_max_age_days, settings.retention_agent_max_age_days)
        retention = RetentionSweep(store, policy, settings.retention_interval_seconds, settings.retention_batch)
        retention.start()
        public = RunServicer(store, settings.watch_heartbeat_seconds, settings.cancel_wait_seconds)
        execution = ExecutionServicer(store)

        def register_public(server: grpc.aio.Server) -> None:
            runs_pb2_grpc.add_RunServiceServicer_to_server(public, server)

        def register_execution(server: grpc.aio.Server) -> None:
            execution_pb2_grpc.add_ExecutionServiceServicer_to_server(execution, server)

        bindings = [
            ServiceBinding(SERVICE_NAME, register_public),
            ServiceBinding(EXECUTION_SERVICE_NAME, register_execution),
        ]
        server = await start_server(bindings, settings.host, settings.port, auth)
        # Cut off from the other replicas (the notifications connection away), a replica's watchers and engines
        # would miss what is written elsewhere: NOT_SERVING until it is back.
        readiness = Readiness(server.health, server.service_names)
        health_watch = asyncio.create_task(serve_while(notifications, readiness), name="notifications health")
    except BaseException:
        await notifications.close()
        await db.dispose()
        if claim is not None:
            claim.release()
        raise
    return RunsApp(server, db, store, reaper, execution, notifications, health_watch, retention, claim)
