"""Guard invariants over generated clusters (hypothesis): whatever the cluster looks like,

- no pod is deleted or evicted while the storm guard is up;
- protected and control-plane nodes (and their pods) get nothing but notifications;
- a pod whose volume is pinned to its node is never force-deleted;
- a StatefulSet pod on an unfenced node is never force-deleted;
- a node past its remediation budget is never cordoned again;
- nothing is force-deleted from a Ready node, nor DaemonSet, mirror or bare pods;
- plans are deterministic, and carrying one out leaves nothing new to do.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.engine.state import EngineState
from healer.model import actions, names
from healer.model.view import ClusterView, Node, Pod
from tests.unit.builders import NOW, applied, apply, node, plan, pod, view, volume

OWNERS = [None, "ReplicaSet", "Job", "StatefulSet", "DaemonSet", "ReplicationController", "Custom"]
POD_REMOVING = {"evict", "delete", "force-delete"}


@st.composite
def clusters(draw: st.DrawFn) -> ClusterView:
    count = draw(st.integers(min_value=1, max_value=7))
    nodes: list[Node] = []
    for i in range(count):
        labels = {}
        if draw(st.booleans()) and draw(st.booleans()):
            labels[names.CONTROL_PLANE_LABEL] = "true"
        if draw(st.integers(0, 5)) == 0:
            labels[names.PROTECTED] = draw(st.sampled_from(["true", "false"]))
        annotations: dict[str, str] = {}
        budget = draw(st.lists(st.integers(0, 30 * 3600), max_size=5))
        if budget:
            annotations[names.REMEDIATIONS] = json.dumps(
                [(NOW - timedelta(seconds=s)).isoformat() for s in budget]
            )
        if draw(st.booleans()):
            annotations[names.CORDONED_BY] = draw(
                st.sampled_from(["node-not-ready", "gpu-hardware-fault", "x"])
            )
        if draw(st.integers(0, 3)) == 0:
            annotations[names.FENCED] = "true"
        gpus = draw(st.integers(0, 2))
        gpu = None
        if gpus and draw(st.booleans()):
            gpu = (
                draw(st.sampled_from(["True", "False"])),
                draw(st.sampled_from(["Xid79", "Xid13", "Xid48", "Xid999", "EccDbe", "GpuHealthy"])),
                draw(st.sampled_from(["", "GPU 0 class=reset"])),
            )
        taints = (f"{names.OUT_OF_SERVICE_TAINT}:NoExecute",) if draw(st.integers(0, 4)) == 0 else ()
        nodes.append(
            node(
                f"n{i}",
                ready=draw(st.sampled_from(["True", "True", "False", "Unknown"])),
                for_s=draw(st.sampled_from([5, 29, 30, 45, 60, 61, 600, 200000])),
                labels=labels,
                annotations=annotations,
                unschedulable=draw(st.booleans()),
                taints=taints,
                gpus=gpus,
                gpu=gpu,
                gpu_for_s=draw(st.sampled_from([10, 600])),
            )
        )
    vols = [volume("net"), volume("rwx", modes=("ReadWriteMany",))]
    vols += [volume(f"local-{n.name}", pinned_to=n.name, local=True) for n in nodes]
    claims = ["net", "rwx", *[f"local-{n.name}" for n in nodes]]
    pods: list[Pod] = []
    for j in range(draw(st.integers(0, 12))):
        evicted = draw(st.integers(0, 4)) == 0
        pods.append(
            pod(
                f"p{j}",
                draw(st.sampled_from([n.name for n in nodes])),
                owner=draw(st.sampled_from(OWNERS)),
                claims=tuple(draw(st.lists(st.sampled_from(claims), max_size=2, unique=True))),
                terminating=draw(st.booleans()) and not evicted,
                phase="Failed" if evicted else draw(st.sampled_from(["Running", "Running", "Succeeded"])),
                reason="Evicted" if evicted else "",
                finished_s=draw(st.sampled_from([60, 7200])) if evicted else None,
                gpus=draw(st.integers(0, 1)),
                mirror=draw(st.integers(0, 6)) == 0,
            )
        )
    return view(*nodes, pods=tuple(pods), volumes=tuple(vols), synced=draw(st.integers(0, 6)) != 0)


def _protected(n: Node) -> bool:
    return n.is_control_plane or n.labels.get(names.PROTECTED) == "true"


def _storm(v: ClusterView) -> bool:
    unhealthy = sum(1 for n in v.nodes.values() if n.ready.value != "True")
    return not v.synced or unhealthy > max(1, len(v.nodes) // 3)


def _recent(n: Node, now: datetime) -> int:
    times = json.loads(n.annotations.get(names.REMEDIATIONS, "[]"))
    return sum(1 for t in times if now - datetime.fromisoformat(t) <= timedelta(hours=24))


def _node_of(a: actions.Action, v: ClusterView) -> Node | None:
    if a.target.kind == "Node":
        return v.nodes.get(a.target.name)
    p = v.pods.get((a.target.namespace, a.target.name))
    return v.nodes.get(p.node_name) if p else None


def _mutations(p: actions.Plan) -> list[actions.Action]:
    return [a for a in p.actions if not isinstance(a, actions.Notify)]


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(clusters())
def test_storm_guard_up_means_no_pod_is_deleted_or_evicted(v: ClusterView) -> None:
    if _storm(v):
        assert not [a for a in plan(v).actions if a.verb in POD_REMOVING]


@SETTINGS
@given(clusters())
def test_protected_nodes_get_only_notifications(v: ClusterView) -> None:
    for a in _mutations(plan(v)):
        n = _node_of(a, v)
        assert n is not None
        assert not _protected(n), a


@SETTINGS
@given(clusters())
def test_force_delete_respects_eligibility(v: ClusterView) -> None:
    for a in plan(v).actions:
        if not isinstance(a, actions.ForceDelete):
            continue
        p = v.pods[(a.target.namespace, a.target.name)]
        n = v.nodes[p.node_name]
        assert n.ready.value != "True"
        assert p.owner_kind not in ("", "DaemonSet")
        assert not p.is_mirror
        pinned = [c for c in p.claims if n.name in v.pvs[f"pv-{c}"].node_affinity]
        assert not pinned, "a pod on a node-local volume was force-deleted"
        if p.owner_kind == "StatefulSet" or "net" in p.claims:
            assert n.is_fenced, "a StatefulSet or single-attach pod was force-deleted from an unfenced node"


@SETTINGS
@given(clusters())
def test_budget_is_never_exceeded(v: ClusterView) -> None:
    for a in plan(v).actions:
        if isinstance(a, actions.Cordon | actions.AddTaint):
            assert _recent(v.nodes[a.target.name], NOW) < 3


@SETTINGS
@given(clusters())
def test_plans_are_deterministic_and_carrying_one_out_leaves_nothing_new(v: ClusterView) -> None:
    first = plan(v)
    assert plan(v) == first
    state = EngineState().after(outcomes=applied(first), now=NOW)
    second = plan(apply(v, first), state=state)  # same moment: no rule's `for` newly elapsed
    assert second.actions == (), second.actions


@SETTINGS
@given(clusters())
def test_one_message_per_incident_and_every_action_has_one(v: ClusterView) -> None:
    p = plan(v)
    told = [a.incident for a in p.actions if isinstance(a, actions.Notify)]
    assert len(told) == len(set(told))
    assert all(a.incident for a in p.actions)
    assert all(h.action.incident and h.guard for h in p.held)
