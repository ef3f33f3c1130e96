"""`python -m services.demo_model`: serve the offline demo model until SIGTERM/SIGINT."""

import asyncio
import logging

from services.common.logs import configure_logging
from services.common.server import wait_for_shutdown_signal
from services.common.settings import load_settings
from services.demo_model.app import start_demo_model
from services.demo_model.settings import DemoModelSettings

log = logging.getLogger("services.demo_model")


async def main() -> None:
    """Start the demo model, serve until a shutdown signal, then stop letting open streams finish."""
    settings = load_settings(DemoModelSettings)
    configure_logging(settings.log_level)
    app = await start_demo_model(settings)
    log.info(
        "offline demo model (deterministic, no API key needed) serving OpenAI chat completions on %s",
        app.server.base_url,
    )
    await wait_for_shutdown_signal()
    log.info("shutting down (grace %.1fs)", settings.grpc_grace_seconds)
    await app.stop(settings.grpc_grace_seconds)


if __name__ == "__main__":
    asyncio.run(main())
