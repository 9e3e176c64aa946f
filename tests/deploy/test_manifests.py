"""What `kubectl apply -k deploy/` installs, checked without a cluster.

The e2e tests prove the API server accepts the manifests; these prove the promises that an API
server does not check: the agent tolerates every taint, runs as the restricted profile demands,
reads the same env vars and paths the code does, the two DaemonSets differ only where they
must, RBAC holds exactly healer's verbs, the rules ConfigMap is the top-level rules/, and the
dry-run overlay changes nothing but the flag.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from healer.rules import loading
from tests.deploy import render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DRY_RUN = "examples/dry-run"  # the overlay: outside deploy/, which kustomize would see as a cycle
NAMESPACE = "healer-system"
HTTP_PORT = 9180
UID = 65532
GPU_LABEL = "nvidia.com/gpu.present"

# healer's verbs, by (apiGroup, resource): what healer/effects and healer/watch call.
CLUSTER_VERBS: dict[tuple[str, str], set[str]] = {
    ("", "nodes"): {"get", "list", "watch", "patch"},
    ("", "nodes/status"): {"patch"},
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("", "pods/eviction"): {"create"},
    ("", "events"): {"create"},
    ("", "persistentvolumes"): {"get", "list", "watch"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch"},
}


@functools.cache
def _rendered(directory: str) -> tuple[dict[str, Any], ...]:
    return tuple(render.render(ROOT / directory))


def manifests(directory: str = "deploy") -> list[dict[str, Any]]:
    return [dict(m) for m in _rendered(directory)]


def one(kind: str, name: str, directory: str = "deploy") -> dict[str, Any]:
    found = [m for m in manifests(directory) if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def daemonsets(directory: str = "deploy") -> list[dict[str, Any]]:
    return [m for m in manifests(directory) if m["kind"] == "DaemonSet"]


def container(ds: dict[str, Any]) -> dict[str, Any]:
    containers = ds["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(ds: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(ds)["env"]}


# --- sources of truth --------------------------------------------------------------------------


def test_deploy_rules_are_the_top_level_rules() -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "sync-deploy-rules"), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    configmap = one("ConfigMap", "healer-rules")
    top_level = {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))}
    assert configmap["data"] == top_level
    assert configmap["metadata"]["namespace"] == NAMESPACE


def test_rules_load_from_a_configmap_volume(tmp_path: Path) -> None:
    """kubelet's layout (files are links into a hidden, timestamped dir) loads like rules/."""
    data = one("ConfigMap", "healer-rules")["data"]
    version = tmp_path / "..2026_01_01_00_00_00.000000001"
    version.mkdir()
    for name, text in data.items():
        (version / name).write_text(text)
        (tmp_path / name).symlink_to(Path("..data") / name)
    (tmp_path / "..data").symlink_to(version.name)

    mounted = loading.load_rules(tmp_path)
    shipped = loading.load_rules(ROOT / "rules")
    assert len(mounted.sources) == len(data)
    assert (mounted.rules, mounted.guards, mounted.gpu) == (shipped.rules, shipped.guards, shipped.gpu)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("directory", ["deploy", DRY_RUN])
def test_renderer_matches_real_kustomize(directory: str) -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / directory)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    real = [m for m in yaml.safe_load_all(done.stdout) if m is not None]
    assert manifests(directory) == real


def test_renderer_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(render.RenderError, match="namePrefix"):
        render.render(tmp_path)


def test_image_tag_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {container(ds)["image"] for ds in daemonsets()} == {f"healer:{version}"}


def test_env_vars_are_the_contracted_ones() -> None:
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    for ds in daemonsets():
        for name in env(ds):
            if name.startswith("HEALER_") or name in ("NODE_NAME", "POD_NAME", "POD_NAMESPACE"):
                assert f"`{name}`" in contracts, f"{name} is not in docs/contracts.md"


# --- the DaemonSets ------------------------------------------------------------------------------


def test_both_daemonsets_run_everywhere_they_must() -> None:
    for ds in daemonsets():
        spec = ds["spec"]["template"]["spec"]
        assert spec["tolerations"] == [{"operator": "Exists"}], "must tolerate every taint"
        assert spec["priorityClassName"] == "system-node-critical"
        assert spec["serviceAccountName"] == "healer"
        assert ds["metadata"]["namespace"] == NAMESPACE
        variables = env(ds)
        assert variables["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        selector = ds["spec"]["selector"]["matchLabels"]
        assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def _schedules_on(ds: dict[str, Any], labels: dict[str, str]) -> bool:
    """nodeSelector and required node affinity (In/NotIn/Exists) against a node's labels."""
    spec = ds["spec"]["template"]["spec"]
    if any(labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
        return False
    affinity = spec.get("affinity", {}).get("nodeAffinity", {})
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms")
    if not terms:
        return True

    def holds(e: dict[str, Any]) -> bool:
        value = labels.get(e["key"])
        return {
            "In": lambda: value in e["values"],
            "NotIn": lambda: value not in e["values"],
            "Exists": lambda: value is not None,
            "DoesNotExist": lambda: value is None,
        }[e["operator"]]()

    return any(all(holds(e) for e in t.get("matchExpressions", [])) for t in terms)


def test_exactly_one_agent_per_node_gpu_nodes_get_the_nvidia_runtime() -> None:
    plain, gpu = one("DaemonSet", "healer"), one("DaemonSet", "healer-gpu")
    for labels in ({}, {GPU_LABEL: "false"}, {GPU_LABEL: "true"}, {"kubernetes.io/os": "linux"}):
        is_gpu = labels.get(GPU_LABEL) == "true"
        assert _schedules_on(plain, labels) is not is_gpu, labels
        assert _schedules_on(gpu, labels) is is_gpu, labels
    gpu_spec = gpu["spec"]["template"]["spec"]
    assert gpu_spec["runtimeClassName"] == "nvidia"
    assert env(gpu)["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env(gpu)["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert "runtimeClassName" not in plain["spec"]["template"]["spec"]
    assert not any(name.startswith("NVIDIA_") for name in env(plain))
    for ds in (plain, gpu):  # NVML without taking the GPU away from workloads
        resources = container(ds)["resources"]
        assert not any("nvidia.com" in r for part in resources.values() for r in part)


def _normalised(ds: dict[str, Any]) -> dict[str, Any]:
    """The GPU DaemonSet with its intended differences undone, to compare with the plain one."""
    clone: dict[str, Any] = yaml.safe_load(yaml.safe_dump(ds))
    clone["metadata"]["name"] = "healer"
    for labels in (
        clone["metadata"]["labels"],
        clone["spec"]["selector"]["matchLabels"],
        clone["spec"]["template"]["metadata"]["labels"],
    ):
        labels["app.kubernetes.io/component"] = "agent"
    spec = clone["spec"]["template"]["spec"]
    spec.pop("runtimeClassName", None)
    spec.pop("nodeSelector", None)
    spec.pop("affinity", None)
    c = spec["containers"][0]
    c["env"] = [e for e in c["env"] if not e["name"].startswith("NVIDIA_")]
    return clone


def test_the_two_daemonsets_differ_only_where_they_must() -> None:
    assert _normalised(one("DaemonSet", "healer-gpu")) == _normalised(one("DaemonSet", "healer"))


def test_pod_security_restricted_by_construction() -> None:
    namespace = one("Namespace", NAMESPACE)
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for ds in daemonsets():
        spec = ds["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == UID
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag)
        c = container(ds)
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert not ctx.get("privileged")
        assert all("hostPort" not in p for p in c["ports"])
        allowed = {"configMap", "secret", "emptyDir", "projected", "downwardAPI"}
        for volume in spec["volumes"]:
            assert set(volume) - {"name"} <= allowed, volume


def test_http_port_probes_and_scrape_annotations_agree() -> None:
    for ds in daemonsets():
        c = container(ds)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": HTTP_PORT}
        assert env(ds)["HEALER_HTTP_PORT"] == str(HTTP_PORT)
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        annotations = ds["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(HTTP_PORT),
            "prometheus.io/path": "/metrics",
        }


def test_resources_as_stated() -> None:
    for ds in daemonsets():
        assert container(ds)["resources"] == {
            "requests": {"cpu": "10m", "memory": "80Mi"},
            "limits": {"memory": "256Mi"},
        }


def test_files_are_mounted_where_the_code_reads_them() -> None:
    for ds in daemonsets():
        c, spec = container(ds), ds["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert mounts["rules"] == env(ds)["HEALER_RULES_DIR"] == str(loading.SYSTEM_RULES_DIR)
        assert volumes["rules"]["configMap"]["name"] == one("ConfigMap", "healer-rules")["metadata"]["name"]
        notify = volumes["notify"]["secret"]
        assert notify["secretName"] == "healer-notify"
        assert notify["optional"] is True
        assert notify["items"] == [{"key": "urls", "path": "urls"}]
        assert f"{mounts['notify']}/urls" == env(ds)["HEALER_NOTIFY_URLS_FILE"] == "/etc/healer/notify/urls"
        assert mounts["tmp"] == "/tmp"
        assert "emptyDir" in volumes["tmp"]
        assert set(mounts) == set(volumes)
        assert all(m.get("readOnly") for m in c["volumeMounts"] if m["name"] != "tmp")


# --- RBAC ----------------------------------------------------------------------------------------


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_cluster_role_holds_exactly_healers_verbs() -> None:
    role = one("ClusterRole", "healer")
    assert _grants(role) == CLUSTER_VERBS
    assert not any("resourceNames" in rule for rule in role["rules"])
    binding = one("ClusterRoleBinding", "healer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "healer",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "healer", "namespace": NAMESPACE}]


def test_lease_role_is_namespaced_and_pinned_to_the_leader_lease() -> None:
    role = one("Role", "healer-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _grants(role) == {("coordination.k8s.io", "leases"): {"create", "get", "update"}}
    for rule in role["rules"]:
        if set(rule["verbs"]) != {"create"}:
            assert rule["resourceNames"] == ["healer-leader"]
    binding = one("RoleBinding", "healer-leader-election")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "healer", "namespace": NAMESPACE}]


def test_no_secret_is_shipped_or_readable() -> None:
    assert not [m for m in manifests() if m["kind"] == "Secret"]
    for m in manifests():
        if m["kind"] in ("Role", "ClusterRole"):
            assert not [k for k in _grants(m) if k[1].startswith("secrets")]


# --- dry-run overlay -----------------------------------------------------------------------------


def test_dry_run_overlay_only_adds_the_flag() -> None:
    live, dry = manifests(), manifests(DRY_RUN)
    assert [render.key(m) for m in live] == [render.key(m) for m in dry]
    for before, after in zip(live, dry, strict=True):
        if before["kind"] != "DaemonSet":
            assert before == after
            continue
        assert container(after)["args"] == ["--dry-run"]
        assert "args" not in container(before)
        assert "command" not in container(before)
        after_c = container(after)
        del after_c["args"]
        after["spec"]["template"]["spec"]["containers"] = [after_c]
        assert before == after
