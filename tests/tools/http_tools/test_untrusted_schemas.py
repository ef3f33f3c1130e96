"""Tool schemas as untrusted input (issue 15), over real gRPC against real local servers: a `$ref` to a server that
never answers is refused and never contacted, and health answers meanwhile; self-referencing and costly schemas
are refused where they enter, naming the JSON pointer; patterns run on RE2.

Responses are in test_untrusted_responses.py, destinations in test_untrusted_destinations.py."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from services.tools.http.specs import HttpToolSpec, HttpToolStore
from tests.tools.http_endpoint import Endpoint
from tests.tools.http_tools.helpers import Tools, expect_error, result_of, struct
from tests.tools.http_tools.untrusted_helpers import LOCAL, health_latency, raw_server

# --- $ref ---------------------------------------------------------------------------------------------------------


async def test_a_ref_to_a_server_that_never_answers_is_refused_and_never_contacted(
    make_tools: Callable[..., Awaitable[Tools]],
) -> None:
    async with raw_server(None) as silent:
        tools = await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="127.0.0.1", TOOLS_TIMEOUT_SECONDS=30)
        url = f"http://127.0.0.1:{silent.port}/schema.json"
        schema = {"type": "object", "properties": {"city": {"$ref": url}}}
        await expect_error(
            tools.create("weather", f"http://127.0.0.1:{silent.port}/x", parameters=struct(schema)),
            grpc.StatusCode.INVALID_ARGUMENT, "/properties/city/$ref", "never fetched",
        )
        # A tool stored before the checks (straight into the table): its calls refuse to use the schema, and
        # nothing is fetched either.
        assert tools.app is not None
        old = HttpToolSpec("legacy", "Legacy", "An old tool.", schema, f"http://127.0.0.1:{silent.port}/x", "POST")
        await HttpToolStore(tools.app.database).create(old)
        await tools.app.http_tools.sync()
        started = time.perf_counter()
        call = asyncio.ensure_future(tools.call("http__legacy", city="Lyon"))
        assert await health_latency(tools) < 2
        await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, "/properties/city/$ref", "recreate it")
        assert time.perf_counter() - started < 5
        assert silent.connections == 0


RECURSIVE_TREE = {
    "type": "object",
    "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node",
}


def _doubling(levels: int) -> dict[str, Any]:
    """allOf of two refs to a definition that does the same, `levels` deep: 2^levels schemas per value."""
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


@pytest.mark.parametrize(
    ("schema", "fragments"),
    [
        ({"type": "object", "$ref": "#"}, ["at /$ref", "never end"]),
        (
            {"type": "object", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
             "properties": {"x": {"$ref": "#/$defs/a"}}},
            ["/$defs/", "never end"],
        ),
        (
            {"type": "object", "$defs": {"a": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}},
             "properties": {"x": {"$ref": "#/$defs/a"}}},
            ["/$defs/a/anyOf/1/$ref", "never end"],
        ),
        (_doubling(40), ["more than 2,000 schemas"]),
        (
            {"type": "object", "$defs": {f"c{i}": {"$ref": f"#/$defs/c{i + 1}"} for i in range(300)} | {"c300": {}},
             "properties": {"x": {"$ref": "#/$defs/c0"}}},
            ["nest through"],
        ),
        ({"type": "object", "properties": {"x": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}},
         ["/properties/x/$ref", "never fetched"]),
        ({"type": "object", "$id": "https://example.com/s", "properties": {"x": {"$ref": "other.json"}}},
         ["/properties/x/$ref"]),
        ({"type": "object", "properties": {"x": {"$dynamicRef": "#meta"}}}, ["/properties/x/$dynamicRef"]),
        ({"type": "object", "properties": {"x": {"$schema": "http://json-schema.org/draft-04/schema#"}}},
         ["/properties/x/$schema"]),
        ({"type": "object", "properties": {"x": {"type": "string", "pattern": "(a)\\1"}}},
         ["/properties/x/pattern", "RE2"]),
        ({"type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}},
         ["/properties/x/pattern", "RE2"]),
        ({"type": "object", "patternProperties": {"^(?!x)": {}}}, ["/patternProperties/^(?!x)", "RE2"]),
        ({"type": "object", "unevaluatedProperties": False, "patternProperties": {"^a": {}}},
         ["/unevaluatedProperties"]),
        ({"type": "object", "properties": {"x": {"type": 12}}}, ["/properties/x/type", "not a valid JSON schema"]),
        ({"type": "string"}, ["/type", "object"]),
    ],
)
async def test_bad_schemas_are_refused_at_creation_naming_where(
    make_tools: Callable[..., Awaitable[Tools]], schema: dict[str, Any], fragments: list[str]
) -> None:
    tools = await make_tools(**LOCAL)
    await expect_error(
        tools.create("t", "http://127.0.0.1:9/x", parameters=struct(schema)), grpc.StatusCode.INVALID_ARGUMENT,
        "http.parameters", *fragments,
    )
    assert await health_latency(tools) < 2


async def test_a_recursive_schema_that_descends_is_accepted_and_checks_every_level(
    tools: Tools, endpoint: Endpoint
) -> None:
    await tools.create("tree", endpoint.url("/echo"), parameters=struct(RECURSIVE_TREE))
    response = await tools.call("http__tree", kids=[{"kids": [{"kids": []}]}])
    assert result_of(response)["json"] == {"kids": [{"kids": [{"kids": []}]}]}
    await expect_error(
        tools.call("http__tree", kids=[{"kids": [{"kids": 3}]}]), grpc.StatusCode.INVALID_ARGUMENT,
        "at kids[0].kids[0].kids: 3.0 is not of type 'array'",
    )


async def test_non_finite_numbers_in_a_schema_or_in_arguments_are_invalid_arguments(
    tools: Tools, endpoint: Endpoint
) -> None:
    await expect_error(
        tools.create("inf", endpoint.url("/echo"), parameters=struct({"type": "object", "maximum": float("inf")})),
        grpc.StatusCode.INVALID_ARGUMENT, "http.parameters", "Infinity",
    )
    await tools.create("num", endpoint.url("/echo"), parameters=struct({"type": "object"}))
    await expect_error(tools.call("http__num", x=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "arguments", "NaN")
    assert endpoint.received == []


# --- patterns -----------------------------------------------------------------------------------------------------


async def test_patterns_run_on_re2_in_linear_time(tools: Tools, endpoint: Endpoint) -> None:
    evil = "^(a+)+$"
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "pattern": evil}},
        "patternProperties": {evil: {"type": "integer"}},
        "additionalProperties": False,
    }
    await tools.create("words", endpoint.url("/echo"), parameters=struct(schema))
    hostile = "a" * 5000 + "b"
    started = time.perf_counter()
    await expect_error(tools.call("http__words", word=hostile), grpc.StatusCode.INVALID_ARGUMENT, "does not match")
    await expect_error(tools.call("http__words", **{hostile: 1}), grpc.StatusCode.INVALID_ARGUMENT, "not allowed")
    assert time.perf_counter() - started < 5  # Python's re would take longer than the universe's age
    response = await tools.call("http__words", word="aaaa", aaa=3)
    assert result_of(response)["json"] == {"word": "aaaa", "aaa": 3}


async def test_health_answers_while_a_costly_validation_runs(tools: Tools, endpoint: Endpoint) -> None:
    # Accepted at creation (2^8 schemas per item is under the bound), costly per call: every item of the array
    # goes through all of them, until the step budget stops it.
    schema = _doubling(8)
    schema["properties"] = {"items": {"type": "array", "items": {"$ref": "#/$defs/d0"}}}
    await tools.create("costly", endpoint.url("/echo"), parameters=struct(schema))
    started = time.perf_counter()
    call = asyncio.ensure_future(tools.call("http__costly", items=["fits"] * 2000))
    latencies: list[float] = []
    while not call.done():
        latencies.append(await health_latency(tools))
        await asyncio.sleep(0.05)
    duration = time.perf_counter() - started
    await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "50,000 steps")
    assert endpoint.received == []
    # The validation ran long enough to be measured, and the service answered health checks all along.
    assert duration > 0.3 and len(latencies) >= 3, (duration, latencies)
    assert max(latencies) < max(0.5, duration / 3), (duration, latencies)


async def test_health_answers_while_a_large_schema_is_checked_at_creation(tools: Tools) -> None:
    # The largest schema accepted (about 64 KB) takes a while to check against the metaschema and to walk.
    schema = {"type": "object", "properties": {f"p{index}": {"allOf": [{}, {}]} for index in range(1500)}}
    started = time.perf_counter()
    create = asyncio.ensure_future(tools.create("large", "http://127.0.0.1:9/x", parameters=struct(schema)))
    latencies: list[float] = []
    while not create.done():
        latencies.append(await health_latency(tools))
        await asyncio.sleep(0.02)
    duration = time.perf_counter() - started
    assert (await create).id == "http__large"
    assert max(latencies, default=0) < max(0.5, duration / 3), (duration, latencies)
