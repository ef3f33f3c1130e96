"""ToolService over real gRPC: a server from start_tools on a free port and a real channel."""

from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from agentplatform.tools.internal.v1 import execution_pb2 as tool_execution_pb2
from agentplatform.tools.v1 import tools_pb2
from services.tools.app import start_tools
from tests.support.seed import SEED_CALCULATOR_SCHEMA
from tests.support.stubs import tools_stubs
from tests.tools.conftest import RunningTools, SettingsFactory, execute_request, write_plugin


def update_request(tool: tools_pb2.Tool, *paths: str) -> tools_pb2.UpdateToolRequest:
    return tools_pb2.UpdateToolRequest(tool=tool, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))


async def test_list_shows_the_built_in_tools(service: RunningTools) -> None:
    response = await service.stub.ListTools(tools_pb2.ListToolsRequest())
    tools = {tool.id: tool for tool in response.tools}
    assert list(tools) == ["calculator", "file_io", "web_search"]
    assert tools["calculator"].icon == "IconCalculator"
    assert tools["calculator"].display_name == "Calculator"
    assert all(tool.enabled and tool.icon for tool in tools.values())
    assert response.next_page_token == ""


async def test_get_tool_schema_is_exactly_the_seeds(service: RunningTools) -> None:
    tool = await service.stub.GetTool(tools_pb2.GetToolRequest(tool_id="calculator"))
    assert json_format.MessageToDict(tool.schema) == SEED_CALCULATOR_SCHEMA
    assert json_format.MessageToDict(tool.parameters) == SEED_CALCULATOR_SCHEMA["function"]["parameters"]


async def test_execute_calculator_add(service: RunningTools) -> None:
    response = await service.stub.ExecuteTool(execute_request("calculator", operation="add", x=5, y=10))
    assert response.result.number_value == 15
    assert response.text == "5 + 10 = 15"
    assert response.duration.ToTimedelta().total_seconds() >= 0


async def test_execute_structured_result(service: RunningTools) -> None:
    await service.stub.ExecuteTool(execute_request("file_io", operation="write", path="n.txt", content="hi"))
    response = await service.stub.ExecuteTool(execute_request("file_io", operation="read", path="n.txt"))
    assert json_format.MessageToDict(response.result) == {"path": "n.txt", "content": "hi"}


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            execute_request("calculator", operation="divide", x=1, y=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "division by zero: y must not be 0",
        ),
        (
            execute_request("calculator", operation="add", x="five", y=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at x: 'five' is not of type 'number'",
        ),
        (execute_request("nope"), grpc.StatusCode.NOT_FOUND, "tool 'nope' not found"),
        (execute_request(""), grpc.StatusCode.INVALID_ARGUMENT, "tool_id is required"),
        (
            execute_request("file_io", operation="read", path="../../etc/passwd"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "path '../../etc/passwd' is outside the tools workspace",
        ),
    ],
)
async def test_execute_errors_have_exact_codes(
    service: RunningTools, request_: tool_execution_pb2.ExecuteToolRequest, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await service.stub.ExecuteTool(request_)
    assert exc.value.code() == code
    assert message in (exc.value.details() or "")


async def test_disable_hides_from_enabled_only_and_blocks_execution(service: RunningTools) -> None:
    updated = await service.stub.UpdateTool(update_request(tools_pb2.Tool(id="calculator", enabled=False), "enabled"))
    assert updated.enabled is False

    listed = await service.stub.ListTools(tools_pb2.ListToolsRequest(enabled_only=True))
    assert [tool.id for tool in listed.tools] == ["file_io", "web_search"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await service.stub.ExecuteTool(execute_request("calculator", operation="add", x=1, y=2))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tool 'calculator' is disabled; enable it with UpdateTool" in (exc.value.details() or "")

    await service.stub.UpdateTool(update_request(tools_pb2.Tool(id="calculator", enabled=True), "enabled"))
    response = await service.stub.ExecuteTool(execute_request("calculator", operation="add", x=1, y=2))
    assert response.text == "1 + 2 = 3"


async def test_the_disabled_state_survives_a_restart(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    first = await start_tools(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = tools_stubs(channel)
            await stub.UpdateTool(update_request(tools_pb2.Tool(id="web_search", enabled=False), "enabled"))
    finally:
        await first.stop()

    second = await start_tools(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = tools_stubs(channel)
            tool = await stub.GetTool(tools_pb2.GetToolRequest(tool_id="web_search"))
            assert tool.enabled is False
    finally:
        await second.stop()


async def test_description_override_shows_in_get_and_schema_and_empty_resets(service: RunningTools) -> None:
    override = tools_pb2.Tool(id="calculator", description="Arithmetic on two numbers; use it for every sum.")
    await service.stub.UpdateTool(update_request(override, "description"))
    tool = await service.stub.GetTool(tools_pb2.GetToolRequest(tool_id="calculator"))
    assert tool.description == "Arithmetic on two numbers; use it for every sum."
    assert tool.default_description == "Performs basic arithmetic operations"
    assert tool.schema["function"]["description"] == "Arithmetic on two numbers; use it for every sum."

    cleared = tools_pb2.Tool(id="calculator", description="")
    reset = await service.stub.UpdateTool(update_request(cleared, "description"))
    assert reset.description == "Performs basic arithmetic operations"
    assert json_format.MessageToDict(reset.schema) == SEED_CALCULATOR_SCHEMA


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            tools_pb2.UpdateToolRequest(tool=tools_pb2.Tool(id="calculator")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update_mask is required",
        ),
        (
            update_request(tools_pb2.Tool(id="calculator"), "display_name"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "allowed: 'enabled', 'description'",
        ),
        (update_request(tools_pb2.Tool(id=""), "enabled"), grpc.StatusCode.INVALID_ARGUMENT, "tool.id is required"),
        (update_request(tools_pb2.Tool(id="nope"), "enabled"), grpc.StatusCode.NOT_FOUND, "tool 'nope' not found"),
    ],
)
async def test_update_errors_have_exact_codes(
    service: RunningTools, request_: tools_pb2.UpdateToolRequest, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await service.stub.UpdateTool(request_)
    assert exc.value.code() == code
    assert message in (exc.value.details() or "")


async def test_list_paging_errors(service: RunningTools) -> None:
    for request, message in [
        (tools_pb2.ListToolsRequest(page_size=-1), "page_size must be >= 0"),
        (tools_pb2.ListToolsRequest(page_token="not-a-token"), "page_token is not valid"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await service.stub.ListTools(request)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (exc.value.details() or "")


async def test_get_unknown_tool_is_not_found(service: RunningTools) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await service.stub.GetTool(tools_pb2.GetToolRequest(tool_id="nope"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ListTools shows the available tools" in (exc.value.details() or "")


async def test_a_plugin_dropped_in_while_running_is_served(service: RunningTools, plugin_dir: Path) -> None:
    write_plugin(
        plugin_dir,
        "shout.py",
        '''
        from services.tools.base import BaseTool, ToolOutput


        class ShoutTool(BaseTool):
            name = "shout"
            display_name = "Shout"
            description = "Upper-cases a text"
            icon = "IconSpeakerphone"
            parameters = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

            async def run(self, arguments, context):
                return ToolOutput(arguments["text"].upper(), arguments["text"].upper())
        ''',
    )
    listed = await service.stub.ListTools(tools_pb2.ListToolsRequest())
    assert "shout" in [tool.id for tool in listed.tools]
    response = await service.stub.ExecuteTool(execute_request("shout", text="hi"))
    assert response.text == "HI"


async def test_a_crashing_tool_is_internal_and_the_service_keeps_serving(
    service: RunningTools, plugin_dir: Path
) -> None:
    write_plugin(
        plugin_dir,
        "crash.py",
        '''
        from services.tools.base import BaseTool


        class CrashTool(BaseTool):
            name = "crash"
            display_name = "Crash"
            description = "Always fails"
            parameters = {"type": "object"}

            def execute(self):
                raise KeyError("missing")
        ''',
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await service.stub.ExecuteTool(execute_request("crash"))
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert "tool 'crash' failed: KeyError: 'missing'" in (exc.value.details() or "")
    response = await service.stub.ExecuteTool(execute_request("calculator", operation="multiply", x=15, y=3))
    assert response.text == "15 * 3 = 45"


async def test_a_slow_tool_is_deadline_exceeded(make_settings: SettingsFactory, plugin_dir: Path) -> None:
    write_plugin(
        plugin_dir,
        "slow.py",
        '''
        import asyncio

        from services.tools.base import BaseTool


        class SlowTool(BaseTool):
            name = "slow"
            display_name = "Slow"
            description = "Takes a minute"
            parameters = {"type": "object"}

            async def run(self, arguments, context):
                await asyncio.sleep(60)
        ''',
    )
    app = await start_tools(make_settings(TOOLS_TIMEOUT_SECONDS=0.2))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = tools_stubs(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.ExecuteTool(execute_request("slow"))
            assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "tool 'slow' did not finish within 0.2 s" in (exc.value.details() or "")
            # It counts as a timeout (and an error) in the tool's usage figures.
            usage = (await stub.GetTool(tools_pb2.GetToolRequest(tool_id="slow"))).usage
            assert (usage.calls, usage.errors, usage.timeouts) == (1, 1, 1)
            assert usage.p50_duration.ToTimedelta().total_seconds() >= 0.2
    finally:
        await app.stop()


async def test_each_tool_shows_how_it_has_been_used(service: RunningTools) -> None:
    """The Manage Tools page's figures: calls, errors, timeouts, recent durations, last use, per tool."""
    fresh = await service.stub.GetTool(tools_pb2.GetToolRequest(tool_id="calculator"))
    assert fresh.usage.calls == 0 and not fresh.usage.HasField("last_used_time")

    for x in range(4):
        await service.stub.ExecuteTool(execute_request("calculator", operation="add", x=x, y=1))
    with pytest.raises(grpc.aio.AioRpcError):
        await service.stub.ExecuteTool(execute_request("calculator", operation="divide", x=1, y=0))
    with pytest.raises(grpc.aio.AioRpcError):
        await service.stub.ExecuteTool(execute_request("calculator", operation="add", x="not a number", y=1))

    usage = (await service.stub.GetTool(tools_pb2.GetToolRequest(tool_id="calculator"))).usage
    assert (usage.calls, usage.errors, usage.timeouts) == (6, 2, 0)
    assert usage.HasField("p50_duration") and usage.HasField("p95_duration") and usage.HasField("last_used_time")
    assert usage.p50_duration.ToTimedelta() <= usage.p95_duration.ToTimedelta()
    listed = await service.stub.ListTools(tools_pb2.ListToolsRequest())
    by_id = {tool.id: tool.usage.calls for tool in listed.tools}
    assert by_id["calculator"] == 6 and by_id["web_search"] == 0



async def test_every_tool_shows_its_behaviour_hints(service: RunningTools) -> None:
    """MCP's tool annotations, as each built-in tool declares them; a plugin that declares none gets MCP's
    cautious defaults."""
    listed = {tool.id: tool.hints for tool in (await service.stub.ListTools(tools_pb2.ListToolsRequest())).tools}
    calculator, files, search = listed["calculator"], listed["file_io"], listed["web_search"]
    assert (calculator.read_only, calculator.destructive, calculator.idempotent, calculator.open_world) == (
        True, False, True, False
    )
    assert (files.read_only, files.destructive, files.open_world) == (False, True, False)
    assert (search.read_only, search.open_world) == (True, True)
