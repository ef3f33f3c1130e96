"""The Kubernetes kustomizations (deploy/base, deploy/overlays/dev, deploy/overlays/prod), rendered offline, against
what the code says: modules that exist, probes of gRPC services that exist, ports and env names the services
actually use, the migrations before the services, and what each overlay promises (replicas, autoscaler,
disruption budgets, the database)."""

import importlib.util
from typing import Any

import pytest

from services.common.settings import ServiceSettings, load_settings
from services.migrate.settings import MigrateSettings
from tests.deploy.manifests import (
    COMMAND_SETTINGS_BY_MODULE,
    ENVOY_CONFIG,
    GRPC_SERVICE_BY_MODULE,
    KUSTOMIZATIONS,
    MIGRATE_MODULE,
    SECRET_EXAMPLE,
    SETTINGS_BY_MODULE,
    KubeObjects,
    command_containers,
    container_ports,
    env_aliases,
    host_port,
    init_containers,
    kube_objects,
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

#: The services that keep a schema, whose pods migrate before they serve.
WITH_SCHEMA = {"runs", "tools", "agents"}
#: What the engine reaches, by setting: (the module serving it, its headless Service).
ENGINE_UPSTREAMS = {"RUNS_ADDR": "services.runs", "TOOLS_ADDR": "services.tools", "AGENTS_ADDR": "services.agents"}
RENDERED = {name: kube_objects(folder) for name, folder in KUSTOMIZATIONS.items()}


@pytest.fixture(params=sorted(KUSTOMIZATIONS))
def objects(request: pytest.FixtureRequest) -> KubeObjects:
    return RENDERED[request.param]


def _container_of(objects: KubeObjects, module: str) -> dict[str, Any]:
    (container,) = [container for mod, container in service_containers(objects) if mod == module]
    return container


def _grace_seconds(container: dict[str, Any]) -> float:
    value = literal_env(container).get("GRPC_GRACE_SECONDS")
    return float(value) if value is not None else ServiceSettings.model_fields["grpc_grace_seconds"].default


def _pre_stop_sleep(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def _dns_target(address: str) -> tuple[str, int]:
    """`dns:///host:port` as (host, port): a balanced channel over every address the name resolves to."""
    assert address.startswith("dns:///"), f"{address}: dial the headless Service as dns:///<service>:<port>"
    return host_port(address.removeprefix("dns:///"))


# --- every kustomization ------------------------------------------------------------------------------------------


def test_every_platform_service_is_deployed(objects: KubeObjects) -> None:
    expected = set(SETTINGS_BY_MODULE)
    if not any(d["metadata"]["name"] == "demo-model" for d in objects.of_kind("Deployment")):
        expected.discard("services.demo_model")  # prod: a real model instead
    modules = [module for module, _ in service_containers(objects)]
    assert sorted(modules) == sorted(expected), "each service module should run in exactly one Deployment"
    assert {"runs", "tools", "agents", "engine", "gateway"} <= {d["metadata"]["name"] for d in objects.of_kind(
        "Deployment")}


def test_container_commands_run_packages_that_exist(objects: KubeObjects) -> None:
    for workload in objects.workloads():
        for container in init_containers(workload) + pod_containers(workload):
            if split_image(container["image"])[0] != "agentplatform":
                continue
            module = python_module(container.get("command"))
            assert module is not None, f"{container['name']}: the image has no CMD; set `python -m services.<name>`"
            assert module in COMMAND_SETTINGS_BY_MODULE, f"{module}: no settings class known for it"
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


def test_every_deployment_rolls_one_pod_at_a_time_without_losing_capacity(objects: KubeObjects) -> None:
    for deployment in objects.of_kind("Deployment"):
        strategy = deployment["spec"]["strategy"]
        name = deployment["metadata"]["name"]
        assert strategy["type"] == "RollingUpdate", f"{name}: Recreate stops every pod before starting new ones"
        assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}, name


def test_services_target_a_container_port_of_the_workload_they_select(objects: KubeObjects) -> None:
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


def test_grpc_services_are_headless_so_clients_balance_over_every_pod(objects: KubeObjects) -> None:
    for module in GRPC_SERVICE_BY_MODULE:
        services = [
            service for service in objects.of_kind("Service")
            if python_module(pod_containers(objects.deployment_selected_by(service))[0].get("command")) == module
        ]
        assert services, f"no Service reaches {module}"
        for service in services:
            assert service["spec"].get("clusterIP") == "None", (
                f"Service {service['metadata']['name']!r}: a ClusterIP pins each HTTP/2 connection to one pod"
            )


def test_env_names_are_settings_the_command_reads(objects: KubeObjects) -> None:
    for module, container in command_containers(objects):
        unknown = {item["name"] for item in container.get("env", [])} - env_aliases(COMMAND_SETTINGS_BY_MODULE[module])
        assert not unknown, f"{module} does not read {sorted(unknown)}"


def test_env_values_are_valid_settings(objects: KubeObjects) -> None:
    for module, container in command_containers(objects):
        values: dict[str, Any] = dict(literal_env(container))
        # The Secret's values are not in git: stand in a well-formed one.
        placeholders = {"DATABASE_URL", "TOOLS_DATABASE_URL", "AGENTS_DATABASE_URL"}
        values |= {
            item["name"]: "postgresql+asyncpg://u:p@db/x" if item["name"] in placeholders else "placeholder"
            for item in container["env"] if "valueFrom" in item
        }
        load_settings(COMMAND_SETTINGS_BY_MODULE[module], _env_file=None, **values)


def test_services_bind_every_interface_on_their_container_port(objects: KubeObjects) -> None:
    for module, container in service_containers(objects):
        fields = SETTINGS_BY_MODULE[module].model_fields
        env = literal_env(container)
        assert env.get(fields["host"].alias) == "0.0.0.0", f"{module} must bind 0.0.0.0 in a container"
        assert int(env[fields["port"].alias]) in container_ports(container)


def test_engine_and_agents_dial_headless_services_of_the_right_module(objects: KubeObjects) -> None:
    dialled = [(literal_env(_container_of(objects, "services.engine")), ENGINE_UPSTREAMS),
               (literal_env(_container_of(objects, "services.agents")), {"TOOLS_ADDR": "services.tools"})]
    for env, upstreams in dialled:
        for variable, module in upstreams.items():
            host, port = _dns_target(env[variable])
            service = objects.named("Service", host)
            assert service["spec"].get("clusterIP") == "None", f"{variable}: {host} must be headless"
            assert port in {p["port"] for p in service["spec"]["ports"]}
            (container,) = pod_containers(objects.deployment_selected_by(service))
            assert python_module(container["command"]) == module


def test_secrets_come_from_the_documented_secret(objects: KubeObjects) -> None:
    (example,) = load_documents(SECRET_EXAMPLE)
    assert not objects.of_kind("Secret"), "no Secret is applied: the real one is created out of band"
    from_secrets: dict[str, tuple[str, str]] = {}
    for workload in objects.workloads():
        for container in init_containers(workload) + pod_containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    from_secrets[item["name"]] = (ref["name"], ref["key"])
    assert {"DATABASE_URL", "TOOLS_DATABASE_URL", "AGENTS_DATABASE_URL", "LLM_API_KEY"} <= from_secrets.keys()
    for name, key in from_secrets.values():
        assert name == example["metadata"]["name"]
        assert key in example["stringData"], f"secret.example.yaml documents no key {key!r}"


def test_every_secret_setting_comes_from_the_secret_never_a_literal_or_a_config_map(objects: KubeObjects) -> None:
    checked = set()
    for workload in objects.workloads():
        for container in init_containers(workload) + pod_containers(workload):
            module = python_module(container.get("command"))
            if module is None and container["name"] != "envoy":
                continue  # PostgreSQL (dev): its password is checked by the Secret test above
            # The gateway (Envoy) reads one secret, the service token, from its environment.
            secrets = secret_settings(COMMAND_SETTINGS_BY_MODULE[module]) if module else {"PLATFORM_SERVICE_TOKEN"}
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
    for workload in objects.workloads():
        for container in init_containers(workload) + pod_containers(workload):
            name, tag = split_image(container["image"])
            assert tag and tag != "latest", f"{container['image']} is not pinned to a tag"
            if name == "agentplatform":
                assert tag == project_version()


def test_pods_run_unprivileged_with_resources(objects: KubeObjects) -> None:
    for workload in objects.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        for container in init_containers(workload) + pod_containers(workload):
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


def test_the_migrations_run_first_in_every_pod_with_a_schema_and_in_the_job(objects: KubeObjects) -> None:
    job = objects.named("Job", "migrate")
    (migration,) = pod_containers(job)
    assert python_module(migration["command"]) == MIGRATE_MODULE
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert job["spec"]["backoffLimit"] >= 1
    # Every schema's URL reaches it, from the Secret the services read theirs from.
    assert {item["name"] for item in migration["env"]} >= {
        field.alias for name, field in MigrateSettings.model_fields.items() if name.endswith("database_url")
    }
    for deployment in objects.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        inits = init_containers(deployment)
        if name not in WITH_SCHEMA:
            assert not inits, f"{name} has no schema to wait for"
            continue
        assert inits, f"{name} would serve before its schema is migrated"
        # The same command, image and settings as the Job: idempotent and locked, whichever runs first.
        assert inits[0] == migration, f"{name}'s initContainer differs from the migration Job's container"
        # The URL it migrates is the one the service then uses.
        (container,) = pod_containers(deployment)
        service_url = next(item for item in container["env"] if item["name"].endswith("DATABASE_URL"))
        assert service_url in inits[0]["env"], f"{name} migrates another database than it uses"


def test_every_object_belongs_to_the_platform(objects: KubeObjects) -> None:
    for doc in objects.documents:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agentplatform", doc["metadata"]["name"]


def test_gateway_mounts_the_generated_envoy_config(objects: KubeObjects) -> None:
    (config_map,) = objects.of_kind("ConfigMap")
    assert config_map["metadata"]["name"].startswith("gateway-envoy-"), "generated, with a content-hash suffix"
    (key,) = config_map["data"]
    assert config_map["data"][key] == ENVOY_CONFIG.read_text()
    pod = objects.named("Deployment", "gateway")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    command = container["command"]
    assert command[command.index("-c") + 1] == f"{mount['mountPath']}/{key}"


def _pod_name(selector: dict[str, Any]) -> str:
    return selector["matchLabels"]["app.kubernetes.io/name"]


def _policy_of(objects: KubeObjects, name: str) -> dict[str, Any]:
    (policy,) = [p for p in objects.of_kind("NetworkPolicy") if _pod_name(p["spec"]["podSelector"]) == name]
    return policy


def test_network_policies_let_only_the_gateway_take_outside_traffic(objects: KubeObjects) -> None:
    workloads = {w["metadata"]["name"]: w for w in objects.workloads() if w["kind"] != "Job"}
    # Every serving pod is covered by a policy that selects it by the label its workload gives it.
    for name, workload in workloads.items():
        policy = _policy_of(objects, name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
            workload["spec"]["template"]["metadata"]["labels"].items()
        )

    def sources(name: str) -> set[str] | None:
        """Pods allowed in (None: anyone) and check the ports are the pod's container ports: its service port
        from its peers, and its /metrics port (if it has one) from Prometheus pods only."""
        rules = _policy_of(objects, name)["spec"]["ingress"]
        (container,) = pod_containers(workloads[name])
        ports = container_ports(container)
        metrics = [port for port, port_name in ports.items() if port_name == "metrics"]
        assert len(rules) == 1 + len(metrics), name
        for rule in rules[1:]:
            assert [p["port"] for p in rule["ports"]] == metrics, name
            (peer,) = rule["from"]
            assert peer["namespaceSelector"] == {} and _pod_name(peer["podSelector"]) == "prometheus", name
        rule = rules[0]
        assert {p["port"] for p in rule["ports"]} == set(ports) - set(metrics), name
        if "from" not in rule:
            return None
        return {_pod_name(peer["podSelector"]) for peer in rule["from"]}

    assert sources("gateway") is None
    assert sources("engine") == {"gateway"}
    assert sources("runs") == {"engine", "gateway"}
    assert sources("agents") == {"engine", "gateway"}
    # The agents service checks an agent's tools and model.
    assert sources("tools") == {"engine", "gateway", "agents"}
    if "demo-model" in workloads:
        assert sources("demo-model") == {"engine", "agents"}
    if "postgres" in workloads:
        # The services with a schema, and the migrations (the Job's pods and the initContainers, which run in them).
        assert sources("postgres") == WITH_SCHEMA | {"migrate"}
        job_pod_labels = objects.named("Job", "migrate")["spec"]["template"]["metadata"]["labels"]
        assert job_pod_labels["app.kubernetes.io/name"] == "migrate"
    for policy in objects.of_kind("NetworkPolicy"):
        # The first rule is the service port's; a second one is the /metrics port's, checked above (Prometheus may
        # run in another namespace).
        for rule in policy["spec"]["ingress"][:1]:
            for peer in rule.get("from", []):
                assert set(peer) == {"podSelector"}, "no namespace or IP block peers: only the platform's own pods"


# --- each overlay -------------------------------------------------------------------------------------------------


def _replicas(objects: KubeObjects, name: str) -> int:
    return objects.named("Deployment", name)["spec"].get("replicas", 1)


def _cpu_millis(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def test_dev_runs_one_of_each_with_an_in_cluster_postgres_and_the_demo_model() -> None:
    dev = RENDERED["dev"]
    for name in ("runs", "tools", "agents", "gateway", "engine"):
        assert _replicas(dev, name) == 1, name
    assert not dev.of_kind("HorizontalPodAutoscaler")
    assert not dev.of_kind("PodDisruptionBudget"), "a budget on a single pod would block every node drain"
    postgres = dev.named("StatefulSet", "postgres")
    (container,) = pod_containers(postgres)
    assert split_image(container["image"])[0] == "postgres"
    assert 5432 in {p["port"] for p in dev.named("Service", "postgres")["spec"]["ports"]}
    assert literal_env(_container_of(dev, "services.engine"))["LLM_BASE_URL"] == "http://demo-model:8081/v1"
    for deployment in dev.of_kind("Deployment"):
        for container in pod_containers(deployment):
            assert _cpu_millis(container["resources"]["requests"]["cpu"]) <= 50, deployment["metadata"]["name"]


def test_prod_scales_every_service_and_budgets_disruptions() -> None:
    prod = RENDERED["prod"]
    for name in ("runs", "tools", "agents", "gateway"):
        assert _replicas(prod, name) >= 2, name
    (autoscaler,) = prod.of_kind("HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "engine")
    assert "replicas" not in prod.named("Deployment", "engine")["spec"], "the autoscaler owns engine replicas"
    assert autoscaler["spec"]["minReplicas"] >= 2
    budgets = {_pod_name(b["spec"]["selector"]): b for b in prod.of_kind("PodDisruptionBudget")}
    assert set(budgets) == {"runs", "tools", "agents", "engine", "gateway"}
    for name, budget in budgets.items():
        assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}, name
        assert budget["spec"]["selector"]["matchLabels"].items() <= (
            prod.named("Deployment", name)["spec"]["template"]["metadata"]["labels"].items()
        )


def test_prod_uses_a_real_model_and_a_shared_tools_workspace() -> None:
    prod = RENDERED["prod"]
    assert not [doc for doc in prod.documents if doc["metadata"]["name"] == "demo-model"]
    for module in ("services.engine", "services.agents"):
        env = _container_of(prod, module)["env"]
        assert "demo-model" not in str(env), module
        (key,) = [item for item in env if item["name"] == "LLM_API_KEY"]
        assert key["valueFrom"]["secretKeyRef"]["key"] == "llm-api-key"
    tools = prod.named("Deployment", "tools")["spec"]["template"]["spec"]
    (data,) = [volume for volume in tools["volumes"] if volume["name"] == "data"]
    assert set(data) == {"name", "persistentVolumeClaim"}
    claim = prod.named("PersistentVolumeClaim", data["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every tools replica mounts it"
    workspace = literal_env(_container_of(prod, "services.tools"))["TOOLS_WORKSPACE"]
    (mount,) = [m for m in pod_containers(prod.named("Deployment", "tools"))[0]["volumeMounts"] if m["name"] == "data"]
    assert workspace.startswith(mount["mountPath"] + "/")


def test_prod_reserves_more_than_the_base_for_every_service() -> None:
    base, prod = RENDERED["base"], RENDERED["prod"]
    for deployment in prod.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        (ours,) = pod_containers(deployment)
        (theirs,) = pod_containers(base.named("Deployment", name))
        assert _cpu_millis(ours["resources"]["requests"]["cpu"]) > _cpu_millis(theirs["resources"]["requests"]["cpu"])
