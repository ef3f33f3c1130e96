"""Every service's schema and how it is migrated: the calls each service's app makes at start, in one list the
migration entry point (services/migrate/__main__.py) and its tests walk."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from services.agents.models import MIGRATIONS as AGENTS_MIGRATIONS
from services.agents.models import VERSION_TABLE as AGENTS_VERSION_TABLE
from services.common.db.database import Database
from services.migrate.settings import MigrateSettings
from services.runs.models import MIGRATIONS as RUNS_MIGRATIONS
from services.tools.tables import MIGRATIONS as TOOLS_MIGRATIONS
from services.tools.tool_settings import ToolSettingsStore

#: The runs and agents services' migrations, as their apps name them (services/runs/app.py, services/agents/app.py;
#: tests/deploy/test_migrate.py checks they agree). Not imported from there: the apps pull in gRPC and, for agents,
#: the openai SDK, seconds of start-up on a busy node for every pod's migration step.


@dataclass(frozen=True)
class Schema:
    name: str
    #: package:folder of its Alembic migrations.
    migrations: str
    url: Callable[[MigrateSettings], str]
    migrate: Callable[[Database], Awaitable[None]]

    def head(self) -> str:
        """The newest revision of its migrations."""
        config = Config()
        config.set_main_option("script_location", self.migrations)
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None, f"{self.migrations} has no revision"
        return head


async def _migrate_runs(database: Database) -> None:
    # As services/runs/app.py does at start: a runs database made before migrations existed is adopted as 0001.
    await database.migrate(RUNS_MIGRATIONS, adopt=("runs", "0001"))


async def _migrate_tools(database: Database) -> None:
    await ToolSettingsStore(database).migrate()


async def _migrate_agents(database: Database) -> None:
    # As services/agents/app.py does at start.
    await database.migrate(AGENTS_MIGRATIONS, version_table=AGENTS_VERSION_TABLE)


SCHEMAS = (
    Schema("runs", RUNS_MIGRATIONS, lambda settings: settings.runs_database_url, _migrate_runs),
    Schema("tools", TOOLS_MIGRATIONS, lambda settings: settings.tools_database_url, _migrate_tools),
    Schema("agents", AGENTS_MIGRATIONS, lambda settings: settings.agents_database_url, _migrate_agents),
)


class MigrationFailed(Exception):
    """A schema could not be migrated; the message names the schema, its database and the cause."""


async def migrate_schema(schema: Schema, url: str) -> None:
    """Migrate one schema to head on the database at `url`. Idempotent; on PostgreSQL it holds the schema's
    advisory lock, so replicas starting at the same time wait for it instead of racing."""
    try:
        database = Database(url)
    except Exception as exc:  # a malformed URL or an unknown driver: sqlalchemy's errors, several kinds
        raise MigrationFailed(f"{schema.name}: cannot use its database URL: {exc}") from exc
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        await schema.migrate(database)
    except Exception as exc:
        raise MigrationFailed(f"{schema.name}: migrating {shown} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        await database.dispose()
