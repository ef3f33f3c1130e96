"""The engine's Prometheus metrics: the runs it executes and the model calls they make (services.common.metrics
has the conventions and the endpoint).

Filled by the scheduler (runs started, finished, executing, queued, refused;
services/engine/execution/scheduler.py and rate_limit.py), by a held run when its first step after the user's request
is stored (time to first step; active_run.py), and by the model client around each call
(services/engine/loop/model_client.py). Labels: the agent (a saved agent's id, or "default"), the model, the final
state and error code; never a run or a user.
"""

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import DURATION_BUCKETS

#: The agent label of a run of the built-in default agent (or a workflow's).
DEFAULT_AGENT_LABEL = "default"

RUNS_STARTED = Counter(
    "agentplatform_runs_started_total", "Runs this engine created (QUEUED or RUNNING), by agent.", ["agent"]
)
RUNS_FINISHED = Counter(
    "agentplatform_runs_finished_total",
    "Runs this engine ended, by agent, final state and error code (\"\" when COMPLETED).",
    ["agent", "state", "error_code"],
)
RUNS_PAUSED = Counter(
    "agentplatform_runs_paused_total", "Runs that paused WAITING for a person's decision, by agent.", ["agent"]
)
RUNS_RESUMED = Counter(
    "agentplatform_runs_resumed_total",
    "Runs this engine took up again: after an approval, or from an engine that stopped (orphaned).",
    ["reason"],
)
RUN_DURATION = Histogram(
    "agentplatform_run_duration_seconds", "From a run's creation to its end, by final state (queue time included).",
    ["state"], buckets=DURATION_BUCKETS,
)
TIME_TO_FIRST_STEP = Histogram(
    "agentplatform_run_time_to_first_step_seconds",
    "From the engine accepting a run to the first step after the user's request being stored.",
    buckets=DURATION_BUCKETS,
)
LEASE_RENEWALS = Counter(
    "agentplatform_lease_renewals_total",
    "Lease renewals this engine sent (one call renews every run it holds), by outcome: ok, failed (the store away).",
    ["outcome"],
)
RUNS_LOST = Counter(
    "agentplatform_runs_lost_total",
    "Runs this engine stopped because the store no longer held them for it: taken by another engine (fenced) or "
    "ended or deleted there.",
)
RUNS_EXECUTING = Gauge("agentplatform_runs_executing", "Runs holding one of this engine's slots now.")
RUNS_QUEUED = Gauge(
    "agentplatform_runs_queued", "Runs this engine holds that wait for a slot (ENGINE_MAX_CONCURRENT_RUNS)."
)

MODEL_CALLS = Counter(
    "agentplatform_model_calls_total",
    "Model calls, by model and outcome: ok, cancelled, or the run's error code (rate_limited, model_timeout ...).",
    ["model", "outcome"],
)
MODEL_ENDPOINT_RESPONSES = Counter(
    "agentplatform_model_endpoint_responses_total",
    "HTTP responses of the model endpoint, by status code, each attempt counted: a 429 or 5xx followed by a 200 "
    "is a retry the SDK made (LLM_MAX_RETRIES); a model call counts once in agentplatform_model_calls_total.",
    ["code"],
)
MODEL_TOKENS = Counter(
    "agentplatform_model_tokens_total",
    "Tokens the model endpoint reported, by model and type: input, output, cached_input (part of input).",
    ["model", "type"],
)
MODEL_CALL_DURATION = Histogram(
    "agentplatform_model_call_seconds", "From a model call's request to its last chunk, by model and outcome.",
    ["model", "outcome"], buckets=DURATION_BUCKETS,
)
MODEL_TIME_TO_FIRST_TOKEN = Histogram(
    "agentplatform_model_time_to_first_token_seconds",
    "From a model call's request to its first text or tool-call chunk, by model.",
    ["model"], buckets=DURATION_BUCKETS,
)

RATE_LIMITED = Counter(
    "agentplatform_rate_limited_total",
    "Runs refused RESOURCE_EXHAUSTED, by limit: user_runs (ENGINE_USER_RUNS_PER_SECOND), engine_busy "
    "(ENGINE_MAX_QUEUED_RUNS). The gateway's own limit is Envoy's (its local_rate_limit statistics).",
    ["limit"],
)


def agent_label(agent_id: str) -> str:
    """The agent label of a run of `agent_id` ("" for the built-in default agent)."""
    return agent_id or DEFAULT_AGENT_LABEL
