"""How each tool has been used since this tools process started, for the Manage Tools page: calls, errors,
timeouts, the median and 95th-percentile duration of recent calls, and when it was last used (no gRPC here).

Kept in memory: the figures describe this process's life (a restart starts them again), which is what an
operator looking at a misbehaving tool wants; durable history is what the run timeline is for.
"""

import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

#: Durations kept per tool for the percentiles: the most recent calls.
RECENT_CALLS = 1000

Outcome = Literal["ok", "error", "timeout"]


@dataclass(frozen=True)
class ToolUsage:
    """One tool's figures. Errors include timeouts; durations are of calls that ran (ok, error or timeout)."""

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    last_used: datetime | None = None


@dataclass
class _Tally:
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))
    last_used: datetime | None = None


class UsageLedger:
    """Counts every execution of the registry's tools."""

    def __init__(self) -> None:
        self._tallies: dict[str, _Tally] = {}

    def record(self, tool_id: str, outcome: Outcome, duration_seconds: float | None) -> None:
        tally = self._tallies.setdefault(tool_id, _Tally())
        tally.calls += 1
        tally.errors += outcome != "ok"
        tally.timeouts += outcome == "timeout"
        if duration_seconds is not None:
            tally.durations.append(duration_seconds)
        tally.last_used = datetime.now(UTC)

    def usage(self, tool_id: str) -> ToolUsage:
        tally = self._tallies.get(tool_id)
        if tally is None:
            return ToolUsage()
        p50 = p95 = None
        if tally.durations:
            ordered = sorted(tally.durations)
            p50 = statistics.median(ordered)
            # The nearest-rank 95th percentile: a duration that was actually observed.
            p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
        return ToolUsage(tally.calls, tally.errors, tally.timeouts, p50, p95, tally.last_used)
