"""ToolsSettings: defaults and the parsing of TOOLS_PLUGIN_DIRS."""

from pathlib import Path

import pytest

from services.common.settings import SettingsError, load_settings
from services.tools.settings import BUILTIN_WEB_SEARCH_CORPUS, ToolsSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOOLS_HOST", "TOOLS_PORT", "TOOLS_DATABASE_URL", "TOOLS_PLUGIN_DIRS", "TOOLS_WORKSPACE",
                 "TOOLS_TIMEOUT_SECONDS", "TOOLS_WEB_SEARCH_CORPUS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(ToolsSettings, _env_file=None)
    assert (settings.host, settings.port) == ("127.0.0.1", 50052)
    assert settings.database_url == "sqlite+aiosqlite:///var/tools.db"
    assert settings.plugin_dirs == []
    assert settings.workspace == Path("var/workspace")
    assert settings.timeout_seconds == 30
    assert settings.web_search_corpus == BUILTIN_WEB_SEARCH_CORPUS
    assert BUILTIN_WEB_SEARCH_CORPUS.is_file()


def test_plugin_dirs_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLS_PLUGIN_DIRS", "/opt/tools, extra/tools ,")
    assert load_settings(ToolsSettings, _env_file=None).plugin_dirs == [Path("/opt/tools"), Path("extra/tools")]


def test_a_non_positive_timeout_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLS_TIMEOUT_SECONDS", "0")
    with pytest.raises(SettingsError, match="TOOLS_TIMEOUT_SECONDS"):
        load_settings(ToolsSettings, _env_file=None)
