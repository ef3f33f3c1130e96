"""Registered MCP servers: what a registration holds (McpServerSpec), its checks, and the `mcp_servers` table.

A registration says how to reach a server: a stdio command (with its arguments and extra environment) or a
streamable HTTP URL (with headers). The environment's and the headers' values are secrets: they are stored, used
to connect, and never shown (McpServerSpec's repr leaves them out; the API returns their names only).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from services.common.db.database import Database, runs_to_completion, utcnow
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.tools.mcp.naming import server_name_problem
from services.tools.named_rows import all_named, delete_named, insert_named, is_header_name
from services.tools.replicas import Announce, announce_nothing
from services.tools.tables import McpServerRow

Transport = Literal["stdio", "http"]

#: Bounds of a registration, so that one row stays small.
MAX_COMMAND_LENGTH = 4096
MAX_ARGS = 256
MAX_ARG_LENGTH = 4096
MAX_SECRETS = 64
MAX_SECRET_LENGTH = 8192
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class McpServerSpec:
    """How to reach one registered MCP server."""

    name: str
    transport: Transport
    command: str = ""
    args: tuple[str, ...] = ()
    #: stdio: extra environment variables of the process (secrets).
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    url: str = ""
    #: http: headers sent with every request (secrets).
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    created_at: datetime | None = None

    @property
    def secret_names(self) -> list[str]:
        """The names of the environment variables (stdio) or headers (http), sorted: all that is shown of them."""
        return sorted(self.env if self.transport == "stdio" else self.headers)


def stdio_server(
    name: str, command: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> McpServerSpec:
    """A checked stdio registration; InvalidArgument saying what is wrong."""
    _check_name(name)
    if not command.strip():
        raise InvalidArgument("mcp_server.stdio.command is required (the program that runs the server)")
    if len(command) > MAX_COMMAND_LENGTH or "\0" in command:
        raise InvalidArgument(f"mcp_server.stdio.command must be at most {MAX_COMMAND_LENGTH} characters, without NUL")
    if len(args) > MAX_ARGS or any(len(arg) > MAX_ARG_LENGTH or "\0" in arg for arg in args):
        raise InvalidArgument(
            f"mcp_server.stdio.args: at most {MAX_ARGS} arguments of at most {MAX_ARG_LENGTH} characters, without NUL"
        )
    env = dict(env or {})
    _check_secrets(env, "mcp_server.stdio.env", name_ok=lambda key: bool(key) and "=" not in key and "\0" not in key)
    return McpServerSpec(name, "stdio", command=command, args=tuple(args), env=env)


def http_server(name: str, url: str, headers: Mapping[str, str] | None = None) -> McpServerSpec:
    """A checked streamable HTTP registration; InvalidArgument saying what is wrong."""
    _check_name(name)
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(
            f"mcp_server.http.url must be an http(s) URL with a host, at most {MAX_URL_LENGTH} characters"
        )
    headers = dict(headers or {})
    _check_secrets(headers, "mcp_server.http.headers", name_ok=is_header_name)
    return McpServerSpec(name, "http", url=url, headers=headers)


def _check_name(name: str) -> None:
    if not name:
        raise InvalidArgument("mcp_server.name is required (the namespace of the server's tools, e.g. 'github')")
    problem = server_name_problem(name)
    if problem:
        raise InvalidArgument(f"mcp_server.{problem}")


def _check_secrets(values: dict[str, str], field_name: str, *, name_ok: Callable[[str], bool]) -> None:
    if len(values) > MAX_SECRETS:
        raise InvalidArgument(f"{field_name}: at most {MAX_SECRETS} entries")
    for key, value in values.items():
        if not name_ok(key):
            raise InvalidArgument(f"{field_name}: {key!r} is not a valid name")
        # The value is a secret: the message names the key only.
        if len(value) > MAX_SECRET_LENGTH or "\0" in value or "\n" in value or "\r" in value:
            raise InvalidArgument(
                f"{field_name}[{key!r}]: the value must be at most {MAX_SECRET_LENGTH} characters, on one line"
            )


def _spec_from_row(row: McpServerRow) -> McpServerSpec:
    if row.transport == "stdio":
        return McpServerSpec(
            row.name, "stdio", command=row.command or "", args=tuple(row.args or ()), env=dict(row.env or {}),
            created_at=row.created_at,
        )
    headers = dict(row.headers or {})
    return McpServerSpec(row.name, "http", url=row.url or "", headers=headers, created_at=row.created_at)


class McpServerStore:
    """Reads and writes the `mcp_servers` table."""

    def __init__(self, database: Database, announce: Announce = announce_nothing) -> None:
        self.database = database
        #: Told the name of every server registered or deleted, once committed (services/tools/replicas.py).
        self._announce = announce

    @runs_to_completion
    async def create(self, spec: McpServerSpec) -> McpServerSpec:
        """Store a new registration; AlreadyExists when its name is taken."""
        row = McpServerRow(
            name=spec.name,
            transport=spec.transport,
            command=spec.command if spec.transport == "stdio" else None,
            args=list(spec.args) if spec.transport == "stdio" else None,
            env=dict(spec.env) if spec.transport == "stdio" else None,
            url=spec.url if spec.transport == "http" else None,
            headers=dict(spec.headers) if spec.transport == "http" else None,
            created_at=utcnow(),
        )
        taken = AlreadyExists(
            f"an MCP server named '{spec.name}' is registered already; delete it first or pick another name"
        )
        stored = await insert_named(self.database, row, _spec_from_row, taken)
        self._announce(stored.name)
        return stored

    async def all(self) -> list[McpServerSpec]:
        """Every registration, ordered by name."""
        return await all_named(self.database, McpServerRow, _spec_from_row)

    @runs_to_completion
    async def delete(self, name: str) -> None:
        """Remove a registration; NotFound when there is none."""
        missing = NotFound(f"no MCP server named '{name}'; ListMcpServers shows the registered ones")
        await delete_named(self.database, McpServerRow, name, missing)
        self._announce(name)
