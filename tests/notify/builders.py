"""Small builders for Oceanid-shaped views and plans, for the notifier's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from healer.model import names
from healer.model.actions import Action, Outcome, OutcomeStatus
from healer.model.view import (
    ClusterView,
    Condition,
    ConditionStatus,
    Node,
    ObjectRef,
    Owner,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    Volume,
    VolumeKind,
)

T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
DOWN_SINCE = T0 - timedelta(days=2, hours=3)
NODE_INCIDENT = "node-not-ready/styx"
GPU_INCIDENT = "gpu/calypso"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def node(
    name: str,
    *,
    ready: str = "True",
    gpu: str | None = None,
    cordoned_by_healer: bool = False,
    pressure: str | None = None,
) -> Node:
    conditions = [
        Condition(
            type="Ready",
            status=ConditionStatus(ready),
            reason="NodeStatusUnknown" if ready == "Unknown" else "KubeletReady",
            last_transition=DOWN_SINCE,
        )
    ]
    if gpu is not None:
        healthy = gpu == "True"
        conditions.append(
            Condition(
                type=names.GPU_CONDITION,
                status=ConditionStatus(gpu),
                reason="GpuHealthy" if healthy else "Xid79",
                message="" if healthy else "GPU 0 GPU-1c2f fell off the bus (class=reboot)",
                last_transition=T0 - timedelta(minutes=3),
            )
        )
    if pressure:
        conditions.append(Condition(type=pressure, status=ConditionStatus.TRUE))
    return Node(
        name=name,
        uid=f"uid-{name}",
        unschedulable=cordoned_by_healer,
        annotations={names.CORDONED_BY: "node-not-ready"} if cordoned_by_healer else {},
        conditions=tuple(conditions),
    )


def pod(
    ns: str,
    name: str,
    on: str,
    *,
    owner: tuple[str, str] | None = ("ReplicaSet", "web-7d9f"),
    phase: str = "Running",
    claims: tuple[str, ...] = (),
    reason: str = "",
    message: str = "",
) -> Pod:
    return Pod(
        namespace=ns,
        name=name,
        uid=f"uid-{ns}-{name}",
        node_name=on,
        phase=phase,
        reason=reason,
        message=message,
        labels={"app": name.split("-")[0]},
        owner=Owner(kind=owner[0], name=owner[1]) if owner else None,
        volumes=tuple(Volume(name=c, kind=VolumeKind.PVC, claim=c) for c in claims),
    )


def oceanid(
    *, styx_ready: str = "Unknown", extra: tuple[Pod, ...] = (), cordoned: bool = True
) -> ClusterView:
    """tethys (control plane), styx (down for two days), calypso (GPU), with styx's pods still listed."""
    pods = [
        pod("apps", "web-7d9f-aaa", "styx"),
        pod("apps", "web-7d9f-bbb", "styx"),
        pod("apps", "web-7d9f-old", "calypso"),  # a replica that was already running elsewhere
        pod("apps", "api-5c-ccc", "styx", owner=("ReplicaSet", "api-5c")),
        pod("db", "postgres-0", "styx", owner=("StatefulSet", "postgres"), claims=("data-postgres-0",)),
        pod("media", "jellyfin-6b-ddd", "styx", owner=("ReplicaSet", "jellyfin-6b"), claims=("media",)),
        pod("kube-system", "node-exporter-x", "styx", owner=("DaemonSet", "node-exporter")),
        *extra,
    ]
    return ClusterView.of(
        nodes=[
            node("tethys"),
            node("styx", ready=styx_ready, cordoned_by_healer=cordoned and styx_ready != "True"),
            node("calypso", gpu="True"),
        ],
        pods=pods,
        pvs=[
            PersistentVolume(
                name="pv-ceph", access_modes=("ReadWriteOnce",), claim=("db", "data-postgres-0")
            ),
            PersistentVolume(
                name="local-pv",
                access_modes=("ReadWriteOnce",),
                node_affinity=("styx",),
                local=True,
                claim=("media", "media"),
            ),
        ],
        pvcs=[
            PersistentVolumeClaim(namespace="db", name="data-postgres-0", volume_name="pv-ceph"),
            PersistentVolumeClaim(namespace="media", name="media", volume_name="local-pv"),
        ],
        pdbs=[PodDisruptionBudget(namespace="apps", name="api-pdb", match_labels={"app": "api"})],
    )


def node_ref(name: str) -> ObjectRef:
    return ObjectRef(kind="Node", name=name)


def pod_ref(ns: str, name: str) -> ObjectRef:
    return ObjectRef(kind="Pod", namespace=ns, name=name)


def applied(
    *actions: Action, status: OutcomeStatus = OutcomeStatus.APPLIED, detail: str = ""
) -> list[Outcome]:
    return [Outcome(action=a, status=status, detail=detail) for a in actions]
