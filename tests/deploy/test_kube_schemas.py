"""Every object each kustomization renders is valid against the Kubernetes API schemas (PyPI kubernetes-validate,
offline), strictly: an unknown field is an error, as `kubectl apply --validate=strict` makes it. And the check has
teeth: a broken object is rejected."""

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import KUSTOMIZATIONS, kube_objects

#: The oldest Kubernetes the manifests support (gRPC probes, autoscaling/v2, policy/v1 budgets and Job TTLs are all
#: GA well before it) and the newest release kubernetes-validate has schemas for.
VERSIONS = ("1.30", kubernetes_validate.latest_version())
OBJECTS = {name: kube_objects(folder).documents for name, folder in KUSTOMIZATIONS.items()}


def _validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_rendered_object_is_valid(name: str, version: str) -> None:
    errors = []
    for obj in OBJECTS[name]:
        try:
            _validate(obj, version)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def _deployment(name: str) -> dict[str, Any]:
    (deployment,) = [o for o in OBJECTS["prod"] if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return copy.deepcopy(deployment)


def test_a_misspelt_field_is_rejected() -> None:
    broken = _deployment("runs")
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        _validate(broken, VERSIONS[0])


def test_a_wrongly_typed_value_is_rejected() -> None:
    broken = _deployment("engine")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError, match="grpc"):
        _validate(broken, VERSIONS[0])


def test_a_missing_required_field_is_rejected() -> None:
    broken = _deployment("gateway")
    del broken["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError, match="selector"):
        _validate(broken, VERSIONS[0])
