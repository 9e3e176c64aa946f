"""Render deploy/ the way `kubectl kustomize` does, for the subset of kustomize deploy/ uses.

The deploy tests must run where no kubectl or kustomize binary exists, yet test exactly what
`kubectl apply -k deploy/` would send. This renderer understands only what deploy/ uses:
``resources`` (files and directories), ``configMapGenerator`` (files, a namespace, labels,
no name hash) and ``patches`` (inline JSON 6902 with a target selector). Any other field is an
error, never silently ignored, and tests/deploy/test_manifests.py compares its output with
the real kustomize whenever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUPPORTED = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
# kustomize's default output order ("legacy" ordering): these kinds first, in this order.
_KIND_ORDER = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
_KIND_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class RenderError(ValueError):
    """deploy/ uses something this renderer does not understand, or is malformed."""


def render(directory: Path) -> list[Manifest]:
    """The manifests `kubectl kustomize DIRECTORY` prints, in the same order."""
    return sorted(_build(directory.resolve()), key=_order_key)


def key(manifest: Manifest) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): what identifies an object on the API server."""
    meta = manifest.get("metadata", {})
    return (manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"])


def _order_key(manifest: Manifest) -> tuple[int, str, str, str]:
    kind = manifest["kind"]
    if kind in _KIND_ORDER:
        rank = _KIND_ORDER.index(kind)
    elif kind in _KIND_LAST:
        rank = len(_KIND_ORDER) + 1 + _KIND_LAST.index(kind)
    else:
        rank = len(_KIND_ORDER)
    _, _, namespace, name = key(manifest)
    return (rank, kind if rank == len(_KIND_ORDER) else "", namespace, name)


def _kustomization(directory: Path) -> Manifest:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            loaded = yaml.safe_load(path.read_text())
            if not isinstance(loaded, dict):
                raise RenderError(f"{path}: not a mapping")
            unknown = set(loaded) - _SUPPORTED
            if unknown:
                raise RenderError(f"{path}: fields this renderer does not support: {sorted(unknown)}")
            return loaded
    raise RenderError(f"{directory}: no kustomization file")


def _inside(path: Path, root: Path, *, what: str) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise RenderError(f"{what} {path} is outside {root} (kustomize's load restrictor refuses it)")
    return resolved


def _build(directory: Path) -> list[Manifest]:
    spec = _kustomization(directory)
    manifests: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            if directory.is_relative_to(path):
                raise RenderError(f"{directory}: resource {entry} contains this kustomization (a cycle)")
            manifests += _build(path)
        else:
            _inside(path, directory, what="resource")
            manifests += [m for m in yaml.safe_load_all(path.read_text()) if m is not None]
    for generator in spec.get("configMapGenerator", []):
        manifests.append(_configmap(directory, generator))
    for patch in spec.get("patches", []):
        manifests = [_patched(m, patch) for m in manifests]
    _no_duplicates(manifests, directory)
    return manifests


def _configmap(directory: Path, generator: Manifest) -> Manifest:
    options = generator.get("options", {})
    if not options.get("disableNameSuffixHash", False):
        raise RenderError(f"{directory}: configMapGenerator {generator['name']}: name hashing unsupported")
    unknown = set(generator) - {"name", "namespace", "files", "options"}
    unknown |= set(options) - {"disableNameSuffixHash", "labels"}
    if unknown:
        raise RenderError(f"{directory}: configMapGenerator fields unsupported: {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        name, _, source = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        path = _inside(directory / source, directory, what="file")
        if name in data:
            raise RenderError(f"{directory}: configMapGenerator key {name} twice")
        data[name] = path.read_text()
    metadata: Manifest = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _targets(manifest: Manifest, target: Manifest) -> bool:
    group, _, version = manifest["apiVersion"].rpartition("/")
    wanted = {
        "group": group,
        "version": version,
        "kind": manifest["kind"],
        "name": manifest["metadata"]["name"],
        "namespace": manifest["metadata"].get("namespace", ""),
    }
    unknown = set(target) - set(wanted)
    if unknown:
        raise RenderError(f"patch target fields unsupported: {sorted(unknown)}")
    return all(wanted[field] == value for field, value in target.items())


def _patched(manifest: Manifest, patch: Manifest) -> Manifest:
    if set(patch) - {"target", "patch"}:
        raise RenderError(f"patch fields unsupported: {sorted(set(patch) - {'target', 'patch'})}")
    if not _targets(manifest, patch.get("target", {})):
        return manifest
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise RenderError("only JSON 6902 patches (a list of operations) are supported")
    result = copy.deepcopy(manifest)
    for operation in operations:
        _apply_operation(result, operation)
    return result


def _apply_operation(document: Manifest, operation: Manifest) -> None:
    op, path = operation["op"], operation["path"]
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
    parent: Any = document
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if op in ("add", "replace"):
        value = copy.deepcopy(operation["value"])
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op == "add":
                parent.insert(index, value)
            else:
                parent[index] = value
        else:
            if op == "replace" and last not in parent:
                raise RenderError(f"replace {path}: no such field")
            parent[last] = value
    elif op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise RenderError(f"JSON patch op {op} unsupported")


def _no_duplicates(manifests: list[Manifest], directory: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for manifest in manifests:
        identity = key(manifest)
        if identity in seen:
            raise RenderError(f"{directory}: {identity} defined twice")
        seen.add(identity)
