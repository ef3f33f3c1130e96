"""Helpers of the HTTP tools' tests: a tools service restarted on one database, with shorthands to create, list and
call HTTP tools (Tools), the settings that let it reach the test's endpoint, and checks that no secret leaks.
The fixtures built on them are in conftest.py beside this module; also used by test_secrets_at_rest.py and
tests/properties/test_tool_schemas.py."""

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from agentplatform.tools.v1 import tools_pb2
from tests.tools.conftest import execute_request
from tests.tools.running_tools import RunningTools

#: A header value given at creation: it reaches the endpoint, and never a response.
SECRET = "Bearer http-secret-5c1d9a"
#: Settings that let the tools service reach the test's server on 127.0.0.1 (by address).
LOCAL = {"TOOLS_HTTP_ALLOWED_HOSTS": "127.0.0.1", "TOOLS_HTTP_SYNC_SECONDS": 0.2}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"type": "array", "items": {"type": "string"}},
        "metric": {"type": "boolean"},
    },
    "required": ["city"],
    "additionalProperties": False,
}


@dataclass
class Tools(RunningTools):
    """A running tools service (restartable on one database) with shorthands for these tests."""

    #: Every response message the test saw, to look for the secret in.
    seen: list[Any] = field(default_factory=list)

    async def create(self, name: str, url: str, method: int = tools_pb2.HTTP_METHOD_POST, **fields: Any) -> Any:
        fields.setdefault("description", f"The {name} tool.")
        fields.setdefault("headers", {"Authorization": SECRET, "X-Team": "forecasts"})
        if "parameters" not in fields:
            fields["parameters"] = struct(SCHEMA)
        spec = tools_pb2.HttpToolSpec(name=name, url=url, method=method, **fields)
        tool = await self.stub.CreateTool(tools_pb2.CreateToolRequest(http=spec))
        self.seen.append(tool)
        return tool

    async def tools(self) -> dict[str, tools_pb2.Tool]:
        response = await self.stub.ListTools(tools_pb2.ListToolsRequest())
        self.seen.append(response)
        return {tool.id: tool for tool in response.tools}

    async def get(self, tool_id: str) -> tools_pb2.Tool:
        tool = await self.stub.GetTool(tools_pb2.GetToolRequest(tool_id=tool_id))
        self.seen.append(tool)
        return tool

    async def call(self, tool_id: str, **arguments: Any) -> Any:
        response = await self.stub.ExecuteTool(execute_request(tool_id, **arguments))
        self.seen.append(response)
        return response


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def assert_no_secret(*messages: Any) -> None:
    for message in messages:
        text = json_format.MessageToJson(message) + str(message.SerializeToString())
        assert "http-secret" not in text


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == code, exc.value.details()
    details = exc.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    assert "http-secret" not in details
    return details


def result_of(response: Any) -> Any:
    return json_format.MessageToDict(response.result)
