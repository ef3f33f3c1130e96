"""Budgets: how many tokens, or how many US dollars of model calls, a user or an agent may spend per day or per
month (no gRPC here): the budget's type and checks, its periods, and the `BudgetBook` a store enforces. The store's
part that sets and enforces them is services/runs/budgets.py.

A budget counts the runs created in its current period (a UTC day, or a UTC calendar month): their tokens, or
their cost (services/runs/price_book.py; unpriced calls count nothing, so a money budget holds only for priced
models). Two points enforce it:
- a run that would start while a budget of its user or agent is spent is refused (`refuse_if_spent`, in the
  create's transaction): ResourceExhausted naming the budget and when it resets;
- a run that crosses one while it goes is told so by the append that crossed it (`crossed_budget`): its engine
  stops it after that step, FAILED `budget_exceeded`.
Budgets are kept in memory (`BudgetBook`, read again at most every BUDGET_REFRESH_SECONDS, at once after this store
changes one), so a user or an agent without a budget costs the hot paths nothing.
"""

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from services.common.db.database import utcnow
from services.common.errors import InvalidArgument
from services.runs.models import BudgetRow

BUDGETS = BudgetRow.__table__

Scope = Literal["user", "agent"]
Metric = Literal["tokens", "usd"]
Period = Literal["day", "month"]

BUDGET_REFRESH_SECONDS = 10.0
#: The largest limit: a billion US dollars, or 2^62 tokens.
MAX_USD = 1e9
MAX_TOKENS = 2**62
NANOS_PER_USD = 1_000_000_000


def usd(nanos: int) -> str:
    """An amount of nano-USD for a person: "0.001 USD", "1,250.5 USD"."""
    return f"{nanos / NANOS_PER_USD:,.6f}".rstrip("0").rstrip(".") + " USD"


@dataclass(frozen=True)
class Budget:
    """A budget: `limit` tokens, or nano-USD for a "usd" budget, per `period`, for a user or an agent (`subject`:
    a user id, or an agent id, "" the built-in agent)."""

    id: str
    scope: Scope
    subject: str
    metric: Metric
    period: Period
    limit: int
    updated_by: str = ""
    updated_at: datetime | None = None

    def describe(self) -> str:
        amount = f"{self.limit:,} tokens" if self.metric == "tokens" else usd(self.limit)
        who = f"user '{self.subject}'" if self.scope == "user" else f"agent '{self.subject or 'default'}'"
        return f"{amount} per {self.period} for {who}"


@dataclass(frozen=True)
class BudgetStatus:
    """A budget with what its period has spent so far and when the period ends."""

    budget: Budget
    spent: int
    resets_at: datetime

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget.limit


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """The UTC day or calendar month `now` is in: its start and the next one's."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def checked_budget(scope: Scope, subject: str, metric: Metric, period: Period, limit: float, by: str) -> Budget:
    """The budget an admin asks to set, each bad field an InvalidArgument naming it."""
    if scope == "user" and not subject.strip():
        raise InvalidArgument("budget.subject must name the user (a user id)")
    if len(subject) > 200 or "\x00" in subject:
        raise InvalidArgument("budget.subject must be at most 200 characters, without NUL")
    bound = MAX_TOKENS if metric == "tokens" else MAX_USD
    if not (math.isfinite(limit) and 0 <= limit <= bound) or (metric == "tokens" and limit != int(limit)):
        kind = "a whole number of tokens" if metric == "tokens" else "a number of US dollars"
        raise InvalidArgument(f"budget.limit must be {kind} from 0 to {bound:,.0f}, got {limit}")
    amount = int(limit) if metric == "tokens" else round(limit * NANOS_PER_USD)
    return Budget("", scope, subject, metric, period, amount, by, utcnow())


def budget_of_row(row: Any) -> Budget:
    """The budget a budgets row holds."""
    return Budget(row["id"], row["scope"], row["subject"], row["metric"], row["period"], row["limit_amount"],
                  row["updated_by"], row["updated_at"])


class BudgetBook:
    """The budgets a store enforces, by (scope, subject), read again at most every BUDGET_REFRESH_SECONDS."""

    def __init__(self) -> None:
        self._budgets: Mapping[tuple[str, str], list[Budget]] = {}
        self._read_at = -math.inf

    def current(self, connection: Connection) -> Mapping[tuple[str, str], list[Budget]]:
        if time.monotonic() - self._read_at >= BUDGET_REFRESH_SECONDS:
            budgets: dict[tuple[str, str], list[Budget]] = {}
            for row in connection.execute(select(BUDGETS)).mappings():
                budget = budget_of_row(row)
                budgets.setdefault((budget.scope, budget.subject), []).append(budget)
            self._budgets, self._read_at = budgets, time.monotonic()
        return self._budgets

    def surely_empty(self) -> bool:
        """True when the book, read recently, holds no budget: then nothing needs checking, not even a read."""
        return not self._budgets and time.monotonic() - self._read_at < BUDGET_REFRESH_SECONDS

    def forget(self) -> None:
        self._read_at = -math.inf
