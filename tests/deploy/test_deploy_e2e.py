"""deploy/ on a real API server: accepted as restricted, scheduled everywhere, least privilege.

What `kubectl apply --server-side -k deploy/` does is done here by hand: each rendered manifest
is sent as a server-side apply PATCH, and the API server's ``Warning`` headers (PodSecurity
warns on pod templates) must be empty. The cluster is Oceanid on KWOK nodes with styx NotReady
(and so tainted) and calypso, the GPU node, cordoned and tainted as healer itself would leave
it: an agent must still run on each, the GPU one under the nvidia RuntimeClass. RBAC is checked
as the ServiceAccount itself, through impersonation.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from healer.kube.client import connect
from healer.runtime.settings import SERVICE_ACCOUNT_DIR_ENV
from tests.deploy import render
from tests.support.controlplane import ControlPlane
from tests.support.kube import node_taint_keys, read_node
from tests.support.oceanid import build_oceanid
from tests.support.serviceaccount import pod_env, request_token, write_service_account
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "healer-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:healer"
FIELD_MANAGER = "healer-deploy-test"
SYSTEM_NODE_CRITICAL = 2000001000

# kind -> (API prefix, plural, namespaced), for the kinds deploy/ and this test apply
_RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "RuntimeClass": ("/apis/node.k8s.io/v1", "runtimeclasses", False),
}
# What K3s writes to server/manifests/runtimes.yaml when it finds the NVIDIA container toolkit.
K3S_NVIDIA_RUNTIME_CLASS = {
    "apiVersion": "node.k8s.io/v1",
    "kind": "RuntimeClass",
    "metadata": {"name": "nvidia"},
    "handler": "nvidia",
}


def _path(manifest: dict[str, Any]) -> str:
    prefix, plural, namespaced = _RESOURCES[manifest["kind"]]
    meta = manifest["metadata"]
    where = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{prefix}{where}/{plural}/{meta['name']}"


async def _call(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Any, int, list[str]]:
    """One request; (decoded body, status, Warning headers). Raises ApiException on >= 400."""
    data, status, response_headers = await api.call_api(
        path,
        method,
        query_params=query or [],
        header_params={"Accept": "application/json", **(headers or {})},
        body=body,
        response_types_map={200: "object", 201: "object", 202: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=False,
    )
    return data, status, list(response_headers.getall("Warning", []))


async def apply(api: client.ApiClient, manifest: dict[str, Any]) -> list[str]:
    """Server-side apply, as `kubectl apply --server-side`; returns the API server's warnings."""
    _, _, warnings = await _call(
        api,
        "PATCH",
        _path(manifest),
        body=manifest,
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    return warnings


async def apply_deploy(api: client.ApiClient, *, kinds: set[str] | None = None) -> dict[str, list[str]]:
    """Apply deploy/ (kustomize order: the Namespace first); warnings per object."""
    warnings = {}
    for manifest in render.render(ROOT / "deploy"):
        if kinds is None or manifest["kind"] in kinds:
            warnings["/".join(render.key(manifest)[1:])] = await apply(api, manifest)
    return warnings


# --- the cluster accepts it and the agent runs everywhere -------------------------------------


async def _healer_pods(api: client.ApiClient) -> list[Any]:
    pods = await client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name=healer"
    )
    return list(pods.items)


def _agent() -> dict[str, Any]:
    """The plain DaemonSet, as rendered."""
    (agent,) = [
        m for m in render.render(ROOT / "deploy") if render.key(m)[1:] == ("DaemonSet", NAMESPACE, "healer")
    ]
    return agent


def _running(pod: Any) -> bool:
    return pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None


async def test_deploy_is_accepted_as_restricted_and_runs_on_every_node(
    control_plane: ControlPlane, kube: client.ApiClient
) -> None:
    control_plane.reset()
    cluster = await build_oceanid(kube, agents=control_plane)
    core = client.CoreV1Api(kube)
    styx, calypso = cluster.failed_node, cluster.gpu_node

    # styx reports NotReady: node lifecycle taints it not-ready (NoSchedule and NoExecute).
    control_plane.notready(node=styx)

    async def styx_tainted() -> bool:
        return "node.kubernetes.io/not-ready" in node_taint_keys(await read_node(kube, name=styx))

    await wait_until(styx_tainted, timeout_s=60, what=f"not-ready taint on {styx}")
    # calypso as healer leaves a GPU node with a fatal XID: cordoned and tainted.
    await core.patch_node(
        calypso,
        {
            "spec": {
                "unschedulable": True,
                "taints": [{"key": "healer.io/gpu-unhealthy", "value": "xid79", "effect": "NoSchedule"}],
            }
        },
    )
    assert await apply(kube, K3S_NVIDIA_RUNTIME_CLASS) == []

    warnings = await apply_deploy(kube)
    assert {name: w for name, w in warnings.items() if w} == {}
    assert len(warnings) == len(render.render(ROOT / "deploy"))

    expected = dict.fromkeys(cluster.nodes, "healer") | {calypso: "healer-gpu"}

    async def one_running_agent_per_node() -> dict[str, Any] | None:
        pods = [p for p in await _healer_pods(kube) if _running(p)]
        by_node = {p.spec.node_name: p for p in pods}
        if len(pods) != len(by_node) or set(by_node) != set(expected):
            return None
        return by_node

    by_node = await wait_until(
        one_running_agent_per_node, timeout_s=120, what="one Running healer pod on each node"
    )
    for node, pod in by_node.items():
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name) == ("DaemonSet", expected[node]), node
        assert pod.spec.priority == SYSTEM_NODE_CRITICAL
        assert pod.spec.service_account_name == "healer"
        assert pod.spec.runtime_class_name == ("nvidia" if node == calypso else None)
    assert "node.kubernetes.io/not-ready" in node_taint_keys(await read_node(kube, name=styx))

    # The "no warnings" above means something: this API server does enforce restricted here.
    (agent,) = [
        m for m in render.render(ROOT / "deploy") if render.key(m)[1:] == ("DaemonSet", NAMESPACE, "healer")
    ]
    template = agent["spec"]["template"]["spec"]
    weakened = {**template, "securityContext": {"runAsNonRoot": True}}  # no seccomp profile
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "weakened"},
        "spec": {**weakened, "nodeName": cluster.control_plane_node},
    }
    with pytest.raises(ApiException) as denied:
        await _call(kube, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=pod, query=[("dryRun", "All")])
    assert denied.value.status == 403
    assert "violates PodSecurity" in str(denied.value.body)


# --- RBAC, as the ServiceAccount --------------------------------------------------------------

# (verb, group, resource, subresource, namespace, name); "" namespace = all namespaces / cluster
Access = tuple[str, str, str, str, str, str]
NEEDED: list[Access] = [
    *[(verb, "", "nodes", "", "", "") for verb in ("get", "list", "watch")],
    ("patch", "", "nodes", "", "", "styx"),
    ("patch", "", "nodes", "status", "", "calypso"),
    *[(verb, "", "pods", "", "", "") for verb in ("list", "watch")],
    *[(verb, "", "pods", "", "apps", "redis-0") for verb in ("get", "delete")],
    ("create", "", "pods", "eviction", "apps", "redis-0"),
    ("create", "", "events", "", "default", ""),
    ("create", "", "events", "", "apps", ""),
    *[(verb, "", "persistentvolumes", "", "", "") for verb in ("get", "list", "watch")],
    *[(verb, "", "persistentvolumeclaims", "", "", "") for verb in ("get", "list", "watch")],
    *[(verb, "policy", "poddisruptionbudgets", "", "", "") for verb in ("get", "list", "watch")],
    ("create", "coordination.k8s.io", "leases", "", NAMESPACE, ""),
    *[(verb, "coordination.k8s.io", "leases", "", NAMESPACE, "healer-leader") for verb in ("get", "update")],
]
FORBIDDEN: list[Access] = [
    *[(verb, "", "secrets", "", "", "") for verb in ("get", "list", "watch")],
    *[
        (verb, "", "secrets", "", ns, "healer-notify")
        for verb in ("get",)
        for ns in (NAMESPACE, "kube-system")
    ],
    ("delete", "", "nodes", "", "", "styx"),
    ("create", "", "nodes", "", "", ""),
    ("update", "", "nodes", "", "", "styx"),
    ("get", "", "nodes", "proxy", "", "styx"),
    ("create", "", "pods", "", "apps", ""),
    ("patch", "", "pods", "", "apps", "redis-0"),
    ("create", "", "pods", "exec", "apps", "redis-0"),
    ("patch", "apps", "deployments", "", "apps", "csv-ingestion-worker"),
    ("delete", "apps", "daemonsets", "", NAMESPACE, "healer"),
    ("delete", "", "events", "", "default", ""),
    ("get", "", "configmaps", "", "kube-system", ""),
    ("update", "coordination.k8s.io", "leases", "", "kube-node-lease", "styx"),
    ("update", "coordination.k8s.io", "leases", "", NAMESPACE, "another-lease"),
    *[
        (verb, "coordination.k8s.io", "leases", "", NAMESPACE, "healer-leader")
        for verb in ("patch", "delete")
    ],
    ("create", "", "serviceaccounts", "token", NAMESPACE, "healer"),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", "healer"),
    ("impersonate", "", "users", "", "", "admin"),
]
AS_HEALER = {"Impersonate-User": SERVICE_ACCOUNT}


async def _allowed(api: client.ApiClient, access: Access) -> bool:
    verb, group, resource, subresource, namespace, name = access
    attributes = {"verb": verb, "group": group, "resource": resource}
    attributes |= {
        k: v for k, v in (("subresource", subresource), ("namespace", namespace), ("name", name)) if v
    }
    review, _, _ = await _call(
        api,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
        headers=AS_HEALER,
    )
    return bool(review["status"].get("allowed"))


async def _status_as_healer(api: client.ApiClient, method: str, path: str, *, body: Any = None) -> int:
    query = [] if method == "GET" else [("dryRun", "All")]  # nothing changes even if allowed
    try:
        _, status, _ = await _call(api, method, path, body=body, query=query, headers=AS_HEALER)
    except ApiException as exc:
        return int(exc.status)
    return status


async def test_service_account_can_do_what_healer_needs_and_nothing_else(
    control_plane: ControlPlane, kube: client.ApiClient
) -> None:
    warnings = await apply_deploy(
        kube,
        kinds={"Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"},
    )
    assert {name: w for name, w in warnings.items() if w} == {}

    verdicts = {access: await _allowed(kube, access) for access in (*NEEDED, *FORBIDDEN)}
    assert [a for a in NEEDED if not verdicts[a]] == [], "needed but denied"
    assert [a for a in FORBIDDEN if verdicts[a]] == [], "allowed but must not be"

    # The reviews are the authorizer's answer; real requests as the ServiceAccount agree.
    assert await _status_as_healer(kube, "GET", "/api/v1/nodes") == 200
    assert await _status_as_healer(kube, "GET", "/api/v1/pods") == 200
    assert await _status_as_healer(kube, "GET", "/api/v1/namespaces/kube-system/secrets") == 403
    assert await _status_as_healer(kube, "GET", "/api/v1/secrets") == 403
    assert await _status_as_healer(kube, "DELETE", "/api/v1/nodes/styx") == 403
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": []}}
    assert await _status_as_healer(kube, "POST", "/api/v1/namespaces/default/pods", body=pod) == 403


# --- the real daemon, with nothing but the ServiceAccount's rights ----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.+)$", status, flags=re.M)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _limit_kib(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {"Mi": 1024, "Gi": 1024 * 1024}[unit]


async def test_the_daemon_heals_with_only_its_service_account(
    control_plane: ControlPlane, kube: client.ApiClient, tmp_path: Path
) -> None:
    """`healer run` as the DaemonSet's pod runs it: its environment, in-cluster configuration
    (KUBERNETES_SERVICE_HOST/PORT at the kube-apiserver, a service-account folder with a bound
    token of healer's ServiceAccount and the cluster's CA, no --kubeconfig). It gets ready, wins
    the Lease, and cordons a NotReady node (patch, Event) without one 403."""
    control_plane.reset()
    cluster = await build_oceanid(kube, agents=control_plane)
    warnings = await apply_deploy(kube)
    assert {name: w for name, w in warnings.items() if w} == {}
    async with connect(kubeconfig=control_plane.kubeconfig) as admin:
        token = await request_token(admin, namespace=NAMESPACE, name="healer")
    service_account = write_service_account(
        tmp_path / "serviceaccount", token=token, ca_pem=control_plane.ca_cert.read_bytes()
    )
    (agent,) = [
        m for m in render.render(ROOT / "deploy") if render.key(m)[1:] == ("DaemonSet", NAMESPACE, "healer")
    ]
    container = agent["spec"]["template"]["spec"]["containers"][0]
    port = _free_port()
    pod_name = "healer-e2e-tethys"
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "NODE_NAME": cluster.control_plane_node,
        "POD_NAME": pod_name,
        "POD_NAMESPACE": NAMESPACE,
        **{e["name"]: e["value"] for e in container["env"] if "value" in e},
        # the DaemonSet's paths, made local: its port and files are not available here
        "HEALER_HTTP_PORT": str(port),
        "HEALER_RULES_DIR": str(ROOT / "rules"),
        "HEALER_NOTIFY_URLS_FILE": str(tmp_path / "no-such-urls"),
        # what the kubelet gives every pod, and where its service-account folder is mounted here
        **pod_env(control_plane),
        SERVICE_ACCOUNT_DIR_ENV: str(service_account),
    }
    assert "KUBECONFIG" not in environment
    log_path = tmp_path / "healer.log"
    healer = shutil.which("healer", path=str(Path(sys.executable).parent)) or "healer"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            healer,
            "run",
            env=environment,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        async with aiohttp.ClientSession() as http:

            async def answers(path: str) -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"healer exited {process.returncode}:\n{log_path.read_text()}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            for path in (
                container["livenessProbe"]["httpGet"]["path"],
                container["readinessProbe"]["httpGet"]["path"],
            ):
                await wait_until(lambda p=path: answers(p), timeout_s=60, what=f"healer {path} 200")  # type: ignore[misc]

            async def leader() -> bool:
                lease = await client.CoordinationV1Api(kube).read_namespaced_lease("healer-leader", NAMESPACE)
                return bool(lease.spec.holder_identity == pod_name)

            await wait_until(leader, timeout_s=60, what="healer to hold Lease healer-leader")
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert "healer_" in await response.text()

            styx = cluster.failed_node
            control_plane.notready(node=styx)

            async def cordoned_by_healer() -> bool:
                node = await read_node(kube, name=styx)
                return bool(node.spec.unschedulable) and "healer.io/cordoned-by" in (
                    node.metadata.annotations or {}
                )

            await wait_until(cordoned_by_healer, timeout_s=120, what=f"healer to cordon {styx}")
            events = await client.CoreV1Api(kube).list_event_for_all_namespaces(
                field_selector=f"involvedObject.kind=Node,involvedObject.name={styx}"
            )
            assert any(e.reason.startswith("Healer") for e in events.items), [e.reason for e in events.items]

            memory = _memory_kib(process.pid)
            limit = _limit_kib(container["resources"]["limits"]["memory"])
            cpu_s = _cpu_seconds(process.pid)
            print(
                f"healer run: RSS {memory['VmRSS'] / 1024:.1f} MiB, peak {memory['VmHWM'] / 1024:.1f} MiB, "
                f"CPU {cpu_s:.1f} s since start"
            )
            assert memory["VmHWM"] < limit, f"peak RSS {memory} KiB is over the DaemonSet's limit"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()
    output = log_path.read_text()
    assert "forbidden" not in output.lower(), output
    assert process.returncode == 0, output
