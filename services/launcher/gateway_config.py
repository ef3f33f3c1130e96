"""Renders gateway/envoy.template.yaml into a concrete Envoy config for a given set of addresses."""

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().parents[2] / "gateway" / "envoy.template.yaml"


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int


def render_gateway_config(
    *,
    host: str,
    port: int,
    admin_port: int,
    cors_origins: list[str],
    engine: Upstream,
    runs: Upstream,
    tools: Upstream,
) -> str:
    """The Envoy YAML for these addresses. Every placeholder must be filled (Template.substitute raises)."""
    return Template(TEMPLATE.read_text()).substitute(
        GATEWAY_HOST=host,
        GATEWAY_PORT=port,
        ENVOY_ADMIN_PORT=admin_port,
        CORS_ORIGINS=json.dumps([{"exact": origin} for origin in cors_origins]),
        ENGINE_HOST=engine.host,
        ENGINE_PORT=engine.port,
        RUNS_HOST=runs.host,
        RUNS_PORT=runs.port,
        TOOLS_HOST=tools.host,
        TOOLS_PORT=tools.port,
    )
