"""Settings of the runs service, read from the environment (see .env.example)."""

from pydantic import Field

from services.common.settings import ServiceSettings


class RunsSettings(ServiceSettings):
    """Where the runs service listens, where it keeps runs, and how often quiet watch streams get a heartbeat."""

    host: str = Field("127.0.0.1", alias="RUNS_HOST")
    #: 0 picks a free port (tests use it).
    port: int = Field(50051, alias="RUNS_PORT", ge=0, le=65535)
    database_url: str = Field("sqlite+aiosqlite:///var/runs.db", alias="DATABASE_URL")
    #: Kept well under typical proxy idle timeouts (Envoy's stream idle timeout defaults to 5 min).
    watch_heartbeat_seconds: float = Field(15.0, alias="RUNS_WATCH_HEARTBEAT_SECONDS", gt=0)
