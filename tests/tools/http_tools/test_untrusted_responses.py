"""Tool responses as untrusted input (issue 15): a response nested 60,000 deep is a clear tool error, from an HTTP
tool and from an MCP server alike; responses as deep as the bound or with non-finite numbers are results or text."""

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import mcp_types as types
import pytest

from services.common.errors import Internal
from services.common.json_values import MAX_JSON_DEPTH
from services.tools.mcp.connection import McpTool, output_of
from tests.tools.http_tools.helpers import Tools, expect_error, result_of, struct
from tests.tools.http_tools.untrusted_helpers import LOCAL, json_reply, raw_server

# --- responses ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ("[" * 60_000, grpc.StatusCode.INTERNAL, f"the tool's response is nested deeper than {MAX_JSON_DEPTH} levels"),
        (
            '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1),
            grpc.StatusCode.INTERNAL,
            f"nested deeper than {MAX_JSON_DEPTH} levels",
        ),
        ('["' + "\\\"[" * 20_000 + '",' + "[" * 30_000, grpc.StatusCode.INTERNAL, "nested deeper"),
    ],
)
async def test_a_response_nested_too_deeply_is_a_clear_tool_error(
    make_tools: Callable[..., Awaitable[Tools]], body: str, code: grpc.StatusCode, fragment: str
) -> None:
    async with raw_server(json_reply(body)) as server:
        tools = await make_tools(**LOCAL, TOOLS_MAX_RESULT_BYTES=1024 * 1024)
        await tools.create("deep", f"http://127.0.0.1:{server.port}/x", parameters=struct({"type": "object"}))
        details = await expect_error(tools.call("http__deep"), code, fragment)
        assert "server log" not in details  # not the unexpected-error answer
        assert server.connections == 1


async def test_responses_as_deep_as_the_bound_or_with_non_finite_numbers_are_results_or_text(
    make_tools: Callable[..., Awaitable[Tools]],
) -> None:
    deep = '{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH
    async with raw_server(json_reply(deep)) as ok, raw_server(json_reply('{"x": NaN}')) as nan:
        tools = await make_tools(**LOCAL)
        await tools.create("ok", f"http://127.0.0.1:{ok.port}/x", parameters=struct({"type": "object"}))
        await tools.create("nan", f"http://127.0.0.1:{nan.port}/x", parameters=struct({"type": "object"}))
        value = result_of(await tools.call("http__ok"))
        for _ in range(MAX_JSON_DEPTH):
            value = value["a"]
        assert value == 1
        response = await tools.call("http__nan")
        assert response.text == '{"x": NaN}' and result_of(response) == '{"x": NaN}'  # the text, not a NaN


def test_an_mcp_result_nested_too_deeply_is_a_clear_tool_error() -> None:
    class Connection:
        name = "deep"

    tool = McpTool(Connection(), types.Tool(name="t", input_schema={"type": "object"}))  # type: ignore[arg-type]
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"a": deep}
    with pytest.raises(Internal, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        output_of(tool, types.CallToolResult(content=[], structured_content=deep))
    assert output_of(tool, types.CallToolResult(content=[], structured_content=deep["a"])).result == deep["a"]
