"""Discovery of tool plugin files: built-ins, drop-in files, broken files, name clashes, files added later."""

import logging
import os
from pathlib import Path

import pytest

from services.common.errors import NotFound
from services.tools.base import ToolHints
from services.tools.registry import ToolRegistry
from tests.tools.conftest import write_plugin

GREETER = '''
    from services.tools.base import ToolHints, BaseTool


    class GreeterTool(BaseTool):
        name = "greeter"
        display_name = "Greeter"
        description = "Says hello"
        icon = "IconHand"
        parameters = {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}

        def execute(self, who: str) -> str:
            return f"hello {who}"
'''


def test_the_built_in_tools_are_found_in_id_order() -> None:
    assert [tool.name for tool in ToolRegistry().tools()] == ["calculator", "file_io", "web_search"]


def test_a_dropped_in_file_appears(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "greeter.py", GREETER)
    registry = ToolRegistry([plugin_dir])
    assert registry.get("greeter").execute(who="Ada") == "hello Ada"
    assert [tool.name for tool in registry.tools()] == ["calculator", "file_io", "greeter", "web_search"]
    assert registry.get("greeter").hints == ToolHints()  # declared none: MCP's cautious defaults


def test_a_file_added_after_start_appears_on_the_next_listing(plugin_dir: Path) -> None:
    registry = ToolRegistry([plugin_dir])
    assert "greeter" not in [tool.name for tool in registry.tools()]
    write_plugin(plugin_dir, "greeter.py", GREETER)
    assert "greeter" in [tool.name for tool in registry.tools()]


def test_a_changed_file_is_reloaded_and_a_deleted_one_disappears(plugin_dir: Path) -> None:
    path = write_plugin(plugin_dir, "greeter.py", GREETER)
    registry = ToolRegistry([plugin_dir])
    assert registry.get("greeter").description == "Says hello"
    write_plugin(plugin_dir, "greeter.py", GREETER.replace("Says hello", "Says hello politely"))
    # Make sure the stamp differs even on file systems with coarse modification times.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert registry.get("greeter").description == "Says hello politely"
    path.unlink()
    with pytest.raises(NotFound, match="tool 'greeter' not found; ListTools shows the available tools"):
        registry.get("greeter")


def test_a_broken_file_is_skipped_and_the_others_still_load(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_plugin(plugin_dir, "broken.py", "import this_module_does_not_exist\n")
    write_plugin(plugin_dir, "exits.py", "import sys\nsys.exit(3)\n")
    write_plugin(plugin_dir, "greeter.py", GREETER)
    with caplog.at_level(logging.ERROR):
        names = [tool.name for tool in ToolRegistry([plugin_dir]).tools()]
    assert names == ["calculator", "file_io", "greeter", "web_search"]
    assert "broken.py is skipped: it failed to import" in caplog.text
    assert "exits.py is skipped" in caplog.text


def bad_tool_source(attributes: str, *, with_execute: bool = True) -> str:
    """A plugin file with one tool class made of `attributes` (one per line, at class level)."""
    body = "\n".join(f"    {line}" for line in attributes.splitlines())
    execute = "\n    def execute(self) -> str:\n        return 'never'\n" if with_execute else ""
    return f"from services.tools.base import BaseTool\n\n\nclass Bad(BaseTool):\n{body}\n{execute}"


BASE_ATTRIBUTES = 'display_name = "Bad"\ndescription = "Bad"\n'


@pytest.mark.parametrize(
    ("attributes", "with_execute", "reason"),
    [
        ('name = "bad name!"\nparameters = {"type": "object"}', True, "must match"),
        ('name = "not_object"\nparameters = {"type": "string"}', True, "must describe an object"),
        ('name = "bad_schema"\nparameters = {"type": 12}', True, "not a valid JSON schema"),
        ('name = "no_schema"', True, "parameters must be a JSON schema object"),
        ('name = "no_run"\nparameters = {"type": "object"}', False, "implements neither run() nor execute()"),
        ('name = "bad_hints"\nparameters = {"type": "object"}\nhints = {"read_only": True}', True,
         "hints must be a ToolHints"),
    ],
)
def test_an_invalid_tool_class_is_skipped_with_the_reason(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture, attributes: str, with_execute: bool, reason: str
) -> None:
    write_plugin(plugin_dir, "bad.py", bad_tool_source(BASE_ATTRIBUTES + attributes, with_execute=with_execute))
    write_plugin(plugin_dir, "greeter.py", GREETER)
    with caplog.at_level(logging.ERROR):
        names = [tool.name for tool in ToolRegistry([plugin_dir]).tools()]
    assert names == ["calculator", "file_io", "greeter", "web_search"]
    assert "tool class Bad in" in caplog.text
    assert reason in caplog.text


def test_on_a_name_clash_the_first_wins(plugin_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_plugin(plugin_dir, "my_calculator.py", GREETER.replace('"greeter"', '"calculator"'))
    with caplog.at_level(logging.WARNING):
        registry = ToolRegistry([plugin_dir])
        tool = registry.get("calculator")
    assert tool.display_name == "Calculator"  # the built-in one
    assert "tool 'calculator' in" in caplog.text
    assert "already defines a tool with that name" in caplog.text


def test_imported_and_abstract_classes_are_not_tools(plugin_dir: Path) -> None:
    write_plugin(
        plugin_dir,
        "helpers.py",
        '''
        from abc import abstractmethod

        from services.tools.base import BaseTool


        class HelperBase(BaseTool):
            @abstractmethod
            def helper(self) -> str: ...
        ''',
    )
    assert [tool.name for tool in ToolRegistry([plugin_dir]).tools()] == ["calculator", "file_io", "web_search"]


def test_seed_style_get_parameters_and_a_parameters_method_both_work(plugin_dir: Path) -> None:
    write_plugin(
        plugin_dir,
        "styles.py",
        '''
        from services.tools.base import BaseTool


        class SeedStyle(BaseTool):
            name = "seed_style"
            display_name = "Seed style"
            description = "Schema from get_parameters()"

            def get_parameters(self) -> dict:
                return {"type": "object", "properties": {"a": {"type": "number"}}}

            def execute(self, **kwargs) -> str:
                return "ok"


        class MethodStyle(BaseTool):
            name = "method_style"
            display_name = "Method style"
            description = "Schema from a parameters() method"

            def parameters(self) -> dict:
                return {"type": "object", "properties": {"b": {"type": "string"}}}

            def execute(self, **kwargs) -> str:
                return "ok"
        ''',
    )
    registry = ToolRegistry([plugin_dir])
    assert registry.get("seed_style").get_schema()["function"]["parameters"]["properties"] == {"a": {"type": "number"}}
    assert registry.get("method_style").get_parameters()["properties"] == {"b": {"type": "string"}}
