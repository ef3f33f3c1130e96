"""Every YAML file under deploy/ parses."""

from pathlib import Path

import pytest

from tests.deploy.manifests import DEPLOY, load_documents

YAML_FILES = sorted(path for pattern in ("*.yaml", "*.yml") for path in DEPLOY.rglob(pattern))


def test_deploy_has_its_yaml_files() -> None:
    names = {path.relative_to(DEPLOY).as_posix() for path in YAML_FILES}
    assert {
        "compose.yaml", "gateway/envoy.yaml", "gateway/kustomization.yaml", "base/kustomization.yaml",
        "base/engine.yaml", "overlays/dev/kustomization.yaml", "overlays/prod/kustomization.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: path.relative_to(DEPLOY).as_posix())
def test_yaml_file_parses_into_mappings(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} has no YAML document"
    assert all(isinstance(doc, dict) for doc in documents), f"{path}: every document should be a mapping"
