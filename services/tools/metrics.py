"""The tools service's Prometheus metrics: every tool call it was asked to run (services.common.metrics has the
conventions and the endpoint). Filled by the executor (services/tools/executor.py). The tool label is a tool's id
(the registered tools are a bounded set); never a run or a user."""

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


#: The states an MCP server's connection is in (services/tools/mcp/connection.py), each reported even at 0.
MCP_STATES = ("connecting", "connected", "unavailable")


class McpServerStates(Protocol):
    def states(self) -> Tally[str]: ...


class _McpServersCollector(Collector):
    """agentplatform_mcp_servers{state}: the registered MCP servers by connection state, read from the process's
    MCP sources when scraped (a gauge kept up to date would need every state change to reach it)."""

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[McpServerStates] = weakref.WeakSet()

    def watch(self, sources: McpServerStates) -> None:
        self._sources.add(sources)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agentplatform_mcp_servers", "Registered MCP servers by connection state.", labels=["state"]
        )
        total: Tally[str] = Tally()
        for sources in list(self._sources):
            total.update(sources.states())
        for state in MCP_STATES:
            family.add_metric([state], total[state])
        yield family


MCP_SERVERS = _McpServersCollector()
REGISTRY.register(MCP_SERVERS)
