"""Typed settings: a bad value stops the service with a message naming the variable."""

import pytest

from services.common.settings import SettingsError, load_settings
from services.engine.settings import EngineSettings
from services.runs.settings import RunsSettings


def test_bad_values_name_the_variable_and_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNS_PORT", "not-a-port")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError) as failure:
        load_settings(RunsSettings, _env_file=None)
    message = str(failure.value)
    assert "RUNS_PORT='not-a-port'" in message
    assert "LOG_LEVEL='LOUD'" in message


def test_out_of_range_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_MAX_ITERATIONS", "0")
    with pytest.raises(SettingsError, match="ENGINE_MAX_ITERATIONS='0'"):
        load_settings(EngineSettings, _env_file=None, LLM_BASE_URL="http://127.0.0.1:1/v1")


def test_engine_requires_a_model_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    with pytest.raises(SettingsError, match="LLM_BASE_URL"):
        load_settings(EngineSettings, _env_file=None)


def test_blank_model_and_key_fall_back_to_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MODEL", "")
    monkeypatch.setenv("LLM_API_KEY", "")
    settings = load_settings(EngineSettings, _env_file=None, LLM_BASE_URL="http://127.0.0.1:1/v1")
    assert settings.llm_model == "demo"
    assert settings.llm_api_key.get_secret_value() == "not-needed"
