"""Which pods of a failed node may be force-deleted, and which GPU pods may be evicted.

Force-deleting a pod tells the API server the node will never run it again. That is true for
a node that is off, and a guess for one that is merely unreachable, so the rules are strict:

- ReplicaSet, ReplicationController and Job pods: yes; their controllers start new ones.
- StatefulSet pods and pods with single-attach volumes: only once the node is fenced
  (taint `node.kubernetes.io/out-of-service` or annotation `healer.io/fenced=true`): before
  that, a second copy could write the same volume.
- pods whose PersistentVolume is pinned to the node (local, hostPath, local-path): never;
  they can only run there, so a replacement elsewhere would never start.
- DaemonSet and mirror pods: left alone; they belong to the node.
- bare pods: reported, not deleted; nothing would recreate them.
"""

from __future__ import annotations

from dataclasses import dataclass

from healer.model import names
from healer.model.view import ClusterView, Node, PersistentVolume, Pod

FREELY_REPLACED = frozenset({"ReplicaSet", "ReplicationController", "Job"})
FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """`allowed` or not, and why, in words for the plan and the alert."""

    allowed: bool
    why: str
    needs_fence: bool = False  # would be allowed once the node is fenced
    node_bound: bool = False  # pinned to the node by its storage: never


def fence_command(node: str) -> str:
    return f"kubectl taint nodes {node} {names.OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute"


def _volumes(pod: Pod, *, view: ClusterView) -> list[tuple[str, PersistentVolume | None, tuple[str, ...]]]:
    """(claim, its PV if known, access modes) for each of the pod's PVCs."""
    out = []
    for claim in pod.claims:
        pvc = view.pvcs.get((pod.namespace, claim))
        pv = view.pvs.get(pvc.volume_name) if pvc and pvc.volume_name else None
        modes = pv.access_modes if pv else (pvc.access_modes if pvc else ())
        out.append((claim, pv, modes))
    return out


def _owner(pod: Pod) -> str:
    return f"{pod.owner.kind} {pod.owner.name}" if pod.owner else "no controller"


def force_delete(*, pod: Pod, node: Node, view: ClusterView) -> Verdict | None:
    """May this pod of the (NotReady) `node` be force-deleted? None: nothing to release."""
    if pod.phase in FINISHED and not pod.terminating:
        return None  # finished, not stuck: nothing is waiting for it
    if pod.is_mirror:
        return Verdict(allowed=False, why=f"static (mirror) pod: the kubelet on {node.name} owns it")
    if pod.owner_kind == "DaemonSet":
        return Verdict(
            allowed=False, why=f"DaemonSet pod: it belongs to {node.name} and cannot run elsewhere"
        )
    volumes = _volumes(pod, view=view)
    for claim, pv, _ in volumes:
        if pv is not None and node.name in pv.node_affinity:
            kind = pv.storage_class or ("local" if pv.local else "node-pinned")
            return Verdict(
                allowed=False,
                node_bound=True,
                why=(
                    f"its volume {pv.name} (claim {claim}, {kind}) lives on {node.name}: it can only run "
                    f"there, so it is never force-deleted; it starts again when {node.name} is back"
                ),
            )
    if pod.owner is None:
        return Verdict(
            allowed=False,
            why="bare pod (no controller): nothing would recreate it; delete it yourself if it is not needed",
        )
    fenced = node.is_fenced
    single = [claim for claim, pv, modes in volumes if (pv.single_attach if pv else not _shared(modes))]
    if pod.owner_kind == "StatefulSet" and not fenced:
        return Verdict(
            allowed=False,
            needs_fence=True,
            why=(
                f"StatefulSet pod: a second {pod.name} could run while {node.name} may still be up; "
                f"released once {node.name} is fenced"
            ),
        )
    if single and not fenced:
        return Verdict(
            allowed=False,
            needs_fence=True,
            why=(
                f"single-attach volume (claim {', '.join(single)}): it stays attached to {node.name} "
                f"until {node.name} is fenced"
            ),
        )
    if pod.owner_kind in FREELY_REPLACED or pod.owner_kind == "StatefulSet":
        why = f"{_owner(pod)} starts a replacement elsewhere"
        if fenced and (pod.owner_kind == "StatefulSet" or single):
            why += f" ({node.name} is fenced)"
        return Verdict(allowed=True, why=why)
    return Verdict(
        allowed=False,
        why=f"owned by {_owner(pod)}: healer does not know whether its controller replaces it",
    )


def _shared(modes: tuple[str, ...]) -> bool:
    return any(m in ("ReadWriteMany", "ReadOnlyMany") for m in modes)


def gpu_nodes_left(*, view: ClusterView, excluding: str) -> list[str]:
    """Other nodes that could run GPU pods now: GPUs allocatable, Ready, schedulable, not quarantined."""
    out = []
    for node in view.nodes.values():
        if node.name == excluding or node.gpu_allocatable <= 0:
            continue
        gpu = node.condition(names.GPU_CONDITION)
        if node.ready.value != "True" or node.unschedulable or node.has_taint(names.GPU_UNHEALTHY_TAINT):
            continue
        if gpu is not None and gpu.status.value == "False":
            continue
        out.append(node.name)
    return sorted(out)


def evict_gpu_pod(*, pod: Pod) -> Verdict | None:
    """May this GPU pod be evicted (Eviction API, PDBs hold)? None: not a running GPU pod."""
    if pod.gpu_request <= 0 or pod.terminating or pod.phase in FINISHED:
        return None
    if pod.is_mirror or pod.owner_kind == "DaemonSet":
        return Verdict(allowed=False, why="DaemonSet or static pod: it belongs to the node")
    if pod.owner is None:
        return Verdict(allowed=False, why="bare pod (no controller): eviction would end it for good")
    return Verdict(allowed=True, why=f"{_owner(pod)} starts a replacement on a healthy GPU")
