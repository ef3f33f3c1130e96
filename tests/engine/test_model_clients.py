"""The engine's connections to the model endpoint: one per run it may execute, shared out over clients of at
most CONNECTIONS_PER_MODEL_CLIENT (a client's pool scans all its connections on every request)."""

import ssl

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


async def test_the_clients_share_one_tls_context_that_verifies_certificates() -> None:
    # A context each would hold its own CA bundle, about 0.8 MiB apiece (issue 22: the engine's memory).
    clients = _model_clients(engine_settings(1, 2, "http://127.0.0.1:9/v1", ENGINE_MAX_CONCURRENT_RUNS=1000))
    contexts = [client._client._transport._pool._ssl_context for client in clients]  # type: ignore[attr-defined]
    assert len(clients) > 1 and all(context is contexts[0] for context in contexts)
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
    assert contexts[0].cert_store_stats()["x509_ca"] > 0  # the CA bundle a client loads by default
    for client in clients:
        await client.close()
