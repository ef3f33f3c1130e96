"""Budgets (issue 21): tokens or US dollars per UTC day or month, for a user or an agent. A run that would start
over a spent budget is refused naming it and when it resets; an append that spends one says so; each bad field of
a budget is named. The store on SQLite and PostgreSQL, then the RPCs over gRPC with API keys."""

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import Database, utcnow
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.usage import Usage
from services.runs.budget_book import checked_budget, period_bounds
from services.runs.records import ModelCallStats, NewStep
from services.runs.store import RunStore
from tests.runs.helpers import new_run, set_columns
from tests.runs.service_helpers import ADMIN, ALICE, as_, status_of

AGENT = "7f0e6a62-3c4b-4d7a-9f52-1d2c3b4a5e6f"


def thought(prompt: int, completion: int) -> NewStep:
    return NewStep("agent-thought", {"text": "t"}, model_call=ModelCallStats(Usage(prompt, completion)))


async def test_a_spent_token_budget_refuses_the_users_next_run_until_it_resets(
    store: RunStore, database: Database
) -> None:
    await store.set_budget(checked_budget("user", "alice", "tokens", "day", 1000, "root"))
    yesterdays = await store.create_run(new_run("q", owner="alice"))
    await store.append_steps(yesterdays.id, [thought(5000, 0)])
    await set_columns(database, yesterdays.id, created_at=utcnow() - timedelta(days=1))
    run = await store.create_run(new_run("q", owner="alice"))  # yesterday's tokens are not today's
    await store.append_steps(run.id, [thought(600, 0)])
    assert await store.crossed_budget(run.id) == ""
    await store.append_steps(run.id, [thought(300, 100)])
    crossed = await store.crossed_budget(run.id)
    assert "1,000 tokens per day for user 'alice' is spent (1,000 tokens this day)" in crossed
    _, tomorrow = period_bounds("day", utcnow())
    assert tomorrow.isoformat().replace("+00:00", "Z") in crossed
    with pytest.raises(ResourceExhausted, match="cannot start: the budget of 1,000 tokens per day"):
        await store.create_run(new_run("q", owner="alice"))
    await store.create_run(new_run("q", owner="bob"))  # another user's budget is not bob's
    [status] = await store.list_budgets(user="alice")
    assert (status.spent, status.exhausted, status.resets_at) == (1000, True, tomorrow)
    assert await store.list_budgets(user="bob") == []


async def test_an_agents_money_budget_counts_its_runs_cost(store: RunStore) -> None:
    # 0.001 USD; gpt-4o-mini's prompt tokens cost 0.15 USD per million, so 6,667 of them cross it.
    budget = await store.set_budget(checked_budget("agent", AGENT, "usd", "month", 0.001, "root"))
    run = await store.create_run(new_run("q", model="gpt-4o-mini", agent_id=AGENT, agent_revision=1))
    await store.append_steps(run.id, [thought(6000, 0)])
    assert await store.crossed_budget(run.id) == ""
    await store.append_steps(run.id, [thought(700, 0)])
    assert "budget of 0.001 USD per month for agent" in await store.crossed_budget(run.id)
    with pytest.raises(ResourceExhausted):
        await store.create_run(new_run("q", agent_id=AGENT, agent_revision=1))
    await store.create_run(new_run("q"))  # the built-in agent's runs are not bounded by it
    # Raising it lets runs start again; deleting it too.
    again = await store.set_budget(checked_budget("agent", AGENT, "usd", "month", 1.0, "root"))
    assert again.id == budget.id
    await store.create_run(new_run("q", agent_id=AGENT, agent_revision=1))
    await store.delete_budget(budget.id)
    assert await store.list_budgets(user=None) == []
    with pytest.raises(NotFound):
        await store.delete_budget(budget.id)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("user", "", "tokens", "day", 10), "budget.subject"),
        (("user", "alice", "tokens", "day", -1), "budget.limit"),
        (("user", "alice", "tokens", "day", 1.5), "budget.limit"),
        (("user", "alice", "usd", "day", float("nan")), "budget.limit"),
        (("user", "alice", "usd", "day", 2e9), "budget.limit"),
    ],
)
def test_a_bad_budget_names_its_field(arguments: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        checked_budget(*arguments, "root")


def test_periods_are_utc_days_and_calendar_months() -> None:
    moment = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_bounds("day", moment) == (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds("month", moment) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds("month", datetime(2026, 2, 10, tzinfo=UTC))[1] == datetime(2026, 3, 1, tzinfo=UTC)


async def test_budgets_over_grpc(keyed_stub: Any) -> None:
    stub = keyed_stub
    budget = runs_pb2.Budget(
        scope=runs_pb2.BUDGET_SCOPE_USER, subject="alice", metric=runs_pb2.BUDGET_METRIC_TOKENS,
        period=runs_pb2.BUDGET_PERIOD_DAY, limit=1000,
    )
    request = runs_pb2.SetBudgetRequest(budget=budget)
    assert await status_of(stub.SetBudget(request, metadata=as_(ALICE))) == grpc.StatusCode.PERMISSION_DENIED
    unspecified = runs_pb2.SetBudgetRequest(budget=runs_pb2.Budget(subject="alice", limit=1))
    assert await status_of(stub.SetBudget(unspecified, metadata=as_(ADMIN))) == grpc.StatusCode.INVALID_ARGUMENT
    created = await stub.SetBudget(request, metadata=as_(ADMIN))
    assert (created.limit, created.updated_by) == (1000, "root") and created.id
    listed = await stub.ListBudgets(runs_pb2.ListBudgetsRequest(), metadata=as_(ALICE))
    assert [(b.id, b.spent) for b in listed.budgets] == [(created.id, 0)] and listed.budgets[0].HasField("reset_time")
    assert await status_of(
        stub.DeleteBudget(runs_pb2.DeleteBudgetRequest(budget_id=created.id), metadata=as_(ALICE))
    ) == grpc.StatusCode.PERMISSION_DENIED
    await stub.DeleteBudget(runs_pb2.DeleteBudgetRequest(budget_id=created.id), metadata=as_(ADMIN))
