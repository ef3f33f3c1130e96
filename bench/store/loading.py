"""Fill the runs table with finished runs, fast: SQLAlchemy Core executemany in big transactions, straight
into the store's table (the store has no bulk create, and creating a million runs one by one would take the
whole budget)."""

import asyncio
import random
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text

from services.common.run_vocabulary import CANCELLED, COMPLETED, FAILED
from services.runs.models import RunRow
from services.runs.store import RunStore

#: Rows per transaction: big enough that commits cost nothing, small enough to keep memory flat.
ROWS_PER_TRANSACTION = 25_000
#: The runs were created over this long before now, evenly with jitter, each at its own instant.
HISTORY = timedelta(days=365)
#: Queries and label sets are drawn from pools of this many (a power of two: drawn with getrandbits).
POOL_BITS = 12

QUERIES = (
    "What is {a} + {b}, then multiply by 3?",
    "search latest news about {topic}",
    "read notes/{topic}.md and summarise it",
    "write a haiku about {topic} to poems/{topic}.txt",
    "list the files in reports/{a}",
    "How many days are there between {a} and {b} in a year?",
    "Explain {topic} in two sentences.",
)
TOPICS = ("postgres", "sqlite", "grpc", "envoy", "leases", "keyset pagination", "python", "weather", "rust")
CHANNELS = ("web", "cli", "api")
MODELS = ("demo", "gpt-4o-mini", "llama3.1")
FAILURE = ("model_unavailable", "the model endpoint did not answer after 3 retries")
CANCEL = ("cancelled", "cancelled: changed my mind")


class RunFactory:
    """Realistic finished runs: mostly completed, some failed or cancelled, 1-2 labels, short queries.

    Drawing from pools made once keeps a row at a few microseconds, so the database, not Python, sets the pace.
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        size = 1 << POOL_BITS
        self.queries = [
            rng.choice(QUERIES).format(a=rng.randint(1, 999), b=rng.randint(1, 999), topic=rng.choice(TOPICS))
            for _ in range(size)
        ]
        self.labels: list[dict[str, str]] = []
        for _ in range(size):
            labels = {"user": f"user-{rng.randint(1, 5000)}"}
            if rng.random() < 0.5:
                labels["channel"] = rng.choice(CHANNELS)
            self.labels.append(labels)

    def row(self, rng: random.Random, created_at: datetime) -> dict[str, Any]:
        """A finished run created at `created_at`, as a row of the runs table (column names, not attributes)."""
        draw = rng.random()
        state, (error_code, error_message) = (
            (COMPLETED, ("", "")) if draw < 0.90 else (FAILED, FAILURE) if draw < 0.97 else (CANCELLED, CANCEL)
        )
        prompt, completion = 300 + rng.getrandbits(12), 20 + rng.getrandbits(9)
        return {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "owner": f"user-{rng.randint(1, 5000)}",
            "user_query": self.queries[rng.getrandbits(POOL_BITS)],
            "state": state,
            "model": MODELS[int(draw * 100) % len(MODELS)],
            "created_at": created_at,
            "started_at": created_at,
            "completed_at": created_at + timedelta(milliseconds=500 + rng.getrandbits(15)),
            "error_code": error_code,
            "error_message": error_message,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "metadata": self.labels[rng.getrandbits(POOL_BITS)],
            # The steps themselves are not loaded: ListRuns never reads them. Columns left out (request_id,
            # lease_expires_at, cancel_requested_at) are NULL, as on a finished run with no request id.
            "step_count": 2 + rng.getrandbits(3),
            "request_hash": "",
            "executor_id": "",
            "lease_seconds": 10.0,
            "cancel_reason": "",
            "max_model_calls": 10,
            "max_duration_ms": 600_000,
            "max_total_tokens": 200_000,
            "max_tool_calls": 50,
        }


async def load_runs(store: RunStore, count: int, progress: Callable[[str], None], seed: int = 6) -> None:
    """Insert `count` finished runs, created over HISTORY up to now; the i-th run is the i-th oldest."""
    factory = RunFactory(seed)
    start = datetime.now(UTC) - HISTORY
    spacing = HISTORY / max(count, 1)
    statement = insert(RunRow.__table__)
    chunks = iter(range(0, count, ROWS_PER_TRANSACTION))
    loaded = 0
    # SQLite has one writer: the second worker makes its rows while the first one's are written.
    # PostgreSQL takes both at once, on two connections.
    writer_lock = asyncio.Lock() if store.database.is_sqlite else None

    async def worker() -> None:
        nonlocal loaded
        for first in chunks:
            # A generator per chunk: the same rows whichever worker takes it.
            rng = random.Random(seed * 1_000_003 + first)
            # Jitter within each run's own slot keeps created_at unique and in the order of the runs.
            rows = [
                factory.row(rng, start + spacing * (index + rng.random() * 0.9))
                for index in range(first, min(count, first + ROWS_PER_TRANSACTION))
            ]
            guard: AbstractAsyncContextManager[Any] = writer_lock or nullcontext()
            async with guard, store.database.engine.begin() as connection:
                await connection.execute(statement, rows)
            loaded += len(rows)
            progress(f"  {loaded:,} of {count:,} runs")

    await asyncio.gather(worker(), worker())
    if not store.database.is_sqlite:
        # Autovacuum would analyze the table soon after such a load; the planner needs the statistics now.
        async with store.database.engine.begin() as connection:
            await connection.execute(text("ANALYZE runs"))
