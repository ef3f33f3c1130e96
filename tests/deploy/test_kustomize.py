"""tests/deploy/kustomize.py, the offline renderer the other deploy tests read the kustomizations through: it
renders as kustomize does (compared with `kubectl kustomize` where kubectl is installed), follows a changed Envoy
config with a new ConfigMap name, and refuses what it does not implement instead of rendering it differently."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import KustomizeError, render
from tests.deploy.manifests import DEPLOY, KUSTOMIZATIONS, REPO_ROOT

#: A generated ConfigMap's name: its hash suffix is kustomize's own encoding, not reproduced here.
_GENERATED = re.compile(r"\b(gateway-envoy)-[a-z0-9]{10}\b")


def _canonical(objects: list[Any]) -> dict[tuple[str, str], Any]:
    """Objects by (kind, name), generated names' suffixes blanked, lists in a fixed order (kustomize's merge puts
    a patch's new list items elsewhere than this renderer; order is not what the tests read)."""

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: normal(item) for key, item in value.items()}
        if isinstance(value, list):
            return sorted((normal(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
        return value

    text = _GENERATED.sub(r"\1-HASH", json.dumps(objects))
    return {(obj["kind"], obj["metadata"]["name"]): normal(obj) for obj in json.loads(text)}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renders_what_kubectl_kustomize_renders(name: str) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    theirs = _canonical([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    ours = _canonical(render(KUSTOMIZATIONS[name]))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], f"{key} renders differently from kubectl kustomize"


def _copy_deploy(tmp_path: Path) -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    return copy


def _gateway_config_map_name(objects: list[Any]) -> str:
    (config_map,) = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    (gateway,) = [obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "gateway"]
    names = {v["configMap"]["name"] for v in gateway["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert names == {config_map["metadata"]["name"]}
    return config_map["metadata"]["name"]


def test_a_changed_envoy_config_gets_a_new_config_map_name_and_the_gateway_follows(tmp_path: Path) -> None:
    deploy = _copy_deploy(tmp_path)
    before = _gateway_config_map_name(render(deploy / "overlays" / "prod"))
    with (deploy / "gateway" / "envoy.yaml").open("a") as config:
        config.write("# changed\n")
    after = _gateway_config_map_name(render(deploy / "overlays" / "prod"))
    assert before != after, "the gateway pods would not roll onto the new config"


def test_a_patch_whose_target_is_gone_is_an_error(tmp_path: Path) -> None:
    deploy = _copy_deploy(tmp_path)
    kustomization = deploy / "overlays" / "prod" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("name: runs|tools|agents|gateway", "name: rnus"))
    with pytest.raises(KustomizeError, match="matches no object"):
        render(deploy / "overlays" / "prod")


def test_a_file_outside_the_kustomization_is_refused_as_kustomize_does(tmp_path: Path) -> None:
    deploy = _copy_deploy(tmp_path)
    kustomization = deploy / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - ../gateway\n", "  - ../compose.yaml\n"))
    with pytest.raises(KustomizeError, match="outside the kustomization's folder"):
        render(deploy / "base")


def test_an_unimplemented_kustomize_feature_is_refused(tmp_path: Path) -> None:
    deploy = _copy_deploy(tmp_path)
    kustomization = deploy / "overlays" / "dev" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "namePrefix: dev-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(deploy / "overlays" / "dev")


def test_an_images_entry_points_every_platform_container_at_the_registry(tmp_path: Path) -> None:
    # What `kustomize edit set image agentplatform=...` (docs/operations.md, step 1) writes into an overlay.
    deploy = _copy_deploy(tmp_path)
    with (deploy / "overlays" / "prod" / "kustomization.yaml").open("a") as kustomization:
        kustomization.write("images:\n  - name: agentplatform\n    newName: registry.example/agentplatform\n"
                            "    newTag: 0.2.0\n")
    images = {
        container["image"]
        for obj in render(deploy / "overlays" / "prod") if obj["kind"] in {"Deployment", "Job"}
        for container in obj["spec"]["template"]["spec"]["containers"]
        + obj["spec"]["template"]["spec"].get("initContainers", [])
    }
    assert images == {"registry.example/agentplatform:0.2.0", "envoyproxy/envoy:v1.40.0"}
