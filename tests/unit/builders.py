"""Small builders for engine tests: nodes, pods and volumes as the decoder would make them.

Times are relative to `NOW` so a table row reads "NotReady for 45 s" rather than a timestamp.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from healer.engine import planning
from healer.engine.state import EngineState
from healer.model import actions, names
from healer.model.view import (
    ClusterView,
    Condition,
    ConditionStatus,
    Node,
    Owner,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    Taint,
    Volume,
    VolumeKind,
)
from healer.rules import load_rules, schema

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 10, 15, 12, 0, 0, tzinfo=UTC)
RULES = load_rules(REPO / "rules")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def node(
    name: str,
    *,
    ready: str = "True",
    for_s: float = 3600,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    unschedulable: bool = False,
    taints: tuple[str, ...] = (),
    gpus: int = 0,
    gpu: tuple[str, str, str] | None = None,  # (status, reason, message)
    gpu_for_s: float = 3600,
) -> Node:
    conditions = [
        Condition(
            type="Ready",
            status=ConditionStatus(ready),
            reason="KubeletReady" if ready == "True" else "NodeStatusUnknown",
            message="kubelet is posting ready status"
            if ready == "True"
            else "Kubelet stopped posting node status.",
            last_transition=ago(for_s),
        )
    ]
    if gpu is not None:
        status, reason, message = gpu
        conditions.append(
            Condition(
                type=names.GPU_CONDITION,
                status=ConditionStatus(status),
                reason=reason,
                message=message,
                last_transition=ago(gpu_for_s),
            )
        )
    return Node(
        name=name,
        uid=f"uid-{name}",
        labels={names.HOSTNAME_LABEL: name, **(labels or {})},
        annotations=annotations or {},
        unschedulable=unschedulable,
        taints=tuple(
            Taint(key=k.split(":")[0], effect=k.split(":")[1] if ":" in k else "NoSchedule") for k in taints
        ),
        conditions=tuple(conditions),
        gpu_capacity=gpus,
        gpu_allocatable=gpus,
    )


def pod(
    name: str,
    node_name: str,
    *,
    owner: str | None = "ReplicaSet",
    namespace: str = "apps",
    claims: tuple[str, ...] = (),
    terminating: bool = True,
    phase: str = "Running",
    reason: str = "",
    message: str = "",
    finished_s: float | None = None,
    gpus: int = 0,
    mirror: bool = False,
) -> Pod:
    return Pod(
        namespace=namespace,
        name=name,
        uid=f"uid-{namespace}-{name}",
        node_name=node_name,
        phase=phase,
        reason=reason,
        message=message,
        owner=Owner(kind=owner, name=f"{name}-owner") if owner else None,
        annotations={names.MIRROR_POD_ANNOTATION: "x"} if mirror else {},
        volumes=tuple(Volume(name=c, kind=VolumeKind.PVC, claim=c) for c in claims),
        gpu_request=gpus,
        deletion_timestamp=ago(30) if terminating else None,
        finished=ago(finished_s) if finished_s is not None else None,
        created=ago(86400),
    )


def volume(
    claim: str,
    *,
    namespace: str = "apps",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    pinned_to: str = "",
    local: bool = False,
) -> tuple[PersistentVolume, PersistentVolumeClaim]:
    pv = PersistentVolume(
        name=f"pv-{claim}",
        access_modes=modes,
        storage_class="local-path" if local else "nfs",
        node_affinity=(pinned_to,) if pinned_to else (),
        local=local,
        claim=(namespace, claim),
    )
    pvc = PersistentVolumeClaim(namespace=namespace, name=claim, volume_name=pv.name, access_modes=modes)
    return pv, pvc


def view(
    *nodes: Node,
    pods: tuple[Pod, ...] = (),
    volumes: tuple[tuple[PersistentVolume, PersistentVolumeClaim], ...] = (),
    synced: bool = True,
) -> ClusterView:
    return ClusterView.of(
        nodes=list(nodes),
        pods=list(pods),
        pvs=[v[0] for v in volumes],
        pvcs=[v[1] for v in volumes],
        synced=synced,
    )


def plan(
    v: ClusterView,
    *,
    rules: schema.RuleSet = RULES,
    state: EngineState | None = None,
    now: datetime = NOW,
    scope: str = "all",
    node_name: str | None = None,
) -> actions.Plan:
    return planning.plan(
        view=v, rules=rules, state=state or EngineState(), now=now, scope=scope, node=node_name
    )


def rows(p: actions.Plan) -> set[tuple[str, str]]:
    """(verb, object) of the planned actions other than notifications: `("cordon", "styx")`."""
    return {(a.verb, a.target.key) for a in p.actions if not isinstance(a, actions.Notify)}


def held(p: actions.Plan) -> dict[tuple[str, str], str]:
    """(verb, object) -> guard of the held actions."""
    return {(h.action.verb, h.action.target.key): h.guard for h in p.held}


def notes(p: actions.Plan) -> list[actions.Notify]:
    return [a for a in p.actions if isinstance(a, actions.Notify)]


def remediations(*seconds_ago: float) -> dict[str, str]:
    return {names.REMEDIATIONS: json.dumps([ago(s).isoformat() for s in seconds_ago])}


def cordoned_by(rule: str) -> dict[str, str]:
    return {names.CORDONED_BY: rule, names.CORDONED_AT: ago(600).isoformat()}


def applied(
    p: actions.Plan, *, status: actions.OutcomeStatus = actions.OutcomeStatus.APPLIED
) -> list[actions.Outcome]:
    return [actions.Outcome(action=a, status=status) for a in p.actions]


def apply(v: ClusterView, p: actions.Plan, *, now: datetime = NOW) -> ClusterView:
    """What a live executor would leave behind: the cluster after the plan's actions."""
    nodes = dict(v.nodes)
    pods = dict(v.pods)
    for a in p.actions:
        key = a.target.name
        match a:
            case actions.Cordon():
                n = nodes[key]
                times = [*json.loads(n.annotations.get(names.REMEDIATIONS, "[]")), now.isoformat()]
                notes_ = {**n.annotations, names.CORDONED_BY: a.rule, names.REMEDIATIONS: json.dumps(times)}
                nodes[key] = replace(n, unschedulable=True, annotations=notes_)
            case actions.Uncordon():
                n = nodes[key]
                kept = {
                    k: val
                    for k, val in n.annotations.items()
                    if k not in (names.CORDONED_BY, names.CORDONED_AT)
                }
                nodes[key] = replace(n, unschedulable=False, annotations=kept)
            case actions.AddTaint():
                n = nodes[key]
                nodes[key] = replace(n, taints=(*n.taints, Taint(key=a.key, effect=a.effect, value=a.value)))
            case actions.RemoveTaint():
                n = nodes[key]
                nodes[key] = replace(n, taints=tuple(t for t in n.taints if t.key != a.key))
            case actions.ForceDelete() | actions.Delete() | actions.Evict():
                pods.pop((a.target.namespace, a.target.name), None)
            case _:
                pass
    return ClusterView.of(
        nodes=list(nodes.values()),
        pods=list(pods.values()),
        pvs=list(v.pvs.values()),
        pvcs=list(v.pvcs.values()),
        pdbs=list(v.pdbs.values()),
        synced=v.synced,
    )
