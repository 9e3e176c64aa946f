"""What each action of a rule proposes for the node or pod it matched.

One small function per action name in the rules' vocabulary (`cordon`, `release-pods`, ...),
each idempotent against the view: a cordoned node is not cordoned again, a taint that is
there is not added, a pod already gone is not proposed. Pods that must not be touched come
back as proposals already held by `eligibility`, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from healer.engine import matching, release
from healer.engine.proposals import Proposal
from healer.model import actions, names
from healer.model.view import ClusterView, Node, ObjectRef, Pod
from healer.rules import schema


def node_ref(node: Node) -> ObjectRef:
    return ObjectRef(kind="Node", name=node.name, uid=node.uid)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSubject:
    """A node a rule matched, and what the actions need to know about it."""

    rule: schema.Rule
    node: Node
    incident: str
    what: str  # "Ready=Unknown for 2d 4h (NodeStatusUnknown)"
    view: ClusterView
    gpu: schema.GpuPolicy

    @property
    def ref(self) -> ObjectRef:
        return node_ref(self.node)

    def propose(
        self, action: actions.Action, *, guard: str = "", detail: str = "", fence: bool = False
    ) -> Proposal:
        return Proposal(
            action=action, rule=self.rule, node=self.node.name, guard=guard, detail=detail, needs_fence=fence
        )

    def pods(self) -> list[Pod]:
        return sorted(self.view.pods_on(self.node.name), key=lambda p: p.key)


Builder = Callable[[NodeSubject, schema.ActionSpec], Iterator[Proposal]]


def _cordon(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    if not s.node.unschedulable:
        yield s.propose(actions.Cordon(target=s.ref, rule=s.rule.name, incident=s.incident, reason=s.what))


def _uncordon(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    """Only healer's own cordon, and only one made by a rule the spec names."""
    assert spec.uncordon is not None
    by = s.node.annotations.get(names.CORDONED_BY, "")
    if s.node.cordoned_by_healer and (not spec.uncordon.cordoned_by or by in spec.uncordon.cordoned_by):
        why = f"{s.what}; healer cordoned it ({by})"
        yield s.propose(actions.Uncordon(target=s.ref, rule=s.rule.name, incident=s.incident, reason=why))


def _taint(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    t = spec.taint
    assert t is not None
    if not any(x.key == t.key and x.effect == t.effect for x in s.node.taints):
        yield s.propose(
            actions.AddTaint(
                target=s.ref,
                rule=s.rule.name,
                incident=s.incident,
                reason=s.what,
                key=t.key,
                effect=t.effect,
                value=t.value,
            )
        )


def _untaint(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    assert spec.untaint is not None
    key = spec.untaint.key
    if s.node.has_taint(key):
        yield s.propose(
            actions.RemoveTaint(target=s.ref, rule=s.rule.name, incident=s.incident, reason=s.what, key=key)
        )


def _set_condition(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    c = spec.set_condition
    assert c is not None
    current = s.node.condition(c.type)
    if current is None or current.status.value != c.status or current.reason != c.reason:
        yield s.propose(
            actions.SetCondition(
                target=s.ref,
                rule=s.rule.name,
                incident=s.incident,
                reason=s.what,
                type=c.type,
                status=c.status,
                cond_reason=c.reason,
                message=c.message,
            )
        )


def _release_pods(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    """Force-delete within the eligibility rules; never on a node that is Ready."""
    if s.node.ready.value == "True":
        return
    for pod in s.pods():
        verdict = release.force_delete(pod=pod, node=s.node, view=s.view)
        if verdict is None:
            continue
        action = actions.ForceDelete(
            target=pod.ref, rule=s.rule.name, incident=s.incident, reason=verdict.why
        )
        if verdict.allowed:
            yield s.propose(action)
        else:
            yield s.propose(action, guard="eligibility", detail=verdict.why, fence=verdict.needs_fence)


def _evict_gpu_pods(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    """Through the Eviction API (PDBs hold); the last GPU node keeps its pods unless told otherwise."""
    others = release.gpu_nodes_left(view=s.view, excluding=s.node.name)
    for pod in s.pods():
        verdict = release.evict_gpu_pod(pod=pod)
        if verdict is None:
            continue
        evict = actions.Evict(target=pod.ref, rule=s.rule.name, incident=s.incident, reason=verdict.why)
        if not verdict.allowed:
            yield s.propose(evict, guard="eligibility", detail=verdict.why)
        elif not others and s.gpu.last_gpu_node == "keep":
            why = f"no other node can run GPU pods; {pod.name} stays on {s.node.name}"
            yield s.propose(evict, guard="last-gpu-node", detail=why)
        else:
            yield s.propose(evict)


def _nothing(s: NodeSubject, spec: schema.ActionSpec) -> Iterator[Proposal]:
    """`delete` acts on pods; the schema keeps it off Node rules."""
    yield from ()


NODE_BUILDERS: dict[str, Builder] = {
    "cordon": _cordon,
    "uncordon": _uncordon,
    "taint": _taint,
    "untaint": _untaint,
    "set-condition": _set_condition,
    "release-pods": _release_pods,
    "evict-gpu-pods": _evict_gpu_pods,
    "delete": _nothing,
}


def for_node(subject: NodeSubject) -> Iterator[Proposal]:
    for spec in subject.rule.actions:
        yield from NODE_BUILDERS[spec.name](subject, spec)


def for_pod(*, rule: schema.Rule, pod: Pod, incident: str, now: datetime) -> Iterator[Proposal]:
    """Pod rules have one action today: `delete` (an ordinary delete of a finished pod)."""
    at = matching.pod_finished_at(pod)
    since = f" {matching.ago(now - at)} ago" if at else ""
    first = pod.message.split(".")[0].strip()
    why = f"{pod.phase}/{pod.reason or '-'}{since}" + (f": {first}" if first else "")
    for spec in rule.actions:
        if spec.delete is not None and not pod.terminating:
            action = actions.Delete(target=pod.ref, rule=rule.name, incident=incident, reason=why)
            yield Proposal(action=action, rule=rule, node=pod.node_name)
