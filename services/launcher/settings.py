"""Settings of the local stack that belong to no single service: the gateway's, and how many engines
`make run` starts."""

import os
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from services.common.identity import MAX_USER_ID, jwt_user_id
from services.common.settings import CommaSeparated, ServiceSettings


class GatewaySettings(ServiceSettings):
    host: str = Field("127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(8080, alias="GATEWAY_PORT", ge=1, le=65535)
    #: Browser origins allowed to call the gateway, comma-separated. Exact origins only: no "*".
    cors_allowed_origins: CommaSeparated = Field(
        ["http://localhost:3000", "http://localhost:5173"], alias="CORS_ALLOWED_ORIGINS"
    )

    # --- timeouts -------------------------------------------------------------------------------------------
    #: Seconds a request's headers and whole body get to arrive; a stalled upload is reset after this.
    request_timeout_seconds: float = Field(30.0, alias="GATEWAY_REQUEST_TIMEOUT_SECONDS", gt=0, le=3600)
    #: Seconds a stream may go without a byte either way. Quiet chat and WatchRun streams carry heartbeats
    #: (ENGINE_/RUNS_WATCH_HEARTBEAT_SECONDS), which must stay well below this.
    stream_idle_timeout_seconds: float = Field(3600.0, alias="GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS", gt=0)

    # --- limits ---------------------------------------------------------------------------------------------
    #: Largest request body (one framed message), in bytes; gRPC's own default limit is 4 MiB.
    max_request_bytes: int = Field(4 * 1024 * 1024, alias="GATEWAY_MAX_REQUEST_BYTES", ge=1024)
    #: Largest request header block, in KiB (Envoy's own default is 60).
    max_request_headers_kb: int = Field(60, alias="GATEWAY_MAX_REQUEST_HEADERS_KB", ge=1, le=8192)
    #: Open client connections the gateway accepts at once; more are closed at once.
    max_connections: int = Field(10_000, alias="GATEWAY_MAX_CONNECTIONS", ge=1)
    #: Bytes one connection may hold in Envoy's read/write buffers before back-pressure (Envoy's default: 1 MiB).
    connection_buffer_bytes: int = Field(1024 * 1024, alias="GATEWAY_CONNECTION_BUFFER_BYTES", ge=1024)
    #: The global guard: requests per second over all callers, and the burst above that rate.
    rate_limit_per_second: int = Field(1000, alias="GATEWAY_RATE_LIMIT_PER_SECOND", ge=1)
    rate_limit_burst: int = Field(2000, alias="GATEWAY_RATE_LIMIT_BURST", ge=1)

    # --- identity -------------------------------------------------------------------------------------------
    #: Issuer (`iss`) of the JWTs Envoy accepts. Unset: no JWT validation at the gateway (API keys only). A token's
    #: user is `<issuer>#<sub>` (services.common.identity.jwt_user_id).
    jwt_issuer: str = Field("", alias="AUTH_JWT_ISSUER")
    #: Accepted `aud` values, comma-separated; empty: the audience is not checked.
    jwt_audiences: CommaSeparated = Field([], alias="AUTH_JWT_AUDIENCES")
    #: A JWKS file (the issuer's public keys), embedded into the Envoy config. Required with AUTH_JWT_ISSUER.
    jwt_jwks_file: str = Field("", alias="AUTH_JWT_JWKS_FILE")
    #: The claim that carries the caller's role (`user` or `admin`).
    jwt_role_claim: str = Field("role", alias="AUTH_JWT_ROLE_CLAIM", pattern=r"^[A-Za-z0-9_.:/-]+$")
    #: The secret the services expect in x-agentplatform-service-token before they trust identity headers.
    #: Envoy adds it to every upstream request; empty: no header (identity headers are then never trusted).
    service_token: SecretStr = Field(SecretStr(""), alias="PLATFORM_SERVICE_TOKEN")

    @field_validator("cors_allowed_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or "*" in origin:
                raise ValueError(
                    f"{origin!r} is not an exact origin like http://localhost:3000 (scheme://host[:port], no path, "
                    "no wildcard)"
                )
        return origins

    @field_validator("jwt_issuer")
    @classmethod
    def _issuer_leaves_room_for_subjects(cls, issuer: str) -> str:
        if "#" in issuer:
            raise ValueError("an OIDC issuer has no fragment ('#'): it separates the issuer from the subject")
        if issuer and len(jwt_user_id(issuer, "")) >= MAX_USER_ID:
            raise ValueError(f"too long: a user id ('<issuer>#<sub>') is at most {MAX_USER_ID} characters")
        return issuer

    @model_validator(mode="after")
    def _jwt_issuer_and_keys_together(self) -> "GatewaySettings":
        if bool(self.jwt_issuer) != bool(self.jwt_jwks_file):
            raise ValueError(
                "AUTH_JWT_ISSUER and AUTH_JWT_JWKS_FILE go together: set both to validate JWTs at the gateway, "
                "or neither for API keys only"
            )
        return self


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    counted = os.process_cpu_count() if hasattr(os, "process_cpu_count") else None  # Python 3.13+
    if counted is None and hasattr(os, "sched_getaffinity"):
        counted = len(os.sched_getaffinity(0))
    return counted or os.cpu_count() or 1


class LauncherSettings(ServiceSettings):
    #: Engine processes `make run` starts, on ports from ENGINE_PORT up (skipping the other services' ports);
    #: Envoy balances chats over them. `auto`: one per CPU core. One engine process uses one core at most (Python),
    #: so more than one is how the engine uses a machine's cores.
    engine_replicas: int = Field(1, alias="ENGINE_REPLICAS", ge=1, le=64)

    @field_validator("engine_replicas", mode="before")
    @classmethod
    def _auto_is_one_per_core(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return min(cores(), 64)
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError("expected a whole number from 1 to 64, or `auto` (one engine per CPU core)")
        return value
