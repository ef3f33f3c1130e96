"""Renders the repo's kustomizations (deploy/base, deploy/overlays/*) in Python, offline, as `kubectl kustomize`
does for the features they use, so `make test` checks what an apply would send without a kustomize binary:

- `resources`: YAML files and folders holding a kustomization (rendered first, recursively);
- `images` (`kustomize edit set image`: newName, newTag or digest for the containers running an image name);
- `labels` (pairs only: added to every object's metadata.labels, as kustomize does without includeSelectors);
- `configMapGenerator` (files): the ConfigMap named with a content-hash suffix, and the references to it in pod
  templates rewritten;
- `patches`, from a file (`path`) or inline (`patch`), with or without a `target` (kind, name as a regular
  expression, labelSelector): strategic merge patches (`$patch: delete` of an object or of a list item; a null value
  removes a key; lists merged by their Kubernetes merge key) and JSON 6902 patches (add, replace, remove).

A kustomization that uses anything else, or names a file outside its folder (kustomize's load restrictor), or a
patch that matches nothing, raises KustomizeError instead of being rendered differently from kustomize.
test_kustomize.py compares the result with `kubectl kustomize` where kubectl is installed."""

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]

_KNOWN_FIELDS = {"apiVersion", "kind", "labels", "resources", "configMapGenerator", "patches", "images"}
#: The merge key of each list field a strategic merge patch may merge into (Kubernetes' patchMergeKey); any other
#: list is replaced whole, as Kubernetes does for lists without one.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
#: The kinds whose pod template (spec.template.spec) may refer to a generated ConfigMap.
_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class KustomizeError(Exception):
    """A kustomization this renderer cannot render as kustomize would."""


@dataclass
class Rendered:
    objects: list[Object]
    #: Generated ConfigMap names: the name in the kustomization -> the name with its hash suffix.
    config_maps: dict[str, str] = field(default_factory=dict)


def render(folder: Path) -> list[Object]:
    """The objects `kubectl kustomize <folder>` prints (in another order)."""
    return _render(folder.resolve()).objects


def _render(folder: Path) -> Rendered:
    kustomization = _load_one(folder / "kustomization.yaml")
    unknown = kustomization.keys() - _KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{folder}: kustomization fields this renderer does not implement: {sorted(unknown)}")
    rendered = Rendered([])
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        if path.is_dir():
            child = _render(path)
            rendered.objects += child.objects
            rendered.config_maps |= child.config_maps
        else:
            rendered.objects += _load_all(_inside(folder, resource))
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _generate_config_map(folder, generator)
        rendered.config_maps[generator["name"]] = config_map["metadata"]["name"]
        rendered.objects.append(config_map)
    for patch in kustomization.get("patches", []):
        rendered.objects = _apply_patch(folder, rendered.objects, patch)
    for image in kustomization.get("images", []):
        _set_image(folder, rendered.objects, image)
    for entry in kustomization.get("labels", []):
        if set(entry) != {"pairs"}:
            raise KustomizeError(f"{folder}: labels entries other than plain `pairs` are not implemented: {entry}")
        for obj in rendered.objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for obj in rendered.objects:
        _rename_config_map_references(obj, rendered.config_maps)
    return rendered


# --- loading ------------------------------------------------------------------------------------------------------


def _load_all(path: Path) -> list[Object]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def _load_one(path: Path) -> Object:
    (doc,) = _load_all(path)
    return doc


def _inside(folder: Path, relative: str) -> Path:
    """A file a kustomization names, which kustomize reads only at or below the kustomization's folder."""
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder):
        raise KustomizeError(f"{folder}: {relative} is outside the kustomization's folder, which kustomize refuses")
    if not path.is_file():
        raise KustomizeError(f"{folder}: {relative} does not exist")
    return path


# --- configMapGenerator -------------------------------------------------------------------------------------------


def _generate_config_map(folder: Path, generator: dict[str, Any]) -> Object:
    if set(generator) != {"name", "files"}:
        raise KustomizeError(f"{folder}: configMapGenerator fields other than name and files: {sorted(generator)}")
    data = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=")
        path = _inside(folder, source)
        data[key or path.name] = path.read_text()
    name = generator["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-{config_map_hash(name, data)}"},
        "data": data,
    }


def config_map_hash(name: str, data: dict[str, str]) -> str:
    """A content hash for a generated ConfigMap's name suffix, 10 characters as kustomize's. Not kustomize's digits
    (its encoding is internal to it): what matters, and what the tests check, is that the name changes with the
    content and that every reference follows it."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": name}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:10]


def _pod_specs(obj: Object) -> Iterator[dict[str, Any]]:
    if obj.get("kind") in _POD_TEMPLATE_KINDS:
        yield obj["spec"]["template"]["spec"]


def _rename_config_map_references(obj: Object, renamed: dict[str, str]) -> None:
    for pod in _pod_specs(obj):
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                volume["configMap"]["name"] = renamed.get(name, name)
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref:
                    ref["name"] = renamed.get(ref["name"], ref["name"])


def _set_image(folder: Path, objects: list[Object], image: dict[str, str]) -> None:
    if not image.keys() <= {"name", "newName", "newTag", "digest"} or "name" not in image:
        raise KustomizeError(f"{folder}: images entries take name, newName, newTag, digest: {image}")
    for obj in objects:
        for pod in _pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition("@")[0].rpartition(":")
                if "/" in tag or not name:  # no tag: the colon, if any, was a registry port's
                    name, tag = container["image"].partition("@")[0], ""
                if name != image["name"]:
                    continue
                reference = image.get("newName", name)
                if "digest" in image:
                    reference += "@" + image["digest"]
                elif image.get("newTag", tag):
                    reference += ":" + image.get("newTag", tag)
                container["image"] = reference


# --- patches ------------------------------------------------------------------------------------------------------


def _apply_patch(folder: Path, objects: list[Object], entry: dict[str, Any]) -> list[Object]:
    if not entry.keys() <= {"path", "patch", "target"} or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{folder}: a patch needs exactly one of path or patch (and maybe target): {entry}")
    text = _inside(folder, entry["path"]).read_text() if "path" in entry else entry["patch"]
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    target = entry.get("target")
    if len(documents) == 1 and isinstance(documents[0], list):
        if target is None:
            raise KustomizeError(f"{folder}: a JSON 6902 patch needs a target")
        matched = _matching(objects, target)
        for obj in matched:
            _json6902(obj, documents[0])
        return objects
    for patch in documents:
        if not isinstance(patch, dict):
            raise KustomizeError(f"{folder}: a patch document is neither a mapping nor a list of operations")
        if target is not None:
            matched = _matching(objects, target)
        else:
            matched = _matching(objects, {"kind": patch["kind"], "name": re.escape(patch["metadata"]["name"])})
            if len(matched) != 1:
                raise KustomizeError(f"{folder}: the patch of {patch['kind']} {patch['metadata']['name']} "
                                     f"matches {len(matched)} objects, not one")
        if patch.get("$patch") == "delete":
            gone = {id(obj) for obj in matched}
            objects = [obj for obj in objects if id(obj) not in gone]
            continue
        body = {key: value for key, value in patch.items() if key not in {"apiVersion", "kind", "metadata"}}
        for obj in matched:
            _strategic_merge(obj, body)
    return objects


def _matching(objects: list[Object], target: dict[str, Any]) -> list[Object]:
    if not target.keys() <= {"kind", "name", "labelSelector", "group", "version"}:
        raise KustomizeError(f"target fields this renderer does not implement: {sorted(target)}")
    selector = dict(part.split("=", 1) for part in target.get("labelSelector", "").split(",") if part)
    matched = []
    for obj in objects:
        group, _, version = obj["apiVersion"].rpartition("/")
        if "kind" in target and obj["kind"] != target["kind"]:
            continue
        if "group" in target and group != target["group"]:
            continue
        if "version" in target and version != target["version"]:
            continue
        # kustomize anchors the name: `runs|tools` means exactly runs or exactly tools.
        if "name" in target and not re.fullmatch(target["name"], obj["metadata"]["name"]):
            continue
        if not selector.items() <= obj["metadata"].get("labels", {}).items():
            continue
        matched.append(obj)
    if not matched:
        raise KustomizeError(f"a patch's target {target} matches no object")
    return matched


def _strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"strategic merge directive {key!r} is not implemented here")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _strategic_merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list) and _merge_key(key, value) is not None:
            _merge_list(base[key], value, _merge_key(key, value))
        else:
            base[key] = copy.deepcopy(value)


def _merge_key(field_name: str, items: list[Any]) -> str | None:
    if field_name == "ports" and items and isinstance(items[0], dict):
        # A container's ports merge on containerPort, a Service's on port.
        return "containerPort" if "containerPort" in items[0] else "port"
    return _MERGE_KEYS.get(field_name)


def _merge_list(base: list[Any], patch: list[Any], key: str) -> None:
    for item in patch:
        existing = next((element for element in base if element.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if existing is not None:
                base.remove(existing)
        elif existing is None:
            base.append(copy.deepcopy(item))
        else:
            _strategic_merge(existing, item)


def _json6902(obj: Object, operations: list[dict[str, Any]]) -> None:
    for operation in operations:
        op, path = operation["op"], operation["path"]
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]
        container: Any = obj
        for part in parents:
            container = container[int(part)] if isinstance(container, list) else container[part]
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            if isinstance(container, list):
                container.insert(len(container) if last == "-" else int(last), value)
            else:
                container[last] = value
        elif op == "replace":
            if isinstance(container, list):
                container[int(last)] = value
            else:
                if last not in container:
                    raise KustomizeError(f"JSON 6902 replace of {path}, which {obj['metadata']['name']} lacks")
                container[last] = value
        elif op == "remove":
            del container[int(last) if isinstance(container, list) else last]
        else:
            raise KustomizeError(f"JSON 6902 operation {op!r} is not implemented here")
