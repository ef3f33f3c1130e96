"""The engine's settings."""

from pydantic import Field, SecretStr, field_validator, model_validator

from services.common.auth import AuthSettings
from services.common.limits import RunLimitMaximums
from services.common.rpc.channels import ServiceAddress


class EngineSettings(AuthSettings, RunLimitMaximums):
    host: str = Field("127.0.0.1", alias="ENGINE_HOST")
    port: int = Field(50053, alias="ENGINE_PORT", ge=0, le=65535)
    #: Where /metrics is served (Prometheus text), on the same host; 0 picks a free port (logged at start).
    metrics_port: int | None = Field(9183, alias="ENGINE_METRICS_PORT", ge=0, le=65535)

    #: Where the runs and tools services listen: host:port, a comma list of replicas (host:port,host:port) or a
    #: gRPC name (dns:///runs:50051, a headless Service); calls are balanced over every address
    #: (services.common.rpc.channels).
    runs_address: ServiceAddress = Field("127.0.0.1:50051", alias="RUNS_ADDR")
    tools_address: ServiceAddress = Field("127.0.0.1:50052", alias="TOOLS_ADDR")
    #: The agents service, asked for a saved agent when a run names one.
    agents_address: ServiceAddress = Field("127.0.0.1:50054", alias="AGENTS_ADDR")
    #: Deadline of each call to the runs service; tool executions get the tools' own limit plus this.
    call_timeout_seconds: float = Field(10.0, alias="ENGINE_CALL_TIMEOUT_SECONDS", gt=0)
    tool_timeout_seconds: float = Field(60.0, alias="ENGINE_TOOL_TIMEOUT_SECONDS", gt=0)

    #: Any OpenAI-compatible chat-completions endpoint, e.g. https://api.openai.com/v1.
    llm_base_url: str = Field(alias="LLM_BASE_URL", min_length=1)
    #: Local endpoints (vLLM, Ollama, the demo model) accept any key.
    llm_api_key: SecretStr = Field(SecretStr("not-needed"), alias="LLM_API_KEY")
    llm_model: str = Field("demo", alias="LLM_MODEL", min_length=1)
    llm_timeout_seconds: float = Field(60.0, alias="LLM_TIMEOUT_SECONDS", gt=0)

    #: Retries (with the SDK's exponential backoff and jitter, honouring Retry-After) on connection errors,
    #: timeouts, 408/409/429 and 5xx, before the run fails with rate_limited, model_unavailable or model_timeout.
    llm_max_retries: int = Field(3, alias="LLM_MAX_RETRIES", ge=0, le=10)

    #: How often StreamChat sends a heartbeat while its run is quiet (as the runs service's WatchRun does).
    watch_heartbeat_seconds: float = Field(15.0, alias="ENGINE_WATCH_HEARTBEAT_SECONDS", gt=0)

    #: How long the list of enabled tools is reused for new runs; a change in the tools service reaches new runs
    #: within this time. 0 lists the tools for every run.
    tools_cache_seconds: float = Field(2.0, alias="ENGINE_TOOLS_CACHE_SECONDS", ge=0, le=3600)

    #: Runs this process executes at once; more wait QUEUED, in order, up to `max_queued_runs`.
    #: A run mostly waits (on the model, on tools), so one process executes many at once; the cap bounds memory
    #: and the connections to the model endpoint (one per run executing).
    max_concurrent_runs: int = Field(1000, alias="ENGINE_MAX_CONCURRENT_RUNS", ge=1, le=100_000)
    #: Runs that may wait QUEUED; beyond that StartRun answers RESOURCE_EXHAUSTED with a retry hint.
    max_queued_runs: int = Field(10_000, alias="ENGINE_MAX_QUEUED_RUNS", ge=0, le=1_000_000)

    #: Runs one user may start: a token bucket of ENGINE_USER_RUN_BURST runs, refilled at this rate. 0 turns the
    #: limit off (the benchmark does, to measure the engine itself). Per engine process.
    user_runs_per_second: float = Field(10.0, alias="ENGINE_USER_RUNS_PER_SECOND", ge=0)
    user_run_burst: int = Field(100, alias="ENGINE_USER_RUN_BURST", ge=1)

    #: The lease this process holds on each of its runs: renewed every third of it, and by an append once a
    #: tenth of it has passed since the last renewal (services/runs/appends.py `renewed_lease`).
    #: If the process dies, the run store ends its runs FAILED "interrupted" once the lease runs out (plus one
    #: reaper interval). 30 s rides out the delays of an overloaded machine (at 10 s, a burst of 1,000 runs on 2
    #: cores had renewals arrive late and live runs reaped) while a dead engine's runs still end within a minute.
    lease_seconds: float = Field(30.0, alias="ENGINE_LEASE_SECONDS", ge=1, le=300)
    #: How long a run keeps retrying the run store while it is unavailable; then the run is given up (the store
    #: ends it FAILED "interrupted" when it is back and the lease has run out).
    store_outage_seconds: float = Field(30.0, alias="ENGINE_STORE_OUTAGE_SECONDS", gt=0, le=3600)

    #: Per-run limits: the defaults for a request that sets none (the most it may ask for: RunLimitMaximums).
    max_iterations: int = Field(10, alias="ENGINE_MAX_ITERATIONS", ge=1, le=100)
    run_timeout_seconds: float = Field(600.0, alias="ENGINE_RUN_TIMEOUT_SECONDS", gt=0)
    max_total_tokens: int = Field(200_000, alias="ENGINE_MAX_TOTAL_TOKENS", ge=1)
    max_tool_calls: int = Field(50, alias="ENGINE_MAX_TOOL_CALLS", ge=1)

    #: The run store's limit on one step (its content as JSON), read from the variable the runs service reads: the
    #: engine checks every step against it before sending, and ends a run whose step is larger FAILED
    #: "step_too_large" at once. Keep the two processes' values the same.
    max_step_bytes: int = Field(1024 * 1024, alias="RUNS_MAX_STEP_BYTES", ge=1024, le=3 * 1024 * 1024)

    #: Sent as the first message of every conversation; empty for none.
    system_prompt: str = Field(
        "You are a helpful assistant. Use the tools when they help, and answer concisely.",
        alias="ENGINE_SYSTEM_PROMPT",
    )
    #: Longest user message accepted, in characters.
    max_message_chars: int = Field(32_000, alias="ENGINE_MAX_MESSAGE_CHARS", ge=1)
    #: How many tokens (estimated) of a thread's earlier turns, the instructions and the new message a run may
    #: send the model; older turns beyond it are left out (services/engine/thread_context.py). Tool schemas
    #: are not counted: keep it well under the model's context window.
    context_budget_tokens: int = Field(32_000, alias="ENGINE_CONTEXT_BUDGET_TOKENS", ge=0)
    #: How long a tool call that requires approval waits for a decision before it is refused (0: until decided or
    #: the run is cancelled). The run waits WAITING, held by no engine, so a restart does not end it.
    tool_approval_timeout_seconds: float = Field(0.0, alias="ENGINE_TOOL_APPROVAL_TIMEOUT_SECONDS", ge=0)
    #: The most earlier turns of a thread fetched for a run's context, whatever the budget.
    context_max_turns: int = Field(100, alias="ENGINE_CONTEXT_MAX_TURNS", ge=1, le=1000)

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

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> "EngineSettings":
        pairs = [
            ("ENGINE_MAX_ITERATIONS", self.max_iterations, self.max_iterations_limit),
            ("ENGINE_RUN_TIMEOUT_SECONDS", self.run_timeout_seconds, self.run_timeout_limit_seconds),
            ("ENGINE_MAX_TOTAL_TOKENS", self.max_total_tokens, self.max_total_tokens_limit),
            ("ENGINE_MAX_TOOL_CALLS", self.max_tool_calls, self.max_tool_calls_limit),
        ]
        for name, default, limit in pairs:
            if default > limit:
                raise ValueError(f"{name}={default} is above {limit}, the most a request may ask for")
        return self
