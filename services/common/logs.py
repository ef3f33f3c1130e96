"""Logging set-up: one line per record, tagged with the service name and the current request id."""

import contextvars
import logging
import sys

#: The id of the request being handled; set by the server interceptor, read by every log record.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str) -> None:
    """Send logs to stderr with the request id in every line (the launcher prefixes the process name)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [req=%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP clients (httpx, and the copy the openai SDK ships as httpx2) log every request at INFO: one line
    # per model call says nothing the run's steps don't, and at a thousand runs it costs real CPU.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
