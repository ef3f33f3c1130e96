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
from openapi_spec_validator import validate

from agentplatform.runs.v1 import runs_pb2
from services.launcher.gateway_config import OPENAPI_DOCUMENT
from tests.agents.workflow_helpers import plain
from tests.e2e.conftest import RunningStack
from tests.support.keys import ADMIN, ALICE, AUTH, BOB
from tests.support.seed import SEED_QUESTION, SEED_TIMELINE, timeline

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    # The host of the HTTP tool the OpenAPI test creates (it is never called).
    return {**AUTH, "TOOLS_HTTP_ALLOWED_HOSTS": "weather.example"}


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


# --- The OpenAPI document ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def test_the_served_openapi_document_is_valid_and_the_checked_in_one(openapi: dict[str, Any]) -> None:
    validate(openapi)
    assert openapi == json.loads(OPENAPI_DOCUMENT.read_text())


class Caller:
    """Calls REST paths by their OpenAPI template and checks each answer's status is the expected one and one
    the document lists for that operation; remembers which operations it called."""

    def __init__(self, client: httpx.Client, openapi: dict[str, Any]) -> None:
        self.client, self.openapi = client, openapi
        self.called: set[tuple[str, str]] = set()

    def __call__(
        self, verb: str, template: str, expected: int, key: str = ALICE, *, body: Any = None,
        params: dict[str, Any] | None = None, **path: str,
    ) -> Any:
        operation = self.openapi["paths"][template][verb]
        assert str(expected) in operation["responses"], f"{verb} {template} does not document {expected}"
        url = template
        for name, value in path.items():
            url = url.replace("{" + name.replace("__", ".") + "}", value)
        with self.client.stream(verb, url, json=body, params=params, headers=as_(key)) as response:
            text = response.read().decode()
        assert response.status_code == expected, f"{verb.upper()} {url}: {response.status_code} {text[:300]}"
        self.called.add((verb, template))
        if response.headers["content-type"].startswith("text/event-stream"):
            return [json.loads(line[len("data:"):]) for line in text.splitlines() if line.startswith("data:")]
        return json.loads(text)


def test_every_documented_rest_path_answers_as_documented(client: httpx.Client, openapi: dict[str, Any]) -> None:
    call = Caller(client, openapi)
    missing = "00000000-0000-4000-8000-000000000000"

    # Runs and threads, from a chat that waits for its answer and a run started in the background.
    chat = call("post", "/api/chat:complete", 200, body={"message": SEED_QUESTION})
    assert "45" in chat["response"]
    run = call("post", "/api/runs", 200, body={"message": SEED_QUESTION})
    events = call("get", "/api/runs/{run_id}:watch", 200, run_id=run["id"])
    assert events[-1]["run"]["state"] == "RUN_STATE_COMPLETED"
    streamed = call("post", "/api/chat", 200, body={"message": SEED_QUESTION, "threadId": chat["threadId"]})
    assert streamed[-1]["run"]["threadId"] == chat["threadId"]
    steps = [event["step"] for event in events if "step" in event]
    assert call("get", "/api/runs/{run_id}", 200, run_id=run["id"])["steps"] == steps
    assert run["id"] in [item["id"] for item in call("get", "/api/runs", 200, params={"pageSize": 50})["runs"]]
    call("post", "/api/runs/{run_id}:cancel", 400, body={"reason": "too late"}, run_id=run["id"])
    call("post", "/api/runs/{run_id}:approve", 400, body={"sequence": 1}, run_id=run["id"])
    call("post", "/api/runs/{run_id}:reject", 400, body={"sequence": 1}, run_id=run["id"])
    call("delete", "/api/runs/{run_id}", 200, run_id=run["id"])
    assert call("get", "/api/threads/{thread_id}", 200, thread_id=chat["threadId"])["id"] == chat["threadId"]
    assert chat["threadId"] in [item["id"] for item in call("get", "/api/threads", 200)["threads"]]
    call("delete", "/api/threads/{thread_id}", 200, thread_id=chat["threadId"])
    call("get", "/api/threads/{thread_id}", 404, thread_id=chat["threadId"])

    # Agents.
    agent = call("post", "/api/agents", 200, body={"displayName": "Tutor", "instructions": "Be brief."})
    call("patch", "/api/agents/{agent.id}", 200, body={"displayName": "Tutor 2"}, params={"updateMask": "displayName"},
         agent__id=agent["id"])
    assert call("get", "/api/agents/{agent_id}", 200, agent_id=agent["id"])["revision"] == "2"
    assert len(call("get", "/api/agents/{agent_id}/revisions", 200, agent_id=agent["id"])["revisions"]) == 2
    assert [item["id"] for item in call("get", "/api/agents", 200, params={"nameContains": "Tutor"})["agents"]] == [
        agent["id"]
    ]
    call("delete", "/api/agents/{agent_id}", 200, agent_id=agent["id"])

    # Workflows, and a run of one.
    workflow = call("post", "/api/workflows", 200, body=json_format.MessageToDict(plain()))
    call("patch", "/api/workflows/{workflow.id}", 200, body={"displayName": "Plain 2"},
         params={"updateMask": "displayName"}, workflow__id=workflow["id"])
    assert call("get", "/api/workflows/{workflow_id}", 200, workflow_id=workflow["id"])["displayName"] == "Plain 2"
    assert len(call("get", "/api/workflows/{workflow_id}/revisions", 200, workflow_id=workflow["id"])["revisions"]) == 2
    assert workflow["id"] in [item["id"] for item in call("get", "/api/workflows", 200)["workflows"]]
    started = call("post", "/api/workflows/{workflow_id}:run", 200, body={}, workflow_id=workflow["id"])
    assert started["workflowId"] == workflow["id"]
    call("delete", "/api/workflows/{workflow_id}", 200, workflow_id=workflow["id"])

    # Tools and MCP servers (their changes are an admin's).
    assert "calculator" in [tool["id"] for tool in call("get", "/api/tools", 200, params={"pageSize": 50})["tools"]]
    assert call("get", "/api/tools/{tool_id}", 200, tool_id="calculator")["enabled"] is True
    call("patch", "/api/tools/{tool.id}", 200, ADMIN, body={"description": ""}, params={"updateMask": "description"},
         tool__id="calculator")
    tool = call("post", "/api/tools", 200, ADMIN, body={
        "name": "weather", "description": "The weather in a city", "url": "https://weather.example/today",
        "method": "HTTP_METHOD_GET", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    })
    call("delete", "/api/tools/{tool_id}", 200, ADMIN, tool_id=tool["id"])
    call("post", "/api/mcp-servers", 403, body={"name": "files", "stdio": {"command": "true"}})
    call("get", "/api/mcp-servers", 403)
    assert call("get", "/api/mcp-servers", 200, ADMIN)["mcpServers"] == []
    call("get", "/api/mcp-servers/{name}", 404, ADMIN, name="files")
    call("delete", "/api/mcp-servers/{name}", 404, ADMIN, name="files")
    call("get", "/api/runs/{run_id}", 404, run_id=missing)

    # Scores, retention holds, prices and usage (issue 21).
    scored = call("post", "/api/runs", 200, body={"message": SEED_QUESTION})
    call("get", "/api/runs/{run_id}:watch", 200, run_id=scored["id"])
    score = call("post", "/api/runs/{run_id}/scores", 200, body={"name": "thumbs", "booleanValue": True},
                 run_id=scored["id"])
    assert score["booleanValue"] is True and score["author"] == "alice"
    assert call("get", "/api/runs/{run_id}/scores", 200, run_id=scored["id"])["scores"] == [score]
    summaries = call("get", "/api/scores:summarize", 200)["summaries"]
    assert [(item["name"], item["count"]) for item in summaries] == [("thumbs", "1")]
    call("delete", "/api/scores/{score_id}", 200, score_id=score["id"])
    call("post", "/api/runs/{run_id}:setRetentionHold", 403, body={"hold": True}, run_id=scored["id"])
    held = call("post", "/api/runs/{run_id}:setRetentionHold", 200, ADMIN, body={"hold": True}, run_id=scored["id"])
    assert held["retentionHold"] is True
    assert "demo" in [price["model"] for price in call("get", "/api/model-prices", 200)["prices"]]
    call("put", "/api/model-prices/{price.model}", 403, body={"inputPerMillion": 1}, price__model="my-model")
    prices = {"inputPerMillion": 1, "outputPerMillion": 2}
    price = call("put", "/api/model-prices/{price.model}", 200, ADMIN, body=prices, price__model="my-model")
    assert (price["outputPerMillion"], price["builtin"]) == (2, False)
    call("delete", "/api/model-prices/{model}", 200, ADMIN, model="my-model")
    usage = call("get", "/api/usage:summarize", 200, params={
        "startTime": "2020-01-01T00:00:00Z", "endTime": "2021-01-01T00:00:00Z",
        "groupBy": "USAGE_GROUPING_MODEL", "interval": "USAGE_INTERVAL_DAY",
    })
    assert usage["buckets"] == []
    budget = {"scope": "BUDGET_SCOPE_USER", "subject": "bob", "metric": "BUDGET_METRIC_TOKENS",
              "period": "BUDGET_PERIOD_DAY", "limit": 1000}
    call("post", "/api/budgets", 403, body=budget)
    created = call("post", "/api/budgets", 200, ADMIN, body=budget)
    assert [item["id"] for item in call("get", "/api/budgets", 200, ADMIN)["budgets"]] == [created["id"]]
    call("delete", "/api/budgets/{budget_id}", 200, ADMIN, budget_id=created["id"])
    exported = call("post", "/api/runs:export", 200, body={"filter": {"states": ["RUN_STATE_COMPLETED"]}})
    assert exported and all(item["run"]["state"] == "RUN_STATE_COMPLETED" and item["cursor"] for item in exported)
    assert exported[0]["run"]["steps"]  # whole runs
    call("post", "/api/runs:import", 403, body={"runs": [exported[0]["run"]]})
    call("post", "/api/runs:import", 400, ADMIN, body={"runs": [exported[0]["run"]]})  # stored already
    call("post", "/api/runs:batchDelete", 403, body={"dryRun": True})
    counted = call("post", "/api/runs:batchDelete", 200, ADMIN, body={"filter": {"allUsers": True}, "dryRun": True})
    assert int(counted["runs"]) >= len(exported)

    documented = {(verb, path) for path, operations in openapi["paths"].items() for verb in operations}
    assert call.called == documented
