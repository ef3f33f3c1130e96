"""Logging set-up for every service: one JSON object per line (`LOG_FORMAT=json`, the default, what a log
collector reads) or one readable line (`LOG_FORMAT=text`, what `make run` shows), tagged with the service and with
the request and the run being handled where there is one.

The request id is set by the server interceptor (services.common.rpc.interceptor) for the RPC it wraps; the run id
by the engine for the task executing a run (services.engine.execution.scheduler). Both are context variables:
asyncio gives every task its own copy, so a value set in one RPC or run never shows in another's lines.
"""

import contextvars
import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

#: The id of the request being handled; "" outside an RPC.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
#: The id of the run being executed or acted on; "" when none is.
run_id: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default="")

LogFormat = Literal["json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(context)s] %(message)s"


class _JsonContext(logging.Filter):
    """Adds `request_id` and `run_id` to a record when they are set: the JSON formatter writes a record's extra
    attributes as fields, and a field that is always "-" would only be noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if rid := request_id.get():
            record.request_id = rid
        if run := run_id.get():
            record.run_id = run
        return True


class _TextContext(logging.Filter):
    """The same context as one bracketed tag: `req=<id>` and, when there is one, `run=<id>`."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = f"req={request_id.get() or '-'}"
        if run := run_id.get():
            context += f" run={run}"
        record.context = context
        return True


def json_formatter(service: str) -> logging.Formatter:
    """One JSON object per record: time (ISO 8601, UTC), level, service, logger, message, the request and run ids
    when set, the traceback under `exc_info` when there is one."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": service},
        timestamp="time",
    )


def configure_logging(level: str, log_format: LogFormat = "text", service: str = "") -> None:
    """Send the process's logs to stderr in `log_format` (the launcher prefixes text lines with the process name)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.addFilter(_JsonContext())
        handler.setFormatter(json_formatter(service))
    else:
        handler.addFilter(_TextContext())
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP clients (httpx, and the copy the openai SDK ships as httpx2) log every request at INFO: one line
    # per model call says nothing the run's steps don't, and at a thousand runs it costs real CPU.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Alembic logs each migration it applies at INFO, about 20 lines on a new database, and every service start
    # prints its set-up: Database.migrate says the outcome in one line instead; Alembic's own lines show at DEBUG.
    logging.getLogger("alembic").setLevel(logging.WARNING if root.level > logging.DEBUG else root.level)
