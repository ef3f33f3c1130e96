"""The stack's stop order and stop timeouts, as build_stack describes them to the supervisor."""

from pathlib import Path

import pytest

from services.launcher.stack import build_stack


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No .env file and no model configured: the stack with the demo model."""
    monkeypatch.chdir(tmp_path)
    for name in ("LLM_BASE_URL", "GRPC_GRACE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_stack_stops_gateway_then_engine_then_model_tools_and_agents_then_runs(clean_env: Path) -> None:
    stack = build_stack(clean_env / "envoy.yaml")
    order = {spec.name: spec.stop_order for spec in stack.processes}
    assert order["gateway"] < order["engine"] < order["model"] == order["tools"] == order["agents"] < order["runs"]


def test_the_engine_gets_time_to_record_the_end_of_its_runs(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts = {spec.name: spec.stop_timeout for spec in build_stack(clean_env / "envoy.yaml").processes}
    assert timeouts == {"gateway": 5, "engine": 10, "model": 5, "tools": 5, "agents": 5, "runs": 5}
    # A longer grace period moves the SIGKILL back with it.
    monkeypatch.setenv("GRPC_GRACE_SECONDS", "20")
    timeouts = {spec.name: spec.stop_timeout for spec in build_stack(clean_env / "envoy.yaml").processes}
    assert timeouts["engine"] == 27 and timeouts["runs"] == 22
