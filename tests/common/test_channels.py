"""The balanced channel every service dials another with (services.common.rpc.channels): which address settings it
accepts and what it refuses (naming the variable), and, with real gRPC servers, that calls spread over every
address of a list and skip one that went away."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.rpc.channels import check_target, dial, grpc_target
from services.common.settings import SettingsError, load_settings
from services.engine.settings import EngineSettings
from tests.conftest import free_port

METHOD = "/test.Echo/Which"


@pytest.mark.parametrize(
    ("setting", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("runs:50051", "runs:50051"),
        (" runs.default.svc.cluster.local:50051 ", "runs.default.svc.cluster.local:50051"),
        ("dns:///runs-headless:50051", "dns:///runs-headless:50051"),
        ("127.0.0.1:50051,127.0.0.1:50061", "ipv4:127.0.0.1:50051,127.0.0.1:50061"),
        ("127.0.0.1:50051, 10.0.0.2:50051", "ipv4:127.0.0.1:50051,10.0.0.2:50051"),
        ("[::1]:50051,[::1]:50061", "ipv6:[::1]:50051,[::1]:50061"),
        # A name in a list is resolved when the channel is made (its IPv4 addresses when it has some).
        ("localhost:50051,127.0.0.1:50061", "ipv4:127.0.0.1:50051,127.0.0.1:50061"),
        # The same address twice is one address.
        ("127.0.0.1:50051,127.0.0.1:50051", "ipv4:127.0.0.1:50051"),
    ],
)
def test_good_targets(setting: str, target: str) -> None:
    assert grpc_target(setting) == target


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("runs", "has no port"),
        ("runs:", "the port must be a number"),
        ("runs:http", "the port must be a number"),
        ("runs:70000", "the port must be a number from 1 to 65535"),
        ("runs:0", "the port must be a number from 1 to 65535"),
        (":50051", "has no port"),
        ("127.0.0.1:50051,", "an empty address in the list"),
        ("127.0.0.1:50051,,127.0.0.1:50061", "an empty address in the list"),
        ("::1:50051", "an IPv6 address goes in brackets"),
        ("[nope]:50051", "is not an IPv6 address"),
        ("http://runs:50051", "is a URL"),
        ("runs a:50051", "is neither a host name nor an IP address"),
    ],
)
def test_bad_targets_say_what_is_wrong(setting: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_target(setting)


def test_a_list_of_both_families_is_refused_when_dialled() -> None:
    assert check_target("127.0.0.1:1,[::1]:2") == "127.0.0.1:1,[::1]:2"
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        grpc_target("127.0.0.1:1,[::1]:2")


def test_a_name_in_a_list_that_does_not_resolve_is_named() -> None:
    with pytest.raises(ValueError, match=r"no-such-host\.invalid:1 in an address list: the name does not resolve"):
        grpc_target("127.0.0.1:2,no-such-host.invalid:1")


def test_a_malformed_list_is_a_settings_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RUNS_ADDR", "127.0.0.1:50051,runs")
    with pytest.raises(SettingsError, match=r"RUNS_ADDR='127.0.0.1:50051,runs': Value error, 'runs' has no port"):
        load_settings(EngineSettings, _env_file=None)


# --- real servers -------------------------------------------------------------------------------------------


async def _server(name: str, port: int) -> grpc.aio.Server:
    """A server answering METHOD with its own name."""

    async def which(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return name.encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Which": grpc.unary_unary_rpc_method_handler(which)})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@pytest.fixture
async def two_servers() -> AsyncIterator[tuple[list[int], list[grpc.aio.Server]]]:
    ports = [free_port(), free_port()]
    servers = [await _server(name, port) for name, port in zip("ab", ports, strict=True)]
    yield ports, servers
    for server in servers:
        await server.stop(0)


async def test_calls_spread_over_a_list_and_skip_an_address_that_went_away(
    two_servers: tuple[list[int], list[grpc.aio.Server]],
) -> None:
    ports, servers = two_servers
    async with dial(",".join(f"127.0.0.1:{port}" for port in ports)) as channel:
        which = channel.unary_unary(METHOD)
        await asyncio.wait_for(channel.channel_ready(), 10)
        # round_robin connects to every address; the calls go to each in turn once both are READY.
        for _ in range(100):
            answers = [await which(b"", timeout=5) for _ in range(10)]
            if set(answers) == {b"a", b"b"}:
                break
            await asyncio.sleep(0.05)
        assert set(answers) == {b"a", b"b"}, answers

        await servers[0].stop(0)
        answered: list[bytes] = []
        failed = 0
        for _ in range(20):
            try:
                answered.append(await which(b"", timeout=5))
            except grpc.aio.AioRpcError as exc:
                # At most the call that raced the server's going: gRPC drops the address as soon as it sees it go.
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1
        assert failed <= 1 and set(answered) == {b"b"}, (failed, answered)


# --- client metrics -----------------------------------------------------------------------------------------

def _client_count(method: str, code: str) -> float:
    service, name = method.strip("/").split("/")
    labels = {"grpc_service": service, "grpc_method": name, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0.0


async def test_every_call_of_a_dialled_channel_is_counted_by_method_and_status_as_its_caller_saw_it() -> None:
    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort raises")

    async def count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for number in range(3):
            yield str(number).encode()

    port = free_port()
    server = await _server("a", port)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.More", {
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    })])
    before = {key: _client_count(*key) for key in [
        (METHOD, "OK"), ("/test.More/Fail", "NOT_FOUND"), ("/test.More/Count", "OK"), (METHOD, "UNAVAILABLE"),
    ]}
    try:
        async with dial(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary(METHOD)(b"", timeout=5) == b"a"
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await channel.unary_unary("/test.More/Fail")(b"", timeout=5)
            # The caller gets the server's status and message, as without the counting.
            assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")
            assert [item async for item in channel.unary_stream("/test.More/Count")(b"", timeout=5)] == [
                b"0", b"1", b"2",
            ]
            await asyncio.sleep(0.05)  # a stream is counted by a task once it ended
    finally:
        await server.stop(0)
    # A call that never reached a server is counted on the caller's side only.
    async with dial(f"127.0.0.1:{free_port()}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(METHOD)(b"", timeout=1)
    after = {key: _client_count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == dict.fromkeys(before, 1.0)
    assert REGISTRY.get_sample_value(
        "grpc_client_handling_seconds_count", {"grpc_service": "test.More", "grpc_method": "Count"}
    ) == 1.0
