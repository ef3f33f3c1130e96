"""The engine's connections to the model endpoint: one per run it may execute, shared out over clients of at
most CONNECTIONS_PER_MODEL_CLIENT (a client's pool scans all its connections on every request)."""

import pytest

from services.engine.app import CONNECTIONS_PER_MODEL_CLIENT, _model_clients
from tests.support.platform import engine_settings


@pytest.mark.parametrize("runs", [1, 64, 65, 1000])
async def test_every_run_executing_has_a_connection_and_no_pool_is_large(runs: int) -> None:
    clients = _model_clients(engine_settings(1, 2, "http://127.0.0.1:9/v1", ENGINE_MAX_CONCURRENT_RUNS=runs))
    sizes = [client._client._transport._pool._max_connections for client in clients]  # type: ignore[attr-defined]
    assert sum(sizes) >= runs and max(sizes) <= CONNECTIONS_PER_MODEL_CLIENT
    assert len(clients) == -(-runs // CONNECTIONS_PER_MODEL_CLIENT)
    for client in clients:
        await client.close()
