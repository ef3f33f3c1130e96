"""Property tests of the tool-schema boundary (services/tools/schemas/) and of bounded JSON parsing
(services/common/json_values.py): whatever schema, arguments or text is generated (refs to anywhere and to
themselves, hostile patterns, deep nesting, huge strings, odd unicode, non-finite numbers), the answer is a clear
refusal or a result, never an unexpected exception (INTERNAL), and it comes in bounded time."""

import asyncio
import itertools
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest_asyncio
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentplatform.tools.v1 import tools_pb2
from services.common.errors import DomainError
from services.common.json_values import MAX_JSON_DEPTH, JsonInputError, parse_json
from services.common.rpc.status import status_for
from services.tools.base import BaseTool
from services.tools.executor import validate_arguments
from services.tools.schemas.checks import argument_problems, check_schema
from services.tools.schemas.problems import SchemaProblem, ValidationTooCostly
from tests.tools.conftest import execute_request, make_settings, plugin_dir  # noqa: F401  (fixtures make_tools needs)
from tests.tools.http_tools.conftest import make_tools  # noqa: F401  (a fixture)
from tests.tools.http_tools.helpers import Tools

#: The most one check or one validation may take (generous: the machine is shared; the real bound is in steps).
TIME_BOUND_SECONDS = 10.0

REFS = st.sampled_from([
    "#", "#/$defs/a", "#/$defs/b", "#/properties/x", "#/nowhere", "#a", "http://127.0.0.1:9/s.json",
    "https://json-schema.org/draft/2020-12/schema", "other.json", "urn:x", "#/$defs/a/allOf/0", "file:///etc/passwd",
])
PATTERNS = st.one_of(
    st.sampled_from(["^(a+)+$", "(a)\\1", "(?=a)", "(?<!a)b", "a{2000}", "[", "^\\p{L}+$", "(x+x+)+y", ".*"]),
    st.text(max_size=20),
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50), st.text(alphabet=st.characters(codec="utf-8"), max_size=5),
)


def schemas(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    keyword_values = {
        "type": st.sampled_from(["object", "string", "array", "integer", "number", "boolean", "null", 12]),
        "$ref": REFS,
        "$dynamicRef": REFS,
        "$id": st.sampled_from(["https://example.com/s", "#frag", "urn:x"]),
        "$anchor": st.sampled_from(["a", "b", "1bad"]),
        "$schema": st.sampled_from(["http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-03/schema#"]),
        "pattern": PATTERNS,
        "patternProperties": st.dictionaries(PATTERNS, children, max_size=2),
        "properties": st.dictionaries(st.sampled_from(["x", "y", "$ref", "a/b"]), children, max_size=3),
        "additionalProperties": children,
        "unevaluatedProperties": children,
        "items": children,
        "prefixItems": st.lists(children, max_size=2),
        "allOf": st.lists(children, max_size=3),
        "anyOf": st.lists(children, max_size=3),
        "oneOf": st.lists(children, max_size=3),
        "not": children,
        "if": children,
        "then": children,
        "else": children,
        "dependentSchemas": st.dictionaries(st.sampled_from(["x", "y"]), children, max_size=2),
        "$defs": st.fixed_dictionaries({}, optional={"a": children, "b": children}),
        "uniqueItems": st.booleans(),
        "enum": st.lists(JSON_SCALARS, max_size=3),
        "minimum": st.floats(allow_nan=True),
        "format": st.sampled_from(["regex", "email", "date-time"]),
        "required": st.lists(st.sampled_from(["x", "y"]), max_size=2),
    }
    return st.fixed_dictionaries({}, optional=keyword_values)


SCHEMA_NODES = st.recursive(st.booleans() | st.just({}), lambda children: schemas(children), max_leaves=12)
ROOT_SCHEMAS = st.one_of(
    SCHEMA_NODES.map(lambda node: {"type": "object", **node} if isinstance(node, dict) else node),
    st.builds(lambda node, defs: {"type": "object", "properties": {"x": node}, "$defs": defs},
              SCHEMA_NODES, st.dictionaries(st.sampled_from(["a", "b"]), SCHEMA_NODES, max_size=2)),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS.filter(lambda value: not (isinstance(value, float) and not math.isfinite(value))),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"x": value}
    return value


ARGUMENTS = st.one_of(
    st.dictionaries(st.sampled_from(["x", "y", "aaaaaaaaaaaaaaaaaaaaaaaaaaaab", "$ref"]), JSON_VALUES, max_size=4),
    st.integers(0, 200).map(lambda depth: {"x": nested(depth)}),
    st.integers(0, 100_000).map(lambda size: {"x": "a" * size + "b"}),
    st.integers(0, 3000).map(lambda size: {"x": [{"k": index % 7} for index in range(size)]}),
)


def _timed(function: Any, *args: Any) -> Any:
    started = time.perf_counter()
    try:
        return function(*args)
    finally:
        assert time.perf_counter() - started < TIME_BOUND_SECONDS


@given(schema=ROOT_SCHEMAS, arguments=ARGUMENTS)
@example(  # a pointer through a boolean schema: referencing raised TypeError, which was INTERNAL
    schema={"type": "object", "properties": {"x": {"$ref": "#/$defs/a/allOf/0"}}, "$defs": {"a": False}},
    arguments={},
)
def test_any_schema_is_accepted_or_refused_and_any_arguments_fit_or_are_refused_in_bounded_time(
    schema: Any, arguments: dict[str, Any]
) -> None:
    try:
        checked = _timed(check_schema, schema)
    except SchemaProblem as exc:
        assert str(exc)
        return
    assert checked.get("type") == "object"
    try:
        problems = _timed(argument_problems, checked, arguments)
    except (JsonInputError, ValidationTooCostly) as exc:
        assert str(exc)
        return
    assert all(isinstance(problem, str) and problem for problem in problems)


class _Tool(BaseTool):
    name = "generated"
    display_name = "Generated"
    description = "A tool with a generated schema."

    def __init__(self, schema: Any) -> None:
        self.parameters = schema  # type: ignore[misc]

    async def run(self, arguments: dict[str, Any], context: Any) -> Any:
        return None


@given(schema=ROOT_SCHEMAS, arguments=ARGUMENTS)
def test_the_executors_validation_answers_ok_or_a_clear_status_never_internal(
    schema: Any, arguments: dict[str, Any]
) -> None:
    # What ExecuteTool does with a tool whose schema was stored unchecked: a domain error with its status.
    if not isinstance(schema, dict):
        return
    try:
        _timed(asyncio.run, validate_arguments(_Tool(schema), arguments))
    except DomainError as exc:
        assert status_for(exc) in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), exc


@given(text=st.one_of(
    st.text(max_size=200),
    st.text(alphabet="[]{}\",:\\ 1a", max_size=400),
    st.integers(0, 100_000).map(lambda depth: "[" * depth),
    st.integers(0, 50).map(lambda depth: json.dumps(nested(depth))),
    st.sampled_from(["NaN", "[Infinity]", "-Infinity", "1e999", '{"a": -1e400}', "1" * 5000]),
))
def test_parse_json_answers_a_value_or_a_clear_refusal_in_bounded_time(text: str) -> None:
    try:
        value = _timed(parse_json, text)
    except JsonInputError as exc:
        assert str(exc)
        return
    # What is accepted is finite JSON no deeper than the bound, and it is what json reads.
    assert json.loads(json.dumps(value, allow_nan=False)) == value
    assert _depth(value) <= MAX_JSON_DEPTH


@given(value=JSON_VALUES)
def test_json_within_the_bound_parses_to_itself(value: Any) -> None:
    assert parse_json(json.dumps(value)) == value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


# --- over gRPC: CreateTool and ExecuteTool of a real tools service ----------------------------------------------

_names = itertools.count()


@settings(max_examples=max(5, settings().max_examples // 4))  # each example is three RPCs
@given(schema=ROOT_SCHEMAS, arguments=ARGUMENTS)
async def test_create_and_execute_over_grpc_answer_ok_or_a_clear_status_never_internal(
    tools: Tools, schema: Any, arguments: dict[str, Any]
) -> None:
    name = f"gen{next(_names)}"
    parameters = struct_pb2.Struct()
    try:
        parameters.update(schema if isinstance(schema, dict) else {"not": schema})
    except ValueError:
        return  # not a Struct (protobuf refuses it before the service sees it)
    try:
        # Port 9 on 127.0.0.1: nothing listens, so a call that passes validation is UNAVAILABLE, never sent.
        await tools.create(name, "http://127.0.0.1:9/x", parameters=parameters)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        return
    try:
        request = execute_request(f"http__{name}", **arguments)
        request.ParseFromString(request.SerializeToString())  # what the service will decode
    except (ValueError, DecodeError):
        request = None  # deeper than protobuf takes: never reaches the service (see services.common.json_values)
    try:
        if request is not None:
            await tools.stub.ExecuteTool(request)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE), exc.details()
    finally:
        await tools.stub.DeleteTool(tools_pb2.DeleteToolRequest(tool_id=f"http__{name}"))


@pytest_asyncio.fixture
async def tools(make_tools: Callable[..., Awaitable[Tools]]) -> Tools:  # noqa: F811
    return await make_tools(TOOLS_HTTP_ALLOWED_HOSTS="127.0.0.1", TOOLS_TIMEOUT_SECONDS=20)
