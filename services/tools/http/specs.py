"""HTTP tools as an admin creates them: what one holds (HttpToolSpec), its checks, and the `http_tools` table.

The headers' values are secrets: they are stored, sent with every call, and never shown (HttpToolSpec's repr
leaves them out; the API returns their names only).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

import httpx

from services.common.db.database import Database, runs_to_completion, utcnow
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.tools.http.destinations import DestinationPolicy, url_host
from services.tools.http.naming import name_problem, tool_id
from services.tools.named_rows import all_named, delete_named, insert_named, is_header_name
from services.tools.replicas import Announce, announce_nothing
from services.tools.schemas.checks import check_schema
from services.tools.schemas.problems import SchemaProblem
from services.tools.tables import HttpToolRow

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
METHODS: tuple[Method, ...] = get_args(Method)
#: What a tool's creator may declare its calls do, when the method alone does not say it (see calls.hints_of).
Repeatability = Literal["read_only", "idempotent", "not_idempotent"]
REPEATABILITIES: tuple[Repeatability, ...] = get_args(Repeatability)

#: Bounds of a definition, so that one row (and what the model reads of it) stays small.
MAX_DISPLAY_NAME_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 1024
MAX_URL_LENGTH = 2048
MAX_HEADERS = 64
MAX_HEADER_LENGTH = 8192
#: Headers the tools service sets itself: Host (the connection is pinned to a checked address, and the Host header
#: must name the URL's host), and the framing of the body.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "proxy-connection", "proxy-authorization",
})
#: The schema of a tool created without one: no arguments.
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class HttpToolSpec:
    """One HTTP tool: what the model is told, and where and how its calls go."""

    name: str
    display_name: str
    description: str
    parameters: dict[str, Any]
    url: str
    method: Method
    #: Sent with every call (secrets).
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    created_at: datetime | None = None
    #: What the creator declared its calls do; None: the method says it.
    repeatability: Repeatability | None = None

    @property
    def tool_id(self) -> str:
        """The tool's id and function name: http__<name>."""
        return tool_id(self.name)

    @property
    def header_names(self) -> list[str]:
        """The names of the headers, sorted: all that is shown of them."""
        return sorted(self.headers)

    def same_definition(self, other: "HttpToolSpec") -> bool:
        """Whether `other` defines the same tool (its creation time aside)."""
        return (self.name, self.display_name, self.description, self.parameters, self.url, self.method,
                dict(self.headers), self.repeatability) == (
                    other.name, other.display_name, other.description, other.parameters, other.url, other.method,
                    dict(other.headers), other.repeatability)


def http_tool(
    name: str,
    *,
    description: str,
    url: str,
    method: str,
    parameters: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    display_name: str = "",
    repeatability: str | None = None,
    destinations: DestinationPolicy,
) -> HttpToolSpec:
    """A checked definition; InvalidArgument saying what is wrong (a destination the policy refuses included)."""
    if not name:
        raise InvalidArgument("http.name is required (the tool's id is http__<name>, e.g. 'weather')")
    problem = name_problem(name)
    if problem:
        raise InvalidArgument(f"http.{problem}")
    display_name = display_name.strip() or name
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument(f"http.display_name must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    description = description.strip()
    if not description or len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(
            f"http.description is required (the model reads it to know when to call the tool), at most "
            f"{MAX_DESCRIPTION_LENGTH} characters"
        )
    if method not in METHODS:
        raise InvalidArgument(f"http.method must be one of {', '.join(METHODS)}")
    if repeatability is not None and repeatability not in REPEATABILITIES:
        raise InvalidArgument(
            f"http.repeatability must be one of {', '.join(REPEATABILITIES)}, or unset (the method decides)"
        )
    schema = _checked_schema(parameters)
    url = _checked_url(url, destinations)
    headers = dict(headers or {})
    _check_headers(headers)
    return HttpToolSpec(
        name, display_name, description, schema, url, method, headers,
        repeatability=repeatability,
    )


def _checked_schema(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        return check_schema(parameters if parameters else NO_ARGUMENTS)
    except SchemaProblem as exc:
        raise InvalidArgument(f"http.parameters: {exc}") from None


def _checked_url(url: str, destinations: DestinationPolicy) -> str:
    url = url.strip()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if (
        parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or len(url) > MAX_URL_LENGTH
        or any(ch.isspace() for ch in url)
    ):
        raise InvalidArgument(f"http.url must be an http(s) URL with a host, at most {MAX_URL_LENGTH} characters")
    if parsed.userinfo:
        # The URL is returned as given; credentials belong in the headers, whose values never are.
        raise InvalidArgument("http.url must not carry a user or password; send credentials in http.headers")
    if parsed.fragment:
        raise InvalidArgument("http.url must not have a fragment (#...): it is never sent")
    problem = destinations.host_problem(url_host(parsed))
    if problem is not None:
        raise InvalidArgument(f"http.url: {problem}")
    return url


def _check_headers(headers: dict[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument(f"http.headers: at most {MAX_HEADERS} headers")
    for key, value in headers.items():
        if not is_header_name(key):
            raise InvalidArgument(f"http.headers: {key!r} is not a valid header name")
        if key.lower() in RESERVED_HEADERS:
            raise InvalidArgument(f"http.headers: {key!r} is set by the tools service itself")
        # The value is a secret: the message names the key only.
        if len(value) > MAX_HEADER_LENGTH or any(ch in value for ch in "\0\r\n"):
            raise InvalidArgument(
                f"http.headers[{key!r}]: the value must be at most {MAX_HEADER_LENGTH} characters, on one line"
            )


def _spec_from_row(row: HttpToolRow) -> HttpToolSpec:
    return HttpToolSpec(
        row.name, row.display_name, row.description, dict(row.parameters), row.url,
        row.method,  # type: ignore[arg-type]  # the check constraint keeps it one of METHODS
        dict(row.headers), row.created_at,
        row.repeatability,  # type: ignore[arg-type]  # the check constraint keeps it one of REPEATABILITIES
    )


class HttpToolStore:
    """Reads and writes the `http_tools` table."""

    def __init__(self, database: Database, announce: Announce = announce_nothing) -> None:
        self.database = database
        #: Told the name of every tool created or deleted, once committed (services/tools/replicas.py).
        self._announce = announce

    @runs_to_completion
    async def create(self, spec: HttpToolSpec) -> HttpToolSpec:
        """Store a new tool; AlreadyExists when its name is taken."""
        row = HttpToolRow(
            name=spec.name, display_name=spec.display_name, description=spec.description,
            parameters=dict(spec.parameters), url=spec.url, method=spec.method, headers=dict(spec.headers),
            created_at=utcnow(), repeatability=spec.repeatability,
        )
        taken = AlreadyExists(
            f"an HTTP tool named '{spec.name}' ({spec.tool_id}) exists already; delete it first or pick another name"
        )
        stored = await insert_named(self.database, row, _spec_from_row, taken)
        self._announce(stored.name)
        return stored

    async def all(self) -> list[HttpToolSpec]:
        """Every HTTP tool, ordered by name."""
        return await all_named(self.database, HttpToolRow, _spec_from_row)

    @runs_to_completion
    async def delete(self, name: str) -> None:
        """Remove a tool; NotFound when there is none."""
        missing = NotFound(f"tool '{tool_id(name)}' not found; ListTools shows the available tools")
        await delete_named(self.database, HttpToolRow, name, missing)
        self._announce(name)
