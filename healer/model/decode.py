"""Raw Kubernetes JSON (dicts) to the slim view: the one place that knows the API's shape.

Used by snapshot files (`healer plan --snapshot`) and by the watchers' hot path, so it reads
only the fields rules need and builds no generated client models. Every function tolerates
missing fields; a value of the wrong type raises `DecodeError` naming the object.

The leader holds every pod of the cluster, and most of what a pod carries repeats across pods:
the namespace, node and phase strings, the label set of its ReplicaSet, its owner, the second it
was created. Those are shared (strings interned, equal values kept once in `_SHARED`) so a
150,000-pod view costs about half the memory (bench/memory.py). The values are immutable and
equal to what would otherwise be built, so nothing else changes. Of a pod's volumes only the
PVCs and hostPaths are kept (what the engine and the stories read; the token, configMap and
emptyDir volumes every pod has cost 300 B each). A node's label, annotation and condition
strings are interned too.

`pod()` is the watchers' hot path (every pod event of the cluster, ~15 us here besides
orjson's): it inlines what it can and fills the Pod without the dataclass `__init__`
(see `_PodSlots`); bench/watch_decode.py measures it.
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


_SHARED = _Shared(16384)  # label and annotation maps
_OWNERS = _Shared(16384)  # owner references
_TIMES = _Shared(16384)  # timestamps: many are unique, so they must not crowd out the maps
_MODES = _Shared(256)  # PV and PVC access modes
_HOST_PATHS = _Shared(1024)  # hostPath volumes by name, and tuples of them
_GPU = names.GPU_RESOURCE


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
    if not value:
        return _EMPTY
    mapping = value if type(value) is dict else _strmap(value)
    key = tuple(mapping.items())
    try:
        found: Mapping[str, str] | None = _SHARED.items.get(key)
    except TypeError:  # an unhashable value (a list where a string belongs): keep it unshared
        return mapping
    return found if found is not None else _SHARED.put(key, mapping)


def _interned_map(value: object) -> Mapping[str, str]:
    """`_strmap`, its string values interned: a node's labels and annotations are mostly the
    same few values (architecture, OS, zone, instance type...) on every node."""
    mapping = _strmap(value)
    if not mapping:
        return mapping
    return {k: _intern(v) if type(v) is str else v for k, v in mapping.items()}


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
            labels=_interned_map(meta.get("labels")),
            annotations=_interned_map(meta.get("annotations")),
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
                Condition(  # the same types, reasons and messages on every node: interned
                    type=_interned(c["type"]),
                    status=ConditionStatus(c.get("status", "Unknown")),
                    reason=_interned(c.get("reason", "")),
                    message=_interned(c.get("message", "")),
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
    key = (kind, name, uid)
    try:
        found: Owner | None = _OWNERS.items.get(key)
        if found is not None:
            return found
        return _OWNERS.put(key, Owner(kind=_intern(kind), name=name, uid=uid))
    except TypeError as e:  # unhashable, or sys.intern of a non-string
        raise DecodeError(f"owner kind, name and uid must be strings, got {kind!r}") from e


def _controller(meta: Raw) -> Owner | None:
    refs = meta.get("ownerReferences")
    if not refs:
        return None
    for ref in refs:
        if ref.get("controller"):
            break
    else:
        ref = refs[0]
    try:  # the usual case, inline: an owner seen before
        found: Owner | None = _OWNERS.items.get((ref["kind"], ref["name"], ref.get("uid", "")))
    except TypeError:
        found = None
    return found if found is not None else _owner(ref)


def _volumes(raw: object) -> tuple[Volume, ...]:
    """The PVC and hostPath volumes (what the engine and the stories read), nothing else.

    A hostPath volume (a DaemonSet's) is one shared object per name, and so is a pod's tuple of
    them; a pod with neither (most pods: token, configMap, emptyDir) gets the empty tuple.
    """
    if not raw:
        return ()
    kept: list[Volume] = []
    shared = True
    for v in raw:  # type: ignore[attr-defined]
        if "persistentVolumeClaim" in v:
            name = v.get("name", "")
            kept.append(
                Volume(
                    name=_intern(name) if type(name) is str else name,
                    kind=VolumeKind.PVC,
                    claim=v["persistentVolumeClaim"]["claimName"],
                )
            )
            shared = False
        elif "hostPath" in v:
            name = v.get("name", "")
            if type(name) is not str:
                kept.append(Volume(name=name, kind=VolumeKind.HOST_PATH))
                shared = False
                continue
            host: Volume | None = _HOST_PATHS.items.get(name)
            if host is None:
                host = _HOST_PATHS.put(name, Volume(name=_intern(name), kind=VolumeKind.HOST_PATH))
            kept.append(host)
        elif type(v) is not dict and not isinstance(v, Mapping):
            raise TypeError(f"a volume must be a map, got {type(v).__name__}")
    if not kept:
        return ()
    if not shared:
        return tuple(kept)
    key = tuple(kept)
    found: tuple[Volume, ...] | None = _HOST_PATHS.items.get(key)
    return found if found is not None else _HOST_PATHS.put(key, key)


def _gpus(spec: Raw) -> int:
    total = 0
    for c in spec.get("containers") or ():
        res = c.get("resources")
        if not res:
            continue
        limits, requests = res.get("limits"), res.get("requests")
        limit = limits.get(_GPU) if limits else None
        request = requests.get(_GPU) if requests else None
        if limit is not None or request is not None:
            total += max(_int_quantity(limit), _int_quantity(request))
    return total


def _finished(status: Raw) -> datetime | None:
    latest: datetime | None = None
    for cs in status.get("containerStatuses") or ():
        state = cs.get("state")
        term = state.get("terminated") if state else None
        if not term:
            continue
        at = parse_time(term.get("finishedAt"))
        if at and (latest is None or at > latest):
            latest = at
    return latest


def _ready(status: Raw) -> bool:
    # a loop: any() over a generator costs twice this
    for c in status.get("conditions") or ():  # noqa: SIM110
        if c.get("type") == "Ready" and c.get("status") == "True":
            return True
    return False


def _interned(value: Any) -> Any:
    """A string interned, anything else as it is (no new errors for odd values)."""
    return _intern(value) if type(value) is str else value


def _str(value: object) -> str:
    """An interned string: the few distinct namespaces, nodes and phases are kept once."""
    if value is None:  # an explicit null reads as absent
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {value!r}")
    return _intern(value)


class _PodSlots:
    """A `Pod`'s memory layout without its frozen `__setattr__`, for `pod()` to fill.

    A frozen dataclass's `__init__` stores each of its fields through `object.__setattr__`:
    for a Pod's 22 that was 7.8 us of a ~15 us decode. `pod()` fills one of these with plain
    attribute stores (1 us) and then makes it the Pod it is by `__class__` assignment, which
    Python allows between classes with the same slots. The result is an ordinary, frozen Pod;
    tests/unit/test_decode_sharing.py checks that every field is set and equals what
    `Pod(...)` builds from the same values.
    """

    __slots__ = Pod.__slots__


_new = object.__new__


def pod(raw: Raw) -> Pod:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    try:
        mget = meta.get
        sget = status.get
        times = _TIMES.items
        p: Any = _new(_PodSlots)
        # the fields in Pod's order, each as `Pod(...)` would take it (so the first error is
        # the same); strings the leader holds 150,000 times (namespace, node, phase) interned
        value = mget("namespace", "default")
        p.namespace = namespace = _intern(value) if type(value) is str else _str(value)
        p.name = name = meta["name"]
        p.uid = mget("uid", "")
        p.resource_version = mget("resourceVersion", "")
        value = spec.get("nodeName", "")
        p.node_name = _intern(value) if type(value) is str else _str(value)
        value = sget("phase", "Pending")
        p.phase = _intern(value) if type(value) is str else _str(value)
        value = sget("reason", "")
        p.reason = _intern(value) if type(value) is str else _str(value)
        p.message = sget("message", "")
        p.labels = _shared_map(mget("labels"))
        p.annotations = _shared_map(mget("annotations"))
        p.owner = _controller(meta)
        p.volumes = _volumes(spec.get("volumes"))
        p.gpu_request = _gpus(spec)
        # parse_time, but a hit in its cache (most pods' times repeat) spares the call
        value = mget("deletionTimestamp")
        p.deletion_timestamp = (
            (times.get(value) or parse_time(value)) if type(value) is str else parse_time(value)
        )
        p.deletion_grace_seconds = mget("deletionGracePeriodSeconds")
        value = mget("creationTimestamp")
        p.created = (times.get(value) or parse_time(value)) if type(value) is str else parse_time(value)
        value = sget("startTime")
        p.started = (times.get(value) or parse_time(value)) if type(value) is str else parse_time(value)
        p.finished = _finished(status)
        p.ready = _ready(status)
        p.priority_class = spec.get("priorityClassName", "")
        p.key = (namespace, name)
        p.__class__ = Pod
        return p  # type: ignore[no-any-return]
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


def _modes(value: Any) -> tuple[str, ...]:
    """Access modes: a handful of distinct tuples, each kept once."""
    if not value:
        return ()
    modes: tuple[str, ...] = tuple(value)
    try:
        found: tuple[str, ...] | None = _MODES.items.get(modes)
    except TypeError:  # unhashable: keep it unshared
        return modes
    return found if found is not None else _MODES.put(modes, modes)


def persistent_volume(raw: Raw) -> PersistentVolume:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    try:
        claim = spec.get("claimRef")
        provisioner = (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by", "")
        return PersistentVolume(
            name=_interned(meta["name"]),  # one string with its claim's volume_name
            access_modes=_modes(spec.get("accessModes")),
            storage_class=_str(spec.get("storageClassName", "")),
            node_affinity=_affinity_hosts(spec),
            local=("local" in spec or "hostPath" in spec or provisioner == names.LOCAL_PATH_PROVISIONER),
            claim=(_str(claim.get("namespace", "")), claim["name"]) if claim else None,
            csi_driver=_str((spec.get("csi") or {}).get("driver", "")),
            resource_version=meta.get("resourceVersion", ""),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"PersistentVolume {meta.get('name', '?')}: {e}") from e


def persistent_volume_claim(raw: Raw) -> PersistentVolumeClaim:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    try:
        return PersistentVolumeClaim(
            namespace=_str(meta.get("namespace", "default")),
            name=meta["name"],
            volume_name=_interned(spec.get("volumeName", "")),
            access_modes=_modes(spec.get("accessModes")),
            storage_class=_str(spec.get("storageClassName") or ""),
            resource_version=meta.get("resourceVersion", ""),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DecodeError(f"PersistentVolumeClaim {meta.get('name', '?')}: {e}") from e


def pod_disruption_budget(raw: Raw) -> PodDisruptionBudget:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    try:
        return PodDisruptionBudget(
            namespace=_str(meta.get("namespace", "default")),
            name=meta["name"],
            match_labels=_strmap((spec.get("selector") or {}).get("matchLabels")),
            disruptions_allowed=int(status.get("disruptionsAllowed", 0)),
            resource_version=meta.get("resourceVersion", ""),
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
