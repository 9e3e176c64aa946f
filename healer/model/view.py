"""Slim, immutable projections of the Kubernetes objects the rules look at.

A full pod object costs ~23 KiB in memory as a dict; these projections keep only what the
engine needs (~0.5 KiB), so the leader can hold a 150,000-pod view. `ClusterView` is the
read-only picture the pure engine plans against; `healer.model.decode` builds the
projections from raw API JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from healer.model import names

_EMPTY: Mapping[str, str] = MappingProxyType({})


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRef:
    """Names one object; `namespace` is "" for cluster-scoped kinds."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Taint:
    key: str
    effect: str
    value: str = ""
    time_added: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition: datetime | None = None
    last_heartbeat: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    uid: str = ""
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    conditions: tuple[Condition, ...] = ()
    gpu_capacity: int = 0
    gpu_allocatable: int = 0
    created: datetime | None = None

    def condition(self, type_: str) -> Condition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None

    def has_taint(self, key: str) -> bool:
        return any(t.key == key for t in self.taints)

    @property
    def ready(self) -> ConditionStatus:
        """Ready's status; a node that never reported is Unknown."""
        cond = self.condition("Ready")
        return cond.status if cond else ConditionStatus.UNKNOWN

    @property
    def is_control_plane(self) -> bool:
        return names.CONTROL_PLANE_LABEL in self.labels or names.MASTER_LABEL in self.labels

    @property
    def is_protected(self) -> bool:
        return self.labels.get(names.PROTECTED) == "true"

    @property
    def is_fenced(self) -> bool:
        """The operator confirmed the node is off: out-of-service taint or healer.io/fenced=true."""
        return self.has_taint(names.OUT_OF_SERVICE_TAINT) or self.annotations.get(names.FENCED) == "true"

    @property
    def cordoned_by_healer(self) -> bool:
        return self.unschedulable and names.CORDONED_BY in self.annotations


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    kind: str
    name: str
    uid: str = ""


class VolumeKind(StrEnum):
    """The volumes healer keeps (`decode` drops token, configMap, emptyDir and the rest)."""

    PVC = "pvc"
    HOST_PATH = "hostPath"


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    name: str
    kind: VolumeKind
    claim: str = ""  # PVC name when kind is PVC


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    node_name: str = ""
    phase: str = "Pending"
    reason: str = ""  # status.reason, e.g. "Evicted"
    message: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    owner: Owner | None = None  # the controller owner reference, if any
    # the volumes healer reads: PVCs and hostPaths (`decode` keeps no others: a leader holds
    # 150,000 pods, and their projected token, configMap and emptyDir volumes cost 300 B each)
    volumes: tuple[Volume, ...] = ()
    gpu_request: int = 0
    deletion_timestamp: datetime | None = None
    deletion_grace_seconds: int | None = None
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None  # latest container termination time, for Failed/Succeeded pods
    ready: bool = False
    priority_class: str = ""
    # (namespace, name), built once: the store's tables and the watcher's bookkeeping share it
    key: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.namespace, self.name))

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(kind="Pod", namespace=self.namespace, name=self.name, uid=self.uid)

    @property
    def terminating(self) -> bool:
        return self.deletion_timestamp is not None

    @property
    def is_mirror(self) -> bool:
        return names.MIRROR_POD_ANNOTATION in self.annotations

    @property
    def owner_kind(self) -> str:
        return self.owner.kind if self.owner else ""

    @property
    def claims(self) -> tuple[str, ...]:
        return tuple(v.claim for v in self.volumes if v.kind is VolumeKind.PVC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistentVolume:
    name: str
    access_modes: tuple[str, ...] = ()
    storage_class: str = ""
    node_affinity: tuple[str, ...] = ()  # hostnames the PV's required node affinity names
    local: bool = False  # spec.local or spec.hostPath or a local-path provisioned volume
    claim: tuple[str, str] | None = None  # (namespace, name) of the bound claim
    csi_driver: str = ""
    resource_version: str = ""

    @property
    def single_attach(self) -> bool:
        return not any(m in ("ReadWriteMany", "ReadOnlyMany") for m in self.access_modes)


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistentVolumeClaim:
    namespace: str
    name: str
    volume_name: str = ""
    access_modes: tuple[str, ...] = ()
    storage_class: str = ""
    resource_version: str = ""
    key: tuple[str, str] = field(init=False, repr=False, compare=False)  # (namespace, name), as Pod.key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.namespace, self.name))


@dataclass(frozen=True, slots=True, kw_only=True)
class PodDisruptionBudget:
    namespace: str
    name: str
    match_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    disruptions_allowed: int = 0
    resource_version: str = ""

    def selects(self, pod: Pod) -> bool:
        if pod.namespace != self.namespace or not self.match_labels:
            return False
        return all(pod.labels.get(k) == v for k, v in self.match_labels.items())


PodKey = tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    """What healer knows of the cluster at one moment. Read-only to the engine.

    `pods_by_node` indexes pods by `spec.nodeName`; `synced` is False while a watch is
    relisting or the API is unreachable (the storm guard treats a stale view as unsafe).
    `not_ready`: the names of the nodes whose Ready is not True, when whoever built the view
    kept them (the runtime's store does, so the storm guard costs no pass over 5,000 nodes
    per plan); None: the engine counts them itself.
    """

    nodes: Mapping[str, Node] = field(default_factory=dict)
    pods: Mapping[PodKey, Pod] = field(default_factory=dict)
    pvs: Mapping[str, PersistentVolume] = field(default_factory=dict)
    pvcs: Mapping[PodKey, PersistentVolumeClaim] = field(default_factory=dict)
    pdbs: Mapping[PodKey, PodDisruptionBudget] = field(default_factory=dict)
    pods_by_node: Mapping[str, Mapping[PodKey, Pod]] = field(default_factory=dict)
    synced: bool = True
    not_ready: frozenset[str] | None = None

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        return tuple(self.pods_by_node.get(node, {}).values())

    @classmethod
    def of(
        cls,
        *,
        nodes: tuple[Node, ...] | list[Node] = (),
        pods: tuple[Pod, ...] | list[Pod] = (),
        pvs: tuple[PersistentVolume, ...] | list[PersistentVolume] = (),
        pvcs: tuple[PersistentVolumeClaim, ...] | list[PersistentVolumeClaim] = (),
        pdbs: tuple[PodDisruptionBudget, ...] | list[PodDisruptionBudget] = (),
        synced: bool = True,
    ) -> ClusterView:
        """Builds a view (and its node index) from lists: for snapshots and tests."""
        by_node: dict[str, dict[PodKey, Pod]] = {}
        for pod in pods:
            if pod.node_name:
                by_node.setdefault(pod.node_name, {})[pod.key] = pod
        return cls(
            nodes={n.name: n for n in nodes},
            pods={p.key: p for p in pods},
            pvs={v.name: v for v in pvs},
            pvcs={c.key: c for c in pvcs},
            pdbs={(b.namespace, b.name): b for b in pdbs},
            pods_by_node=by_node,
            synced=synced,
        )
