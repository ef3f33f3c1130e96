"""`python -m services.tools`: run the tools service until SIGTERM/SIGINT."""

import asyncio
import logging

from services.common.logs import configure_logging
from services.common.server import wait_for_shutdown_signal
from services.common.settings import load_settings
from services.tools.app import start_tools
from services.tools.settings import ToolsSettings

log = logging.getLogger("services.tools")


async def main() -> None:
    """Start the service, serve until a shutdown signal, then stop gracefully."""
    settings = load_settings(ToolsSettings)
    configure_logging(settings.log_level)
    app = await start_tools(settings)
    log.info("tools service listening on %s:%d (workspace %s)", settings.host, app.port, settings.workspace)
    await wait_for_shutdown_signal()
    log.info("shutting down (grace %.1fs)", settings.grpc_grace_seconds)
    await app.stop(settings.grpc_grace_seconds)


if __name__ == "__main__":
    asyncio.run(main())
