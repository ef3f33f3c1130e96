"""Asking a service over the standard gRPC health protocol whether it serves: what the launcher's tests, the
end-to-end tests and `make bench` wait on (kubelet and Envoy ask the same question their own way)."""

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(address: str, service: str, timeout: float = 1.0) -> bool:
    """Whether `service` (its full name; "" for the whole server) at host:port answers SERVING now."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
