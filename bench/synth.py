"""Synthetic, realistic Kubernetes objects for the benchmarks, built deterministically.

Why: the figures must come from objects shaped like what an API server really sends (a pod
event is ~4-5 KiB: managedFields, a projected service-account volume, probes, env, default
tolerations, container statuses), not from toy dicts that flatter the decoder. Everything
is derived from an index and a seeded RNG, so two runs see the same input.

`cluster(nodes, pods_per_node)` yields the raw Node and Pod dicts of a synthetic cluster:
some nodes NotReady (with their pods Terminating or not), owners mixed (ReplicaSet,
StatefulSet, DaemonSet, Job, bare), volumes mixed (PVC, emptyDir, hostPath, configMap),
a few Evicted pods. Nothing is kept: the caller decodes and drops each raw dict.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

Obj = dict[str, Any]

NAMESPACES = ("default", "kube-system", "monitoring", "payments", "search", "ml-train", "web", "data")
APPS = ("api", "worker", "redis", "postgres", "frontend", "indexer", "exporter", "trainer", "gateway")
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


def _stamp(seconds: int) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid(*parts: object) -> str:
    h = hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _hash(*parts: object, n: int = 10) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()[:n]


def node(i: int, *, ready: bool = True) -> Obj:
    name = f"node-{i:05d}"
    status = "True" if ready else "Unknown"
    reason = "KubeletReady" if ready else "NodeStatusUnknown"
    when = "2026-11-20T08:00:00Z" if ready else "2026-11-27T04:00:00Z"
    conditions = [
        {
            "type": t,
            "status": "False",
            "reason": f"KubeletHas{r}",
            "message": f"kubelet has {m}",
            "lastHeartbeatTime": "2026-11-27T04:40:00Z",
            "lastTransitionTime": "2026-11-20T08:00:00Z",
        }
        for t, r, m in (
            ("MemoryPressure", "SufficientMemory", "sufficient memory available"),
            ("DiskPressure", "NoDiskPressure", "no disk pressure"),
            ("PIDPressure", "SufficientPID", "sufficient PID available"),
        )
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": "2026-11-27T04:40:00Z",
            "lastTransitionTime": when,
        }
    )
    taints = (
        []
        if ready
        else [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": when},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": when},
        ]
    )
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": _uid("node", i),
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-11-01T00:00:00Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m6i.4xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": f"eu-west-1{'abc'[i % 3]}",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"podCIDR": f"10.{i // 256 % 256}.{i % 256}.0/24", "taints": taints},
        "status": {
            "capacity": {
                "cpu": "16",
                "memory": "65023184Ki",
                "pods": "110",
                "ephemeral-storage": "203070420Ki",
            },
            "allocatable": {"cpu": "15890m", "memory": "63872208Ki", "pods": "110"},
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.{i // 256 % 256}.{i % 256}"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.33.4",
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.8.0-1021-aws",
                "osImage": "Ubuntu 24.04.1 LTS",
                "architecture": "amd64",
                "operatingSystem": "linux",
            },
        },
    }


_OWNERS = ("ReplicaSet",) * 11 + ("StatefulSet", "StatefulSet", "DaemonSet", "DaemonSet", "Job", "")


def pod(
    i: int, *, node_name: str, rng: random.Random, terminating: bool = False, evicted: bool = False
) -> Obj:
    """One pod bound to `node_name`, as the API server serialises it (~4-5 KiB of JSON)."""
    ns = NAMESPACES[rng.randrange(len(NAMESPACES))]
    app = APPS[rng.randrange(len(APPS))]
    owner_kind = _OWNERS[rng.randrange(len(_OWNERS))]
    template = _hash(ns, app, n=10)
    if owner_kind == "ReplicaSet":
        owner_name = f"{app}-{template}"
        name = f"{owner_name}-{_hash(i, n=5)}"
    elif owner_kind == "StatefulSet":
        owner_name = app
        name = f"{app}-{i}"
    elif owner_kind == "DaemonSet":
        owner_name = f"{app}-agent"
        name = f"{owner_name}-{_hash(i, n=5)}"
    elif owner_kind == "Job":
        owner_name = f"{app}-job-{i % 97}"
        name = f"{owner_name}-{_hash(i, n=5)}"
    else:
        owner_name = ""
        name = f"{app}-debug-{i}"
    # a workload's pods were created within a few seconds of one another, workloads at other times
    born = int(_hash(ns, app, owner_kind, n=6), 16) % (20 * 86400) + i % 4
    created, started = _stamp(born), _stamp(born + 2)
    labels = {
        "app": app,
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/part-of": ns,
        "pod-template-hash": template,
    }
    meta: Obj = {
        "name": name,
        "generateName": f"{owner_name}-" if owner_name else "",
        "namespace": ns,
        "uid": _uid("pod", i),
        "resourceVersion": str(100000 + i),
        "creationTimestamp": created,
        "labels": labels,
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9090",
            "kubectl.kubernetes.io/restartedAt": "2026-11-19T12:00:00Z",
        },
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": created,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:generateName": {},
                        "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                        "f:ownerReferences": {".": {}, f'k:{{"uid":"{_uid("owner", ns, app)}"}}': {}},
                    },
                    "f:spec": {"f:containers": {f'k:{{"name":"{app}"}}': {".": {}, "f:image": {}}}},
                },
            },
            {
                "manager": "kubelet",
                "operation": "Update",
                "apiVersion": "v1",
                "time": started,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:phase": {}}},
                "subresource": "status",
            },
        ],
    }
    if owner_kind:
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1" if owner_kind == "Job" else "apps/v1",
                "kind": owner_kind,
                "name": owner_name,
                "uid": _uid("owner", ns, app, owner_kind),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if terminating:
        meta["deletionTimestamp"] = "2026-11-27T04:05:00Z"
        meta["deletionGracePeriodSeconds"] = 30
    token = f"kube-api-access-{_hash(i, 'tok', n=5)}"
    volumes: list[Obj] = [
        {
            "name": token,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        },
        {"name": "config", "configMap": {"name": f"{app}-config", "defaultMode": 420}},
    ]
    roll = rng.random()
    if owner_kind == "StatefulSet" or roll < 0.1:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}})
    if roll > 0.7:
        volumes.append({"name": "cache", "emptyDir": {}})
    if owner_kind == "DaemonSet":
        volumes.append({"name": "host-logs", "hostPath": {"path": "/var/log", "type": ""}})
    gpu = app == "trainer" and rng.random() < 0.5
    resources: Obj = {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    if gpu:
        resources["limits"]["nvidia.com/gpu"] = "1"
    container = {
        "name": app,
        "image": f"registry.example.com/{ns}/{app}:1.{i % 40}.3",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {
                "name": "POD_NAME",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
            },
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "GOMAXPROCS", "value": "2"},
        ],
        "resources": resources,
        "volumeMounts": [
            {"name": token, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
            {"name": "config", "mountPath": "/etc/app"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": 8080, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    spec: Obj = {
        "volumes": volumes,
        "containers": [container],
        "restartPolicy": "Never" if owner_kind == "Job" else "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": node_name,
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if evicted:
        status: Obj = {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 91Mi.",
            "startTime": started,
            "containerStatuses": [
                {
                    "name": app,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "OOMKilled",
                            "startedAt": started,
                            "finishedAt": "2026-11-26T01:00:00Z",
                            "containerID": f"containerd://{_hash(i, 'c', n=64)}",
                        }
                    },
                    "ready": False,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": f"registry.example.com/{ns}/{app}@sha256:{_hash(app, n=64)}",
                }
            ],
        }
    else:
        cond_types = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        status = {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
                for t in cond_types
            ],
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": f"10.244.{i // 256 % 256}.{i % 256}",
            "podIPs": [{"ip": f"10.244.{i // 256 % 256}.{i % 256}"}],
            "startTime": started,
            "containerStatuses": [
                {
                    "name": app,
                    "state": {"running": {"startedAt": started}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": f"registry.example.com/{ns}/{app}@sha256:{_hash(app, n=64)}",
                    "containerID": f"containerd://{_hash(i, 'c', n=64)}",
                    "started": True,
                }
            ],
            "qosClass": "Burstable",
        }
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}


def watch_lines(count: int, *, seed: int = 8, nodes: int = 50) -> list[bytes]:
    """`count` recorded watch lines (bytes, as the stream delivers them): ADDED, then MODIFIED
    and a few DELETED events of pods spread over `nodes` nodes."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for i in range(count):
        kind = "ADDED" if i < count // 3 else ("DELETED" if rng.random() < 0.05 else "MODIFIED")
        obj = pod(i % max(1, count // 3), node_name=f"node-{i % nodes:05d}", rng=rng)
        obj["metadata"]["resourceVersion"] = str(200000 + i)
        lines.append(orjson.dumps({"type": kind, "object": obj}))
    return lines


def _not_ready_nodes(nodes: int, not_ready: int) -> set[int]:
    stride = max(1, nodes // max(1, not_ready)) if not_ready else 0
    return {k * stride for k in range(not_ready)} if not_ready else set()


def cluster(*, nodes: int, pods_per_node: int, not_ready: int, seed: int = 8) -> Iterator[tuple[str, Obj]]:
    """("Node" | "Pod", raw) for a synthetic cluster. The first `not_ready` nodes (spread by a
    stride over the index space) are NotReady; a third of their pods are already Terminating.
    About 1 pod in 200 elsewhere is an old Evicted one."""
    rng = random.Random(seed)
    bad = _not_ready_nodes(nodes, not_ready)
    serial = 0
    for n in range(nodes):
        ready = n not in bad
        yield "Node", node(n, ready=ready)
        name = f"node-{n:05d}"
        for _ in range(pods_per_node):
            evicted = ready and rng.random() < 0.005
            terminating = (not ready) and rng.random() < 0.33
            yield "Pod", pod(serial, node_name=name, rng=rng, terminating=terminating, evicted=evicted)
            serial += 1


def _pods_of(*, nodes: int, pods_per_node: int, not_ready: int, seed: int = 8) -> Iterator[Obj]:
    """The pods of `cluster(...)`, the same ones, without building its nodes."""
    rng = random.Random(seed)
    bad = _not_ready_nodes(nodes, not_ready)
    serial = 0
    for n in range(nodes):
        ready = n not in bad
        name = f"node-{n:05d}"
        for _ in range(pods_per_node):
            evicted = ready and rng.random() < 0.005
            terminating = (not ready) and rng.random() < 0.33
            yield pod(serial, node_name=name, rng=rng, terminating=terminating, evicted=evicted)
            serial += 1


def claim(namespace: str, claim_name: str, *, node_name: str, local: bool) -> tuple[Obj, Obj]:
    """A bound PVC and its PV (RWO; `local`: a local-path volume pinned to `node_name`)."""
    pv_name = f"pvc-{_uid('pv', namespace, claim_name)}"
    pvc = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name, "namespace": namespace, "uid": _uid("pvc", namespace, claim_name)},
        "spec": {"volumeName": pv_name, "accessModes": ["ReadWriteOnce"], "storageClassName": "standard"},
        "status": {"phase": "Bound"},
    }
    spec: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "local-path" if local else "standard",
        "claimRef": {"namespace": namespace, "name": claim_name},
    }
    if local:
        spec["hostPath"] = {"path": f"/var/lib/local-path/{pv_name}"}
        spec["nodeAffinity"] = {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
                        ]
                    }
                ]
            }
        }
    else:
        spec["csi"] = {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{_hash(pv_name, n=17)}"}
    pv = {"kind": "PersistentVolume", "metadata": {"name": pv_name}, "spec": spec}
    return pvc, pv


def fill_store(
    store: Any, *, nodes: int, pods_per_node: int, not_ready: int, seed: int = 8
) -> dict[str, int]:
    """Decode a synthetic cluster into a `healer.runtime.store.Store` exactly as the watchers
    would (raw dict -> `healer.model.decode` -> typed event -> `Store.apply`), then mark every
    resource listed. PVCs (and their PVs) come for every claim a pod mounts; one in ten is a
    local-path volume pinned to the pod's node. Returns counts."""
    from healer.model import decode, events

    added = events.Change.ADDED
    counts = {"nodes": 0, "pods": 0, "pvcs": 0, "pvs": 0}
    for kind, raw in cluster(nodes=nodes, pods_per_node=pods_per_node, not_ready=not_ready, seed=seed):
        if kind == "Node":
            store.apply(events.NodeEvent(change=added, node=decode.node(raw)))
            counts["nodes"] += 1
            continue
        pod = decode.pod(raw)
        store.apply(events.PodEvent(change=added, pod=pod))
        counts["pods"] += 1
        for name in pod.claims:
            pvc, pv = claim(pod.namespace, name, node_name=pod.node_name, local=counts["pvcs"] % 10 == 0)
            store.apply(events.StorageEvent(change=added, obj=decode.persistent_volume_claim(pvc)))
            store.apply(events.StorageEvent(change=added, obj=decode.persistent_volume(pv)))
            counts["pvcs"] += 1
            counts["pvs"] += 1
    for resource in ("nodes", "pods", "persistentvolumes", "persistentvolumeclaims", "poddisruptionbudgets"):
        store.apply(events.Listed(resource=resource))
    return counts


class _PagedApi:
    """What `healer.watch.resources` lists from: the API server's pages (`limit`, `continue`),
    made on the fly from an iterator of raw objects per path, so no more than a page is alive."""

    def __init__(self, items: dict[str, Iterator[Obj]]) -> None:
        self.items = items
        self.served: dict[str, int] = dict.fromkeys(items, 0)

    async def request(self, method: str, path: str, *, query: dict[str, str], **_: Any) -> Obj:
        limit = int(query["limit"])
        page = list(itertools.islice(self.items[path], limit))
        self.served[path] += len(page)
        meta: Obj = {"resourceVersion": "1"}
        if len(page) == limit:
            meta["continue"] = "more"  # perhaps an empty last page, as the API server may send
        return {"kind": "List", "metadata": meta, "items": page}


def fill_store_watched(
    store: Any, *, nodes: int, pods_per_node: int, not_ready: int, seed: int = 8
) -> tuple[dict[str, int], list[Any]]:
    """`fill_store`, but as the leader really does it: each kind listed (pages of 500) through
    the watcher's own list-and-diff code (`healer.watch.resources._list`), every event applied
    to the store, then `Listed`. The same objects; returns the counts and the watchers' states,
    which hold their relist bookkeeping (what they already yielded): the caller keeps them
    alive to measure it, as the leader's watchers keep theirs."""
    import asyncio

    from healer.model import events
    from healer.watch import resources

    counts = {"nodes": 0, "pods": 0, "pvcs": 0, "pvs": 0}
    claims: list[tuple[str, str, str]] = []  # (namespace, claim, node) of every pod's PVCs

    def node_items() -> Iterator[Obj]:
        bad = _not_ready_nodes(nodes, not_ready)
        return (node(n, ready=n not in bad) for n in range(nodes))

    def claim_items(which: int) -> Iterator[Obj]:
        for i, (namespace, name, node_name) in enumerate(claims):
            yield claim(namespace, name, node_name=node_name, local=i % 10 == 0)[which]

    kinds = (
        (resources.NODES, node_items(), "nodes"),
        (
            resources.PODS,
            _pods_of(nodes=nodes, pods_per_node=pods_per_node, not_ready=not_ready, seed=seed),
            "pods",
        ),
        (resources.PERSISTENT_VOLUME_CLAIMS, claim_items(0), "pvcs"),
        (resources.PERSISTENT_VOLUMES, claim_items(1), "pvs"),
        (resources.POD_DISRUPTION_BUDGETS, iter(()), ""),
    )
    api = _PagedApi({res.path(): items for res, items, _ in kinds})
    states: list[Any] = []

    async def run() -> None:
        for res, _, counted in kinds:
            state = resources._State()
            async for event in resources._list(
                api,  # type: ignore[arg-type]
                res,
                path=res.path(),
                selectors={},
                state=state,
                resource_version="0",
                page_size=resources.DEFAULT_PAGE_SIZE,
            ):
                store.apply(event)
                if isinstance(event, events.PodEvent):
                    claims.extend(
                        (event.pod.namespace, name, event.pod.node_name) for name in event.pod.claims
                    )
            store.apply(events.Listed(resource=res.name))
            states.append(state)
            if counted:
                counts[counted] = api.served[res.path()]

    asyncio.run(run())
    return counts, states
