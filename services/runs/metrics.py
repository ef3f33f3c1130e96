"""The runs service's Prometheus metrics: what its lease reaper does (services.common.metrics has the conventions
and the endpoint; watchers connected are its WatchRun streams in flight, grpc_server_streams_in_flight). Filled by
services/runs/reaper.py."""

from prometheus_client import Counter

LEASES_EXPIRED = Counter(
    "agentplatform_leases_expired_total",
    "Live runs whose engine stopped renewing their lease, taken from it by this replica's reaper (resumed "
    "elsewhere, or ended when they cannot be).",
)
APPROVALS_TIMED_OUT = Counter(
    "agentplatform_approvals_timed_out_total", "Approval requests nobody decided within their timeout."
)
RUNS_DELETED_BY_RETENTION = Counter(
    "agentplatform_runs_deleted_by_retention_total",
    "Finished runs deleted by this replica's retention sweep for being past their maximum age.",
)
MODEL_COST = Counter(
    "agentplatform_model_cost_dollars_total",
    "What the model calls this replica stored cost, in US dollars, by model (priced calls only; see "
    "agentplatform_model_calls_unpriced_total).",
    ["model"],
)
MODEL_CALLS_UNPRICED = Counter(
    "agentplatform_model_calls_unpriced_total", "Model calls stored without a price for their model, by model.",
    ["model"],
)
BUDGET_REFUSALS = Counter(
    "agentplatform_budget_refusals_total",
    "Runs stopped by a spent budget: refused at their start (when=start) or stopped after the step that spent it "
    "(when=running), by the budget's scope (user, agent).",
    ["scope", "when"],
)
