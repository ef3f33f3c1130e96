"""Settings of the runs service, read from the environment (see .env.example)."""

from typing import Annotated, Literal

from pydantic import Field

from services.common.pages import PageTokenSettings


class RunsSettings(PageTokenSettings):
    """Where the runs service listens, where it keeps runs, and the timings of watches, cancels and leases."""

    host: str = Field("127.0.0.1", alias="RUNS_HOST")
    #: 0 picks a free port (tests use it).
    port: int = Field(50051, alias="RUNS_PORT", ge=0, le=65535)
    #: Where /metrics is served (Prometheus text), on the same host; 0 picks a free port (logged at start).
    metrics_port: int | None = Field(9181, alias="RUNS_METRICS_PORT", ge=0, le=65535)
    database_url: str = Field("sqlite+aiosqlite:///var/runs.db", alias="DATABASE_URL")
    #: Kept well under typical proxy idle timeouts (Envoy's stream idle timeout defaults to 5 min).
    watch_heartbeat_seconds: float = Field(15.0, alias="RUNS_WATCH_HEARTBEAT_SECONDS", gt=0)
    #: How often the reaper looks for runs whose lease ran out (their engine is gone) and ends them.
    reaper_interval_seconds: float = Field(1.0, alias="RUNS_REAPER_INTERVAL_SECONDS", gt=0, le=60)
    #: How long CancelRun waits for the engine to end a RUNNING run before answering with it still RUNNING.
    cancel_wait_seconds: float = Field(2.0, alias="RUNS_CANCEL_WAIT_SECONDS", ge=0, le=30)
    #: Largest step content accepted, in bytes of its JSON form.
    max_step_bytes: int = Field(1024 * 1024, alias="RUNS_MAX_STEP_BYTES", ge=1024, le=3 * 1024 * 1024)
    #: How many times a run whose engine stopped (its lease ran out) is resumed by another engine from its steps;
    #: a run already resumed that many times ends FAILED "interrupted" when its engine stops again. 0: never
    #: resumed (every such run ends FAILED "interrupted", as before issue 18).
    max_attempts: int = Field(3, alias="RUNS_MAX_ATTEMPTS", ge=0, le=100)
    #: SQLite only. NORMAL (the default, in WAL mode) keeps every committed write through a crash of the process
    #: or of the machine's software, but the last commits before a power loss may be lost; FULL waits for the
    #: disk on every commit (group commit shares that wait between the writes of one transaction).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field("NORMAL", alias="RUNS_SQLITE_SYNCHRONOUS")
    #: Retention (services/runs/retention.py): finished runs are deleted this many days after their creation
    #: (0: kept forever, the default), with their steps and scores; runs on retention hold are kept.
    retention_max_age_days: int = Field(0, alias="RUNS_RETENTION_MAX_AGE_DAYS", ge=0, le=36_500)
    #: Per saved agent, by id, a maximum age replacing the one above for its runs (0: forever), as JSON:
    #: {"7f0e6a62-...": 30}.
    retention_agent_max_age_days: dict[str, Annotated[int, Field(ge=0, le=36_500)]] = Field(
        default_factory=dict, alias="RUNS_RETENTION_AGENT_MAX_AGE_DAYS"
    )
    #: How often the retention sweep runs, and how many runs one of its transactions deletes at most.
    retention_interval_seconds: float = Field(3600.0, alias="RUNS_RETENTION_INTERVAL_SECONDS", gt=0, le=86_400)
    retention_batch: int = Field(500, alias="RUNS_RETENTION_BATCH", ge=1, le=10_000)
