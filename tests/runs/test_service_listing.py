"""ListRuns over real gRPC: newest first, filters (search), page tokens and sizes, and pages of runs with huge
queries."""

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from agentplatform.runs.v1 import runs_pb2
from services.runs.app import RunsApp
from tests.runs.helpers import set_columns
from tests.runs.service_helpers import Stub, append, calculator_call, create_run, finish


async def test_list_runs_newest_first_with_filter_and_pagination(stub: Stub) -> None:
    created = [await create_run(stub, f"q{i}") for i in range(6)]
    for run in created[1::2]:
        await finish(stub, run.id, runs_pb2.RUN_STATE_FAILED, "boom", "it broke")

    pages: list[list[str]] = []
    token = ""
    while True:
        response = await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=2, page_token=token))
        pages.append([run.id for run in response.runs])
        token = response.next_page_token
        if not token:
            break
    assert len(pages) == 3 and all(len(page) == 2 for page in pages)
    assert [run_id for page in pages for run_id in page] == [run.id for run in reversed(created)]
    assert not response.runs[0].steps  # listings leave steps out

    failed = await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=2, state=runs_pb2.RUN_STATE_FAILED))
    rest = await stub.ListRuns(
        runs_pb2.ListRunsRequest(page_size=2, state=runs_pb2.RUN_STATE_FAILED, page_token=failed.next_page_token)
    )
    assert [r.id for r in [*failed.runs, *rest.runs]] == [created[5].id, created[3].id, created[1].id]
    assert all(r.state == runs_pb2.RUN_STATE_FAILED for r in [*failed.runs, *rest.runs])
    assert rest.next_page_token == ""


BAD_RUNS_TOKEN = (
    "page_token is not valid for this request: it is not a next_page_token that ListRuns returned, or it was "
    "altered, or the request's filters differ from those of the request that returned it; send it unchanged with "
    "the same filters, or send no page_token to start again from the first page"
)


async def test_list_runs_rejects_bad_tokens_and_page_sizes(stub: Stub) -> None:
    for i in range(2):
        await create_run(stub, f"q{i}")
    unfiltered_token = (await stub.ListRuns(runs_pb2.ListRunsRequest(page_size=1))).next_page_token
    for request, expected in [
        (runs_pb2.ListRunsRequest(page_token="not-a-token"), BAD_RUNS_TOKEN),
        # A token is only valid with the filter it was made for.
        (runs_pb2.ListRunsRequest(page_token=unfiltered_token, state=runs_pb2.RUN_STATE_RUNNING), BAD_RUNS_TOKEN),
        (runs_pb2.ListRunsRequest(page_size=-1), "page_size must be >= 0, got -1"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ListRuns(request)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == expected


# --- listing huge runs -------------------------------------------------------------------------------------


async def test_runs_with_huge_queries_do_not_break_a_list_page(stub: Stub, runs_app: RunsApp) -> None:
    huge = "x" * 3_000_000  # a row from before CreateRun capped queries at 1 MiB
    runs = [await create_run(stub, f"q{i}") for i in range(2)]
    for run in runs:
        await set_columns(runs_app.db, run.id, user_query=huge)
    # 6 MB of queries would exceed gRPC's 4 MiB message limit: the client would get RESOURCE_EXHAUSTED.
    page = await stub.ListRuns(runs_pb2.ListRunsRequest())
    assert [run.id for run in page.runs] == [runs[1].id, runs[0].id] and page.next_page_token == ""
    assert page.ByteSize() < 64 * 1024
    assert all(run.user_query == "x" * 1000 and run.user_query_truncated for run in page.runs)
    whole = await stub.GetRun(runs_pb2.GetRunRequest(run_id=runs[0].id))
    assert whole.user_query == huge and not whole.user_query_truncated


async def test_list_runs_searches_with_a_combined_filter(stub: Stub) -> None:
    wanted = await create_run(stub, "Where is my invoice?", model="gpt-4o-mini", metadata={"channel": "web"})
    await append(stub, wanted.id, calculator_call(), runs_pb2.Step(
        agent_response=runs_pb2.AgentResponse(text="It was sent on Monday.")
    ))
    await finish(stub, wanted.id)
    # Each of these differs from `wanted` in one respect only.
    await create_run(stub, "Where is my invoice?", model="gpt-4o-mini", metadata={"channel": "web"})
    other_model = await create_run(stub, "Where is my invoice?", model="demo", metadata={"channel": "web"})
    await append(stub, other_model.id, calculator_call())
    await finish(stub, other_model.id)
    other_text = await create_run(stub, "What is the weather?", model="gpt-4o-mini", metadata={"channel": "web"})
    await append(stub, other_text.id, calculator_call())
    await finish(stub, other_text.id)

    request = runs_pb2.ListRunsRequest(
        states=[runs_pb2.RUN_STATE_COMPLETED], model="gpt-4o-mini", tool="calculator", text="invoice monday",
        metadata=["channel=web"], min_duration_ms=0, order=runs_pb2.RUN_ORDER_OLDEST_FIRST,
    )
    request.created_after.FromDatetime(datetime.now(UTC) - timedelta(minutes=5))
    listed = await stub.ListRuns(request)
    assert [run.id for run in listed.runs] == [wanted.id] and listed.next_page_token == ""
    # The substring of a word, where the words of `text` would need whole ones.
    request.text, request.text_contains = "", "nt on mon"
    listed = await stub.ListRuns(request)
    assert [run.id for run in listed.runs] == [wanted.id]


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"order": 99}, "order 99 is unknown; use one of RUN_ORDER_UNSPECIFIED"),
        ({"states": [runs_pb2.RUN_STATE_COMPLETED, 77]}, "unknown run state 77"),
        ({"text": "x" * 10_000}, "text is 10000 characters long; the limit is 1000"),
        ({"metadata": ["channel"]}, "metadata[0] 'channel' is not key=value"),
        ({"text_contains": "ab"}, "text_contains must be at least 3 characters, got 2"),
        ({"min_total_tokens": 5, "max_total_tokens": 4}, "max_total_tokens (4) must not be below min_total_tokens (5)"),
        ({"min_duration_ms": -1}, "min_duration_ms must be 0 or more"),
        ({"agent_revision": 2}, "agent_revision must be a revision (1, 2 ...) of the agent_id given, or 0 for any"),
        ({"min_cost_usd": float("nan")}, "min_cost_usd must be a number of US dollars from 0 to"),
        ({"max_cost_usd": -1.0}, "max_cost_usd must be a number of US dollars from 0 to"),
        ({"min_score": 1.0}, "min_score and max_score need the score_name they bound"),
        ({"score_name": "x", "max_score": float("inf")}, "max_score must be a finite number"),
    ],
)
async def test_list_runs_refuses_bad_filters_naming_the_field(
    stub: Stub, request_fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListRuns(runs_pb2.ListRunsRequest(**request_fields))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith(expected)


async def test_list_runs_refuses_contradictory_and_impossible_times(stub: Stub) -> None:
    request = runs_pb2.ListRunsRequest()
    request.created_after.FromDatetime(datetime(2026, 5, 2, tzinfo=UTC))
    request.created_before.FromDatetime(datetime(2026, 5, 1, tzinfo=UTC))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListRuns(request)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith("created_before (2026-05-01T00:00:00+00:00) must be later than")
    request = runs_pb2.ListRunsRequest()
    request.finished_before.seconds = 10**13
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListRuns(request)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith("finished_before.seconds must be within")
