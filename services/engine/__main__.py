"""`python -m services.engine`: run the engine until SIGTERM/SIGINT."""

import asyncio
import logging

from services.common.logs import configure_logging
from services.common.server import wait_for_shutdown_signal
from services.common.settings import load_settings
from services.engine.app import start_engine
from services.engine.settings import EngineSettings

log = logging.getLogger("services.engine")


async def main() -> None:
    settings = load_settings(EngineSettings)
    configure_logging(settings.log_level)
    app = await start_engine(settings)
    log.info(
        "engine listening on %s:%d (model %s at %s; runs %s; tools %s)",
        settings.host, app.port, settings.llm_model, settings.llm_base_url,
        settings.runs_address, settings.tools_address,
    )
    await wait_for_shutdown_signal()
    await app.stop(settings.grpc_grace_seconds)


if __name__ == "__main__":
    asyncio.run(main())
