"""Metrics as an operator sees them (issue 19): a real Prometheus scrapes the `/metrics` endpoint of every service
of the stack `make run` starts, with the platform's alert rules loaded; after the seed chat its HTTP API answers
the run, model-call, token, tool-call and RPC series with the values the run itself recorded."""

from pathlib import Path

import pytest

from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from tests.conftest import free_port
from tests.e2e.faults import clients, explained, fault_stack
from tests.support.prometheus import ALERTS, dashboard_expressions, running_prometheus
from tests.support.seed import SEED_QUESTION

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

SERVICES = ("runs", "tools", "engine", "agents")


def test_prometheus_scrapes_every_service_and_sees_the_seed_chat_as_it_was_recorded(tmp_path: Path) -> None:
    ports = {name: free_port() for name in SERVICES}
    settings = {f"{name.upper()}_METRICS_PORT": str(port) for name, port in ports.items()}
    targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    with fault_stack(tmp_path / "stack", **settings) as stack, explained(stack), \
            running_prometheus(tmp_path / "prometheus", targets, (ALERTS,)) as prometheus:
        with clients(stack) as (engine, runs):
            reply = engine.Chat(engine_pb2.ChatRequest(message=SEED_QUESTION), timeout=60)
            run = runs.GetRun(runs_pb2.GetRunRequest(run_id=reply.run_id))
        assert run.state == runs_pb2.RUN_STATE_COMPLETED
        # Every model call priced (the demo model's built-in price is zero), each by the model that answered.
        assert (run.cost.usd, run.cost.unpriced_model_calls) == (0, 0)
        calls = [step.model_call for step in run.steps if step.HasField("model_call")]
        assert len(calls) == 3 and {call.model for call in calls} == {run.model}
        for name in SERVICES:
            prometheus.eventually(f'up{{job="{name}"}}', 1)
        prometheus.eventually('sum(agentplatform_runs_finished_total{state="completed", agent="default"})', 1)
        assert prometheus.value('sum(agentplatform_runs_started_total{agent="default"})') == 1
        assert prometheus.value("sum(agentplatform_run_time_to_first_step_seconds_count)") == 1
        assert prometheus.value("sum(agentplatform_run_duration_seconds_count)") == 1
        # The seed asks the model three times: two tool-call turns, then the answer.
        assert prometheus.value('sum(agentplatform_model_calls_total{outcome="ok"})') == 3
        # Tokens: what the model endpoint reported, as the run's usage summed them.
        assert prometheus.value('sum(agentplatform_model_tokens_total{type="input"})') == run.usage.prompt_tokens
        assert prometheus.value('sum(agentplatform_model_tokens_total{type="output"})') == run.usage.completion_tokens
        assert run.usage.prompt_tokens > 0
        # Tool calls are counted by the tools service, where they run.
        assert prometheus.value(
            'sum(agentplatform_tool_calls_total{job="tools", tool="calculator", outcome="ok"})'
        ) == 2
        assert prometheus.value('sum(agentplatform_tool_call_seconds_count{tool="calculator"})') == 2
        # RPCs: the chat on the engine, the run's creation on the runs service; nothing failed.
        assert prometheus.value(
            'grpc_server_handled_total{job="engine", grpc_method="Chat", grpc_code="OK"}'
        ) == 1
        assert prometheus.value('sum(grpc_server_handled_total{job="runs", grpc_code="OK"})') >= 1
        assert prometheus.value('sum(grpc_server_handled_total{grpc_code=~"INTERNAL|UNKNOWN"})') is None
        # The engine's calls as it made them: each tool call one ExecuteTool to the tools service.
        assert prometheus.value(
            'grpc_client_handled_total{job="engine", grpc_method="ExecuteTool", grpc_code="OK"}'
        ) == 2
        assert prometheus.value("sum(agentplatform_runs_executing)") == 0
        assert prometheus.value('agentplatform_tool_workers{job="tools", state="busy"}') == 0
        assert prometheus.value('agentplatform_tool_workers{job="tools", state="idle"}') >= 1
        assert prometheus.value("agentplatform_tool_calls_waiting") == 0
        # Every sample of the platform's own metrics has bounded labels: no run id anywhere.
        for sample in prometheus.query('{__name__=~"agentplatform_.+"}'):
            assert reply.run_id not in str(sample["metric"].values()), sample

        # The alert rules load in the real Prometheus and evaluate without error on real series.
        rules = prometheus.rules()
        assert {rule["name"] for rule in rules} >= {
            "AgentPlatformErrorRatioHigh", "AgentPlatformQueueGrowing", "AgentPlatformNotificationsLost",
        }
        for rule in rules:
            assert rule["health"] in ("ok", "unknown"), rule
        # So does every query of the Grafana dashboard (Prometheus answers an error for one it cannot run).
        for expression in dashboard_expressions():
            prometheus.query(expression)
