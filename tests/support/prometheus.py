"""A real Prometheus (Debian's `prometheus` package) for the tests: started on a free port of 127.0.0.1 with a
scrape config the test gives, queried through its HTTP API. Tests that need it skip where it is not installed,
unless REQUIRE_PROMETHEUS=1 (the CI sets it, and .ci/run installs the package)."""

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT, free_port

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
#: The platform's alert rules and Grafana dashboard (deploy/observability), which the tests load and check.
OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "dashboard.json"


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", ())]


def require(binary: str) -> str:
    """The path of `binary` (prometheus or promtool); skips the test when it is missing, or fails it under
    REQUIRE_PROMETHEUS=1."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed (Debian package 'prometheus')"
        if os.environ.get("REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"REQUIRE_PROMETHEUS=1 but {reason}")
        pytest.skip(reason)
    return path


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector `expression` evaluates to now (its samples, each with `metric` and `value`)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expression: str) -> float | None:
        """The single value of `expression` now; None when it has no sample."""
        samples = self.query(expression)
        assert len(samples) <= 1, samples
        return float(samples[0]["value"][1]) if samples else None

    def eventually(self, expression: str, expected: float, timeout: float = 30.0) -> None:
        """Wait until `expression` evaluates to `expected` (scrapes come every second)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expression)
            if value == expected:
                return
            time.sleep(0.3)
        raise AssertionError(
            f"{expression} is {value}, not {expected}, after {timeout} s\n{self.log.read_text()[-3000:]}"
        )

    def rules(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/rules", timeout=5)
        response.raise_for_status()
        return [rule for group in response.json()["data"]["groups"] for rule in group["rules"]]


@contextmanager
def running_prometheus(
    workdir: Path, targets: dict[str, str], rule_files: tuple[Path, ...] = ()
) -> Iterator[Prometheus]:
    """Prometheus scraping each `targets` job (name: host:port) every second, with `rule_files` loaded."""
    binary = require(PROMETHEUS)
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=output, stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
