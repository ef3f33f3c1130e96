"""Settings of the migration entry point: the same database variables, with the same defaults, as the services
whose schemas it migrates, so one Secret or .env serves both."""

from pydantic import Field

from services.agents.settings import AgentsSettings
from services.common.settings import ServiceSettings
from services.runs.settings import RunsSettings
from services.tools.settings import ToolsSettings


def _default_url(settings: type[ServiceSettings]) -> str:
    default = settings.model_fields["database_url"].default
    assert isinstance(default, str)
    return default


class MigrateSettings(ServiceSettings):
    """Where each service keeps its schema. They may all be one PostgreSQL database: the schemas' tables and
    Alembic version tables do not overlap."""

    runs_database_url: str = Field(_default_url(RunsSettings), alias="DATABASE_URL")
    tools_database_url: str = Field(_default_url(ToolsSettings), alias="TOOLS_DATABASE_URL")
    agents_database_url: str = Field(_default_url(AgentsSettings), alias="AGENTS_DATABASE_URL")
