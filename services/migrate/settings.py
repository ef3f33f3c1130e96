"""Settings of the migration entry point: the database variables of the services whose schemas it migrates, with
the same names and defaults (tests/deploy/test_migrate.py checks they agree), so one Secret or .env serves both.
Written out rather than read from the services' settings classes: importing those pulls in most of each service,
which every pod's migration step would pay for at each start."""

from pydantic import Field

from services.common.settings import ServiceSettings


class MigrateSettings(ServiceSettings):
    """Where each service keeps its schema. They may all be one PostgreSQL database: the schemas' tables and
    Alembic version tables do not overlap."""

    runs_database_url: str = Field("sqlite+aiosqlite:///var/runs.db", alias="DATABASE_URL")
    tools_database_url: str = Field("sqlite+aiosqlite:///var/tools.db", alias="TOOLS_DATABASE_URL")
    agents_database_url: str = Field("sqlite+aiosqlite:///var/agents.db", alias="AGENTS_DATABASE_URL")
