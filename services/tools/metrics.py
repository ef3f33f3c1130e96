"""The tools service's Prometheus metrics (services.common.metrics has the conventions and the endpoint): every tool
call it was asked to run (filled by services/tools/executor.py), its worker pool (workers/pool.py replaces workers;
their load is read when scraped) and its MCP servers' states (read when scraped). The tool label is a tool's id (the
registered tools are a bounded set); never a run or a user."""

import weakref
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.metrics import DURATION_BUCKETS

TOOL_CALLS = Counter(
    "agentplatform_tool_calls_total",
    "Tool calls, by tool and outcome: ok, error (the tool failed), timeout, refused (disabled, unavailable or "
    "arguments that do not fit its schema: it never ran).",
    ["tool", "outcome"],
)
TOOL_CALL_DURATION = Histogram(
    "agentplatform_tool_call_seconds", "How long tool calls that ran took, by tool.", ["tool"],
    buckets=DURATION_BUCKETS,
)


def count_call(tool: str, outcome: str, seconds: float | None) -> None:
    """One call of `tool`; `seconds` is None for a call that never ran."""
    TOOL_CALLS.labels(tool, outcome).inc()
    if seconds is not None:
        TOOL_CALL_DURATION.labels(tool).observe(seconds)


WORKER_REPLACEMENTS = Counter(
    "agentplatform_tool_worker_replacements_total",
    "Tool worker processes replaced: killed at a call's time limit or its caller gone, crashed, retired, or ended "
    "while idle.",
)

#: The states an MCP server's connection is in (services/tools/mcp/connection.py), each reported even at 0.
MCP_STATES = ("connecting", "connected", "unavailable")


class McpServerStates(Protocol):
    def states(self) -> Tally[str]: ...


class WorkerPoolLoad(Protocol):
    def load(self) -> tuple[int, int, int]:
        """(workers ready, workers running a call, calls waiting for a worker)."""
        ...


class _ToolsCollector(Collector):
    """What is read from the tools service's parts when scraped, rather than kept up to date at every change:
    agentplatform_mcp_servers{state} from its MCP sources, agentplatform_tool_workers{state} and
    agentplatform_tool_calls_waiting from its worker pool."""

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[McpServerStates] = weakref.WeakSet()
        self._pools: weakref.WeakSet[WorkerPoolLoad] = weakref.WeakSet()

    def watch_mcp(self, sources: McpServerStates) -> None:
        self._sources.add(sources)

    def watch_pool(self, pool: WorkerPoolLoad) -> None:
        self._pools.add(pool)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        servers = GaugeMetricFamily(
            "agentplatform_mcp_servers", "Registered MCP servers by connection state.", labels=["state"]
        )
        total: Tally[str] = Tally()
        for sources in list(self._sources):
            total.update(sources.states())
        for state in MCP_STATES:
            servers.add_metric([state], total[state])
        yield servers
        ready = busy = waiting = 0
        for pool in list(self._pools):
            pool_ready, pool_busy, pool_waiting = pool.load()
            ready, busy, waiting = ready + pool_ready, busy + pool_busy, waiting + pool_waiting
        workers = GaugeMetricFamily(
            "agentplatform_tool_workers", "Tool worker processes by state: idle (ready for a call) or busy.",
            labels=["state"],
        )
        workers.add_metric(["idle"], max(ready - busy, 0))
        workers.add_metric(["busy"], busy)
        yield workers
        yield GaugeMetricFamily(
            "agentplatform_tool_calls_waiting", "Plugin tool calls waiting for a free worker.", value=waiting
        )


TOOLS_PARTS = _ToolsCollector()
REGISTRY.register(TOOLS_PARTS)
