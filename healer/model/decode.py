"""Raw Kubernetes JSON (dicts) to the slim view: the one place that knows the API's shape.

Used by snapshot files (`healer plan --snapshot`) and by the watchers' hot path, so it reads
only the fields rules need and builds no generated client models. Every function tolerates
missing fields; a value of the wrong type raises `DecodeError` naming the object.

The leader holds every pod of the cluster, and most of what a pod carries repeats across pods:
the namespace, node and phase strings, the label set of its ReplicaSet, its owner, the second it
was created. Those are shared (strings interned, equal values kept once in `_SHARED`) so a
150,000-pod view costs about half the memory (bench/memory.py). The values are immutable and
equal to what would otherwise be built, so nothing else changes.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from healer.model import names
from healer.model.view import (
    Condition,
    ConditionStatus,
    Node,
    Owner,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    Taint,
    Volume,
    VolumeKind,
)

Raw = Mapping[str, Any]
_EMPTY: Mapping[str, str] = MappingProxyType({})


_T = TypeVar("_T")
_intern = sys.intern


class DecodeError(ValueError):
    """An object in the input is not shaped like the Kubernetes object it claims to be."""


class _Shared:
    """Keeps one of each equal immutable value (label maps, owners, timestamps) seen lately.

    Bounded: when full it starts over, which only costs sharing, never correctness, so pods
    with unique labels (Jobs) cannot make it grow without end.
    """

    __slots__ = ("items", "limit")

    def __init__(self, limit: int) -> None:
        self.items: dict[Hashable, Any] = {}  # look up with `items.get(key)` (hot path: no call)
        self.limit = limit

    def put(self, key: Hashable, value: _T) -> _T:
        if len(self.items) >= self.limit:
            self.items.clear()
        self.items[key] = value
        return value


_SHARED = _Shared(16384)  # label and annotation maps, owners
_TIMES = _Shared(16384)  # timestamps: many are unique, so they must not crowd out the maps


def parse_time(value: object) -> datetime | None:
    """RFC 3339 (as the API server writes it) to an aware datetime; None for absent."""
    if not value:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"not a timestamp: {value!r}")
    found: datetime | None = _TIMES.items.get(value)
    if found is not None:
        return found
    try:
        return _TIMES.put(value, datetime.fromisoformat(value))
    except ValueError as e:
        raise DecodeError(f"not a timestamp: {value!r}") from e


def _strmap(value: object) -> Mapping[str, str]:
    if not value:
        return _EMPTY
    if not isinstance(value, dict):
        raise DecodeError(f"expected a map, got {type(value).__name__}")
    return value


def _shared_map(value: object) -> Mapping[str, str]:
    """`_strmap`, but equal maps (the labels of one ReplicaSet's pods) come back as one object."""
    mapping = _strmap(value)
    if not mapping:
        return mapping
    key = tuple(mapping.items())
    try:
        found: Mapping[str, str] | None = _SHARED.items.get(key)
    except TypeError:  # an unhashable value (a list where a string belongs): keep it unshared
        return mapping
    return found if found is not None else _SHARED.put(key, mapping)


def _int_quantity(value: object) -> int:
    """Extended resources such as nvidia.com/gpu are whole numbers, given as strings."""
    if value is None:
        return 0
    try:
        return int(str(value))
    except ValueError:
        return 0


def node(raw: Raw) -> Node:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    try:
        return Node(
            name=meta["name"],
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            labels=_strmap(meta.get("labels")),
            annotations=_strmap(meta.get("annotations")),
            unschedulable=bool(spec.get("unschedulable", False)),
            taints=tuple(
                Taint(
                    key=t["key"],
                    effect=t.get("effect", ""),
                    value=t.get("value", ""),
                    time_added=parse_time(t.get("timeAdded")),
                )
                for t in spec.get("taints") or ()
            ),
            conditions=tuple(
                Condition(
                    type=c["type"],
                    status=ConditionStatus(c.get("status", "Unknown")),
                    reason=c.get("reason", ""),
                    message=c.get("message", ""),
                    last_transition=parse_time(c.get("lastTransitionTime")),
                    last_heartbeat=parse_time(c.get("lastHeartbeatTime")),
                )
                for c in status.get("conditions") or ()
            ),
            gpu_capacity=_int_quantity((status.get("capacity") or {}).get(names.GPU_RESOURCE)),
            gpu_allocatable=_int_quantity((status.get("allocatable") or {}).get(names.GPU_RESOURCE)),
            created=parse_time(meta.get("creationTimestamp")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"Node {meta.get('name', '?')}: {e}") from e


def _owner(ref: Raw) -> Owner:
    kind, name, uid = ref["kind"], ref["name"], ref.get("uid", "")
    key = ("owner", kind, name, uid)
    try:
        found: Owner | None = _SHARED.items.get(key)
        if found is not None:
            return found
        return _SHARED.put(key, Owner(kind=_intern(kind), name=name, uid=uid))
    except TypeError as e:  # unhashable, or sys.intern of a non-string
        raise DecodeError(f"owner kind, name and uid must be strings, got {kind!r}") from e


def _controller(meta: Raw) -> Owner | None:
    refs = meta.get("ownerReferences") or ()
    for ref in refs:
        if ref.get("controller"):
            return _owner(ref)
    if refs:
        return _owner(refs[0])
    return None


def _volume(raw: Raw) -> Volume:
    name = raw.get("name", "")
    if "persistentVolumeClaim" in raw:
        return Volume(name=name, kind=VolumeKind.PVC, claim=raw["persistentVolumeClaim"]["claimName"])
    if "hostPath" in raw:
        return Volume(name=name, kind=VolumeKind.HOST_PATH)
    if "emptyDir" in raw:
        return Volume(name=name, kind=VolumeKind.EMPTY_DIR)
    return Volume(name=name, kind=VolumeKind.OTHER)


def _gpus(spec: Raw) -> int:
    total = 0
    for c in spec.get("containers") or ():
        res = c.get("resources") or {}
        total += max(
            _int_quantity((res.get("limits") or {}).get(names.GPU_RESOURCE)),
            _int_quantity((res.get("requests") or {}).get(names.GPU_RESOURCE)),
        )
    return total


def _finished(status: Raw) -> datetime | None:
    latest: datetime | None = None
    for cs in status.get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated") or {}
        at = parse_time(term.get("finishedAt"))
        if at and (latest is None or at > latest):
            latest = at
    return latest


def _ready(status: Raw) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def _str(value: object) -> str:
    """An interned string: the few distinct namespaces, nodes and phases are kept once."""
    if value is None:  # an explicit null reads as absent
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {value!r}")
    return _intern(value)


def pod(raw: Raw) -> Pod:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    try:
        return Pod(
            namespace=_str(meta.get("namespace", "default")),
            name=meta["name"],
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            node_name=_str(spec.get("nodeName", "")),
            phase=_str(status.get("phase", "Pending")),
            reason=_str(status.get("reason", "")),
            message=status.get("message", ""),
            labels=_shared_map(meta.get("labels")),
            annotations=_shared_map(meta.get("annotations")),
            owner=_controller(meta),
            volumes=tuple([_volume(v) for v in spec.get("volumes") or ()]),
            gpu_request=_gpus(spec),
            deletion_timestamp=parse_time(meta.get("deletionTimestamp")),
            deletion_grace_seconds=meta.get("deletionGracePeriodSeconds"),
            created=parse_time(meta.get("creationTimestamp")),
            started=parse_time(status.get("startTime")),
            finished=_finished(status),
            ready=_ready(status),
            priority_class=spec.get("priorityClassName", ""),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"Pod {meta.get('namespace', '?')}/{meta.get('name', '?')}: {e}") from e


def _affinity_hosts(spec: Raw) -> tuple[str, ...]:
    terms = (((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")) or ()
    hosts: list[str] = []
    for term in terms:
        for expr in term.get("matchExpressions") or ():
            if expr.get("key") in (names.HOSTNAME_LABEL, "metadata.name") and expr.get("operator") == "In":
                hosts.extend(expr.get("values") or ())
        for field_expr in term.get("matchFields") or ():
            if field_expr.get("key") == "metadata.name" and field_expr.get("operator") == "In":
                hosts.extend(field_expr.get("values") or ())
    return tuple(hosts)


def persistent_volume(raw: Raw) -> PersistentVolume:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    try:
        claim = spec.get("claimRef")
        provisioner = (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by", "")
        return PersistentVolume(
            name=meta["name"],
            access_modes=tuple(spec.get("accessModes") or ()),
            storage_class=spec.get("storageClassName", ""),
            node_affinity=_affinity_hosts(spec),
            local=("local" in spec or "hostPath" in spec or provisioner == names.LOCAL_PATH_PROVISIONER),
            claim=(claim.get("namespace", ""), claim["name"]) if claim else None,
            csi_driver=(spec.get("csi") or {}).get("driver", ""),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"PersistentVolume {meta.get('name', '?')}: {e}") from e


def persistent_volume_claim(raw: Raw) -> PersistentVolumeClaim:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    try:
        return PersistentVolumeClaim(
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            volume_name=spec.get("volumeName", ""),
            access_modes=tuple(spec.get("accessModes") or ()),
            storage_class=spec.get("storageClassName") or "",
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"PersistentVolumeClaim {meta.get('name', '?')}: {e}") from e


def pod_disruption_budget(raw: Raw) -> PodDisruptionBudget:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    try:
        return PodDisruptionBudget(
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            match_labels=_strmap((spec.get("selector") or {}).get("matchLabels")),
            disruptions_allowed=int(status.get("disruptionsAllowed", 0)),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"PodDisruptionBudget {meta.get('name', '?')}: {e}") from e


DECODERS = {
    "Node": node,
    "Pod": pod,
    "PersistentVolume": persistent_volume,
    "PersistentVolumeClaim": persistent_volume_claim,
    "PodDisruptionBudget": pod_disruption_budget,
}
