"""Running a tool: look it up, check it is enabled and available, validate the arguments, run it within its time
limit: a plugin tool in a worker process, a remote tool (an MCP server's, an HTTP tool) by a call from the
service's event loop.

Everything before the run stays in the service (the lookup, the enabled check, the JSON-schema validation and the
check that the arguments fit the function); only the tool's own code runs in a worker (services.tools.workers),
which can be killed. Whatever a tool does, the service survives: caller mistakes come back as the domain errors the
tool raised, a time overrun as DeadlineExceeded (the worker is killed and replaced), a crash of the worker or a
tool's own bug as Internal naming the tool (a bug's traceback is logged), and a pool that cannot start workers as
Unavailable. A remote tool's call is cancelled at the time limit (the server is told), and its result is bounded
here as a worker bounds a plugin tool's.
"""

import asyncio
import inspect
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from services.common.errors import DeadlineExceeded, DomainError, FailedPrecondition, InvalidArgument, Unavailable
from services.common.identity import Caller
from services.common.json_values import JsonInputError
from services.tools.base import BaseTool, RemoteTool, ToolContext, ToolOutput
from services.tools.metrics import count_call
from services.tools.registry import ToolRegistry
from services.tools.results import DEFAULT_MAX_RESULT_BYTES, to_tool_output
from services.tools.schemas.checks import argument_problems
from services.tools.schemas.problems import SchemaProblem, ValidationTooCostly
from services.tools.tool_settings import ToolSettingsStore
from services.tools.usage import Outcome, UsageLedger
from services.tools.workers.pool import ToolWorkerPool

#: Longest idempotency key accepted: it goes out as an HTTP header value.
MAX_IDEMPOTENCY_KEY_LENGTH = 256

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES", "MAX_IDEMPOTENCY_KEY_LENGTH", "ToolExecution", "ToolExecutor", "to_tool_output",
    "validate_arguments",
]


class ToolExecution(NamedTuple):
    """What one execution produced, and how long it took from the hand-over to the workers to the answer
    (seconds; waiting for a free worker included)."""

    output: ToolOutput
    duration: float


class ToolExecutor:
    """Executes enabled tools with validated arguments in worker processes, under a time limit."""

    def __init__(
        self,
        registry: ToolRegistry,
        settings: ToolSettingsStore,
        workers: ToolWorkerPool,
        timeout_seconds: float,
        *,
        context: ToolContext | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._workers = workers
        self._timeout_seconds = timeout_seconds
        #: What the tools run with, for their availability (the workers have their own copy).
        self._context = context
        #: The bound of a remote tool's result (the workers bound plugin tools' results).
        self._max_result_bytes = max_result_bytes
        #: Every execution of a known tool, counted for the Manage Tools page.
        self.usage = UsageLedger()

    async def execute(
        self, tool_id: str, arguments: Mapping[str, Any], caller: Caller | None = None, idempotency_key: str = ""
    ) -> ToolExecution:
        """Run `tool_id` with `arguments` for `caller` (the RPC's authenticated identity: a plugin tool's workspace is
        that user's; None: no user's, so file_io refuses), passing `idempotency_key` on to the tool (an HTTP tool's
        Idempotency-Key header, an MCP tool's request _meta, a plugin tool's context; checked by
        `checked_idempotency_key`); raises NotFound, FailedPrecondition (disabled),
        Unavailable (the tool cannot run now, or the workers cannot), InvalidArgument, DeadlineExceeded, Internal or
        whatever domain error the tool itself raised."""
        tool = self._registry.get(tool_id)
        started: float | None = None
        try:
            setting = await self._settings.get(tool_id)
            if not setting.enabled:
                raise FailedPrecondition(f"tool '{tool_id}' is disabled; enable it with UpdateTool")
            reason = tool.unavailable_reason(self._context)
            if reason is not None:
                raise Unavailable(f"tool '{tool_id}' is unavailable: {reason}")
            idempotency_key = checked_idempotency_key(idempotency_key)
            arguments = dict(arguments)
            await validate_arguments(tool, arguments)
            check_signature(tool, arguments)
            started = time.perf_counter()
            output = await self._run_with_time_limit(tool, arguments, caller, idempotency_key)
            duration = time.perf_counter() - started
        except DomainError as exc:
            elapsed = time.perf_counter() - started if started is not None else None
            outcome: Outcome = "timeout" if isinstance(exc, DeadlineExceeded) else "error"
            self.usage.record(tool.name, outcome, elapsed)
            count_call(tool.name, outcome if started is not None else "refused", elapsed)
            raise
        self.usage.record(tool.name, "ok", duration)
        count_call(tool.name, "ok", duration)
        return ToolExecution(output, duration)

    async def _run_with_time_limit(
        self, tool: BaseTool, arguments: dict[str, Any], caller: Caller | None, idempotency_key: str
    ) -> ToolOutput:
        # The limit covers waiting for a free worker too: the caller's wait is what it bounds. Leaving the block
        # cancels the pool's call, which kills the worker running it (a tool's own TimeoutError arrives as
        # Internal from the worker, never as this TimeoutError).
        try:
            async with asyncio.timeout(self._timeout_seconds):
                if isinstance(tool, RemoteTool):
                    # I/O to another process or host: no code of it runs here, so no worker is needed.
                    output = await tool.call(arguments, idempotency_key)
                    return to_tool_output(tool.name, output, self._max_result_bytes)
                return await self._workers.run(tool.name, arguments, caller, idempotency_key)
        except TimeoutError:
            raise DeadlineExceeded(f"tool '{tool.name}' did not finish within {self._timeout_seconds:g} s") from None


def checked_idempotency_key(key: str) -> str:
    """The key as sent on (an HTTP header value, a JSON string), or InvalidArgument: printable ASCII without
    spaces, at most MAX_IDEMPOTENCY_KEY_LENGTH characters (the engine's "<run id>:<sequence>" is far shorter)."""
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not all("!" <= ch <= "~" for ch in key):
        raise InvalidArgument(
            f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters without spaces"
        )
    return key


def check_signature(tool: BaseTool, arguments: dict[str, Any]) -> None:
    """Refuse arguments a synchronous tool's `execute` does not take (schemas without additionalProperties allow
    them), before a worker is bothered."""
    if tool.is_async():
        return
    try:
        inspect.signature(tool.execute).bind(**arguments)
    except TypeError as exc:
        raise InvalidArgument(f"arguments do not match {tool.name}'s parameters: {exc}") from None


async def validate_arguments(tool: BaseTool, arguments: dict[str, Any]) -> None:
    """Raise InvalidArgument listing every way the arguments break the tool's schema, each at its JSON path.
    Validation is CPU work bounded in steps (services.tools.schemas), done on a thread so that the event loop (the
    other calls, health checks) carries on meanwhile."""
    try:
        problems = await asyncio.to_thread(argument_problems, tool.get_parameters(), arguments)
    except JsonInputError as exc:
        raise InvalidArgument(f"arguments of {tool.name}: {exc}") from None
    except ValidationTooCostly as exc:
        raise InvalidArgument(f"arguments of {tool.name}: {exc}; send smaller arguments") from None
    except SchemaProblem as exc:  # a schema stored before the checks of services.tools.schemas existed
        raise FailedPrecondition(f"tool '{tool.name}' has a schema that cannot be used ({exc}); recreate it") from None
    if problems:
        raise InvalidArgument(f"arguments do not match {tool.name}'s schema: {'; '.join(problems)}")
