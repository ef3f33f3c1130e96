"""`python -m services.agents`: run the agents service until SIGTERM/SIGINT."""

from sqlalchemy.engine import make_url

from services.agents.app import AgentsApp, start_agents
from services.agents.settings import AgentsSettings
from services.common.process import run_service


def describe(settings: AgentsSettings, app: AgentsApp) -> str:
    """The start-up log line; the database URL without its password."""
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    models = f"models checked against {settings.llm_base_url}" if settings.llm_base_url else "models not checked"
    return (f"agents service listening on {settings.host}:{app.port} (database {database}; tools service at "
            f"{settings.tools_addr}; {models})")


if __name__ == "__main__":
    run_service("agents", AgentsSettings, start_agents, describe)
