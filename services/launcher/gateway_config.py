"""Renders gateway/envoy.template.yaml into a concrete Envoy config for a given set of addresses and settings."""

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from services.common.identity import MAX_USER_ID
from services.launcher.settings import GatewaySettings

TEMPLATE = Path(__file__).resolve().parents[2] / "gateway" / "envoy.template.yaml"
#: The public API's descriptor set (`make descriptor`), which the grpc_json_transcoder reads for the REST paths.
#: Embedded in the config (base64), so a container needs no second file beside it.
API_DESCRIPTOR = TEMPLATE.parent / "api-descriptor.binpb"
#: The OpenAPI document of the REST paths (`make openapi`), which the gateway serves at GET /api/openapi.json.
OPENAPI_DOCUMENT = TEMPLATE.parent / "openapi.json"

#: The longest path a Unix socket may have (sun_path is 108 bytes on Linux, with its terminating NUL).
MAX_SOCKET_PATH = 107

#: `# when NAME:` … `# end NAME` in the template: a section kept only when NAME is on.
_SECTION = re.compile(r"^[ \t]*# when (\w+):\n(.*?)^[ \t]*# end \1\n", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Upstream:
    """One address of a service's replicas. A host name Envoy resolves (STRICT_DNS) stands for every address it
    has: a Kubernetes headless Service names every ready pod."""

    host: str
    port: int


def _endpoints(upstreams: Upstream | Sequence[Upstream]) -> str:
    """The cluster's lb_endpoints (JSON) for one upstream or several (replicas Envoy balances over)."""
    listed = [upstreams] if isinstance(upstreams, Upstream) else list(upstreams)
    if not listed:
        raise ValueError("a cluster needs at least one upstream")
    return json.dumps(
        [{"endpoint": {"address": {"socket_address": {"address": u.host, "port_value": u.port}}}} for u in listed]
    )


@dataclass(frozen=True)
class AdminSocket:
    """Envoy's admin interface on a Unix socket, readable and writable by its owner only."""

    path: Path

    def address(self) -> dict[str, object]:
        if len(str(self.path)) > MAX_SOCKET_PATH:
            raise ValueError(f"the admin socket path {self.path} is longer than {MAX_SOCKET_PATH} bytes")
        return {"pipe": {"path": str(self.path), "mode": 0o600}}


@dataclass(frozen=True)
class AdminLoopback:
    """Envoy's admin interface on a loopback port (containers, whose loopback only their own pod reaches)."""

    port: int

    def address(self) -> dict[str, object]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": self.port}}


@dataclass(frozen=True)
class TokenFromEnvironment:
    """A service token Envoy reads from its own environment at start (%ENVIRONMENT(NAME)%), for a config file
    that is checked in and must hold no secret."""

    variable: str


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _section(name: str, on: bool, text: str) -> str:
    def keep(match: re.Match[str]) -> str:
        if match.group(1) != name:
            return match.group(0)
        return match.group(2) if on else ""

    return _SECTION.sub(keep, text)


def _jwks(path: str) -> str:
    """The JWKS file's text, checked to be a key set (Envoy would otherwise fail only at start)."""
    text = Path(path).read_text()
    keys = json.loads(text).get("keys")
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{path} is not a JWKS document (a JSON object with a non-empty 'keys' list)")
    return text


def render_gateway_config(
    settings: GatewaySettings,
    *,
    admin: AdminSocket | AdminLoopback,
    engine: Upstream | Sequence[Upstream],
    runs: Upstream | Sequence[Upstream],
    tools: Upstream | Sequence[Upstream],
    agents: Upstream | Sequence[Upstream],
    service_token: str | TokenFromEnvironment | None = None,
    tracing: tuple[str, int] | None = None,
) -> str:
    """The Envoy YAML for these addresses and settings: each service one upstream or several (its replicas,
    balanced over). Every placeholder must be filled (Template.substitute raises). `service_token` defaults to
    settings.service_token; a TokenFromEnvironment leaves it to Envoy. `tracing`: the OTLP/gRPC collector (host,
    port) Envoy sends a span per request to; None: no spans."""
    if service_token is None:
        service_token = settings.service_token.get_secret_value()
    if isinstance(service_token, TokenFromEnvironment):
        # Envoy adds no header when the variable is unset or empty (keep_empty_value: false).
        token_value = f"%ENVIRONMENT({service_token.variable})%"
    else:
        # A header value is an Envoy format string: a literal % must be doubled.
        token_value = service_token.replace("%", "%%")
    jwt = bool(settings.jwt_issuer)

    text = TEMPLATE.read_text()
    # Served compact: the checked-in file is indented for reading and diffs.
    openapi = json.dumps(json.loads(OPENAPI_DOCUMENT.read_text()), separators=(",", ":"), ensure_ascii=False)
    text = _section("SERVICE_TOKEN", bool(token_value), text)
    text = _section("JWT", jwt, text)
    text = _section("TRACING", tracing is not None, text)
    otlp_host, otlp_port = tracing or ("", 0)
    return Template(text).substitute(
        ADMIN_ADDRESS=json.dumps(admin.address()),
        GATEWAY_HOST=settings.host,
        GATEWAY_PORT=settings.port,
        CORS_ORIGINS=json.dumps([{"exact": origin} for origin in settings.cors_allowed_origins]),
        # The same origins as one RE2 pattern, for the refusals the gateway makes itself (see the template).
        CORS_ORIGIN_REGEX=json.dumps(
            "^(" + "|".join(re.escape(origin) for origin in settings.cors_allowed_origins) + ")$"
        ),
        REQUEST_TIMEOUT=_seconds(settings.request_timeout_seconds),
        STREAM_IDLE_TIMEOUT=_seconds(settings.stream_idle_timeout_seconds),
        MAX_REQUEST_BYTES=settings.max_request_bytes,
        MAX_REQUEST_HEADERS_KB=settings.max_request_headers_kb,
        MAX_REQUEST_HEADERS_COUNT=settings.max_request_headers_kb * 1024,
        MAX_CONNECTIONS=settings.max_connections,
        CONNECTION_BUFFER_BYTES=settings.connection_buffer_bytes,
        RATE_LIMIT_PER_SECOND=settings.rate_limit_per_second,
        RATE_LIMIT_BURST=max(settings.rate_limit_burst, settings.rate_limit_per_second),
        SERVICE_TOKEN=json.dumps(token_value),
        JWT_ISSUER=json.dumps(settings.jwt_issuer),
        JWT_AUDIENCES=json.dumps(settings.jwt_audiences),
        JWT_JWKS=json.dumps(_jwks(settings.jwt_jwks_file)) if jwt else '""',
        JWT_ROLE_CLAIM=json.dumps(settings.jwt_role_claim),
        MAX_USER_ID=MAX_USER_ID,
        ENGINE_ENDPOINTS=_endpoints(engine),
        RUNS_ENDPOINTS=_endpoints(runs),
        TOOLS_ENDPOINTS=_endpoints(tools),
        AGENTS_ENDPOINTS=_endpoints(agents),
        OTLP_HOST=json.dumps(otlp_host),
        OTLP_PORT=otlp_port,
        OTLP_SERVICE_NAME="gateway",
        API_DESCRIPTOR=json.dumps(base64.b64encode(API_DESCRIPTOR.read_bytes()).decode()),
        OPENAPI_DOCUMENT=json.dumps(openapi),
        # Room for the document as it grows, within one order of magnitude.
        OPENAPI_MAX_BYTES=max(4096, 2 * len(openapi.encode())),
    )
