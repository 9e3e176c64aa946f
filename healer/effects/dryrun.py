"""The dry-run executor: the whole daemon runs, decides and reports, but never writes.

`healer run --dry-run` swaps this in for the live executor, so what an operator sees in the
logs is exactly what the live daemon would have done, action for action. Nothing is
written; each action is logged at info the first time (and a Node write each time it would
change the Node) and at debug after that, so the log stays readable.

Node writes as if written (`NodeWrites`). Live, healer reads back what it wrote: the node
agent's `set-condition GPUHealthy=False` reaches the node role's view through the watch, and
the GPU rules (taint, cordon, evict the GPU pods) fire on it; a cordon or a taint is seen on
the next plan, which therefore does not ask for it again, and it is what recovery undoes
(`gpu-recovered` untaints and uncordons only what is there, and only healer's own cordon).
A dry run that wrote nothing would never show that chain. So in dry-run the executor also
records, in one `NodeWrites` per process, what each Node write would have changed on the
Node: conditions (`SetCondition`), the cordon with healer's annotations (`Cordon`,
`Uncordon`: `cordoned-by`, `cordoned-at`, `remediations`, as the live executor writes them)
and taints (`AddTaint`, `RemoveTaint`). The runtime lays those fields over every view it
plans from (`NodeWrites.apply`), so they survive the Node updates the watch delivers, and
asks for a new plan when they change, as a watch event would.

- Each write is computed the way the live executor computes it, against the Node as healer
  last saw it with the earlier dry-run writes on it: unchanged is unchanged, a condition keeps
  its `lastTransitionTime` while its status holds, `GPUHealthy=True` (recovery) replaces the
  False, an uncordon removes the cordon and healer's annotations, a taint removal the taint.
- A field stops being laid over once the Node itself says the same (someone did write it);
  everything recorded for a Node goes when it is deleted or comes back with another uid.
- Pods are not overlaid: what follows an eviction or a delete (the controller's replacement,
  the scheduler's choice) is not healer's write and cannot be simulated honestly. The pod
  stays in the view, so the same eviction is planned again each evaluation; it is logged at
  info once.
- Each process sees only its own dry-run writes: the leader on another node does not see a
  GPU node agent's condition (live, it would). The GPU chain runs in the agent's own process
  (its rules are node-scoped), so that is where it shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

import structlog

from healer.effects.live import remediations_after, rfc3339
from healer.model import names
from healer.model.actions import (
    Action,
    AddTaint,
    Cordon,
    Outcome,
    OutcomeStatus,
    RemoveTaint,
    SetCondition,
    Uncordon,
    as_row,
)
from healer.model.view import ClusterView, Condition, ConditionStatus, Node, Taint

log = structlog.get_logger(__name__)

DRY_RUN = "dry-run"

Clock = Callable[[], datetime]
_NODE_WRITES = (SetCondition, Cordon, Uncordon, AddTaint, RemoveTaint)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(slots=True)
class _Written:
    """The fields of one Node healer would have written; absent: not written (the Node's own)."""

    uid: str = ""
    conditions: dict[str, Condition] = dataclasses.field(default_factory=dict)
    taints: dict[str, tuple[Taint, ...]] = dataclasses.field(default_factory=dict)  # by key, after the write
    unschedulable: bool | None = None
    annotations: dict[str, str | None] = dataclasses.field(default_factory=dict)  # None: removed

    def __bool__(self) -> bool:
        return bool(self.conditions or self.taints or self.annotations) or self.unschedulable is not None

    def over(self, node: Node) -> Node:
        """`node` with these fields written on it."""
        changes: dict[str, object] = {}
        if self.conditions:
            kept = tuple(c for c in node.conditions if c.type not in self.conditions)
            changes["conditions"] = kept + tuple(self.conditions.values())
        if self.taints:
            kept_taints = tuple(t for t in node.taints if t.key not in self.taints)
            changes["taints"] = kept_taints + tuple(t for ts in self.taints.values() for t in ts)
        if self.unschedulable is not None:
            changes["unschedulable"] = self.unschedulable
        if self.annotations:
            annotations = dict(node.annotations)
            for key, value in self.annotations.items():
                if value is None:
                    annotations.pop(key, None)
                else:
                    annotations[key] = value
            changes["annotations"] = MappingProxyType(annotations)
        return dataclasses.replace(node, **changes) if changes else node  # type: ignore[arg-type]

    def prune(self, node: Node) -> bool:
        """Drop what `node` itself already says; True when something was dropped."""
        before = (len(self.conditions), len(self.taints), len(self.annotations), self.unschedulable)
        for type_, cond in list(self.conditions.items()):
            own = node.condition(type_)
            if own is not None and (own.status, own.reason, own.message) == (
                cond.status,
                cond.reason,
                cond.message,
            ):
                del self.conditions[type_]
        for key, taints in list(self.taints.items()):
            own_taints = {(t.effect, t.value) for t in node.taints if t.key == key}
            if own_taints == {(t.effect, t.value) for t in taints}:
                del self.taints[key]
        if self.unschedulable is not None and node.unschedulable == self.unschedulable:
            self.unschedulable = None
        for key, value in list(self.annotations.items()):
            if node.annotations.get(key) == value:
                del self.annotations[key]
        return before != (len(self.conditions), len(self.taints), len(self.annotations), self.unschedulable)


class NodeWrites:
    """The Node writes healer would have made in dry-run, laid over the views it plans from.

    `record(action, now=...)` (the dry-run executor) keeps a Node write; `apply(view)` (the
    runtime, for every view it plans or reports from) returns the view with those writes on
    its Nodes (the same object when there are none); `forget(node)` drops a deleted Node's.
    `subscribe(callback)`: called with the node's name whenever what is laid over changes.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _Written] = {}
        self._seen: dict[str, ClusterView] = {}  # the last view each caller gave `apply`
        self._cache: dict[str, tuple[ClusterView, int, ClusterView]] = {}
        self._version = 0
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def written(self, node: str) -> Mapping[str, object]:
        """What is recorded for `node` (for logs and tests): field -> value."""
        w = self._nodes.get(node)
        if w is None:
            return {}
        out: dict[str, object] = {}
        if w.conditions:
            out["conditions"] = {t: (c.status.value, c.reason) for t, c in w.conditions.items()}
        if w.taints:
            out["taints"] = {k: tuple(f"{t.key}:{t.effect}" for t in ts) for k, ts in w.taints.items()}
        if w.unschedulable is not None:
            out["unschedulable"] = w.unschedulable
        if w.annotations:
            out["annotations"] = dict(w.annotations)
        return out

    # --- the executor's side ------------------------------------------------------------------

    def _current(self, name: str) -> Node:
        """The Node as healer would see it now: the last view's, with the writes so far on it."""
        base: Node | None = None
        for view in reversed(self._seen.values()):
            base = view.nodes.get(name)
            if base is not None:
                break
        written = self._nodes.get(name)
        if base is None:
            base = Node(name=name, uid=written.uid if written else "")
        return written.over(base) if written else base

    def record(self, action: Action, *, now: datetime) -> bool:
        """Keep what `action` would have written on its Node; True when that changed anything."""
        if action.kind != "Node" or not isinstance(action, _NODE_WRITES):
            return False
        node = self._current(action.name)
        w = self._nodes.get(action.name)
        if w is None:
            w = _Written(uid=action.target.uid or node.uid)
        changed = False
        match action:
            case SetCondition():
                changed = self._set_condition(w, node, action, now=now)
            case Cordon():
                if not node.unschedulable:
                    w.unschedulable = True
                    w.annotations[names.CORDONED_BY] = action.rule
                    w.annotations[names.CORDONED_AT] = rfc3339(now)
                    w.annotations[names.REMEDIATIONS] = remediations_after(
                        node.annotations.get(names.REMEDIATIONS), now=now
                    )
                    changed = True
            case Uncordon():
                if names.CORDONED_BY in node.annotations:
                    w.annotations[names.CORDONED_BY] = None
                    w.annotations[names.CORDONED_AT] = None
                    if node.unschedulable:
                        w.unschedulable = False
                    changed = True
            case AddTaint():
                same = [t for t in node.taints if t.key == action.key and t.effect == action.effect]
                if not same or any(t.value != action.value for t in same):
                    kept = tuple(t for t in node.taints if t.key == action.key and t.effect != action.effect)
                    added = now if action.effect == "NoExecute" else None
                    taint = Taint(key=action.key, effect=action.effect, value=action.value, time_added=added)
                    w.taints[action.key] = (*kept, taint)
                    changed = True
            case RemoveTaint():
                if node.has_taint(action.key):
                    w.taints[action.key] = ()
                    changed = True
        if changed:
            self._nodes[action.name] = w
            self._changed(action.name)
        return changed

    @staticmethod
    def _set_condition(w: _Written, node: Node, action: SetCondition, *, now: datetime) -> bool:
        old = node.condition(action.type)
        if old is not None and (old.status.value, old.reason, old.message) == (
            action.status,
            action.cond_reason,
            action.message,
        ):
            return False
        same_status = old is not None and old.status.value == action.status
        w.conditions[action.type] = Condition(
            type=action.type,
            status=ConditionStatus(action.status),
            reason=action.cond_reason,
            message=action.message,
            last_transition=old.last_transition if old is not None and same_status else now,
            last_heartbeat=now,
        )
        return True

    def _changed(self, node: str) -> None:
        self._version += 1
        log.debug("dry-run node writes", node=node, written=self.written(node))
        for callback in self._listeners:
            callback(node)

    # --- the runtime's side -------------------------------------------------------------------

    def forget(self, node: str, *, uid: str = "") -> None:
        """The Node was deleted: nothing written on it survives (a Node of another uid keeps its own)."""
        w = self._nodes.get(node)
        if w is not None and (not uid or not w.uid or w.uid == uid):
            del self._nodes[node]
            self._version += 1

    def apply(self, view: ClusterView, *, caller: str = "") -> ClusterView:
        """`view` with the recorded writes on its Nodes; `view` itself when there are none.

        `caller` names the view's source (a reconciler's scope): the latest view of each is what
        later writes are computed against. The same (view, writes) gives the same object back.
        """
        self._seen[caller] = view
        cached = self._cache.get(caller)
        if cached is not None and cached[0] is view and cached[1] == self._version:
            return cached[2]
        result = self._overlay(view)
        self._cache[caller] = (view, self._version, result)
        return result

    def _overlay(self, view: ClusterView) -> ClusterView:
        if not self._nodes:
            return view
        nodes: dict[str, Node] | None = None
        for name, w in list(self._nodes.items()):
            node = view.nodes.get(name)
            if node is None:
                continue  # not in this view (yet, or any more): nothing to lay over
            if w.uid and node.uid and node.uid != w.uid:
                self.forget(name)  # deleted and created again: the new Node has none of it
                continue
            if w.prune(node):
                self._version += 1
            if not w:
                del self._nodes[name]
                continue
            if nodes is None:
                nodes = dict(view.nodes)
            nodes[name] = w.over(node)
        if nodes is None:
            return view
        return dataclasses.replace(view, nodes=MappingProxyType(nodes))


class DryRunExecutor:
    """Logs each action and returns SKIPPED with detail "dry-run".

    With `writes`, Node writes are also recorded there (see the module docstring); `clock` gives
    their times (`cordoned-at`, a condition's `lastTransitionTime`), as the live executor's does.
    """

    def __init__(self, *, writes: NodeWrites | None = None, clock: Clock = _utcnow) -> None:
        self._told: set[tuple[str, ...]] = set()
        self._writes = writes
        self._clock = clock

    async def execute(self, action: Action) -> Outcome:
        row = as_row(action)
        key = tuple(row.values())
        # a Node write that would change the Node again (a second fault's taint) is news too
        wrote = self._writes is not None and self._writes.record(action, now=self._clock())
        emit = log.debug if key in self._told and not wrote else log.info
        self._told.add(key)
        emit("would act", dry_run=True, incident=action.incident, **row)
        return Outcome(action=action, status=OutcomeStatus.SKIPPED, detail=DRY_RUN)
