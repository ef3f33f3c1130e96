"""No-op stand-in for prometheus_client.core (see bench/metrics_off/__init__.py)."""

from prometheus_client import _Metric as GaugeMetricFamily

__all__ = ["GaugeMetricFamily"]
