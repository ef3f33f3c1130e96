"""What one case measured on one database, and the table row it prints as."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import fmt, percentile, table

HEADERS = ("case", "database", "n", "ops/s", "p50 ms", "p99 ms", "baseline ops/s", "ratio", "goal")


@dataclass(frozen=True)
class Goal:
    """The figure a case should reach: at least `min_per_second` operations a second, or a p99 under
    `max_p99_ms`."""

    min_per_second: float | None = None
    max_p99_ms: float | None = None

    def describe(self) -> str:
        if self.min_per_second is not None:
            return f">= {self.min_per_second:,.0f}/s"
        return f"p99 < {self.max_p99_ms:g} ms"

    def met_by(self, result: "CaseResult") -> bool:
        if self.min_per_second is not None:
            return result.per_second >= self.min_per_second
        return self.max_p99_ms is not None and result.p99_ms < self.max_p99_ms


@dataclass
class CaseResult:
    """`count` operations that took `seconds` of wall time in all, each taking `latencies_ms`."""

    case: str
    database: str
    count: int
    seconds: float
    latencies_ms: list[float]
    #: Operations a second of the database's own ceiling for the same work, measured in the same run.
    baseline_per_second: float | None = None
    goal: Goal | None = None
    #: What the case checked or saw besides timings (steps returned, the page it landed on ...), for the tests
    #: and the notes under the table.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.5)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    def row(self) -> list[str]:
        ratio = self.per_second / self.baseline_per_second if self.baseline_per_second else None
        goal = f"{self.goal.describe()}: {'met' if self.goal.met_by(self) else 'MISSED'}" if self.goal else None
        return [
            self.case,
            self.database,
            fmt(self.count),
            fmt(self.per_second, 0),
            fmt(self.p50_ms, 2),
            fmt(self.p99_ms, 2),
            fmt(self.baseline_per_second, 0),
            fmt(ratio, 3),
            fmt(goal),
        ]


def results_table(results: Sequence[CaseResult]) -> str:
    return table(HEADERS, [result.row() for result in results])


class Stopwatch:
    """Milliseconds since it was made (time.perf_counter: monotonic, sub-microsecond)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
