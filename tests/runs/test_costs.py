"""Cost (issue 21): each model call is priced when its step is stored, by its model's price then (the built-in
snapshot, or what an admin set), and the run sums it; a model with no price leaves its calls unpriced (cost
unknown, not zero); usage summed up by hour or day and by user, agent or model. The store on SQLite and
PostgreSQL, then the RPCs over gRPC with API keys."""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from agentplatform.runs.internal.v1 import execution_pb2
from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database, utcnow
from services.common.errors import InvalidArgument, NotFound
from services.common.usage import Usage
from services.runs import price_book
from services.runs.price_book import BUILTIN_PRICES, checked_price
from services.runs.records import ModelCallStats, NewStep
from services.runs.store import RunStore
from tests.runs.helpers import new_run, set_columns
from tests.runs.service_helpers import ADMIN, ALICE, SERVICE, as_, create_for, status_of


def call(prompt: int, completion: int, cached: int = 0, model: str = "") -> ModelCallStats:
    return ModelCallStats(Usage(prompt, completion), model=model, cached_prompt_tokens=cached)


def thought(model_call: ModelCallStats) -> NewStep:
    return NewStep("agent-thought", {"text": "thinking"}, model_call=model_call)


async def test_a_call_is_priced_by_its_model_and_the_run_sums_them(store: RunStore) -> None:
    run = await store.create_run(new_run("q", model="gpt-4o-mini"))
    # gpt-4o-mini: 0.15 USD per million prompt tokens, 0.075 cached, 0.60 generated.
    first, second = await store.append_steps(run.id, [
        thought(call(1000, 500, cached=200)),
        thought(call(2_000_000, 0, model="gpt-4o")),  # a call of another model, priced by that one's price
    ])
    assert first.model_call is not None and second.model_call is not None
    assert (first.model_call.model, first.model_call.cost_nanos) == ("gpt-4o-mini", 800 * 150 + 200 * 75 + 500 * 600)
    assert (second.model_call.model, second.model_call.cost_nanos) == ("gpt-4o", 5_000_000_000)
    stored = await store.get_run(run.id)
    assert (stored.cost_nanos, stored.unpriced_calls) == (435_000 + 5_000_000_000, 0)
    assert [step.model_call.cost_nanos for step in stored.steps if step.model_call] == [435_000, 5_000_000_000]


async def test_a_model_without_a_price_leaves_its_calls_unpriced_until_an_admin_prices_it(store: RunStore) -> None:
    run = await store.create_run(new_run("q", model="my-model"))
    (before,) = await store.append_steps(run.id, [thought(call(1000, 1000))])
    assert before.model_call is not None and before.model_call.cost_nanos is None
    await store.set_model_price(checked_price("my-model", "USD", 1.0, 0.5, 2.0, "root"))
    (after,) = await store.append_steps(run.id, [thought(call(1000, 1000))])
    assert after.model_call is not None and after.model_call.cost_nanos == 3_000_000  # 0.001 + 0.002 USD
    stored = await store.get_run(run.id)
    # The call recorded before the price stays unpriced: the run's cost is known only in part.
    assert (stored.cost_nanos, stored.unpriced_calls) == (3_000_000, 1)


async def test_an_admins_price_overrides_the_snapshot_until_deleted(store: RunStore, monkeypatch: Any) -> None:
    # A price set through another replica shows here within the refresh; this store's own at once.
    monkeypatch.setattr(price_book, "PRICE_REFRESH_SECONDS", 0.0)
    await store.set_model_price(checked_price("gpt-4o", "", 1.0, 1.0, 1.0, "root"))
    listed = {price.model: price for price in await store.list_model_prices()}
    assert not listed["gpt-4o"].builtin and listed["gpt-4o"].updated_by == "root"
    assert listed["gpt-4o-mini"] == BUILTIN_PRICES["gpt-4o-mini"] and listed["demo"].input_picos == 0
    run = await store.create_run(new_run("q", model="gpt-4o"))
    (step,) = await store.append_steps(run.id, [thought(call(1000, 0))])
    assert step.model_call is not None and step.model_call.cost_nanos == 1_000_000
    await store.delete_model_price("gpt-4o")
    assert {price.model: price for price in await store.list_model_prices()}["gpt-4o"].builtin
    with pytest.raises(NotFound, match="gpt-4o"):
        await store.delete_model_price("gpt-4o")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("m", "EUR", 1.0, 1.0, 1.0), "price.currency"),
        (("", "USD", 1.0, 1.0, 1.0), "price.model"),
        (("has space", "USD", 1.0, 1.0, 1.0), "price.model"),
        (("m", "USD", -1.0, 1.0, 1.0), "price.input_per_million"),
        (("m", "USD", 1.0, math.nan, 1.0), "price.cached_input_per_million"),
        (("m", "USD", 1.0, 1.0, 10_001.0), "price.output_per_million"),
    ],
)
def test_a_bad_price_names_its_field(arguments: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        checked_price(*arguments, "root")


async def test_usage_by_day_and_by_model_or_user(store: RunStore, database: Database) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    for owner, model, hours, tokens in [
        ("alice", "gpt-4o-mini", 1, 1000), ("alice", "gpt-4o-mini", 5, 3000), ("alice", "my-model", 26, 100),
        ("bob", "gpt-4o-mini", 2, 2000),
    ]:
        run = await store.create_run(new_run("q", owner=owner, model=model))
        await store.append_steps(run.id, [thought(call(tokens, 0))])
        await set_columns(database, run.id, created_at=day + timedelta(hours=hours))
    buckets = await store.summarize_usage(day, day + timedelta(days=2), "model", "day", owner="alice")
    assert [(b.start, b.key, b.runs, b.usage.prompt_tokens, b.cost_nanos, b.unpriced_calls) for b in buckets] == [
        (day, "gpt-4o-mini", 2, 4000, 600_000, 0),
        (day + timedelta(days=1), "my-model", 1, 100, 0, 1),
    ]
    by_user = await store.summarize_usage(day, day + timedelta(days=1), "user", "hour", owner=None)
    assert [(b.start.hour, b.key, b.runs) for b in by_user] == [(1, "alice", 1), (2, "bob", 1), (5, "alice", 1)]
    with pytest.raises(InvalidArgument, match="31 days"):
        await store.summarize_usage(day, day + timedelta(days=40), "user", "hour", owner=None)
    with pytest.raises(InvalidArgument, match="end_time"):
        await store.summarize_usage(day, day, "user", "day", owner=None)


# --- over gRPC, with API keys ---------------------------------------------------------------------------------


async def test_prices_and_costs_as_callers_see_them(keyed_stub: Any) -> None:
    stub = keyed_stub
    listed = await stub.ListModelPrices(runs_pb2.ListModelPricesRequest(), metadata=as_(ALICE))
    mini = next(price for price in listed.prices if price.model == "gpt-4o-mini")
    assert (mini.input_per_million, mini.cached_input_per_million, mini.output_per_million) == (0.15, 0.075, 0.6)
    assert mini.builtin and "2025" in mini.source and mini.currency == "USD"

    price = runs_pb2.ModelPrice(model="my-model", input_per_million=1, output_per_million=2)
    refused = stub.SetModelPrice(runs_pb2.SetModelPriceRequest(price=price), metadata=as_(ALICE))
    assert await status_of(refused) == grpc.StatusCode.PERMISSION_DENIED
    euros = runs_pb2.ModelPrice(model="my-model", currency="EUR", input_per_million=1)
    bad = stub.SetModelPrice(runs_pb2.SetModelPriceRequest(price=euros), metadata=as_(ADMIN))
    assert await status_of(bad) == grpc.StatusCode.INVALID_ARGUMENT
    set_ = await stub.SetModelPrice(runs_pb2.SetModelPriceRequest(price=price), metadata=as_(ADMIN))
    assert (set_.output_per_million, set_.builtin, set_.source) == (2.0, False, "set by root")

    run = await create_for(stub, "alice")
    step = runs_pb2.Step(agent_thought=runs_pb2.AgentThought(text="t"))
    step.model_call.usage.prompt_tokens = 1000
    step.model_call.model = "my-model"
    await stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[step]), metadata=SERVICE)
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), metadata=as_(ALICE))
    assert got.cost.usd == pytest.approx(0.001) and got.cost.unpriced_model_calls == 0
    assert got.steps[0].model_call.model == "my-model" and got.steps[0].model_call.cost.usd == pytest.approx(0.001)

    step.model_call.cached_prompt_tokens = 2000  # more than the prompt
    bad_append = stub.AppendSteps(execution_pb2.AppendStepsRequest(run_id=run.id, steps=[step]), metadata=SERVICE)
    assert await status_of(bad_append) == grpc.StatusCode.INVALID_ARGUMENT

    now = utcnow()
    request = runs_pb2.SummarizeUsageRequest(
        group_by=runs_pb2.USAGE_GROUPING_MODEL, interval=runs_pb2.USAGE_INTERVAL_DAY
    )
    request.start_time.FromDatetime(now - timedelta(days=1))
    request.end_time.FromDatetime(now + timedelta(minutes=1))
    summary = await stub.SummarizeUsage(request, metadata=as_(ALICE))
    assert [(b.key, b.runs, b.usage.prompt_tokens) for b in summary.buckets] == [("demo", 1, 1000)]
    request.group_by = runs_pb2.USAGE_GROUPING_UNSPECIFIED
    assert await status_of(stub.SummarizeUsage(request, metadata=as_(ALICE))) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_thread_sums_its_runs_usage_and_cost(store: RunStore) -> None:
    first = await store.create_run(new_run("q", model="gpt-4o-mini"))
    await store.append_steps(first.id, [thought(call(1000, 100))])
    await store.finish_run(first.id, "completed")
    second = await store.create_run(new_run("q2", model="my-model", thread_id=first.thread_id))
    await store.append_steps(second.id, [thought(call(10, 10))])
    thread = await store.get_thread(first.thread_id)
    assert (thread.usage, thread.cost_nanos, thread.unpriced_calls) == (Usage(1010, 110), 150_000 + 60_000, 1)
    listed = {item.id: item for item in (await store.list_threads())[0]}
    assert listed[first.thread_id] == thread
