"""End to end: the REST/JSON paths (the protos' google.api.http bindings, transcoded by Envoy) against the stack
`make run` starts, with API keys: identity and ownership as over gRPC, errors as google.rpc.Status JSON with the
HTTP status of their code, StreamChat and WatchRun as Server-Sent Events, and a plain JSON POST to a gRPC path
told what to use instead. One stack for the module."""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from agentplatform.runs.v1 import runs_pb2
from tests.e2e.conftest import RunningStack
from tests.support.keys import ADMIN, ALICE, AUTH, BOB
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    return dict(AUTH)


def as_(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(platform_stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform_stack.stack.gateway_url, timeout=30) as client:
        yield client


def sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, JSON data) of each event of a Server-Sent Events stream as it arrives; the type is "message" unless
    the event names one, as EventSource reads it."""
    kind, data = "message", list[str]()
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[len("data:"):].strip())
        elif line.startswith("event:"):
            kind = line[len("event:"):].strip()
        elif line == "" and data:
            yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        else:
            assert line == "", f"not a line of an SSE stream: {line!r}"
    assert not data, "the stream ended in the middle of an event"


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The data of a stream's events, which must all be messages (no error)."""
    for kind, data in sse(response):
        assert kind == "message", data
        yield data


def run_event(event: dict[str, Any]) -> runs_pb2.RunEvent:
    """An event's JSON as the RunEvent it must be: a field the message does not have fails here."""
    return json_format.ParseDict(event, runs_pb2.RunEvent())


def status_of(response: httpx.Response) -> tuple[int, int, str]:
    """(HTTP status, google.rpc.Status code, message) of a REST error, which must be JSON."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    return response.status_code, body["code"], body["message"]


def test_chat_over_sse_arrives_live_once_in_order_and_equals_the_stored_run(client: httpx.Client) -> None:
    events: list[runs_pb2.RunEvent] = []
    with client.stream("POST", "/api/chat", json={"message": SEED_QUESTION}, headers=as_(ALICE)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response):
            events.append(run_event(event))
            if len(events) == 1:
                # The run is readable over REST while its stream still runs.
                live = client.get(f"/api/runs/{events[0].run.id}", headers=as_(ALICE))
                assert live.status_code == 200 and live.json()["state"] == "RUN_STATE_RUNNING"

    run_id = events[0].run.id
    assert events[0].run.state == runs_pb2.RUN_STATE_RUNNING
    assert events[-1].run.state == runs_pb2.RUN_STATE_COMPLETED
    assert any(event.WhichOneof("event") == "delta" for event in events), "the model's text must arrive as it comes"
    steps = [event.step for event in events if event.WhichOneof("event") == "step"]
    assert [step.sequence for step in steps] == list(range(1, len(steps) + 1)), "each step once, in order"
    assert timeline(steps) == SEED_TIMELINE

    stored = client.get(f"/api/runs/{run_id}", headers=as_(ALICE))
    assert stored.status_code == 200
    assert list(json_format.ParseDict(stored.json(), runs_pb2.Run()).steps) == steps

    # WatchRun over SSE replays the finished run: the run, every step after after_sequence, the final run.
    with client.stream("GET", f"/api/runs/{run_id}:watch?afterSequence=2", headers=as_(ALICE)) as response:
        assert response.status_code == 200
        watched = [run_event(event) for event in sse_events(response)]
    assert [event.step for event in watched if event.WhichOneof("event") == "step"] == steps[2:]
    assert watched[-1].run.state == runs_pb2.RUN_STATE_COMPLETED

    # Identity and ownership as over gRPC: no key is 401, another user's run 404 exactly as a missing one.
    assert status_of(client.get(f"/api/runs/{run_id}"))[:2] == (401, 16)
    assert status_of(client.get(f"/api/runs/{run_id}", headers=as_(BOB))) == (
        404, 5, f"run '{run_id}' not found"
    )
    # A stream's error comes as an SSE `error` event: the stream's headers (200) went out before it.
    with client.stream("GET", f"/api/runs/{run_id}:watch", headers=as_(BOB)) as response:
        assert response.status_code == 200
        assert list(sse(response)) == [
            ("error", {"code": 5, "message": f"run '{run_id}' not found", "details": []})
        ]
    assert run_id not in [run["id"] for run in client.get("/api/runs", headers=as_(BOB)).json()["runs"]]
    assert run_id in [run["id"] for run in client.get("/api/runs", headers=as_(ALICE)).json()["runs"]]


def test_responses_print_every_field_in_camel_case(client: httpx.Client) -> None:
    disabled = client.patch(
        "/api/tools/calculator", params={"updateMask": "enabled"}, json={"enabled": False}, headers=as_(ADMIN)
    )
    try:
        assert disabled.status_code == 200, disabled.text
        tool = disabled.json()
        assert tool["enabled"] is False, "a false boolean is printed, not left out"
        assert tool["displayName"] == "Calculator"
        listed = client.get("/api/tools", params={"pageSize": 50}, headers=as_(ALICE)).json()
        assert {"id": "calculator", "enabled": False}.items() <= next(
            t for t in listed["tools"] if t["id"] == "calculator"
        ).items()
    finally:
        client.patch(
            "/api/tools/calculator", params={"updateMask": "enabled"}, json={"enabled": True}, headers=as_(ADMIN)
        )
    # Only admins change tools: the service's own refusal, as JSON with its HTTP status.
    refused = client.patch(
        "/api/tools/calculator", params={"updateMask": "enabled"}, json={"enabled": False}, headers=as_(ALICE)
    )
    assert status_of(refused) == (403, 7, "changing a tool's settings needs the admin role")


def test_bad_requests_are_json_errors_naming_what_is_wrong(client: httpx.Client) -> None:
    code, status, message = status_of(
        client.post("/api/runs", content=b'{"message":', headers={**as_(ALICE), "content-type": "application/json"})
    )
    assert (code, status) == (400, 3) and "malformed" in message
    code, status, message = status_of(client.get("/api/runs", params={"pageSiz": 1}, headers=as_(ALICE)))
    assert (code, status) == (400, 3) and "pageSiz" in message
    code, status, message = status_of(client.post("/api/runs/not-a-uuid:cancel", json={}, headers=as_(ALICE)))
    assert (code, status) == (400, 3) and "not-a-uuid" in message
    code, status, message = status_of(client.get("/api/no-such-thing", headers=as_(ALICE)))
    assert (code, status) == (404, 5) and "/api/openapi.json" in message


def test_a_plain_json_post_to_a_grpc_path_is_told_which_protocols_and_paths_to_use(
    client: httpx.Client, platform_stack: RunningStack
) -> None:
    response = client.post(
        "/agentplatform.runs.v1.RunService/ListRuns", json={"pageSize": 1}, headers=as_(ALICE)
    )
    assert response.status_code == 415
    for hint in ("connect-protocol-version: 1", "GET /api/runs", "/api/openapi.json", "application/grpc"):
        assert hint in response.text
    # The same call as Connect, which the hint names, works.
    connect = client.post(
        "/agentplatform.runs.v1.RunService/ListRuns",
        json={"pageSize": 1},
        headers={**as_(ALICE), "connect-protocol-version": "1"},
    )
    assert connect.status_code == 200 and connect.headers["content-type"] == "application/json"
