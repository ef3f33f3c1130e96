"""`python -m bench --metrics off`: what the stack costs without its Prometheus metrics, to price them (issue 19).

Not a feature of the platform (its metrics are always on): this folder goes first on the stack's PYTHONPATH, so
its `prometheus_client` package shadows the real one in every process the launcher starts. Every metric is then
an object whose methods do nothing, and /metrics answers an empty page. What stays: the services' calls into
those no-op methods (a Python call each) and the client interceptor of dialled channels (services.common.rpc.
channels), so `off` is a slight overestimate of the stack without metrics, and the difference a slight
underestimate of what they cost.
"""

from pathlib import Path

#: The folder to put first on PYTHONPATH.
SHADOW_PATH = Path(__file__).resolve().parent
