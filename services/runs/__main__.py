"""`python -m services.runs`: run the runs service until SIGTERM/SIGINT."""

from sqlalchemy.engine import make_url

from services.common.process import run_service
from services.runs.app import RunsApp, start_runs
from services.runs.settings import RunsSettings


def describe(settings: RunsSettings, app: RunsApp) -> str:
    """The start-up log line; the database URL without its password."""
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    return f"runs service listening on {settings.host}:{app.port} (database {database})"


if __name__ == "__main__":
    run_service("runs", RunsSettings, start_runs, describe)
