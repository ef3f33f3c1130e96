"""The run store's budgets: set, list, delete, and the two checks that enforce them (no gRPC here). Part of
`RunStore`; what a budget is, its periods and the `BudgetBook` are in services/runs/budget_book.py.

- A run that would start while a budget of its user or agent is spent is refused (`refuse_if_spent`, in the
  create's transaction): ResourceExhausted naming the budget and when it resets.
- A run that crosses one while it goes is told so by the append that crossed it (`crossed_budget`): its engine
  stops it after that step, FAILED `budget_exceeded`.
A budget counts the runs created in its current period: their tokens, or their cost (services/runs/price_book.py;
unpriced calls count nothing, so a money budget holds only for priced models). Users and agents without a budget
cost the hot paths nothing: the book in memory says so.
"""

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.common.checks import parse_uuid
from services.common.db.database import runs_to_completion, utcnow
from services.common.errors import NotFound, ResourceExhausted
from services.runs import metrics
from services.runs.budget_book import BUDGETS, Budget, BudgetStatus, budget_of_row, period_bounds, usd
from services.runs.checks import parse_run_id
from services.runs.parts import StoreParts
from services.runs.rows import RUNS


def _status(connection: Connection, budget: Budget, now: datetime) -> BudgetStatus:
    start, end = period_bounds(budget.period, now)
    amount = RUNS.c.total_tokens if budget.metric == "tokens" else RUNS.c.cost_nanos
    whose = RUNS.c.owner if budget.scope == "user" else RUNS.c.agent_id
    spent = connection.scalar(
        select(func.coalesce(func.sum(amount), 0)).where(whose == budget.subject, RUNS.c.created_at >= start)
    )
    return BudgetStatus(budget, int(spent or 0), end)


@dataclass(frozen=True)
class Start:
    """A run about to start, as its budgets see it (`RunBudgets.spent_in_turn`): the budgets of its user and
    agent, the tokens its first steps bring (a money budget counts none: a run is created at no cost), and when it
    was created."""

    budgets: list[Budget]
    tokens: int
    created_at: datetime


def start_refused(status: BudgetStatus) -> ResourceExhausted:
    """The refusal of a run that would start while `status`'s budget is spent (counted in the metrics)."""
    metrics.BUDGET_REFUSALS.labels(status.budget.scope, "start").inc()
    return ResourceExhausted(f"the run cannot start: {_spent_message(status)}")


def _spent_message(status: BudgetStatus) -> str:
    budget = status.budget
    used = f"{status.spent:,} tokens" if budget.metric == "tokens" else usd(status.spent)
    return (f"the budget of {budget.describe()} is spent ({used} this {budget.period}); it resets at "
            f"{status.resets_at.isoformat().replace('+00:00', 'Z')}")


class RunBudgets(StoreParts):
    """The run store's budget methods: set, list, delete, and the two checks."""

    def applying_budgets(self, connection: Connection, owner: str, agent_id: str) -> list[Budget]:
        """The budgets of `owner` and `agent_id` (from the book in memory: no query unless it is refreshed)."""
        budgets = self.budget_book.current(connection)
        return [*budgets.get(("user", owner), ()), *budgets.get(("agent", agent_id), ())]

    def refuse_if_spent(self, connection: Connection, owner: str, agent_id: str) -> None:
        """ResourceExhausted when a budget of `owner` or `agent_id` is spent: a run of theirs may not start."""
        now = utcnow()
        for budget in self.applying_budgets(connection, owner, agent_id):
            status = _status(connection, budget, now)
            if status.exhausted:
                raise start_refused(status)

    def spent_in_turn(self, connection: Connection, starts: Sequence[Start]) -> list[BudgetStatus | None]:
        """`refuse_if_spent` for runs about to start one after another (a batch's creates, in order), each seeing
        the tokens of those before it that start: per run, the spent budget that refuses it (None: it starts).
        Each budget's spend is read once."""
        now = utcnow()
        tally: dict[str, BudgetStatus] = {}
        refusals: list[BudgetStatus | None] = []
        for start in starts:
            refusal = None
            for budget in start.budgets:
                status = tally.get(budget.id)
                if status is None:
                    status = tally[budget.id] = _status(connection, budget, now)
                if status.exhausted:
                    refusal = status
                    break
            refusals.append(refusal)
            if refusal is None and start.tokens:
                for budget in start.budgets:
                    status = tally[budget.id]
                    # What `_status` would count once the run is stored: its tokens, if created in the period.
                    if budget.metric == "tokens" and start.created_at >= period_bounds(budget.period, now)[0]:
                        tally[budget.id] = dataclasses.replace(status, spent=status.spent + start.tokens)
        return refusals

    @runs_to_completion
    async def crossed_budget(self, run_id: str) -> str:
        """After an append: why the run must stop when it spent a budget of its user or agent ("" when none)."""
        # Every append asks: without budgets it costs no database session (a refresh happens every 10 s at most).
        if self.budget_book.surely_empty():
            return ""
        async with self.database.read() as session:
            connection = await session.connection()
            if not await connection.run_sync(self.budget_book.current):
                return ""
            row = (await connection.execute(
                select(RUNS.c.owner, RUNS.c.agent_id).where(RUNS.c.id == parse_run_id(run_id))
            )).first()
            if row is None:
                return ""
            now = utcnow()
            for budget in await connection.run_sync(self.applying_budgets, row.owner, row.agent_id):
                status = await connection.run_sync(_status, budget, now)
                if status.exhausted:
                    metrics.BUDGET_REFUSALS.labels(budget.scope, "running").inc()
                    return _spent_message(status)
        return ""

    async def set_budget(self, budget: Budget) -> Budget:
        """Store `budget` (from `checked_budget`), replacing the one of the same scope, subject, metric and
        period; returns it with its id."""
        values = {
            "id": str(uuid.uuid4()), "scope": budget.scope, "subject": budget.subject, "metric": budget.metric,
            "period": budget.period, "limit_amount": budget.limit, "updated_by": budget.updated_by,
            "updated_at": budget.updated_at,
        }

        def upsert(connection: Connection) -> str:
            insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(BUDGETS)
            connection.execute(insert.values(values).on_conflict_do_update(
                index_elements=[BUDGETS.c.scope, BUDGETS.c.subject, BUDGETS.c.metric, BUDGETS.c.period],
                set_={"limit_amount": budget.limit, "updated_by": budget.updated_by, "updated_at": budget.updated_at},
            ))
            return str(connection.scalar(select(BUDGETS.c.id).where(
                BUDGETS.c.scope == budget.scope, BUDGETS.c.subject == budget.subject,
                BUDGETS.c.metric == budget.metric, BUDGETS.c.period == budget.period,
            )))

        budget_id = await self._writer.write(upsert)
        self.budget_book.forget()
        return Budget(budget_id, budget.scope, budget.subject, budget.metric, budget.period, budget.limit,
                      budget.updated_by, budget.updated_at)

    @runs_to_completion
    async def list_budgets(self, *, user: str | None) -> list[BudgetStatus]:
        """Every budget (`user` None), or those of `user`, with what they spent so far."""
        query = select(BUDGETS).order_by(BUDGETS.c.scope, BUDGETS.c.subject, BUDGETS.c.metric, BUDGETS.c.period)
        if user is not None:
            query = query.where(BUDGETS.c.scope == "user", BUDGETS.c.subject == user)
        now = utcnow()
        async with self.database.read() as session:
            connection = await session.connection()
            rows = (await connection.execute(query)).mappings().all()
            return [await connection.run_sync(_status, budget_of_row(row), now) for row in rows]

    async def delete_budget(self, budget_id: str) -> None:
        budget_id = parse_uuid(budget_id, "budget_id", "budget")

        def delete_(connection: Connection) -> None:
            if connection.execute(delete(BUDGETS).where(BUDGETS.c.id == budget_id)).rowcount == 0:
                raise NotFound(f"budget '{budget_id}' not found")

        await self._writer.write(delete_)
        self.budget_book.forget()
