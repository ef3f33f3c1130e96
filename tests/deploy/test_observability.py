"""The observability files of deploy/observability: the alert rules pass `promtool check rules` (the real one, from
Debian's prometheus package), each alert has its runbook entry in docs/operations.md, and every series the rules
and the Grafana dashboard read is one the services export (a renamed metric would leave a panel empty and an alert
silent). tests/e2e/test_metrics.py loads both into a real Prometheus scraping a stack."""

import re
import subprocess

from prometheus_client import REGISTRY

import services.engine.metrics
import services.runs.metrics
import services.tools.metrics  # noqa: F401  (each module declares its metrics in the registry on import)
from tests.conftest import REPO_ROOT
from tests.support.prometheus import ALERTS, PROMTOOL, alert_rules, dashboard_expressions, require

OPERATIONS = REPO_ROOT / "docs" / "operations.md"
#: Series names in an expression: the platform's own and the gRPC server's.
SERIES = re.compile(r"\b((?:agentplatform|grpc_server)_[a-z_]+)")


def exported_series() -> set[str]:
    """Every sample name the services' metrics can have (counters' _total, histograms' _bucket/_sum/_count ...)."""
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count", "_created"))
    return names


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([require(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_has_a_runbook_entry_its_annotation_points_to() -> None:
    headings = {line[5:].strip() for line in OPERATIONS.read_text().splitlines() if line.startswith("#### ")}
    for rule in alert_rules():
        assert rule["alert"] in headings, f"docs/operations.md has no '#### {rule['alert']}' runbook entry"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


def test_the_rules_and_the_dashboard_read_only_series_the_services_export() -> None:
    exported = exported_series()
    expressions = [rule["expr"] for rule in alert_rules()] + dashboard_expressions()
    assert len(dashboard_expressions()) >= 15
    for expression in expressions:
        for name in SERIES.findall(expression):
            assert name in exported, f"{name} (in {expression!r}) is not a metric any service exports"
