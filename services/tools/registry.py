"""Discovery of tool plugins: every concrete BaseTool subclass in the *.py files of the tools folders.

Files are loaded by path (no sys.path changes), each under a unique module name, so two folders may both hold a
`tools.py`. The folders are re-checked with a cheap stat on every lookup: a new, changed or deleted file is picked
up without a restart. A file that fails to import, or a class that is not a valid tool, is logged and skipped; it
never takes the service down.

In the service the registry also looks in its other sources of tools (the registered MCP servers,
services.tools.mcp.sources, and the HTTP tools, services.tools.http.sources), whose tools' ids start with "mcp__"
and "http__": those prefixes are theirs, and a plugin tool named so is skipped. Tool workers have no other
sources: they run plugin tools only.
"""

import hashlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

from services.common.errors import NotFound
from services.tools.base import BaseTool, InvalidToolError, check_tool

log = logging.getLogger(__name__)

#: The built-in tools folder (calculator, file_io, web_search).
BUILTIN_PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"

#: What identifies one version of a plugin file: modification time and size.
FileStamp = tuple[int, int]
#: The ids of the tools of other sources start with these: MCP servers' (services.tools.mcp.naming) and HTTP
#: tools' (services.tools.http.naming).
RESERVED_PREFIXES = ("mcp__", "http__")


class ToolSource(Protocol):
    """Tools from somewhere else than plugin files (the registered MCP servers, the HTTP tools)."""

    def tools(self) -> list[BaseTool]:
        """Every tool of the source."""
        ...

    def find(self, tool_id: str) -> BaseTool | None:
        """The tool with this id, or None; may raise a domain error (Unavailable) instead."""
        ...


@dataclass(frozen=True)
class _LoadedFile:
    """The tools one version of a plugin file defines (empty when it failed to load)."""

    stamp: FileStamp
    tools: tuple[BaseTool, ...]


class ToolRegistry:
    """The tools found in the built-in folder and any extra plugin folders, looked up by id."""

    def __init__(self, plugin_dirs: Sequence[Path] = (), sources: Sequence[ToolSource] = ()) -> None:
        # The built-in folder comes first, so its tools win a name clash with a plugin folder's.
        folders = [BUILTIN_PLUGIN_DIR, *(Path(folder).resolve() for folder in plugin_dirs)]
        self._folders = list(dict.fromkeys(folders))
        for folder in self._folders:
            if not folder.is_dir():
                log.warning("tools folder %s does not exist (yet); its tools appear once it does", folder)
        self._files: dict[Path, _LoadedFile] = {}
        self._stamps: dict[Path, FileStamp] | None = None
        self._tools: dict[str, BaseTool] = {}
        self._sources = list(sources)

    def get(self, tool_id: str) -> BaseTool:
        """The tool with this id, or NotFound."""
        self.refresh()
        tool = self._tools.get(tool_id)
        if tool is None and tool_id.startswith(RESERVED_PREFIXES):
            for source in self._sources:
                tool = source.find(tool_id)
                if tool is not None:
                    break
        if tool is None:
            raise NotFound(f"tool '{tool_id}' not found; ListTools shows the available tools")
        return tool

    def tools(self) -> list[BaseTool]:
        """Every tool, ordered by id."""
        self.refresh()
        tools = dict(self._tools)
        for source in self._sources:
            for tool in source.tools():
                tools.setdefault(tool.name, tool)
        return [tools[tool_id] for tool_id in sorted(tools)]

    def refresh(self) -> None:
        """Reload the plugin files whose set or modification times changed since the last look."""
        stamps = self._stat_plugin_files()
        if stamps == self._stamps:
            return
        files: dict[Path, _LoadedFile] = {}
        for path, stamp in stamps.items():
            known = self._files.get(path)
            files[path] = known if known is not None and known.stamp == stamp else _load_file(path, stamp)
        self._files = files
        self._stamps = stamps
        self._tools = _index_by_name(files)
        log.info("tools available: %s", ", ".join(sorted(self._tools)) or "none")

    def _stat_plugin_files(self) -> dict[Path, FileStamp]:
        """The plugin files in folder order, then file-name order (which decides who wins a name clash)."""
        stamps: dict[Path, FileStamp] = {}
        for folder in self._folders:
            try:
                paths = sorted(folder.glob("*.py"))
            except OSError:
                continue
            for path in paths:
                # _private.py and __init__.py are helpers of a folder, not tools.
                if path.name.startswith("_"):
                    continue
                try:
                    status = path.stat()
                except OSError:  # deleted between glob and stat
                    continue
                stamps[path] = (status.st_mtime_ns, status.st_size)
        return stamps


def _index_by_name(files: dict[Path, _LoadedFile]) -> dict[str, BaseTool]:
    """Tools by id; on a duplicate id the first file (in scan order) wins and the clash is logged."""
    tools: dict[str, BaseTool] = {}
    origin: dict[str, Path] = {}
    for path, loaded in files.items():
        for tool in loaded.tools:
            if tool.name.startswith(RESERVED_PREFIXES):
                log.warning("tool '%s' in %s is skipped: ids starting with %s are MCP and HTTP tools'", tool.name,
                            path, " or ".join(repr(prefix) for prefix in RESERVED_PREFIXES))
                continue
            if tool.name in tools:
                log.warning(
                    "tool '%s' in %s is skipped: %s already defines a tool with that name", tool.name, path,
                    origin[tool.name],
                )
                continue
            tools[tool.name] = tool
            origin[tool.name] = path
    return tools


def _load_file(path: Path, stamp: FileStamp) -> _LoadedFile:
    """Import a plugin file and instantiate its tools; a failure is logged and yields no tools."""
    try:
        module = _import_by_path(path)
    except MemoryError:
        raise  # not the file's fault: a tool worker whose memory limit is too small must fail its start, loudly
    except (Exception, SystemExit):  # a plugin calling sys.exit() at import must not stop the service
        log.exception("tool plugin file %s is skipped: it failed to import", path)
        return _LoadedFile(stamp, ())
    tools: list[BaseTool] = []
    for cls in _tool_classes(module):
        try:
            tool = cls()
            check_tool(tool)
        except InvalidToolError as exc:
            log.error("tool class %s in %s is skipped: %s", cls.__name__, path, exc)
            continue
        except Exception:
            log.exception("tool class %s in %s is skipped: it failed to initialise", cls.__name__, path)
            continue
        tools.append(tool)
    return _LoadedFile(stamp, tuple(tools))


def _import_by_path(path: Path) -> ModuleType:
    """Execute a file as a fresh module whose name is unique to its path."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"_agentplatform_tool_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing because dataclasses and typing resolve names through sys.modules.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _tool_classes(module: ModuleType) -> list[type[BaseTool]]:
    """The concrete BaseTool subclasses defined in (not imported into) a module, in definition order."""
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseTool)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
