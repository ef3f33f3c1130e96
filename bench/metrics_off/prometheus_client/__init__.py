"""No-op stand-ins for the prometheus_client names the services use (see bench/metrics_off/__init__.py)."""

import threading
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server


class _Metric:
    """A counter, gauge or histogram that records nothing: every method returns itself or nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *args: Any, **kwargs: Any) -> "_Metric":
        return self

    def __getattr__(self, name: str) -> Any:
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


Counter = Gauge = Histogram = Summary = _Metric


class _Registry:
    def register(self, collector: Any) -> None:
        pass

    def unregister(self, collector: Any) -> None:
        pass


REGISTRY = _Registry()


def start_http_server(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
    """An HTTP server answering every request with an empty page, as the real one would with no metrics."""

    def empty(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    server = make_server(addr, port, empty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
