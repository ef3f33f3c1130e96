"""Fill the run store with a million finished runs, fast, through its bulk import (`RunStore.import_runs`:
many runs per statement and transaction; creating a million runs one by one would take the whole budget), and
make any of them again without the store: what ListRuns must return there, and where a page starts.
"""

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.common.limits import RunLimits
from services.common.run_vocabulary import CANCELLED, COMPLETED, FAILED
from services.common.usage import Usage
from services.runs.records import RunRecord, StepRecord
from services.runs.store import RunStore

#: Runs made from one random generator: any run is made again from the first of its chunk, not from the first run.
CHUNK = 25_000
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
#: Saved agents (each with a few revisions) and workflows the runs execute, and the tools they call: search's
#: filters need runs that differ in these (bench/store/search.py).
AGENTS = tuple(str(uuid.UUID(int=index + 1, version=4)) for index in range(20))
WORKFLOWS = tuple(str(uuid.UUID(int=1000 + index, version=4)) for index in range(5))
TOOLS = ("calculator", "web_search", "read_file", "write_file", "list_files", "weather", "clock", "translate")
ANSWERS = (
    "The answer is {a}.",
    "Here is a short summary of {topic}: it works as documented.",
    "I wrote the haiku about {topic} to the file.",
    "There are {a} days between those dates.",
    "I could not find anything recent about {topic}.",
)
#: Every run's limits, as recorded when it was created.
LIMITS = RunLimits(max_model_calls=10, max_duration_seconds=600.0, max_total_tokens=200_000, max_tool_calls=50)


class RunFactory:
    """Realistic finished runs: mostly completed, some failed or cancelled, 1-2 labels, short queries.

    Drawing from pools made once keeps a run to microseconds, so the database, not Python, sets the pace.
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        size = 1 << POOL_BITS
        self.queries = [
            rng.choice(QUERIES).format(a=rng.randint(1, 999), b=rng.randint(1, 999), topic=rng.choice(TOPICS))
            for _ in range(size)
        ]
        self.answers = [
            rng.choice(ANSWERS).format(a=rng.randint(1, 999), topic=rng.choice(TOPICS)) for _ in range(size)
        ]
        self.labels: list[dict[str, str]] = []
        for _ in range(size):
            labels = {"user": f"user-{rng.randint(1, 5000)}"}
            if rng.random() < 0.5:
                labels["channel"] = rng.choice(CHANNELS)
            self.labels.append(labels)

    def run(self, rng: random.Random, created_at: datetime) -> RunRecord:
        """A finished run created at `created_at`, as GetRun returns it without its steps."""
        draw = rng.random()
        state, (error_code, error_message) = (
            (COMPLETED, ("", "")) if draw < 0.90 else (FAILED, FAILURE) if draw < 0.97 else (CANCELLED, CANCEL)
        )
        prompt, completion = 300 + rng.getrandbits(12), 20 + rng.getrandbits(9)
        run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        completed_at = created_at + timedelta(milliseconds=500 + rng.getrandbits(15))
        # What search finds in a run's steps: a tool call in 3 runs of 5, and a completed run's answer.
        steps = []
        if rng.random() < 0.6:
            steps.append(("tool-call", {"tool_name": TOOLS[rng.getrandbits(3)], "tool_call_id": "call_1"}))
        if state == COMPLETED:
            steps.append(("agent-response", {"text": self.answers[rng.getrandbits(POOL_BITS)]}))
        agent = rng.random()
        workflow = WORKFLOWS[rng.getrandbits(8) % len(WORKFLOWS)] if agent < 0.05 else ""
        return RunRecord(
            id=run_id,
            owner=f"user-{rng.randint(1, 5000)}",
            user_query=self.queries[rng.getrandbits(POOL_BITS)],
            state=state,
            model=MODELS[int(draw * 100) % len(MODELS)],
            agent_id="" if workflow else AGENTS[rng.getrandbits(8) % len(AGENTS)],
            agent_revision=0 if workflow else 1 + rng.getrandbits(2),
            workflow_id=workflow,
            workflow_revision=1 if workflow else 0,
            created_at=created_at,
            started_at=created_at,
            completed_at=completed_at,
            error_code=error_code,
            error_message=error_message,
            usage=Usage(prompt, completion),
            metadata=self.labels[rng.getrandbits(POOL_BITS)],
            # Only the steps search reads (ListRuns reads none): a tool call and the answer.
            step_count=len(steps),
            steps=[
                StepRecord(run_id, sequence, kind, content, completed_at, None)
                for sequence, (kind, content) in enumerate(steps, 1)
            ],
            limits=LIMITS,
        )


@dataclass(frozen=True)
class LoadedRuns:
    """The runs `load_runs` stored: `count` of them, the i-th the i-th oldest, made from `seed` over HISTORY
    up to `start` + HISTORY. Any of them can be made again, the same, without reading the store."""

    count: int
    seed: int
    start: datetime

    def oldest_first(self, first: int = 0, last: int | None = None) -> Iterator[RunRecord]:
        """The runs from the `first`-oldest to before the `last`-oldest (None: to the newest)."""
        factory = RunFactory(self.seed)
        spacing = HISTORY / max(self.count, 1)
        last = self.count if last is None else min(last, self.count)
        for chunk in range(first - first % CHUNK, last, CHUNK):
            # A generator per chunk: the same runs whichever chunk a walk starts from.
            rng = random.Random(self.seed * 1_000_003 + chunk)
            for index in range(chunk, min(last, chunk + CHUNK)):
                # Jitter within each run's own slot keeps created_at unique and in the order of the runs.
                run = factory.run(rng, self.start + spacing * (index + rng.random() * 0.9))
                if index >= first:
                    yield run

    def newest_first(self, position: int, count: int) -> list[RunRecord]:
        """`count` runs from `position` on in ListRuns' order, newest first (position 0 is the newest run)."""
        last = self.count - position
        return list(self.oldest_first(max(0, last - count), last))[::-1]


async def load_runs(store: RunStore, count: int, progress: Callable[[str], None], seed: int = 6) -> LoadedRuns:
    """Store `count` finished runs, created over HISTORY up to now; the i-th run is the i-th oldest."""
    loaded = LoadedRuns(count, seed, datetime.now(UTC) - HISTORY)
    await store.import_runs(loaded.oldest_first(), progress=lambda stored: progress(f"  {stored:,} of {count:,} runs"))
    return loaded
