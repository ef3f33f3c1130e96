"""HTTP tools and repeated calls, over real gRPC against a real HTTP server that records what it receives: the
Idempotency-Key header of every keyed call, and which tools may be repeated (by method, or as the creator
declared, stored on SQLite and PostgreSQL)."""

from collections.abc import Awaitable, Callable

import grpc

from agentplatform.tools.v1 import tools_pb2
from tests.tools.conftest import execute_request
from tests.tools.http_endpoint import Endpoint
from tests.tools.http_tools.helpers import Tools, expect_error


async def test_a_keyed_call_sends_its_key_as_the_idempotency_key_header_the_same_on_a_repeat(
    tools: Tools, endpoint: Endpoint
) -> None:
    # A header of the same name in the spec does not win over the call's own key (nor is it sent twice).
    await tools.create("pay", endpoint.url("/echo"), headers={"idempotency-key": "fixed", "X-Team": "billing"})
    request = execute_request("http__pay", city="Lyon")
    request.idempotency_key = "8c1e2d7a-run:5"
    await tools.stub.ExecuteTool(request)
    await tools.stub.ExecuteTool(request)  # the same call again (a retry after its engine died)
    await tools.call("http__pay", city="Lyon")  # a call without a key (not from a run)

    keys = [received.headers.get("idempotency-key") for received in endpoint.received]
    assert keys == ["8c1e2d7a-run:5", "8c1e2d7a-run:5", "fixed"]
    assert all(received.headers["x-team"] == "billing" for received in endpoint.received)


async def test_the_method_decides_whether_calls_may_be_repeated_unless_the_creator_declares_it(
    make_tools: Callable[..., Awaitable[Tools]], endpoint: Endpoint, database_url: str
) -> None:
    tools = await make_tools(TOOLS_DATABASE_URL=database_url)
    url = endpoint.url("/echo")
    await tools.create("get", url, tools_pb2.HTTP_METHOD_GET)
    await tools.create("post", url, tools_pb2.HTTP_METHOD_POST)
    await tools.create("put", url, tools_pb2.HTTP_METHOD_PUT)
    await tools.create("patch", url, tools_pb2.HTTP_METHOD_PATCH)
    await tools.create("delete", url, tools_pb2.HTTP_METHOD_DELETE)
    # A POST that only searches, a PATCH that sets a value, a GET that counts visits.
    await tools.create("search", url, tools_pb2.HTTP_METHOD_POST, repeatability=tools_pb2.HTTP_REPEATABILITY_READ_ONLY)
    await tools.create("set", url, tools_pb2.HTTP_METHOD_PATCH, repeatability=tools_pb2.HTTP_REPEATABILITY_IDEMPOTENT)
    created = await tools.create(
        "visit", url, tools_pb2.HTTP_METHOD_GET, repeatability=tools_pb2.HTTP_REPEATABILITY_NOT_IDEMPOTENT
    )
    assert created.http.repeatability == tools_pb2.HTTP_REPEATABILITY_NOT_IDEMPOTENT and not created.repeat_safe

    expected = {
        "get": (True, True), "post": (False, False), "put": (True, False), "patch": (False, False),
        "delete": (True, False), "search": (True, True), "set": (True, False), "visit": (False, False),
    }

    async def shown() -> dict[str, tuple[bool, bool]]:
        listed = await tools.tools()
        return {name: (listed[f"http__{name}"].repeat_safe, listed[f"http__{name}"].hints.read_only)
                for name in expected}

    assert await shown() == expected
    await tools.restart()  # the declarations are stored, not remembered
    assert await shown() == expected
    listed = await tools.tools()
    assert listed["http__search"].http.repeatability == tools_pb2.HTTP_REPEATABILITY_READ_ONLY
    assert listed["http__get"].http.repeatability == tools_pb2.HTTP_REPEATABILITY_UNSPECIFIED


async def test_a_repeatability_that_is_not_one_of_the_declarations_is_refused(tools: Tools, endpoint: Endpoint) -> None:
    spec = tools_pb2.HttpToolSpec(
        name="odd", description="Odd.", url=endpoint.url("/echo"), method=tools_pb2.HTTP_METHOD_POST,
        repeatability=42,  # type: ignore[arg-type]  # a number no declaration has (a newer client's, or a mistake)
    )
    await expect_error(
        tools.stub.CreateTool(tools_pb2.CreateToolRequest(http=spec)), grpc.StatusCode.INVALID_ARGUMENT,
        "http.repeatability 42", "HTTP_REPEATABILITY_READ_ONLY",
    )
    assert "http__odd" not in await tools.tools()
