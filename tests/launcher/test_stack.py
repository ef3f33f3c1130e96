"""The stack's stop order and stop timeouts, and its engine processes (ENGINE_REPLICAS), as build_stack describes
them to the supervisor."""

from pathlib import Path

import pytest

from services.common.settings import SettingsError, load_settings
from services.launcher.settings import LauncherSettings, cores
from services.launcher.stack import STOP_ORDER, build_stack, engine_ports


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


def test_engine_replicas_start_that_many_engines_on_ports_of_their_own(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_REPLICAS", "3")
    monkeypatch.setenv("ENGINE_PORT", "50053")
    monkeypatch.setenv("AGENTS_PORT", "50054")
    stack = build_stack(clean_env / "envoy.yaml")
    engines = [spec for spec in stack.processes if spec.name.startswith("engine")]
    assert [spec.name for spec in engines] == ["engine-1", "engine-2", "engine-3"]
    # 50054 is the agents service's.
    assert [spec.env["ENGINE_PORT"] for spec in engines] == ["50053", "50055", "50056"]
    assert stack.engine_addresses == ["127.0.0.1:50053", "127.0.0.1:50055", "127.0.0.1:50056"]
    assert {spec.stop_order for spec in engines} == {STOP_ORDER["engine"]}
    assert {spec.stop_timeout for spec in engines} == {10}
    config = (clean_env / "envoy.yaml").read_text()
    for port in (50053, 50055, 50056):
        assert f'"port_value": {port}' in config


def test_several_engines_share_the_per_user_start_rate_out(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_PORT", "50053")
    monkeypatch.setenv("ENGINE_USER_RUNS_PER_SECOND", "9")
    monkeypatch.setenv("ENGINE_USER_RUN_BURST", "10")
    monkeypatch.setenv("ENGINE_REPLICAS", "3")
    engines = [spec for spec in build_stack(clean_env / "envoy.yaml").processes if spec.name.startswith("engine")]
    # Each counts a user's starts in its own process: three at the whole rate would allow three times as many.
    assert {spec.env["ENGINE_USER_RUNS_PER_SECOND"] for spec in engines} == {"3.0"}
    assert {spec.env["ENGINE_USER_RUN_BURST"] for spec in engines} == {"4"}
    # One engine takes the setting as it is (from the environment it inherits).
    monkeypatch.setenv("ENGINE_REPLICAS", "1")
    (engine,) = [spec for spec in build_stack(clean_env / "envoy.yaml").processes if spec.name == "engine"]
    assert "ENGINE_USER_RUNS_PER_SECOND" not in engine.env and "ENGINE_USER_RUN_BURST" not in engine.env


def test_auto_is_one_engine_per_core(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_REPLICAS", "auto")
    assert load_settings(LauncherSettings).engine_replicas == cores()
    monkeypatch.delenv("ENGINE_REPLICAS")
    stack = build_stack(clean_env / "envoy.yaml")
    assert [spec.name for spec in stack.processes if spec.name.startswith("engine")] == ["engine"]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "65"])
def test_a_bad_engine_replicas_names_the_variable(clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ENGINE_REPLICAS", value)
    with pytest.raises(SettingsError, match=f"ENGINE_REPLICAS='{value}'"):
        build_stack(clean_env / "envoy.yaml")


def test_several_engines_need_a_fixed_port() -> None:
    with pytest.raises(SettingsError, match="needs a fixed ENGINE_PORT"):
        engine_ports(0, 2, set())
    assert engine_ports(0, 1, set()) == [0]
