"""The engine's settings."""

from pydantic import Field, SecretStr, field_validator

from services.common.settings import ServiceSettings


class EngineSettings(ServiceSettings):
    host: str = Field("127.0.0.1", alias="ENGINE_HOST")
    port: int = Field(50053, alias="ENGINE_PORT", ge=0, le=65535)

    #: Where the runs and tools services listen (host:port).
    runs_address: str = Field("127.0.0.1:50051", alias="RUNS_ADDR", min_length=3)
    tools_address: str = Field("127.0.0.1:50052", alias="TOOLS_ADDR", min_length=3)
    #: Deadline of each call to the runs service; tool executions get the tools' own limit plus this.
    call_timeout_seconds: float = Field(10.0, alias="ENGINE_CALL_TIMEOUT_SECONDS", gt=0)
    tool_timeout_seconds: float = Field(60.0, alias="ENGINE_TOOL_TIMEOUT_SECONDS", gt=0)

    #: Any OpenAI-compatible chat-completions endpoint, e.g. https://api.openai.com/v1.
    llm_base_url: str = Field(alias="LLM_BASE_URL", min_length=1)
    #: Local endpoints (vLLM, Ollama, the demo model) accept any key.
    llm_api_key: SecretStr = Field(SecretStr("not-needed"), alias="LLM_API_KEY")
    llm_model: str = Field("demo", alias="LLM_MODEL", min_length=1)
    llm_timeout_seconds: float = Field(60.0, alias="LLM_TIMEOUT_SECONDS", gt=0)
    #: Retries (with the SDK's exponential backoff) on connection errors, 408/409/429 and 5xx.
    llm_max_retries: int = Field(2, alias="LLM_MAX_RETRIES", ge=0, le=10)

    #: Model calls one run may make before it is stopped as FAILED.
    max_iterations: int = Field(10, alias="ENGINE_MAX_ITERATIONS", ge=1, le=100)
    #: Sent as the first message of every conversation; empty for none.
    system_prompt: str = Field(
        "You are a helpful assistant. Use the tools when they help, and answer concisely.",
        alias="ENGINE_SYSTEM_PROMPT",
    )
    #: Longest user message accepted, in characters.
    max_message_chars: int = Field(32_000, alias="ENGINE_MAX_MESSAGE_CHARS", ge=1)

    @field_validator("llm_api_key", mode="before")
    @classmethod
    def _blank_key_means_none_needed(cls, value: object) -> object:
        # The openai SDK refuses an empty key even for endpoints that ignore it.
        return value or "not-needed"

    @field_validator("llm_model", mode="before")
    @classmethod
    def _blank_model_means_default(cls, value: object) -> object:
        # `.env.example` lists LLM_MODEL= blank; blank means "not set", not "a model named ''".
        return value or "demo"
