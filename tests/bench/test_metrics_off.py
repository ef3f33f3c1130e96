"""`python -m bench --metrics off` prices the metrics: the stack's processes get a prometheus_client that records
nothing, and every module of the services that declares metrics still imports and runs with it."""

import os
import subprocess
import sys

from bench.__main__ import config_from, parse_args
from bench.metrics_off import SHADOW_PATH

PROBE = """
import prometheus_client
from services.common import metrics
from services.engine import metrics as engine_metrics
from services.tools import metrics as tools_metrics
from services.runs import metrics as runs_metrics
metrics.GRPC_SERVER_HANDLED.labels("s", "m", "OK").inc()
engine_metrics.RUNS_STARTED.labels("default").inc()
metrics.method_metrics("/s/m").handled("OK", 0.1)
endpoint = metrics.MetricsEndpoint.start("127.0.0.1", 0)
import urllib.request
page = urllib.request.urlopen(endpoint.url, timeout=5).read()
endpoint.stop()
print(prometheus_client.__file__, repr(page))
"""


def test_off_puts_a_recording_nothing_prometheus_client_first_on_the_stacks_path() -> None:
    settings = config_from(parse_args(["--metrics", "off"])).stack_settings(ENGINE_LEASE_SECONDS="5")
    assert settings["PYTHONPATH"].split(os.pathsep)[0] == str(SHADOW_PATH)
    assert settings["ENGINE_LEASE_SECONDS"] == "5"
    assert "PYTHONPATH" not in config_from(parse_args([])).stack_settings()

    env = {**os.environ, "PYTHONPATH": settings["PYTHONPATH"]}
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    module, page = probe.stdout.split()
    assert module.startswith(str(SHADOW_PATH)) and page == "b''"
