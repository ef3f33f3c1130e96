"""The body of every service's `__main__`: settings, logging, tracing, start, serve until SIGTERM/SIGINT, stop."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from services.common.logs import configure_logging
from services.common.metrics import MetricsEndpoint
from services.common.rpc.server import wait_for_shutdown_signal
from services.common.settings import ServiceSettings, SettingsError, load_settings
from services.common.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)


class StoppableApp(Protocol):
    async def stop(self, grace: float = 0) -> None: ...


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
AppT = TypeVar("AppT", bound=StoppableApp)


def run_service(
    service: str,
    settings_cls: type[SettingsT],
    start: Callable[[SettingsT], Awaitable[AppT]],
    describe: Callable[[SettingsT, AppT], str],
) -> None:
    """Run the process of `service` (its name in every log record): a bad setting exits with a message naming
    it; SIGTERM or Ctrl-C stops the service gracefully, giving in-flight calls GRPC_GRACE_SECONDS to finish."""

    async def main() -> None:
        settings = load_settings(settings_cls)
        configure_logging(settings.log_level, settings.log_format, service)
        # Before the app starts: its channels (dial) and server interceptor look at whether tracing is on.
        try:
            configure_tracing(service)
        except (RuntimeError, ValueError) as exc:
            raise SettingsError(f"the OTEL_* tracing settings: {exc}") from None
        metrics = None
        if settings.metrics_port is not None:
            try:
                metrics = MetricsEndpoint.start(settings.host, settings.metrics_port)
            except OSError as exc:
                raise SettingsError(f"cannot serve /metrics on {settings.host}:{settings.metrics_port} (the "
                                    f"service's METRICS_PORT setting): {exc}") from None
        app = await start(settings)
        log.info(describe(settings, app))
        if metrics is not None:
            log.info("metrics at %s", metrics.url)
        await wait_for_shutdown_signal()
        log.info("shutting down (grace %.1fs)", settings.grpc_grace_seconds)
        await app.stop(settings.grpc_grace_seconds)
        shutdown_tracing()  # the spans of the last calls, still in the batch
        if metrics is not None:
            metrics.stop()

    asyncio.run(main())
