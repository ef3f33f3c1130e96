"""No-op stand-in for prometheus_client.registry (see bench/metrics_off/__init__.py)."""


class Collector:
    """The base of a custom collector; never asked to collect here."""
