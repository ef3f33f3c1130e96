"""The one way a service dials another: a grpc.aio channel with the platform's options.

Used by the engine (to the runs, tools and agents services) and the agents service (to the tools service). There
is no keepalive and no client-side balancing config: each dependency is one address, and a channel that finds it
gone reconnects under the backoff below.
"""

import grpc

#: For a dependency that restarts: gRPC's default reconnect backoff grows to 120 s, which would keep a channel
#: idle long after the server is back.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def channel_options(max_receive_bytes: int | None = None) -> tuple[tuple[str, int], ...]:
    """The options of a channel to another service; `max_receive_bytes` raises gRPC's default 4 MiB limit on an
    answer, for a dependency whose answers can be larger."""
    if max_receive_bytes is None:
        return RECONNECT_OPTIONS
    return (*RECONNECT_OPTIONS, ("grpc.max_receive_message_length", max_receive_bytes))


def dial(address: str, max_receive_bytes: int | None = None) -> grpc.aio.Channel:
    """A channel to the service at `address` (host:port), with channel_options(max_receive_bytes)."""
    return grpc.aio.insecure_channel(address, options=channel_options(max_receive_bytes))
