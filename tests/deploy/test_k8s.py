"""The Kubernetes manifests (deploy/kustomization.yaml and deploy/k8s/) against what the code says: modules that
exist, probes of gRPC services that exist, ports and env names the services actually use."""

import importlib.util
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from services.common.settings import ServiceSettings, load_settings
from tests.deploy.manifests import (
    DEPLOY,
    ENVOY_CONFIG,
    GRPC_SERVICE_BY_MODULE,
    REPO_ROOT,
    SETTINGS_BY_MODULE,
    KubeObjects,
    container_ports,
    env_aliases,
    host_port,
    kube_objects,
    kustomization,
    literal_env,
    load_documents,
    pod_containers,
    project_version,
    python_module,
    secret_settings,
    service_containers,
    split_image,
    stub_service_names,
)

SECRET_EXAMPLE = DEPLOY / "k8s" / "secret.example.yaml"


@pytest.fixture(scope="module")
def objects() -> KubeObjects:
    return kube_objects()


def _container_of(objects: KubeObjects, module: str) -> dict[str, Any]:
    (container,) = [container for mod, container in service_containers(objects) if mod == module]
    return container


def _grace_seconds(container: dict[str, Any]) -> float:
    value = literal_env(container).get("GRPC_GRACE_SECONDS")
    return float(value) if value is not None else ServiceSettings.model_fields["grpc_grace_seconds"].default


def _pre_stop_sleep(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def test_every_platform_service_is_deployed(objects: KubeObjects) -> None:
    modules = [module for module, _ in service_containers(objects)]
    assert sorted(modules) == sorted(SETTINGS_BY_MODULE), "each service module should run in exactly one Deployment"
    assert {d["metadata"]["name"] for d in objects.of_kind("Deployment")} == {
        "runs", "tools", "agents", "engine", "demo-model", "gateway",
    }


def test_container_commands_run_service_packages_that_exist(objects: KubeObjects) -> None:
    for deployment in objects.of_kind("Deployment"):
        for container in pod_containers(deployment):
            if split_image(container["image"])[0] != "agentplatform":
                continue
            module = python_module(container.get("command"))
            assert module is not None, f"{container['name']}: the image has no CMD; set `python -m services.<name>`"
            assert importlib.util.find_spec(module) is not None, f"{module} is not a package"
            assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_grpc_services_have_grpc_readiness_and_liveness_probes(objects: KubeObjects) -> None:
    known = stub_service_names()
    for module, service_name in GRPC_SERVICE_BY_MODULE.items():
        container = _container_of(objects, module)
        assert "grpc" in container["readinessProbe"] and "grpc" in container["livenessProbe"], module
        for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe_kind not in container:
                continue
            probe = container[probe_kind]["grpc"]
            assert probe["service"] == service_name, f"{module} {probe_kind} asks about {probe['service']!r}"
            assert probe["service"] in known
            assert probe["port"] in container_ports(container)


def test_services_target_a_container_port_of_the_deployment_they_select(objects: KubeObjects) -> None:
    for service in objects.of_kind("Service"):
        (container,) = pod_containers(objects.deployment_selected_by(service))
        ports = container_ports(container)
        headless = service["spec"].get("clusterIP") == "None"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), (
                f"Service {service['metadata']['name']!r} targets {target}, not a port of {container['name']!r}"
            )
            if headless:  # clients dial the pod directly, on the Service's port
                assert port["port"] in ports


def test_env_names_are_settings_the_service_reads(objects: KubeObjects) -> None:
    for module, container in service_containers(objects):
        unknown = {item["name"] for item in container.get("env", [])} - env_aliases(SETTINGS_BY_MODULE[module])
        assert not unknown, f"{module} does not read {sorted(unknown)}"


def test_env_values_are_valid_settings(objects: KubeObjects) -> None:
    for module, container in service_containers(objects):
        values: dict[str, Any] = dict(literal_env(container))
        # The Secret's values are not in git: stand in a well-formed one.
        values |= {item["name"]: "placeholder" for item in container["env"] if "valueFrom" in item}
        load_settings(SETTINGS_BY_MODULE[module], _env_file=None, **values)


def test_services_bind_every_interface_on_their_container_port(objects: KubeObjects) -> None:
    for module, container in service_containers(objects):
        fields = SETTINGS_BY_MODULE[module].model_fields
        env = literal_env(container)
        assert env.get(fields["host"].alias) == "0.0.0.0", f"{module} must bind 0.0.0.0 in a container"
        assert int(env[fields["port"].alias]) in container_ports(container)


def test_engine_dependencies_are_cluster_services(objects: KubeObjects) -> None:
    env = literal_env(_container_of(objects, "services.engine"))
    for variable, module in (("RUNS_ADDR", "services.runs"), ("TOOLS_ADDR", "services.tools")):
        host, port = host_port(env[variable])
        service = objects.named("Service", host)
        assert port in {p["port"] for p in service["spec"]["ports"]}
        (container,) = pod_containers(objects.deployment_selected_by(service))
        assert python_module(container["command"]) == module
    model_host, model_port = host_port(env["LLM_BASE_URL"].removeprefix("http://").removesuffix("/v1"))
    assert model_port in {p["port"] for p in objects.named("Service", model_host)["spec"]["ports"]}


def test_secrets_come_from_the_documented_secret(objects: KubeObjects) -> None:
    (example,) = load_documents(SECRET_EXAMPLE)
    assert "k8s/secret.example.yaml" not in kustomization()["resources"], "the example secret must not be applied"
    from_secrets: dict[str, tuple[str, str]] = {}
    for _, container in service_containers(objects):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                from_secrets[item["name"]] = (ref["name"], ref["key"])
    assert {"DATABASE_URL", "TOOLS_DATABASE_URL", "LLM_API_KEY"} <= from_secrets.keys()
    for name, key in from_secrets.values():
        assert name == example["metadata"]["name"]
        assert key in example["stringData"], f"secret.example.yaml documents no key {key!r}"


def test_every_secret_setting_comes_from_the_secret_never_a_literal_or_a_config_map(objects: KubeObjects) -> None:
    checked = set()
    for deployment in objects.of_kind("Deployment"):
        for container in pod_containers(deployment):
            module = python_module(container.get("command"))
            # The gateway (Envoy) reads one secret, the service token, from its environment.
            secrets = secret_settings(SETTINGS_BY_MODULE[module]) if module else {"PLATFORM_SERVICE_TOKEN"}
            assert all("secretRef" in source for source in container.get("envFrom", [])), container["name"]
            for item in container.get("env", []):
                if item["name"] in secrets:
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{container['name']}: {item['name']}"
                    checked.add(item["name"])
    assert {"PLATFORM_SERVICE_TOKEN", "TOOLS_SECRET_KEYS", "LLM_API_KEY"} <= checked
    # The one ConfigMap (deploy/gateway/envoy.yaml) names the service token only for Envoy to read it at start.
    rendered = ENVOY_CONFIG.read_text().split("\n# ---- rendered", 1)[1]
    assert rendered.count("PLATFORM_SERVICE_TOKEN") == rendered.count("%ENVIRONMENT(PLATFORM_SERVICE_TOKEN)%") == 1


def test_images_are_pinned(objects: KubeObjects) -> None:
    for deployment in objects.of_kind("Deployment"):
        for container in pod_containers(deployment):
            name, tag = split_image(container["image"])
            assert tag and tag != "latest", f"{container['image']} is not pinned to a tag"
            if name == "agentplatform":
                assert tag == project_version()


def test_pods_run_unprivileged_with_resources(objects: KubeObjects) -> None:
    for deployment in objects.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), f"{container['name']} {bound}"


def test_termination_grace_outlasts_the_drain(objects: KubeObjects) -> None:
    for deployment in objects.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            drain = _pre_stop_sleep(container)
            if python_module(container.get("command")) is not None:
                drain += _grace_seconds(container)
            assert pod["terminationGracePeriodSeconds"] > drain, f"{container['name']} would be killed mid-drain"


def test_runs_stays_single_and_engine_autoscales(objects: KubeObjects) -> None:
    runs = objects.named("Deployment", "runs")
    assert runs["spec"]["replicas"] == 1
    assert runs["spec"]["strategy"]["type"] == "Recreate", "a rolling update would briefly run two runs replicas"
    (autoscaler,) = objects.of_kind("HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "engine")
    assert "replicas" not in objects.named("Deployment", "engine")["spec"], "the autoscaler owns engine replicas"
    assert autoscaler["spec"]["minReplicas"] >= 2


def test_gateway_mounts_the_generated_envoy_config(objects: KubeObjects) -> None:
    (generator,) = kustomization()["configMapGenerator"]
    key, _, source = generator["files"][0].partition("=")
    assert (DEPLOY / source).resolve() == ENVOY_CONFIG
    gateway = objects.named("Deployment", "gateway")
    pod = gateway["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == generator["name"]]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    command = container["command"]
    assert command[command.index("-c") + 1] == f"{mount['mountPath']}/{key}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
def test_kustomize_builds_with_the_config_map_wired_in() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", "deploy"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (config_map,) = [doc for doc in built if doc["kind"] == "ConfigMap"]
    assert config_map["data"]["envoy.yaml"] == ENVOY_CONFIG.read_text()
    (gateway,) = [doc for doc in built if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gateway"]
    volumes = gateway["spec"]["template"]["spec"]["volumes"]
    assert config_map["metadata"]["name"] in {v.get("configMap", {}).get("name") for v in volumes}
    assert all(doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agentplatform" for doc in built)


def _pod_name(selector: dict[str, Any]) -> str:
    return selector["matchLabels"]["app.kubernetes.io/name"]


def _policy_of(objects: KubeObjects, name: str) -> dict[str, Any]:
    (policy,) = [p for p in objects.of_kind("NetworkPolicy") if _pod_name(p["spec"]["podSelector"]) == name]
    return policy


def test_network_policies_let_only_the_gateway_take_outside_traffic(objects: KubeObjects) -> None:
    deployments = {d["metadata"]["name"]: d for d in objects.of_kind("Deployment")}
    # Every pod is covered by a policy that selects it by the label its Deployment gives it.
    for name, deployment in deployments.items():
        policy = _policy_of(objects, name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )

    def sources(name: str) -> set[str] | None:
        """Pods allowed in (None: anyone) and check the ports are the pod's container ports."""
        (rule,) = _policy_of(objects, name)["spec"]["ingress"]
        (container,) = pod_containers(deployments[name])
        assert {p["port"] for p in rule["ports"]} == set(container_ports(container)), name
        if "from" not in rule:
            return None
        return {_pod_name(peer["podSelector"]) for peer in rule["from"]}

    assert sources("gateway") is None
    assert sources("engine") == {"gateway"}
    assert sources("runs") == {"engine", "gateway"}
    assert sources("agents") == {"engine", "gateway"}
    # The agents service checks an agent's tools and model.
    assert sources("tools") == {"engine", "gateway", "agents"}
    assert sources("demo-model") == {"engine", "agents"}
    for policy in objects.of_kind("NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            for peer in rule.get("from", []):
                assert set(peer) == {"podSelector"}, "no namespace or IP block peers: only the platform's own pods"
