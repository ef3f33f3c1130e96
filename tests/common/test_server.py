"""The shared server bootstrap: error mapping in the interceptor, request ids, metrics, health, reflection, shutdown."""

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from agentplatform.runs.v1 import runs_pb2, runs_pb2_grpc
from services.common import errors
from services.common.auth import Authenticator
from services.common.logs import request_id
from services.common.rpc.codec import CODEC_KEY
from services.common.rpc.interceptor import REQUEST_ID_KEY
from services.common.rpc.server import RunningServer, ServiceBinding, start_server
from services.common.rpc.status import STATUS_BY_ERROR

SERVICE = "agentplatform.runs.v1.RunService"


class FailingRuns(runs_pb2_grpc.RunServiceServicer):
    """GetRun raises whatever error the run id names; WatchRun fails after one event."""

    def __init__(self) -> None:
        self.raised: dict[str, BaseException] = {}
        self.request_ids: list[str] = []

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> runs_pb2.Run:
        self.request_ids.append(request_id.get())
        request_id.set("changed by the handler")  # must not reach the next RPC
        if request.run_id in self.raised:
            raise self.raised[request.run_id]
        if request.run_id == "aborted":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the servicer said no itself")
        return runs_pb2.Run(id=request.run_id)

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        yield runs_pb2.RunEvent(run=runs_pb2.Run(id=request.run_id))
        if request.run_id == "held":
            await asyncio.Event().wait()
        raise errors.NotFound(f"run {request.run_id!r} was deleted while watched")


@pytest.fixture
async def server() -> AsyncIterator[tuple[RunningServer, FailingRuns]]:
    servicer = FailingRuns()
    running = await start_server(
        [ServiceBinding(SERVICE, lambda s: runs_pb2_grpc.add_RunServiceServicer_to_server(servicer, s))],
        "127.0.0.1",
        0,
        Authenticator.development(),
    )
    yield running, servicer
    await running.stop(0)


@pytest.fixture
async def channel(server: tuple[RunningServer, FailingRuns]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server[0].port}") as channel:
        yield channel


@pytest.mark.parametrize(("error_type", "code"), list(STATUS_BY_ERROR.items()))
async def test_each_domain_error_answers_its_status_and_message(
    server: tuple[RunningServer, FailingRuns], channel: grpc.aio.Channel, error_type: type, code: grpc.StatusCode
) -> None:
    server[1].raised["x"] = error_type("what to do about it")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await runs_pb2_grpc.RunServiceStub(channel).GetRun(runs_pb2.GetRunRequest(run_id="x"))
    assert failure.value.code() == code
    assert failure.value.details() == "what to do about it"


async def test_a_bug_answers_internal_with_the_request_id_and_the_server_keeps_serving(
    server: tuple[RunningServer, FailingRuns], channel: grpc.aio.Channel
) -> None:
    server[1].raised["bug"] = KeyError("secret internals")
    stub = runs_pb2_grpc.RunServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetRun(runs_pb2.GetRunRequest(run_id="bug"), metadata=((REQUEST_ID_KEY, "req-42"),))
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert "req-42" in failure.value.details()
    assert "secret internals" not in failure.value.details()
    assert (await stub.GetRun(runs_pb2.GetRunRequest(run_id="ok"))).id == "ok"


async def test_request_id_is_echoed_or_generated_in_the_trailers(channel: grpc.aio.Channel) -> None:
    stub = runs_pb2_grpc.RunServiceStub(channel)
    call = stub.GetRun(runs_pb2.GetRunRequest(run_id="a"), metadata=((REQUEST_ID_KEY, "mine"),))
    assert dict(await call.trailing_metadata())[REQUEST_ID_KEY] == "mine"
    call = stub.GetRun(runs_pb2.GetRunRequest(run_id="a"))
    assert len(dict(await call.trailing_metadata())[REQUEST_ID_KEY]) == 16


async def test_a_failed_call_carries_its_request_id_too(
    server: tuple[RunningServer, FailingRuns], channel: grpc.aio.Channel
) -> None:
    server[1].raised["x"] = errors.NotFound("no such run")
    stub = runs_pb2_grpc.RunServiceStub(channel)
    call = stub.GetRun(runs_pb2.GetRunRequest(run_id="x"), metadata=((REQUEST_ID_KEY, "r-9"),))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert dict(failure.value.trailing_metadata())[REQUEST_ID_KEY] == "r-9"


async def test_each_rpc_logs_under_its_own_request_id(
    server: tuple[RunningServer, FailingRuns], channel: grpc.aio.Channel
) -> None:
    stub = runs_pb2_grpc.RunServiceStub(channel)
    for name in ("first", "second", "third"):
        await stub.GetRun(runs_pb2.GetRunRequest(run_id="a"), metadata=((REQUEST_ID_KEY, name),))
    assert server[1].request_ids == ["first", "second", "third"]
    assert request_id.get() == ""


async def test_a_stream_that_fails_midway_ends_with_the_mapped_status(channel: grpc.aio.Channel) -> None:
    call = runs_pb2_grpc.RunServiceStub(channel).WatchRun(runs_pb2.WatchRunRequest(run_id="r"))
    assert (await call.read()).run.id == "r"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call.read()
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert "deleted while watched" in failure.value.details()


async def test_health_and_reflection_are_served(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(server: tuple[RunningServer, FailingRuns]) -> None:
    def list_services() -> list[str]:
        # grpcio's reflection client is synchronous: run it off the loop that serves the server.
        with grpc.insecure_channel(f"127.0.0.1:{server[0].port}") as sync_channel:
            return ProtoReflectionDescriptorDatabase(sync_channel).get_services()

    assert SERVICE in await asyncio.to_thread(list_services)


async def test_graceful_shutdown_reports_not_serving_first(server: tuple[RunningServer, FailingRuns]) -> None:
    running = server[0]
    await running.health.enter_graceful_shutdown()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_call_marked_json_speaks_the_proto3_json_mapping_both_ways(channel: grpc.aio.Channel) -> None:
    """What the gateway does for grpc-web +json and Connect JSON clients: the same method, in JSON."""
    json_call = ((CODEC_KEY, "json"),)
    get_run = channel.unary_unary("/agentplatform.runs.v1.RunService/GetRun")
    answer = json.loads(await get_run(b'{"runId": "r-1"}', metadata=json_call))
    # Fields at their default are written too (false, 0, the enum's zero, empty lists), unset messages are not.
    assert answer["id"] == "r-1" and answer["cancelRequested"] is False and answer["stepCount"] == "0"
    assert answer["state"] == "RUN_STATE_UNSPECIFIED" and answer["steps"] == [] and "createTime" not in answer
    watch = channel.unary_stream("/agentplatform.runs.v1.RunService/WatchRun")
    stream = watch(b'{"runId": "r-2", "afterSequence": "3"}', metadata=json_call)
    event = json.loads(await anext(aiter(stream)))
    assert event.keys() == {"run"} and event["run"]["id"] == "r-2"
    # The next call on the same channel, in binary, is not affected.
    binary = await runs_pb2_grpc.RunServiceStub(channel).GetRun(runs_pb2.GetRunRequest(run_id="r-3"))
    assert binary.id == "r-3"

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await get_run(b'{"runId": 5, "nope": 1}', metadata=json_call)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad.value.details() or "").startswith(
        "the request body is not a valid agentplatform.runs.v1.GetRunRequest message (JSON)"
    )


async def test_a_second_server_on_a_taken_port_refuses_to_start_instead_of_sharing_it() -> None:
    """No SO_REUSEPORT: with it, two servers bound one port and the kernel split the connections between them (a
    runs service's calls answered UNIMPLEMENTED by an engine that drew the same test port)."""
    from services.common.auth import Authenticator
    from services.common.rpc.server import start_server
    from services.runs.settings import RunsSettings

    auth = Authenticator.from_settings(RunsSettings(_env_file=None))
    first = await start_server([], "127.0.0.1", 0, auth)
    try:
        with pytest.raises(OSError, match=f"could not bind gRPC server to 127.0.0.1:{first.port}; is the port in use"):
            await start_server([], "127.0.0.1", first.port, auth)
    finally:
        await first.stop(0)


def handled(method: str, code: str) -> float:
    return REGISTRY.get_sample_value(
        "grpc_server_handled_total", {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    ) or 0.0


def streams(method: str) -> float:
    return REGISTRY.get_sample_value(
        "grpc_server_streams_in_flight", {"grpc_service": SERVICE, "grpc_method": method}
    ) or 0.0


async def test_every_rpc_is_counted_by_method_and_the_status_it_ended_with(
    server: tuple[RunningServer, FailingRuns], channel: grpc.aio.Channel
) -> None:
    server[1].raised["gone"] = errors.NotFound("no such run")
    server[1].raised["bug"] = KeyError("a bug")
    before = {code: handled("GetRun", code) for code in ("OK", "NOT_FOUND", "INTERNAL", "FAILED_PRECONDITION")}
    timed = REGISTRY.get_sample_value(
        "grpc_server_handling_seconds_count", {"grpc_service": SERVICE, "grpc_method": "GetRun"}
    ) or 0.0
    stub = runs_pb2_grpc.RunServiceStub(channel)
    await stub.GetRun(runs_pb2.GetRunRequest(run_id="a"))
    await stub.GetRun(runs_pb2.GetRunRequest(run_id="b"))
    for run_id in ("gone", "bug", "aborted"):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id))
    assert handled("GetRun", "OK") - before["OK"] == 2
    assert handled("GetRun", "NOT_FOUND") - before["NOT_FOUND"] == 1
    assert handled("GetRun", "INTERNAL") - before["INTERNAL"] == 1
    assert handled("GetRun", "FAILED_PRECONDITION") - before["FAILED_PRECONDITION"] == 1
    assert REGISTRY.get_sample_value(
        "grpc_server_handling_seconds_count", {"grpc_service": SERVICE, "grpc_method": "GetRun"}
    ) == timed + 5


async def test_an_open_stream_is_in_flight_until_its_client_goes_away(channel: grpc.aio.Channel) -> None:
    cancelled = handled("WatchRun", "CANCELLED")
    call = runs_pb2_grpc.RunServiceStub(channel).WatchRun(runs_pb2.WatchRunRequest(run_id="held"))
    assert (await call.read()).run.id == "held"
    assert streams("WatchRun") == 1
    call.cancel()
    for _ in range(100):
        if streams("WatchRun") == 0:
            break
        await asyncio.sleep(0.02)
    assert streams("WatchRun") == 0
    assert handled("WatchRun", "CANCELLED") == cancelled + 1
