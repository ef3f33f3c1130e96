"""Settings of the tools service, read from TOOLS_* environment variables."""

from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import NoDecode

from services.common.pages import PageTokenSettings
from services.common.settings import CommaSeparated, SettingsError, split_commas
from services.tools.base import (
    DEFAULT_WEB_SEARCH_TIMEOUT_SECONDS,
    DEFAULT_WORKSPACE_MAX_BYTES,
    DEFAULT_WORKSPACE_MAX_FILES,
)
from services.tools.http.destinations import DestinationPolicy
from services.tools.secret_codec import SecretCodec

#: The offline demo corpus shipped with the web_search plugin (the default search backend's data).
BUILTIN_WEB_SEARCH_CORPUS = Path(__file__).resolve().parent / "plugins" / "web_search_corpus.json"


def _none_when_empty(value: object) -> object:
    """An empty TOOLS_WEB_SEARCH_BACKEND means no backend, like "none"."""
    return "none" if isinstance(value, str) and not value.strip() else value


def _unset_when_empty(value: object) -> object:
    """An empty variable means the default, as if it were not set."""
    return None if isinstance(value, str) and not value.strip() else value


class ToolsSettings(PageTokenSettings):
    """Where the tools service listens, keeps its settings table, finds plugins and lets file_io work."""

    host: str = Field("127.0.0.1", alias="TOOLS_HOST")
    #: 0 picks a free port (tests).
    port: int = Field(50052, alias="TOOLS_PORT", ge=0, le=65535)
    #: Where /metrics is served (Prometheus text), on the same host; 0 picks a free port (logged at start).
    metrics_port: int | None = Field(9182, alias="TOOLS_METRICS_PORT", ge=0, le=65535)
    database_url: str = Field("sqlite+aiosqlite:///var/tools.db", alias="TOOLS_DATABASE_URL")
    #: Extra folders of tool plugin files, scanned after the built-in one. NoDecode: the environment gives a
    #: comma-separated string, not the JSON list pydantic-settings would otherwise expect.
    plugin_dirs: Annotated[list[Path], NoDecode, BeforeValidator(split_commas)] = Field(
        default_factory=list, alias="TOOLS_PLUGIN_DIRS"
    )
    #: The only folder file_io may read, write or list: each user works in a folder of their own below it (users/),
    #: unless TOOLS_WORKSPACE_SHARED (services/tools/workspaces/tenancy.py).
    workspace: Path = Field(Path("var/workspace"), alias="TOOLS_WORKSPACE")
    #: One workspace (TOOLS_WORKSPACE/shared) that every user reads and writes, instead of one per user. Off by
    #: default: only an admin who wants users to see each other's files turns it on.
    workspace_shared: bool = Field(False, alias="TOOLS_WORKSPACE_SHARED")
    #: Each workspace's quota in bytes (all its files together: per user, or the shared one's); a write or append
    #: past it is refused whole, saying the quota and the usage.
    workspace_max_bytes: int = Field(DEFAULT_WORKSPACE_MAX_BYTES, alias="TOOLS_WORKSPACE_MAX_BYTES", ge=0)
    #: Each workspace's quota in entries: files and folders counted together (folders cost inodes too).
    workspace_max_files: int = Field(DEFAULT_WORKSPACE_MAX_FILES, alias="TOOLS_WORKSPACE_MAX_FILES", ge=0)
    #: Longest a single tool execution may take, waiting for a free worker included; past it the call is
    #: DEADLINE_EXCEEDED and the worker running it is killed and replaced.
    timeout_seconds: float = Field(30.0, alias="TOOLS_TIMEOUT_SECONDS", gt=0)
    #: How many worker processes run tools' code, each one call at a time; more calls wait for a free worker
    #: (within TOOLS_TIMEOUT_SECONDS). Health says NOT_SERVING while the pool cannot serve: no live worker, and the
    #: last attempt to start one failed (services/tools/workers/pool.py says exactly when).
    #: Three by default: one tool's calls may hold two (TOOLS_WORKERS_PER_TOOL), so two calls of a tool in one turn
    #: run at once and a tool whose calls hang still leaves one worker to the others.
    workers: int = Field(3, alias="TOOLS_WORKERS", ge=1, le=64)
    #: How many of those workers one tool's calls may hold at once; its further calls wait in line while other tools'
    #: calls pass them, so a tool whose calls hang cannot take every worker. Empty: TOOLS_WORKERS - 1 (at least 1).
    #: At most TOOLS_WORKERS (that value lets one tool take them all, as before).
    workers_per_tool: Annotated[int | None, BeforeValidator(_unset_when_empty)] = Field(
        None, alias="TOOLS_WORKERS_PER_TOOL", ge=1, le=64
    )
    #: The address space one worker may use, in MiB (RLIMIT_AS: a bare worker takes about 50, and each thread a tool
    #: starts about 10 more). A tool allocating past it fails with INTERNAL ("ran out of memory") and its worker is
    #: replaced; a limit too small for Python itself stops the service at start, saying so.
    worker_memory_mb: int = Field(512, alias="TOOLS_WORKER_MEMORY_MB", ge=128, le=1024 * 1024)
    #: CPU seconds one call may use (RLIMIT_CPU, whole seconds). Below TOOLS_TIMEOUT_SECONDS by default, so a
    #: busy loop is stopped for its CPU use, saying so; a tool with threads can burn CPU faster than the clock.
    worker_cpu_seconds: int = Field(20, alias="TOOLS_WORKER_CPU_SECONDS", ge=1, le=24 * 3600)
    #: The most a tool's result may weigh, its text and its structured form each; more is cut, with a marker the
    #: model reads (64 KiB: the model reads results on every later turn, and a step holds at most 1 MiB).
    max_result_bytes: int = Field(64 * 1024, alias="TOOLS_MAX_RESULT_BYTES", ge=1024, le=1024 * 1024)
    #: The JSON file ([{title, url, snippet}, ...]) the offline web_search backend searches.
    web_search_corpus: Path = Field(BUILTIN_WEB_SEARCH_CORPUS, alias="TOOLS_WEB_SEARCH_CORPUS")
    #: Who answers web_search: "demo" (the offline corpus above, so `make run` needs no network; every answer says
    #: it comes from that demo corpus, not the live web), "searxng" (a self-hosted SearXNG's JSON API; needs
    #: TOOLS_WEB_SEARCH_URL), "brave" (the Brave Search API; needs TOOLS_WEB_SEARCH_API_KEY) or "none" (also an
    #: empty value): no backend, so web_search shows as unavailable, with the reason, and is not offered to the model.
    web_search_backend: Annotated[
        Literal["demo", "searxng", "brave", "none"], BeforeValidator(_none_when_empty)
    ] = Field("demo", alias="TOOLS_WEB_SEARCH_BACKEND")
    #: searxng: the instance's root URL (http://searxng:8080); its settings.yml must list `json` in search.formats.
    #: brave: overrides the API endpoint (tests); empty means Brave's own.
    web_search_url: str = Field("", alias="TOOLS_WEB_SEARCH_URL")
    #: brave: the X-Subscription-Token. A SecretStr, so it never shows in a repr or a settings error.
    web_search_api_key: SecretStr = Field(SecretStr(""), alias="TOOLS_WEB_SEARCH_API_KEY")
    #: Longest one request to the search backend may take (keep it under TOOLS_TIMEOUT_SECONDS).
    web_search_timeout_seconds: float = Field(
        DEFAULT_WEB_SEARCH_TIMEOUT_SECONDS, alias="TOOLS_WEB_SEARCH_TIMEOUT_SECONDS", gt=0
    )
    #: MCP servers (registered with CreateMcpServer): how often a connected server is pinged, so that one that went
    #: away (its process died, its host stopped answering) has its tools marked unavailable within about this long.
    mcp_ping_seconds: float = Field(10.0, alias="TOOLS_MCP_PING_SECONDS", gt=0)
    #: Longest connecting to an MCP server and listing its tools (and a ping) may take before it counts as away.
    mcp_connect_seconds: float = Field(30.0, alias="TOOLS_MCP_CONNECT_SECONDS", gt=0)
    #: The longest pause between attempts to reconnect to an away MCP server (the pause starts at 0.5 s and
    #: doubles up to this).
    mcp_retry_max_seconds: float = Field(30.0, alias="TOOLS_MCP_RETRY_MAX_SECONDS", ge=0.5, le=3600)
    #: How often the registered MCP servers are re-read from the database anyway. A server registered or deleted
    #: through another replica is announced and taken here within a second (services/tools/replicas.py); this
    #: re-read is for what no message reports (a replica killed between its commit and its message, a row written
    #: by hand, several processes on one SQLite file), which it bounds.
    mcp_sync_seconds: float = Field(60.0, alias="TOOLS_MCP_SYNC_SECONDS", gt=0)
    #: Where streamable HTTP MCP servers may be, comma-separated, in the forms of TOOLS_HTTP_ALLOWED_HOSTS and under
    #: the same address rules (services/tools/http/destinations.py), checked at CreateMcpServer and before every
    #: connection. '*' (the default): any host whose addresses are public.
    mcp_allowed_hosts: CommaSeparated = Field(default_factory=lambda: ["*"], alias="TOOLS_MCP_ALLOWED_HOSTS")
    #: Whether HTTP MCP servers may be on loopback, private and other non-public addresses (a server on the same
    #: host or network): off by default, like TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS; listing the network is the narrower
    #: way. Link-local addresses are refused even then, unless listed.
    mcp_allow_private_networks: bool = Field(False, alias="TOOLS_MCP_ALLOW_PRIVATE_NETWORKS")
    #: HTTP tools (created with CreateTool): the hosts they may call, comma-separated. Each entry is a host name
    #: (api.example.com), a domain's names ('*.example.com', not example.com itself), '*' (any host), or an IP
    #: address or network in CIDR (203.0.113.0/24): URLs with such an address as host are allowed, and so is
    #: connecting to addresses in it that are not public. Empty (the default): no host, so no HTTP tool can be
    #: created. Checked at CreateTool and at every call (services/tools/http/destinations.py says exactly how).
    http_allowed_hosts: CommaSeparated = Field(default_factory=list, alias="TOOLS_HTTP_ALLOWED_HOSTS")
    #: Whether HTTP tools may connect to loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7) and other
    #: non-public addresses. Off by default: a tool's URL, or what its name resolves to at call time, must then be
    #: a public address unless its network is listed in TOOLS_HTTP_ALLOWED_HOSTS. Link-local addresses (the cloud
    #: metadata endpoint 169.254.169.254) and unspecified ones are refused even then, unless listed.
    http_allow_private_networks: bool = Field(False, alias="TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS")
    #: How often the HTTP tools are re-read from the database anyway, as TOOLS_MCP_SYNC_SECONDS: one created or
    #: deleted through another replica is announced and taken here within a second; this bounds what was missed.
    http_sync_seconds: float = Field(60.0, alias="TOOLS_HTTP_SYNC_SECONDS", gt=0)
    #: Fernet keys, comma-separated, the newest first, that encrypt the stored secrets (MCP servers' env and
    #: headers, HTTP tools' headers): the first encrypts, every one decrypts (services/tools/secret_codec.py).
    #: Required: the service does not start without one. `make run` keeps one in var/tools-secret-keys.
    secret_keys: SecretStr = Field(SecretStr(""), alias="TOOLS_SECRET_KEYS")

    def secret_codec(self) -> SecretCodec:
        """The codec of TOOLS_SECRET_KEYS; SettingsError, saying how to make a key, when there is none or one is
        not a key."""
        return SecretCodec.parse(self.secret_keys.get_secret_value())

    def http_destinations(self) -> DestinationPolicy:
        """The allow list and address rules of HTTP tools."""
        return DestinationPolicy.parse(self.http_allowed_hosts, self.http_allow_private_networks)

    def mcp_destinations(self) -> DestinationPolicy:
        """The allow list and address rules of streamable HTTP MCP servers."""
        return DestinationPolicy.parse(
            self.mcp_allowed_hosts, self.mcp_allow_private_networks, subject="MCP servers",
            hosts_setting="TOOLS_MCP_ALLOWED_HOSTS", private_setting="TOOLS_MCP_ALLOW_PRIVATE_NETWORKS",
        )

    @model_validator(mode="after")
    def _workers_per_tool_fits(self) -> Self:
        if self.workers_per_tool is not None and self.workers_per_tool > self.workers:
            raise SettingsError(
                f"TOOLS_WORKERS_PER_TOOL ({self.workers_per_tool}) cannot be above TOOLS_WORKERS ({self.workers})"
            )
        return self

    @model_validator(mode="after")
    def _http_allowed_hosts_parse(self) -> Self:
        """Refuse at start an allow-list entry that is none of the forms, rather than one that silently allows
        nothing."""
        try:
            self.http_destinations()
            self.mcp_destinations()
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _web_search_backend_is_usable(self) -> Self:
        """Refuse at start a backend that could never answer. SettingsError (a SystemExit) passes through pydantic
        untouched; a ValueError would be reported with every input, the API key among them."""
        url = self.web_search_url.strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(f"TOOLS_WEB_SEARCH_URL must be an http(s) URL with a host, got {url!r}")
        if self.web_search_backend == "searxng" and not url:
            raise SettingsError(
                "TOOLS_WEB_SEARCH_URL is required when TOOLS_WEB_SEARCH_BACKEND=searxng (the SearXNG root URL, "
                "e.g. http://localhost:8888)"
            )
        if self.web_search_backend == "brave" and not self.web_search_api_key.get_secret_value().strip():
            raise SettingsError("TOOLS_WEB_SEARCH_API_KEY is required when TOOLS_WEB_SEARCH_BACKEND=brave")
        return self
