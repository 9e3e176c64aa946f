"""The cluster view, kept current from watch events.

The watchers yield typed events; the engine wants one consistent, immutable `ClusterView`.
The store is the seam: it applies events to plain dicts (cheap per event) and hands out a
frozen snapshot only when the view changed since the last one (one copy per plan, not per
event). It also knows whether the view can be trusted: every watched resource must have
been listed and none may be disconnected, otherwise `synced` is False and the runtime acts
on nothing.

After a reconnect the watcher relists and sends the difference (objects that vanished
meanwhile come as DELETED; see `healer.watch.resources`), so applying events in order is
all the store does; it never has to guess what a relist left out.

It also remembers which nodes the events since the last plan touched (`take_touched`), so
the leader can re-plan only those (a pod event touches its node, before and after; a node
event its node); a relist, an outage or a storage event (PV, PVC, PDB: they reach pods on
any node) asks for a full plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, ValuesView
from types import MappingProxyType
from typing import Any, TypeVar, cast

from healer.model.events import (
    Change,
    Disconnected,
    Event,
    Listed,
    NodeEvent,
    PodEvent,
    StorageEvent,
)
from healer.model.view import (
    ClusterView,
    ConditionStatus,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    PodKey,
)

# resource (as the watchers name it, any case, singular or plural) -> the store's table
_TABLES = {
    "node": "nodes",
    "pod": "pods",
    "persistentvolume": "pvs",
    "pv": "pvs",
    "persistentvolumeclaim": "pvcs",
    "pvc": "pvcs",
    "poddisruptionbudget": "pdbs",
    "pdb": "pdbs",
}


K = TypeVar("K")
V = TypeVar("V")

# Shard counts: a view copies each shard one of whose entries changed, and every copy made
# since the last young-generation GC is traversed by that GC (its entries point all over a
# leader's 200 MB heap: a cache miss each). At 150,000 pods, 256 pod shards (~600 pods each)
# made every young collection a 25-40 ms pause inside a decision and the leader's p99 at 1,000
# events/s 40-90 ms; 2,048 (~73 pods) keep them under ~18 ms (bench/engine_scale.py).
_SHARDS = 2048
_NODE_SHARDS = 256  # pods_by_node: a view re-copied all 5,000 node entries, ~3 ms, every time


class Sharded(Mapping[K, V]):
    """A read-only mapping over frozen shards (an entry's shard: its key's hash). Iteration
    goes shard by shard: no caller may depend on its order (the engine sorts what it emits)."""

    __slots__ = ("_shards", "_size")

    def __init__(self, shards: tuple[Mapping[K, V], ...], *, size: int) -> None:
        self._shards = shards
        self._size = size

    def __getitem__(self, key: K) -> V:
        return self._shards[hash(key) % len(self._shards)][key]

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._shards[hash(key) % len(self._shards)]
        except TypeError:  # unhashable: in no shard
            return False

    def __iter__(self) -> Iterator[K]:
        return itertools.chain.from_iterable(self._shards)

    def __len__(self) -> int:
        return self._size

    def values(self) -> ValuesView[V]:
        return _ShardValues(self)

    def shard_values(self) -> Iterator[V]:
        return itertools.chain.from_iterable(s.values() for s in self._shards)


class _ShardValues(ValuesView[V]):
    """`values()` straight from the shards (a full plan walks all 150,000 pods through it)."""

    _mapping: Sharded[Any, V]

    def __iter__(self) -> Iterator[V]:
        return self._mapping.shard_values()


def _freeze_shards(
    shards: list[dict[K, V]], frozen: list[Mapping[K, V] | None], stale: set[int]
) -> tuple[Mapping[K, V], ...]:
    """Re-freeze the `stale` shards; every shard, frozen as of now."""
    for i in stale:
        frozen[i] = MappingProxyType(dict(shards[i]))
    stale.clear()
    return tuple(cast(list[Mapping[K, V]], frozen))  # none is None any more


def table_of(resource: str) -> str:
    """`"pods"`, `"Pod"`, `"pod"` -> `"pods"`; unknown resources keep their own name."""
    key = resource.lower().split("/")[-1].split(".")[0]
    if key not in _TABLES and key.endswith("s"):
        key = key[:-1]
    return _TABLES.get(key, resource)


class Store:
    """Mutable tables behind an immutable view. `resources` are the watches that must be listed."""

    def __init__(self, *, resources: Iterable[str]) -> None:
        self._expected = frozenset(table_of(r) for r in resources)
        self._listed: set[str] = set()
        self._disconnected: set[str] = set()
        self.nodes: dict[str, Node] = {}
        # the pods, split by key hash into shards each frozen for the last view and dropped when
        # one of its pods changes: a view copies the changed shards (~73 pods each at 150,000
        # pods), not every pod (that copy was most of a leader's per-event decision)
        self._pod_count = 0
        self._pod_shards: list[dict[PodKey, Pod]] = [{} for _ in range(_SHARDS)]
        self._frozen_shards: list[Mapping[PodKey, Pod] | None] = [None] * _SHARDS
        self.pvs: dict[str, PersistentVolume] = {}
        self.pvcs: dict[PodKey, PersistentVolumeClaim] = {}
        self.pdbs: dict[PodKey, PodDisruptionBudget] = {}
        self._stale_pod_shards: set[int] = set(range(_SHARDS))
        self._by_node: dict[str, dict[PodKey, Pod]] = {}
        # each node's pods as frozen for the last view, in shards by node name; a node whose pods
        # change is re-frozen at the next view, and only its shard copied (at 5,000 nodes the
        # copies were most of a view)
        self._stale_nodes: set[str] = set()
        self._node_shards: list[dict[str, Mapping[PodKey, Pod]]] = [{} for _ in range(_NODE_SHARDS)]
        self._frozen_node_shards: list[Mapping[str, Mapping[PodKey, Pod]] | None] = [None] * _NODE_SHARDS
        self._stale_node_shards: set[int] = set(range(_NODE_SHARDS))
        self._view: ClusterView | None = None
        # frozen copies of the small tables for the last view, dropped when that table changes:
        # a pod event re-copies the pods, not the 5,000 nodes and the PVs and PVCs again
        self._frozen: dict[str, Mapping[Any, Any]] = {}
        self._not_ready: set[str] = set()  # nodes whose Ready is not True (the storm guard's count)
        self._touched: set[str] | None = None  # None: everything (nothing planned yet)

    @property
    def synced(self) -> bool:
        return self._expected <= self._listed and not self._disconnected

    def apply(self, event: Event) -> bool:
        """Apply one event; True when the view (including `synced`) changed."""
        if type(event) is PodEvent:  # most events, so ahead of the `match` (slower) for the rest
            self._put_pod(event.pod, deleted=event.change is Change.DELETED)
            self._view = None
            return True
        match event:
            case NodeEvent(change=change, node=node):
                deleted = change is Change.DELETED
                self._put("nodes", node.name, node, deleted=deleted)
                if deleted or node.ready is ConditionStatus.TRUE:
                    self._not_ready.discard(node.name)
                else:
                    self._not_ready.add(node.name)
                self._touch(node.name)
            case StorageEvent(change=change, obj=obj):
                self._touched = None
                deleted = change is Change.DELETED
                if isinstance(obj, PersistentVolume):
                    self._put("pvs", obj.name, obj, deleted=deleted)
                elif isinstance(obj, PersistentVolumeClaim):
                    self._put("pvcs", obj.key, obj, deleted=deleted)
                else:
                    self._put("pdbs", (obj.namespace, obj.name), obj, deleted=deleted)
            case Listed(resource=resource):
                self._touched = None
                table = table_of(resource)
                self._listed.add(table)
                self._disconnected.discard(table)
            case Disconnected(resource=resource):
                self._touched = None
                self._disconnected.add(table_of(resource))
            case _:
                return False
        self._view = None
        return True

    def take_touched(self) -> frozenset[str] | None:
        """The nodes touched since the last call (None: plan everything), and start anew."""
        touched = None if self._touched is None else frozenset(self._touched)
        self._touched = set()
        return touched

    def _touch(self, node: str) -> None:
        if self._touched is not None:
            self._touched.add(node)

    def _table(self, name: str) -> dict[Any, Any]:
        table: dict[Any, Any] = getattr(self, name)
        return table

    def _put(self, table: str, key: Any, obj: Any, *, deleted: bool) -> None:
        self._frozen.pop(table, None)
        if deleted:
            self._table(table).pop(key, None)
        else:
            self._table(table)[key] = obj

    def _put_pod(self, pod: Pod, *, deleted: bool) -> None:
        key = pod.key  # the pod's own tuple, for both tables
        index = hash(key) % _SHARDS
        shard = self._pod_shards[index]
        old = shard.get(key)
        node = pod.node_name
        touched = self._touched
        if touched is not None:
            touched.add(node)
        by_node = self._by_node
        stale_nodes = self._stale_nodes
        if old is not None:
            if old.key is not key:
                # the tables keep the key they were first given (old.key): the new pod takes that
                # equal tuple too, so a pod that changed is not held with two (72 B a pod)
                key = old.key
                object.__setattr__(pod, "key", key)
            old_node = old.node_name
            if touched is not None:
                touched.add(old_node)
            if old_node:
                stale_nodes.add(old_node)
                on_node = by_node.get(old_node)
                if on_node is not None:
                    on_node.pop(key, None)
                    if not on_node:
                        del by_node[old_node]
        self._stale_pod_shards.add(index)
        if deleted:
            if shard.pop(key, None) is not None:
                self._pod_count -= 1
            return
        shard[key] = pod
        if old is None:
            self._pod_count += 1
        if node:
            stale_nodes.add(node)
            on_node = by_node.get(node)
            if on_node is None:
                on_node = by_node[node] = {}
            on_node[key] = pod

    def _pods_by_node(self) -> Mapping[str, Mapping[PodKey, Pod]]:
        shards, stale_shards = self._node_shards, self._stale_node_shards
        for node in self._stale_nodes:
            index = hash(node) % _NODE_SHARDS
            pods = self._by_node.get(node)
            if pods:
                shards[index][node] = MappingProxyType(dict(pods))
            else:
                shards[index].pop(node, None)
            stale_shards.add(index)
        self._stale_nodes.clear()
        frozen = _freeze_shards(shards, self._frozen_node_shards, stale_shards)
        return Sharded(frozen, size=len(self._by_node))

    def _frozen_table(self, name: str) -> Mapping[Any, Any]:
        frozen = self._frozen.get(name)
        if frozen is None:
            frozen = self._frozen[name] = MappingProxyType(dict(self._table(name)))
        return frozen

    def _frozen_pods(self) -> Mapping[PodKey, Pod]:
        frozen = _freeze_shards(self._pod_shards, self._frozen_shards, self._stale_pod_shards)
        return Sharded(frozen, size=self._pod_count)

    def view(self) -> ClusterView:
        """An immutable snapshot; the same object until the next change."""
        if self._view is None:
            self._view = ClusterView(
                nodes=self._frozen_table("nodes"),
                pods=self._frozen_pods(),
                pvs=self._frozen_table("pvs"),
                pvcs=self._frozen_table("pvcs"),
                pdbs=self._frozen_table("pdbs"),
                pods_by_node=self._pods_by_node(),
                synced=self.synced,
                not_ready=frozenset(self._not_ready),
            )
        return self._view
