"""`python -m services.runs`: serve RunService until SIGTERM/SIGINT."""

import asyncio
import logging

from sqlalchemy.engine import make_url

from services.common.logs import configure_logging
from services.common.server import wait_for_shutdown_signal
from services.common.settings import load_settings
from services.runs.app import start_runs
from services.runs.settings import RunsSettings

log = logging.getLogger("services.runs")


async def main() -> None:
    """Run the runs service until a shutdown signal, then stop it gracefully."""
    settings = load_settings(RunsSettings)
    configure_logging(settings.log_level)
    app = await start_runs(settings)
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    log.info("runs service listening on %s:%d (database %s)", settings.host, app.port, database)
    await wait_for_shutdown_signal()
    log.info("shutting down (grace %.1fs)", settings.grpc_grace_seconds)
    await app.stop(settings.grpc_grace_seconds)


if __name__ == "__main__":
    asyncio.run(main())
