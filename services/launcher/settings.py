"""Settings of the local stack that belong to no single service: the gateway's."""

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from services.common.settings import CommaSeparated, ServiceSettings


class GatewaySettings(ServiceSettings):
    host: str = Field("127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(8080, alias="GATEWAY_PORT", ge=1, le=65535)
    admin_port: int = Field(9901, alias="ENVOY_ADMIN_PORT", ge=1, le=65535)
    #: Browser origins allowed to call the gateway, comma-separated. Exact origins only: no "*".
    cors_allowed_origins: CommaSeparated = Field(
        ["http://localhost:3000", "http://localhost:5173"], alias="CORS_ALLOWED_ORIGINS"
    )

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
