"""deploy/compose.yaml against the code: service modules that exist, env names the services read, dependencies
that exist, and a gRPC health check that really tells a serving service from one that is not."""

import asyncio
import importlib.util
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.common.auth import Authenticator
from services.common.rpc.server import RunningServer, ServiceBinding, start_server
from services.common.settings import load_settings
from tests.deploy.manifests import (
    COMMAND_SETTINGS_BY_MODULE,
    DEPLOY,
    GRPC_SERVICE_BY_MODULE,
    MIGRATE_MODULE,
    REPO_ROOT,
    SETTINGS_BY_MODULE,
    compose_environment,
    compose_services,
    env_aliases,
    host_port,
    project_version,
    python_module,
    secret_settings,
    split_image,
    stub_service_names,
)

SERVICES = compose_services()
#: The long-running services (the migrate service runs once and exits).
PLATFORM = {name: service for name, service in SERVICES.items() if python_module(service.get("command")) in
            SETTINGS_BY_MODULE}


def _module(service: dict[str, Any]) -> str:
    module = python_module(service["command"])
    assert module is not None
    return module


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), f"write {duration!r} in seconds, e.g. 25s"
    return float(duration[:-1])


def test_the_whole_platform_is_composed() -> None:
    assert sorted(_module(s) for s in PLATFORM.values()) == sorted(SETTINGS_BY_MODULE)
    assert {"postgres", "gateway"} <= SERVICES.keys()


def test_commands_run_service_packages_that_exist() -> None:
    for name, service in PLATFORM.items():
        module = _module(service)
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{name}: {module} has no __main__"


def test_platform_services_build_the_image_from_the_repo() -> None:
    for name, service in PLATFORM.items():
        assert service["image"] == f"agentplatform:{project_version()}", name
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == REPO_ROOT
        assert (REPO_ROOT / build["dockerfile"]).is_file()


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        _, tag = split_image(service["image"])
        assert tag and tag != "latest", f"{name}: {service['image']} is not pinned to a tag"


def test_env_names_are_settings_the_service_reads() -> None:
    for name, service in PLATFORM.items():
        unknown = compose_environment(service).keys() - env_aliases(SETTINGS_BY_MODULE[_module(service)])
        assert not unknown, f"{name} does not read {sorted(unknown)}"


def test_env_values_are_valid_settings() -> None:
    for service in PLATFORM.values():
        load_settings(SETTINGS_BY_MODULE[_module(service)], _env_file=None, **compose_environment(service))


def test_secret_settings_come_from_the_hosts_environment_never_the_file() -> None:
    checked = set()
    for name, service in SERVICES.items():
        module = python_module(service.get("command"))
        secrets = secret_settings(COMMAND_SETTINGS_BY_MODULE[module]) if module else {"PLATFORM_SERVICE_TOKEN"}
        for variable, value in service.get("environment", {}).items():
            if variable in secrets:
                # `${NAME:?message}` or `${NAME:-}`: from whoever runs compose, with no default worth stealing.
                assert re.fullmatch(r"\$\{" + variable + r"(:\?[^}]*|:-)?\}", str(value)), f"{name}: {variable}"
                checked.add(variable)
    assert {"PLATFORM_SERVICE_TOKEN", "TOOLS_SECRET_KEYS", "LLM_API_KEY"} <= checked


def test_services_bind_every_interface_on_their_port() -> None:
    for name, service in PLATFORM.items():
        fields = SETTINGS_BY_MODULE[_module(service)].model_fields
        env = compose_environment(service)
        assert env.get(fields["host"].alias) == "0.0.0.0", f"{name} must bind 0.0.0.0 in a container"
        assert env.get(fields["port"].alias), f"{name} should say its port"


def test_depends_on_targets_exist_and_health_conditions_have_checks() -> None:
    for name, service in SERVICES.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on {target!r}, which is no service"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} healthy, but it has no check"


def test_engine_reaches_runs_tools_and_the_demo_model_by_service_name() -> None:
    env = compose_environment(SERVICES["engine"])
    for variable, module in (("RUNS_ADDR", "services.runs"), ("TOOLS_ADDR", "services.tools")):
        host, port = host_port(env[variable])
        assert _module(SERVICES[host]) == module
        assert compose_environment(SERVICES[host])[SETTINGS_BY_MODULE[module].model_fields["port"].alias] == str(port)
    host, port = host_port(env["LLM_BASE_URL"].removeprefix("http://").removesuffix("/v1"))
    assert compose_environment(SERVICES[host])["DEMO_MODEL_PORT"] == str(port)


def test_migrations_run_once_before_every_service_with_a_schema() -> None:
    migrate = SERVICES["migrate"]
    assert python_module(migrate["command"]) == MIGRATE_MODULE
    assert migrate["restart"] == "no", "it exits when done; restarting it would re-run it forever"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    environment = compose_environment(migrate)
    settings = load_settings(COMMAND_SETTINGS_BY_MODULE[MIGRATE_MODULE], _env_file=None, **environment)
    assert environment.keys() <= env_aliases(type(settings))
    for name in ("runs", "tools", "agents"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        # It migrates the database the service then uses.
        url_alias = SETTINGS_BY_MODULE[_module(SERVICES[name])].model_fields["database_url"].alias
        assert environment[url_alias] == compose_environment(SERVICES[name])[url_alias], name


def test_runs_uses_postgres() -> None:
    assert compose_environment(SERVICES["runs"])["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert SERVICES["runs"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_grpc_health_checks_ask_the_service_on_its_own_port() -> None:
    known = stub_service_names()
    for name, service in PLATFORM.items():
        module = _module(service)
        if module not in GRPC_SERVICE_BY_MODULE:
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        address, service_name = test[4:]
        host, port = host_port(address)
        port_alias = SETTINGS_BY_MODULE[module].model_fields["port"].alias
        assert (host, str(port)) == ("127.0.0.1", compose_environment(service)[port_alias]), name
        assert service_name == GRPC_SERVICE_BY_MODULE[module] and service_name in known


def test_stop_grace_outlasts_grpc_grace() -> None:
    for name, service in PLATFORM.items():
        grace = float(compose_environment(service).get("GRPC_GRACE_SECONDS", 3))
        assert _seconds(service["stop_grace_period"]) > grace, name


def test_gateway_mounts_the_rendered_envoy_config() -> None:
    gateway = SERVICES["gateway"]
    (volume,) = gateway["volumes"]
    source, target, _ = volume.split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "gateway" / "envoy.yaml"
    command = gateway["command"]
    assert command[command.index("-c") + 1] == target


# --- the health-check command itself, run against a real gRPC health service ------------------------------------

HEALTH_CHECK_SCRIPT = SERVICES["runs"]["healthcheck"]["test"][3]
SERVED = GRPC_SERVICE_BY_MODULE["services.runs"]


@pytest.fixture
async def health_server() -> AsyncIterator[RunningServer]:
    """A real server with the project's bootstrap (health + reflection) reporting SERVED as SERVING."""
    running = await start_server(
        [ServiceBinding(SERVED, lambda server: None)], "127.0.0.1", 0, Authenticator.development()
    )
    yield running
    await running.stop(0)


async def _health_check(address: str, service: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HEALTH_CHECK_SCRIPT, address, service,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


def test_grpc_services_share_the_health_check_script_tested_below() -> None:
    for name, service in PLATFORM.items():
        if _module(service) in GRPC_SERVICE_BY_MODULE:
            assert service["healthcheck"]["test"][3] == HEALTH_CHECK_SCRIPT, name


async def test_health_check_passes_on_a_serving_service(health_server: RunningServer) -> None:
    assert await _health_check(f"127.0.0.1:{health_server.port}", SERVED) == 0


async def test_health_check_fails_for_a_service_not_served(health_server: RunningServer) -> None:
    assert await _health_check(f"127.0.0.1:{health_server.port}", "agentplatform.tools.v1.ToolService") != 0


async def test_health_check_fails_while_draining(health_server: RunningServer) -> None:
    await health_server.health.enter_graceful_shutdown()
    assert await _health_check(f"127.0.0.1:{health_server.port}", SERVED) != 0


async def test_health_check_fails_when_nothing_listens(health_server: RunningServer) -> None:
    port = health_server.port
    await health_server.stop(0)
    assert await _health_check(f"127.0.0.1:{port}", SERVED) != 0
