"""Settings of the agents service, read from the environment (see .env.example)."""

from pydantic import Field, SecretStr, field_validator

from services.common.limits import RunLimitMaximums
from services.common.pages import PageTokenSettings
from services.common.rpc.channels import ServiceAddress


class AgentsSettings(PageTokenSettings, RunLimitMaximums):
    """Where the agents service listens and keeps agents, and what it checks them against: the tools service
    (their tools), the model endpoint (their model) and the engine's run limit maximums (their limits; the same
    ENGINE_*_LIMIT variables the engine reads, so an agent never asks for more than the engine would run)."""

    host: str = Field("127.0.0.1", alias="AGENTS_HOST")
    #: 0 picks a free port (tests use it).
    port: int = Field(50054, alias="AGENTS_PORT", ge=0, le=65535)
    #: Where /metrics is served (Prometheus text), on the same host; 0 picks a free port (logged at start).
    metrics_port: int | None = Field(9184, alias="AGENTS_METRICS_PORT", ge=0, le=65535)
    #: Its own database, or the runs service's PostgreSQL database: the schemas do not overlap, and its Alembic
    #: version table has a name of its own (agents_alembic_version).
    database_url: str = Field("sqlite+aiosqlite:///var/agents.db", alias="AGENTS_DATABASE_URL")
    #: The tools service, asked which tools exist when an agent names some.
    tools_addr: ServiceAddress = Field("127.0.0.1:50052", alias="TOOLS_ADDR")
    #: How long one call to the tools service may take (less when the incoming call's deadline is nearer).
    tools_timeout_seconds: float = Field(5.0, alias="AGENTS_TOOLS_TIMEOUT_SECONDS", gt=0, le=60)
    #: The OpenAI-compatible endpoint the engine uses; set, an agent's model must be one it lists (GET
    #: /models). Empty: models are not checked.
    llm_base_url: str = Field("", alias="LLM_BASE_URL")
    llm_api_key: SecretStr = Field(SecretStr("not-needed"), alias="LLM_API_KEY")
    #: How long the endpoint's model list is reused.
    models_cache_seconds: float = Field(60.0, alias="AGENTS_MODELS_CACHE_SECONDS", ge=0)
    #: How long listing the endpoint's models may take; past it, models are not checked.
    models_timeout_seconds: float = Field(5.0, alias="AGENTS_MODELS_TIMEOUT_SECONDS", gt=0, le=60)

    @field_validator("llm_api_key", mode="before")
    @classmethod
    def _blank_key_means_none_needed(cls, value: object) -> object:
        # The openai SDK refuses an empty key even for endpoints that ignore it (as the engine's setting).
        return value or "not-needed"
