"""The contract every tool plugin implements: `BaseTool`, and what a run gets (`ToolContext`) and gives (`ToolOutput`).

A tool is a class in a plugin file. Its `name` is its id and the function name the model calls. It runs in one
of two ways:

* `async def run(self, arguments: dict, context: ToolContext) -> ToolOutput` — for tools that await things or
  need the context (the workspace folder, ...); it runs in an event loop of its own for the call;
* `def execute(self, **kwargs)` — the seed's plain synchronous style.

Either way the code runs in a tool worker process (services.tools.workers), never in the service's own process: a
tool may block, and is killed at its time limit. It must not rely on state shared with the service or kept between
calls (a call may land on any worker, and workers are replaced), and it runs under the workers' memory and CPU
limits (TOOLS_WORKER_MEMORY_MB, TOOLS_WORKER_CPU_SECONDS).

Either may return a `ToolOutput` or a plain JSON value (str, number, dict, list) that the executor wraps. A tool
signals a caller's mistake by raising a `services.common.errors` exception (InvalidArgument, NotFound, ...); it
reaches the caller as that status with that message.
"""

import copy
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from services.common.identity import Caller
from services.tools.schemas.checks import check_schema
from services.tools.schemas.problems import SchemaProblem

#: OpenAI's rule for function names; the tool id is the function name.
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

#: Default quota of the workspace: bytes in its files, and entries (files and folders) in it.
DEFAULT_WORKSPACE_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_WORKSPACE_MAX_FILES = 10_000
#: Default time limit of one request to web_search's HTTP backend.
DEFAULT_WEB_SEARCH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ToolContext:
    """What the service lends a tool for one execution (services.tools.workspaces.tenancy.call_context makes it
    per call)."""

    #: The only folder file-touching tools may use (absolute, resolved): in a call, the caller's own workspace (or
    #: the shared one), None when the call runs on no user's behalf; in the service's own copy, TOOLS_WORKSPACE.
    workspace: Path | None
    #: The JSON corpus of the offline web search backend.
    web_search_corpus: Path
    #: The workspace's quota: bytes in all its files, and files and folders counted together.
    workspace_max_bytes: int = DEFAULT_WORKSPACE_MAX_BYTES
    workspace_max_files: int = DEFAULT_WORKSPACE_MAX_FILES
    #: Which backend web_search asks: "demo" (the offline corpus), "searxng" or "brave".
    web_search_backend: str = "demo"
    #: SearXNG's root URL, or the Brave endpoint when overridden ("" for Brave's own).
    web_search_url: str = ""
    #: The hosted backend's API key; repr=False keeps it out of logs and tracebacks.
    web_search_api_key: str = field(default="", repr=False)
    #: Time limit of one request to the backend.
    web_search_timeout_seconds: float = DEFAULT_WEB_SEARCH_TIMEOUT_SECONDS
    #: One workspace for every user (TOOLS_WORKSPACE_SHARED) instead of one each.
    workspace_shared: bool = False
    #: Who the call runs for (the RPC's authenticated caller, set by the worker; None in the service's own copy).
    caller: Caller | None = None
    #: The call's idempotency key (services.tools.executor): the same on every repeat of one call, so that a tool
    #: acting on another system can pass it on and act once. Empty when the caller sent none.
    idempotency_key: str = ""


@dataclass(frozen=True)
class ToolOutput:
    """A tool's answer: a JSON value for programs and a text for the model."""

    result: Any
    text: str


@dataclass(frozen=True)
class ToolHints:
    """What a tool does to the world, with the meaning of MCP's tool annotations. The defaults are MCP's: a tool
    that declares nothing is assumed to write, possibly destructively, not idempotently, reaching outside."""

    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True

    @property
    def repeat_safe(self) -> bool:
        """Whether a call whose outcome is unknown (its engine died before recording its result) may simply be run
        again, with the same idempotency key: a tool that changes nothing, or whose repeat has no further effect.
        Otherwise a person decides. The engine reads it as the Tool message's `repeat_safe`."""
        return self.read_only or self.idempotent


@dataclass(frozen=True)
class RepeatSafeCalls:
    """The calls of a tool that is not repeat-safe as a whole which are: those whose `argument` is one of `values`
    (a tool of several operations, some of which only read). Checked by the engine against a call's recorded
    arguments, so it must be decidable from them alone."""

    argument: str
    values: frozenset[str]


class InvalidToolError(Exception):
    """A plugin class that cannot be offered as a tool; the message says why."""


class BaseTool(ABC):
    """Base class of every tool. Subclasses set the metadata and implement `run` or `execute`.

    The metadata is a plugin tool's class attributes, and a remote tool's (an MCP server's, an HTTP tool) instance
    attributes, set from what the server or the spec says: so not ClassVars. A remote tool's schema is its
    instance's too: it overrides `get_parameters`."""

    #: The tool's id: the function name the model calls (^[a-zA-Z0-9_-]{1,64}$).
    name: str
    #: A human name for the UI.
    display_name: str
    #: What the tool does; the model reads this.
    description: str
    #: The frontend's icon name.
    icon: ClassVar[str] = "IconTool"
    #: What it does to the world (ListTools shows them; approval policies may use them). Also whether a call whose
    #: outcome is unknown may be repeated (`ToolHints.repeat_safe`: read_only or idempotent): the default declares
    #: neither, the safe answer, so a plugin tool is repeated only if its class says so.
    hints: ToolHints = ToolHints()
    #: For a tool not repeat-safe as a whole: which of its calls are (None: none).
    repeat_safe_calls: RepeatSafeCalls | None = None
    #: Whether calls of the tool wait for a person's approval before they run, unless an admin says otherwise
    #: with UpdateTool ("requires_approval").
    requires_approval: ClassVar[bool] = False
    #: The JSON schema of the arguments: a dict, or a method returning one (the seed's `get_parameters`
    #: may be overridden instead).
    parameters: ClassVar[Any] = None
    #: The MCP server the tool comes from; empty for built-in and plugin tools.
    mcp_server: str = ""

    def unavailable_reason(self, context: ToolContext | None) -> str | None:
        """Why the tool cannot run now (its MCP server is not connected, its backend is not configured), or None
        when it can. An unavailable tool is not offered to the model and executing it is Unavailable. Checked in
        the service, with its context (None when it has none: the tool is then taken as available)."""
        return None

    def get_parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments (a copy, so callers cannot change the tool's own)."""
        value = self.parameters
        if callable(value):
            value = value()
        if not isinstance(value, dict):
            raise InvalidToolError(f"parameters must be a JSON schema object (a dict), got {type(value).__name__}")
        return copy.deepcopy(value)

    def get_schema(self, description_override: str | None = None) -> dict[str, Any]:
        """The OpenAI function schema sent to the model, with the description override when one is set."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": description_override or self.description,
                "parameters": self.get_parameters(),
            },
        }

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Run the tool. Override this, or `execute` for a synchronous tool."""
        raise NotImplementedError(f"tool {self.name!r} implements neither run() nor execute()")

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the tool synchronously (the seed's style). Override this, or `run`. An override names the arguments
        it takes as its parameters (the executor checks the call against that signature), so each override's
        signature is its own: typed `*args: Any, **kwargs: Any` here, which type checkers take as "any signature"."""
        raise NotImplementedError(f"tool {self.name!r} implements neither run() nor execute()")

    @classmethod
    def is_async(cls) -> bool:
        """True when the tool overrides `run` (the worker awaits it), False when it overrides `execute`."""
        return cls.run is not BaseTool.run


def check_tool(tool: BaseTool) -> None:
    """Raise InvalidToolError saying what is wrong with a tool, so that a bad plugin is skipped, not served."""
    cls = type(tool)
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
        raise InvalidToolError(f"name {name!r} must match {TOOL_NAME_PATTERN.pattern} (OpenAI's function-name rule)")
    for attribute in ("display_name", "description", "icon"):
        value = getattr(cls, attribute, None)
        if not isinstance(value, str) or not value.strip():
            raise InvalidToolError(f"{attribute} must be a non-empty string, got {value!r}")
    if not isinstance(getattr(cls, "hints", None), ToolHints):
        raise InvalidToolError(f"hints must be a ToolHints, got {getattr(cls, 'hints', None)!r}")
    calls = getattr(cls, "repeat_safe_calls", None)
    if calls is not None and not isinstance(calls, RepeatSafeCalls):
        raise InvalidToolError(f"repeat_safe_calls must be a RepeatSafeCalls or None, got {calls!r}")
    if cls.run is BaseTool.run and cls.execute is BaseTool.execute:
        raise InvalidToolError("it implements neither run() nor execute()")
    try:
        check_schema(tool.get_parameters())
    except SchemaProblem as exc:
        raise InvalidToolError(f"parameters: {exc}") from None


class RemoteTool(BaseTool):
    """A tool whose code runs in another process or host (an MCP server's tool, an HTTP tool's endpoint). The
    service calls it itself, on its event loop and under the same time limit, instead of handing it to a tool
    worker: it is I/O, and no code of it runs in our process. Never found by a worker's registry (it is not
    defined in a plugin file)."""

    @abstractmethod
    async def call(self, arguments: dict[str, Any], idempotency_key: str = "") -> ToolOutput:
        """Run the tool with validated arguments, passing `idempotency_key` on to the other side when not empty (the
        same on every repeat of one call); raise a services.common.errors exception when it fails."""
