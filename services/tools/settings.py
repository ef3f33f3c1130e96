"""Settings of the tools service, read from TOOLS_* environment variables."""

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from services.common.auth import AuthSettings
from services.common.settings import split_commas
from services.tools.base import DEFAULT_WORKSPACE_MAX_BYTES, DEFAULT_WORKSPACE_MAX_FILES

#: The offline demo corpus shipped with the web_search plugin (the default search backend's data).
BUILTIN_WEB_SEARCH_CORPUS = Path(__file__).resolve().parent / "plugins" / "web_search_corpus.json"


class ToolsSettings(AuthSettings):
    """Where the tools service listens, keeps its settings table, finds plugins and lets file_io work."""

    host: str = Field("127.0.0.1", alias="TOOLS_HOST")
    #: 0 picks a free port (tests).
    port: int = Field(50052, alias="TOOLS_PORT", ge=0, le=65535)
    database_url: str = Field("sqlite+aiosqlite:///var/tools.db", alias="TOOLS_DATABASE_URL")
    #: Extra folders of tool plugin files, scanned after the built-in one. NoDecode: the environment gives a
    #: comma-separated string, not the JSON list pydantic-settings would otherwise expect.
    plugin_dirs: Annotated[list[Path], NoDecode, BeforeValidator(split_commas)] = Field(
        default_factory=list, alias="TOOLS_PLUGIN_DIRS"
    )
    #: The only folder file_io may read, write or list.
    workspace: Path = Field(Path("var/workspace"), alias="TOOLS_WORKSPACE")
    #: The workspace's quota in bytes (all its files together); a write or append past it is refused whole.
    workspace_max_bytes: int = Field(DEFAULT_WORKSPACE_MAX_BYTES, alias="TOOLS_WORKSPACE_MAX_BYTES", ge=0)
    #: The workspace's quota in entries: files and folders counted together (folders cost inodes too).
    workspace_max_files: int = Field(DEFAULT_WORKSPACE_MAX_FILES, alias="TOOLS_WORKSPACE_MAX_FILES", ge=0)
    #: Longest a single tool execution may take.
    timeout_seconds: float = Field(30.0, alias="TOOLS_TIMEOUT_SECONDS", gt=0)
    #: The JSON file ([{title, url, snippet}, ...]) the offline web_search backend searches.
    web_search_corpus: Path = Field(BUILTIN_WEB_SEARCH_CORPUS, alias="TOOLS_WEB_SEARCH_CORPUS")
