"""Recreate the Oceanid K3s cluster (docs: /work/shared/oceanid-cluster.md) on KWOK nodes.

healer exists because of one incident on this cluster: styx's kubelet died, taint eviction
marked its pods for deletion, nobody finalised them, and they stayed Terminating for days while
the StatefulSet could not replace its pod. To reproduce that against a real control plane the
tests need the same shape: three nodes with K3s labels, the namespaces with their PodSecurity
levels, and on styx exactly the kinds of pods that behave differently when a node dies:

* Deployments that can move (csv-ingestion-worker, project-bootstrapper): replaced elsewhere;
* a Deployment on a node-local volume (label-studio-ls-app, local-path style PV pinned to styx):
  its replacement stays Pending, the volume cannot follow it;
* a StatefulSet (redis) on a network volume (NFS PV, RWO): not replaced at all while the old pod
  is Terminating, because the StatefulSet controller waits for ``redis-0`` to be gone;
* a bare Pod (debug-shell): nothing ever replaces it;
* DaemonSet pods (tailscale-worker): they tolerate ``unreachable`` forever, so they are not
  evicted at all.

Nodes carry no topology.kubernetes.io/zone label (K3s sets none), so all three share zone "".
Node lifecycle only stops evicting in a zone when it is fully down, or when at least 3 of its
nodes and at least 55 % of them are unhealthy (clusters of <= 50 nodes); one dead node of
three keeps the zone "Normal", so taint eviction proceeds exactly as it did on the real cluster.
Tests that break more nodes at once must keep that in mind.

Placement is deterministic without pinning pods to nodes (pinning would also pin their
replacements): phase 1 cordons tethys and calypso so styx's workloads can only land on styx;
phase 2 cordons styx and creates everything else on tethys/calypso; then all are uncordoned.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client

from tests.support.kube import (
    is_running,
    list_pods,
    manifest,
    node_condition,
    read_node,
    service_account_exists,
)
from tests.support.wait import wait_until

TETHYS = "tethys"
STYX = "styx"
CALYPSO = "calypso"
K3S_VERSION = "v1.33.4+k3s1"

# namespace -> PodSecurity level, as in the architecture doc
NAMESPACES: dict[str, str] = {
    "kube-system": "privileged",
    "flux-system": "restricted",
    "apps": "baseline",
    "tailscale-system": "privileged",
    "pulumi-system": "privileged",
    "cloudflared": "baseline",
}


class NodeAgents(Protocol):
    """Something that can start a node's (simulated) kubelet, e.g. ControlPlane."""

    def add_node(self, *, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    namespace: str
    name: str
    labels: dict[str, str]  # selects exactly this workload's pods
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class OceanidCluster:
    control_plane_node: str
    failed_node: str
    gpu_node: str
    movable_deployments: tuple[Workload, ...]  # on styx, can be replaced elsewhere
    pinned_deployment: Workload  # on styx, node-local PV: replacement stays Pending
    statefulset: Workload  # on styx, network PV: replacement never created
    statefulset_pvc: str
    bare_pod: Workload  # on styx, never replaced
    daemonsets: tuple[Workload, ...]
    elsewhere: tuple[Workload, ...]  # created on tethys/calypso

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.control_plane_node, self.failed_node, self.gpu_node)

    @property
    def on_failed_node(self) -> tuple[Workload, ...]:
        return (*self.movable_deployments, self.pinned_deployment, self.statefulset, self.bare_pod)


# --- object templates -------------------------------------------------------------------------


def _node(
    name: str,
    *,
    hostname: str,
    ip: str,
    roles: tuple[str, ...],
    cpu: str,
    memory: str,
    allocatable_cpu: str,
    allocatable_memory: str,
    extra_labels: dict[str, str] | None = None,
    extra_resources: dict[str, str] | None = None,
    os_image: str,
) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "k3s",
        "k3s.io/hostname": hostname,
        "k3s.io/internal-ip": ip,
        **{f"node-role.kubernetes.io/{role}": "true" for role in roles},
        **(extra_labels or {}),
    }
    resources = extra_resources or {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"k3s.io/internal-ip": ip, "k3s.io/hostname": hostname},
        },
        "spec": {"providerID": f"k3s://{name}"},
        "status": {
            "capacity": {
                "cpu": cpu,
                "memory": memory,
                "pods": "110",
                "ephemeral-storage": "100Gi",
                **resources,
            },
            "allocatable": {
                "cpu": allocatable_cpu,
                "memory": allocatable_memory,
                "pods": "110",
                "ephemeral-storage": "95Gi",
                **resources,
            },
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": hostname}],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": os_image,
                "kubeletVersion": K3S_VERSION,
                "kubeProxyVersion": K3S_VERSION,
                "containerRuntimeVersion": "containerd://2.0.5-k3s2",
                "kernelVersion": "6.14.0-generic",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def _container(
    name: str,
    image: str,
    *,
    cpu: str = "100m",
    memory: str = "128Mi",
    limit_cpu: str | None = None,
    limit_memory: str | None = None,
    restricted: bool = False,
    privileged: bool = False,
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": limit_cpu or cpu, "memory": limit_memory or memory},
        },
    }
    if restricted:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        }
    if privileged:
        container["securityContext"] = {"privileged": True}
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _pod_spec(
    containers: list[dict[str, Any]],
    *,
    restricted: bool = False,
    volumes: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "terminationGracePeriodSeconds": 30, **extra}
    if restricted:
        spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if volumes:
        spec["volumes"] = volumes
    return spec


def _deployment(w: Workload, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": w.labels},
        "spec": {
            "replicas": w.replicas,
            "selector": {"matchLabels": w.labels},
            "template": {"metadata": {"labels": w.labels}, "spec": spec},
        },
    }


def _app(name: str, namespace: str = "apps", replicas: int = 1, kind: str = "Deployment") -> Workload:
    return Workload(
        kind=kind, namespace=namespace, name=name, labels={"app.kubernetes.io/name": name}, replicas=replicas
    )


CSV_WORKER = _app("csv-ingestion-worker")
BOOTSTRAPPER = _app("project-bootstrapper")
LABEL_STUDIO = _app("label-studio-ls-app")
REDIS = _app("redis", kind="StatefulSet")
DEBUG_POD = _app("debug-shell", kind="Pod")
TAILSCALE_WORKER = _app("tailscale-worker", namespace="tailscale-system", kind="DaemonSet")
TAILSCALE_EXIT = _app("tailscale-exit-node", namespace="tailscale-system", kind="DaemonSet")
COREDNS = Workload(
    kind="Deployment", namespace="kube-system", name="coredns", labels={"k8s-app": "kube-dns"}, replicas=2
)
METRICS_SERVER = Workload(
    kind="Deployment", namespace="kube-system", name="metrics-server", labels={"k8s-app": "metrics-server"}
)
FLUX = tuple(
    _app(n, namespace="flux-system")
    for n in ("source-controller", "kustomize-controller", "helm-controller", "notification-controller")
)
PKO = _app("pulumi-kubernetes-operator", namespace="pulumi-system")
CLOUDFLARED = _app("cloudflared", namespace="cloudflared")
BACKFILL_JOB = _app("csv-backfill", kind="Job")


# --- building ---------------------------------------------------------------------------------


async def _namespaces(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for name, level in NAMESPACES.items():
        labels = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "audit", "warn")}
        if name == "kube-system":
            await core.patch_namespace(name, {"metadata": {"labels": labels}})
        else:
            await core.create_namespace(manifest({"metadata": {"name": name, "labels": labels}}))
    for name in NAMESPACES:
        # ServiceAccount admission rejects pods until the controller-manager made `default`.
        await wait_until(
            functools.partial(service_account_exists, api, namespace=name),
            timeout_s=60,
            what=f"ServiceAccount {name}/default",
        )


async def _storage(api: client.ApiClient) -> None:
    storage = client.StorageV1Api(api)
    core = client.CoreV1Api(api)
    await storage.create_storage_class(
        manifest(
            {
                "metadata": {
                    "name": "local-path",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "rancher.io/local-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer",
            }
        )
    )
    await storage.create_storage_class(
        manifest(
            {
                "metadata": {"name": "nfs"},
                "provisioner": "nfs.csi.k8s.io",
                "reclaimPolicy": "Retain",
                "volumeBindingMode": "Immediate",
            }
        )
    )
    # What local-path-provisioner creates: a hostPath PV that only styx can mount.
    await core.create_persistent_volume(
        manifest(
            {
                "metadata": {"name": "pvc-label-studio-data"},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": "local-path",
                    "hostPath": {"path": "/var/lib/label-studio", "type": "DirectoryOrCreate"},
                    "claimRef": {"namespace": "apps", "name": "label-studio-data"},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [STYX]}
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
    )
    await core.create_namespaced_persistent_volume_claim(
        "apps",
        manifest(
            {
                "metadata": {"name": "label-studio-data"},
                "spec": {
                    "storageClassName": "local-path",
                    "accessModes": ["ReadWriteOnce"],
                    "volumeName": "pvc-label-studio-data",
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            }
        ),
    )
    # A network volume any node could mount, but single-attach (RWO), pre-bound to redis-0's claim.
    await core.create_persistent_volume(
        manifest(
            {
                "metadata": {"name": "pv-redis-data"},
                "spec": {
                    "capacity": {"storage": "5Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "nfs",
                    "nfs": {"server": "10.41.0.250", "path": "/exports/redis"},
                    "claimRef": {"namespace": "apps", "name": "data-redis-0"},
                },
            }
        )
    )


async def _nodes(api: client.ApiClient, agents: NodeAgents) -> None:
    core = client.CoreV1Api(api)
    nodes = [
        _node(
            TETHYS,
            hostname="srv712429",
            ip="10.41.1.1",
            roles=("control-plane", "master"),
            cpu="4",
            memory="8Gi",
            allocatable_cpu="3800m",
            allocatable_memory="7Gi",
            os_image="Ubuntu 25.04",
        ),
        _node(
            STYX,
            hostname="srv712695",
            ip="10.41.1.2",
            roles=("worker",),
            cpu="4",
            memory="8Gi",
            allocatable_cpu="3800m",
            allocatable_memory="7Gi",
            os_image="Ubuntu 25.04",
        ),
        _node(
            CALYPSO,
            hostname="calypso",
            ip="10.41.1.3",
            roles=("gpu",),
            cpu="6",
            memory="16Gi",
            allocatable_cpu="5800m",
            allocatable_memory="15Gi",
            extra_labels={
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090",
            },
            extra_resources={"nvidia.com/gpu": "1"},
            os_image="Ubuntu 24.04",
        ),
    ]
    for node in nodes:
        await core.create_node(manifest(node))
        await asyncio.to_thread(agents.add_node, name=node["metadata"]["name"])
    for node in nodes:
        name = node["metadata"]["name"]

        async def ready(n: str = name) -> bool:
            return node_condition(await read_node(api, name=n)) == "True"

        await wait_until(ready, timeout_s=60, what=f"node {name} Ready")


async def _cordon(api: client.ApiClient, *, nodes: tuple[str, ...], on: bool) -> None:
    core = client.CoreV1Api(api)
    for name in nodes:
        await core.patch_node(name, {"spec": {"unschedulable": True if on else None}})


async def _styx_workloads(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    policy = client.PolicyV1Api(api)
    await apps.create_namespaced_deployment(
        "apps",
        manifest(
            _deployment(
                LABEL_STUDIO,
                _pod_spec(
                    [
                        _container(
                            "label-studio",
                            "heartexlabs/label-studio:1.13.1",
                            cpu="500m",
                            memory="1Gi",
                            limit_cpu="2",
                            limit_memory="4Gi",
                            mounts=[{"name": "data", "mountPath": "/label-studio/data"}],
                        ),
                        _container("nginx", "nginx:1.27-alpine", cpu="50m", memory="64Mi"),
                    ],
                    volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "label-studio-data"}}],
                ),
            )
        ),
    )
    await policy.create_namespaced_pod_disruption_budget(
        "apps",
        manifest(
            {
                "metadata": {"name": LABEL_STUDIO.name},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": LABEL_STUDIO.labels}},
            }
        ),
    )
    await apps.create_namespaced_deployment(
        "apps",
        manifest(
            _deployment(
                CSV_WORKER,
                _pod_spec(
                    [
                        _container(
                            "worker",
                            "ghcr.io/goldfish-inc/csv-ingestion-worker:latest",
                            cpu="500m",
                            memory="512Mi",
                            limit_cpu="1",
                            limit_memory="2Gi",
                            mounts=[{"name": "tmp", "mountPath": "/tmp"}],
                        )
                    ],
                    volumes=[{"name": "tmp", "emptyDir": {}}],
                ),
            )
        ),
    )
    await apps.create_namespaced_deployment(
        "apps",
        manifest(
            _deployment(
                BOOTSTRAPPER,
                _pod_spec([_container("bootstrapper", "ghcr.io/goldfish-inc/project-bootstrapper:latest")]),
            )
        ),
    )
    await core.create_namespaced_service(
        "apps",
        manifest(
            {
                "metadata": {"name": REDIS.name, "labels": REDIS.labels},
                "spec": {
                    "clusterIP": "None",
                    "selector": REDIS.labels,
                    "ports": [{"name": "redis", "port": 6379}],
                },
            }
        ),
    )
    await apps.create_namespaced_stateful_set(
        "apps",
        manifest(
            {
                "metadata": {"name": REDIS.name, "namespace": "apps", "labels": REDIS.labels},
                "spec": {
                    "serviceName": REDIS.name,
                    "replicas": 1,
                    "selector": {"matchLabels": REDIS.labels},
                    "template": {
                        "metadata": {"labels": REDIS.labels},
                        "spec": _pod_spec(
                            [
                                _container(
                                    "redis",
                                    "redis:7.4-alpine",
                                    mounts=[{"name": "data", "mountPath": "/data"}],
                                )
                            ]
                        ),
                    },
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {
                                "storageClassName": "nfs",
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "5Gi"}},
                            },
                        }
                    ],
                },
            }
        ),
    )
    await core.create_namespaced_pod(
        "apps",
        manifest(
            {
                "metadata": {"name": DEBUG_POD.name, "labels": DEBUG_POD.labels},
                "spec": _pod_spec([_container("shell", "busybox:1.36", cpu="10m", memory="16Mi")]),
            }
        ),
    )


async def _daemonsets(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    state = {"name": "state", "hostPath": {"path": "/var/lib/tailscale-exit", "type": "DirectoryOrCreate"}}
    for ds, node_selector in (
        (TAILSCALE_WORKER, {}),
        (TAILSCALE_EXIT, {"node-role.kubernetes.io/control-plane": "true"}),
    ):
        spec = _pod_spec(
            [
                _container(
                    "tailscale",
                    "tailscale/tailscale:v1.84",
                    cpu="50m",
                    memory="100Mi",
                    limit_cpu="500m",
                    limit_memory="500Mi",
                    privileged=True,
                    mounts=[{"name": "state", "mountPath": "/var/lib/tailscale"}],
                )
            ],
            volumes=[state],
            hostNetwork=True,
            nodeSelector=node_selector or None,
        )
        await apps.create_namespaced_daemon_set(
            ds.namespace,
            manifest(
                {
                    "metadata": {"name": ds.name, "labels": ds.labels},
                    "spec": {
                        "selector": {"matchLabels": ds.labels},
                        "template": {"metadata": {"labels": ds.labels}, "spec": spec},
                    },
                }
            ),
        )


async def _other_workloads(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    policy = client.PolicyV1Api(api)
    batch = client.BatchV1Api(api)
    critical = [
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    ]
    await apps.create_namespaced_deployment(
        "kube-system",
        manifest(
            _deployment(
                COREDNS,
                _pod_spec(
                    [
                        _container(
                            "coredns",
                            "rancher/mirrored-coredns-coredns:1.12.1",
                            memory="70Mi",
                            limit_memory="170Mi",
                        )
                    ],
                    priorityClassName="system-cluster-critical",
                    tolerations=critical,
                ),
            )
        ),
    )
    await policy.create_namespaced_pod_disruption_budget(
        "kube-system",
        manifest(
            {
                "metadata": {"name": "coredns"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": COREDNS.labels}},
            }
        ),
    )
    await apps.create_namespaced_deployment(
        "kube-system",
        manifest(
            _deployment(
                METRICS_SERVER,
                _pod_spec(
                    [_container("metrics-server", "rancher/mirrored-metrics-server:v0.7.2", memory="70Mi")],
                    priorityClassName="system-node-critical",
                    tolerations=critical,
                ),
            )
        ),
    )
    for flux in FLUX:
        await apps.create_namespaced_deployment(
            "flux-system",
            manifest(
                _deployment(
                    flux,
                    _pod_spec(
                        [_container("manager", f"ghcr.io/fluxcd/{flux.name}:v2.6.4", restricted=True)],
                        restricted=True,
                    ),
                )
            ),
        )
    await apps.create_namespaced_deployment(
        "pulumi-system",
        manifest(
            _deployment(PKO, _pod_spec([_container("manager", "pulumi/pulumi-kubernetes-operator:v2.2.0")]))
        ),
    )
    await apps.create_namespaced_deployment(
        "cloudflared",
        manifest(
            _deployment(
                CLOUDFLARED, _pod_spec([_container("cloudflared", "cloudflare/cloudflared:2025.9.1")])
            )
        ),
    )
    await batch.create_namespaced_job(
        "apps",
        manifest(
            {
                "metadata": {"name": BACKFILL_JOB.name, "labels": BACKFILL_JOB.labels},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": BACKFILL_JOB.labels},
                        "spec": _pod_spec(
                            [_container("backfill", "ghcr.io/goldfish-inc/csv-ingestion-worker:latest")],
                            restartPolicy="Never",
                        ),
                    },
                },
            }
        ),
    )


async def wait_pods_running(
    api: client.ApiClient, w: Workload, *, count: int, node: str | None = None, timeout_s: float = 90
) -> list[Any]:
    """Wait until ``count`` pods of ``w`` are Running+Ready (on ``node`` if given); return them."""

    async def probe() -> list[Any] | None:
        pods = [
            p
            for p in await list_pods(api, namespace=w.namespace, labels=w.labels)
            if is_running(p) and (node is None or p.spec.node_name == node)
        ]
        return pods if len(pods) >= count else None

    where = f" on {node}" if node else ""
    return await wait_until(
        probe, timeout_s=timeout_s, what=f"{count} running pod(s) of {w.kind} {w.name}{where}"
    )


async def build_oceanid(
    api: client.ApiClient, *, agents: NodeAgents, timeout_s: float = 120
) -> OceanidCluster:
    """Create Oceanid on an empty control plane; return when every pod is where the incident needs it."""
    await _namespaces(api)
    await _storage(api)
    await _nodes(api, agents)

    await _cordon(api, nodes=(TETHYS, CALYPSO), on=True)
    await _styx_workloads(api)
    await _daemonsets(api)
    for w in (CSV_WORKER, BOOTSTRAPPER, LABEL_STUDIO, REDIS, DEBUG_POD):
        await wait_pods_running(api, w, count=1, node=STYX, timeout_s=timeout_s)
    await _cordon(api, nodes=(TETHYS, CALYPSO), on=False)

    await _cordon(api, nodes=(STYX,), on=True)
    await _other_workloads(api)
    for w in (COREDNS, METRICS_SERVER, *FLUX, PKO, CLOUDFLARED):
        pods = await wait_pods_running(api, w, count=w.replicas, timeout_s=timeout_s)
        assert all(p.spec.node_name != STYX for p in pods)
    await wait_pods_running(api, TAILSCALE_WORKER, count=3, timeout_s=timeout_s)
    await wait_pods_running(api, TAILSCALE_EXIT, count=1, node=TETHYS, timeout_s=timeout_s)
    await _cordon(api, nodes=(STYX,), on=False)

    return OceanidCluster(
        control_plane_node=TETHYS,
        failed_node=STYX,
        gpu_node=CALYPSO,
        movable_deployments=(CSV_WORKER, BOOTSTRAPPER),
        pinned_deployment=LABEL_STUDIO,
        statefulset=REDIS,
        statefulset_pvc="data-redis-0",
        bare_pod=DEBUG_POD,
        daemonsets=(TAILSCALE_WORKER, TAILSCALE_EXIT),
        elsewhere=(COREDNS, METRICS_SERVER, *FLUX, PKO, CLOUDFLARED, BACKFILL_JOB),
    )
