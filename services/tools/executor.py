"""Running a tool: look it up, check it is enabled, validate the arguments, run it within its time limit.

Whatever a tool does, the service survives: caller mistakes come back as the domain errors the tool raised, a time
overrun as DeadlineExceeded, and a tool's own bug as Internal naming the exception (its traceback is logged).
"""

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from services.common.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
)
from services.tools.base import BaseTool, ToolContext, ToolOutput
from services.tools.registry import ToolRegistry
from services.tools.tool_settings import ToolSettingsStore
from services.tools.usage import UsageLedger

log = logging.getLogger(__name__)

#: The most a result may weigh (its text, and its structured form as JSON) before it is cut: the model reads the
#: text on every later turn, and the run store keeps both in a step of at most 1 MiB.
DEFAULT_MAX_RESULT_BYTES = 64 * 1024


class ToolExecution(NamedTuple):
    """What one execution produced, and how long the tool ran (seconds)."""

    output: ToolOutput
    duration: float


class ToolExecutor:
    """Executes enabled tools with validated arguments under a time limit."""

    def __init__(
        self,
        registry: ToolRegistry,
        settings: ToolSettingsStore,
        context: ToolContext,
        timeout_seconds: float,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._context = context
        self._timeout_seconds = timeout_seconds
        self._max_result_bytes = max_result_bytes
        #: Every execution of a known tool, counted for the Manage Tools page.
        self.usage = UsageLedger()

    async def execute(self, tool_id: str, arguments: Mapping[str, Any]) -> ToolExecution:
        """Run `tool_id` with `arguments`; raises NotFound, FailedPrecondition, InvalidArgument,
        DeadlineExceeded, Internal or whatever domain error the tool itself raised."""
        tool = self._registry.get(tool_id)
        started: float | None = None
        try:
            setting = await self._settings.get(tool_id)
            if not setting.enabled:
                raise FailedPrecondition(f"tool '{tool_id}' is disabled; enable it with UpdateTool")
            arguments = dict(arguments)
            validate_arguments(tool, arguments)
            started = time.perf_counter()
            value = await self._run_with_time_limit(tool, arguments)
            duration = time.perf_counter() - started
            execution = ToolExecution(to_tool_output(tool.name, value, self._max_result_bytes), duration)
        except DomainError as exc:
            elapsed = time.perf_counter() - started if started is not None else None
            self.usage.record(tool.name, "timeout" if isinstance(exc, DeadlineExceeded) else "error", elapsed)
            raise
        self.usage.record(tool.name, "ok", duration)
        return execution

    async def _run_with_time_limit(self, tool: BaseTool, arguments: dict[str, Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_seconds) as limit:
                return await _invoke(tool, arguments, self._context)
        except DomainError:
            raise
        except TimeoutError as exc:
            # Only our own limit is a deadline; a TimeoutError the tool raised itself is a tool failure.
            if limit.expired():
                raise DeadlineExceeded(
                    f"tool '{tool.name}' did not finish within {self._timeout_seconds:g} s"
                ) from None
            raise _tool_failure(tool.name, exc) from exc
        except Exception as exc:
            raise _tool_failure(tool.name, exc) from exc


async def _invoke(tool: BaseTool, arguments: dict[str, Any], context: ToolContext) -> Any:
    """Await an async tool; run a synchronous one in a worker thread so the event loop keeps serving.

    A worker thread cannot be killed: past the time limit the caller gets DeadlineExceeded at once while the
    thread finishes on its own. Hard isolation (a subprocess per call) is the planned next step.
    """
    if tool.is_async():
        return await tool.run(arguments, context)
    try:
        inspect.signature(tool.execute).bind(**arguments)
    except TypeError as exc:
        # The schema allowed an argument the function does not take (schemas without additionalProperties).
        raise InvalidArgument(f"arguments do not match {tool.name}'s parameters: {exc}") from None
    return await asyncio.to_thread(tool.execute, **arguments)


def _tool_failure(tool_id: str, exc: BaseException) -> Internal:
    """Log a tool's own exception with its traceback and describe it for the caller."""
    log.error("tool '%s' failed", tool_id, exc_info=exc)
    return Internal(f"tool '{tool_id}' failed: {type(exc).__name__}: {exc}")


def validate_arguments(tool: BaseTool, arguments: dict[str, Any]) -> None:
    """Raise InvalidArgument listing every way the arguments break the tool's schema, each at its JSON path."""
    validator = _validator_for(json.dumps(tool.get_parameters(), sort_keys=True))
    problems = sorted(validator.iter_errors(arguments), key=lambda error: list(map(str, error.absolute_path)))
    if problems:
        details = "; ".join(_describe(problem) for problem in problems)
        raise InvalidArgument(f"arguments do not match {tool.name}'s schema: {details}")


@lru_cache(maxsize=256)
def _validator_for(schema_json: str) -> Draft202012Validator:
    # Keyed by the schema's text, so a plugin file that changes its schema gets a fresh validator.
    return Draft202012Validator(json.loads(schema_json))


def _describe(error: ValidationError) -> str:
    """'at x: 'abc' is not of type 'number'' (no location for problems of the arguments object itself)."""
    location = ""
    for part in error.absolute_path:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
    return f"at {location}: {error.message}" if location else error.message


def to_tool_output(tool_id: str, value: Any, max_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> ToolOutput:
    """Wrap a plain return value as a ToolOutput, make sure its result is JSON (else Internal), and bound it to
    `max_bytes`: a longer text is cut, with a marker that says so (the model must know it did not see
    everything); a structured result whose JSON is longer is dropped, the text standing for it. The result is
    encoded once, for all three."""
    given = value if isinstance(value, ToolOutput) else None
    result = given.result if given is not None else value
    try:
        encoded = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise Internal(f"tool '{tool_id}' returned a result that is not JSON: {exc}") from None
    output = given or ToolOutput(value, value if isinstance(value, str) else encoded)
    if not isinstance(output.text, str):
        raise Internal(f"tool '{tool_id}' returned a non-text text of type {type(output.text).__name__}")
    text = output.text
    size = len(text.encode())
    if size > max_bytes:
        marker = f"\n[cut: the result was {size:,} bytes; the limit is {max_bytes:,}]"
        text = text.encode()[: max(0, max_bytes - len(marker.encode()))].decode(errors="ignore") + marker
    if result is not None and len(encoded.encode()) > max_bytes:
        result = None
    return output if (text, result) == (output.text, output.result) else ToolOutput(result, text)
