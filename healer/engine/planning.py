"""`plan()`: the cluster view, the rules, the engine's memory and `now` in; a `Plan` out.

Pure and deterministic: the same inputs give the same plan, sorted, and a plan whose
actions were applied yields nothing new when planned again (a cordoned node is not cordoned
again, a pod already gone is not deleted again, a told incident is not told again).

Scopes: `cluster` (the leader: cluster-scoped rules, every node), `node` (a node agent:
node-scoped rules, only its node), `all` (both at once, for `healer plan`).

Incremental (`touched=`, cluster scope): after watch events the leader re-plans only the
nodes they touched instead of all 5,000 (a full plan takes ~200 ms there). For those nodes it
decides exactly what a full plan decides for them, because a per-node rule (`is_local`) reads
only the node, its pods, the engine state and the storm status, which is recomputed from the
whole view (O(nodes)) every time. Rules that are not per node (a cluster-wide incident such
as `evicted-cleanup`, a `max_actions` limit counted across the plan, a remedy that reads
other nodes) need the whole view and are left to the full plans: every tick (`for:` and
`finished_for:` conditions are time-based, so ticks are what make them fire), every relist
and every rule change. While the storm guard is up or its incident is still open (it just
lifted), a plan is always full: its alert and its holds span every node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Literal

from healer.engine import guards, matching, remedies, story
from healer.engine.proposals import Proposal
from healer.engine.state import EngineState
from healer.model import actions
from healer.model.view import ClusterView, Node, Pod
from healer.rules import schema

Scope = Literal["cluster", "node", "all"]
SCOPES: tuple[Scope, ...] = ("cluster", "node", "all")


# remedies that read nodes other than their own (the last-GPU-node check)
_READS_OTHER_NODES = frozenset({"evict-gpu-pods"})


def is_local(rule: schema.Rule) -> bool:
    """Whether what `rule` decides for a node depends only on that node, its pods and the
    cluster-wide inputs every plan recomputes: its incident is per node, no limit is counted
    across nodes, and no remedy of it reads another node."""
    return (
        "{node}" in rule.incident
        and rule.limits.max_actions is None
        and not any(a.name in _READS_OTHER_NODES for a in rule.actions)
    )


def incremental(*, view: ClusterView, rules: schema.RuleSet, state: EngineState) -> bool:
    """Whether a plan of only the touched nodes decides what a full plan decides for them: not
    while the storm guard holds (its alert covers what it holds everywhere) or its incident is
    still open (it just lifted: every node's held removals are due)."""
    return _incremental(storm=guards.storm_status(view, guard=rules.guards.storm), state=state)


def _incremental(*, storm: guards.Storm, state: EngineState) -> bool:
    if storm.up:
        return False
    told = state.told.get(story.STORM_INCIDENT)
    return told is None or told.stage is actions.Stage.RESOLVED


def _scoped(
    *, view: ClusterView, rules: schema.RuleSet, scope: str, node: str | None
) -> tuple[list[schema.Rule], list[Node]]:
    if scope == "node":
        if not node:
            raise ValueError("scope 'node' needs the node's name")
        chosen = [r for r in rules.rules if r.scope == "node"]
        nodes = [view.nodes[node]] if node in view.nodes else []
        return chosen, nodes
    chosen = [r for r in rules.rules if scope == "all" or r.scope == "cluster"]
    return chosen, [view.nodes[n] for n in sorted(view.nodes)]


def _pods(
    view: ClusterView,
    *,
    nodes: list[Node],
    scope: str,
    rules: list[schema.Rule],
    touched: frozenset[str] | None = None,
) -> list[Pod]:
    """The pods Pod rules may match, sorted. Most pods are Running and no default rule looks at
    those, so when every Pod rule names phases the others are dropped before sorting: a
    150,000-pod view costs one pass, not a sort and a rule check per pod. A node agent's and
    an incremental plan's pool is the pods of their nodes (an unscheduled pod's node is "")."""
    pool: Iterable[Pod]
    if scope == "node" or touched is not None:
        pool = [p for n in nodes for p in view.pods_on(n.name)]
        if touched is not None and "" in touched:
            pool += [p for p in view.pods.values() if not p.node_name]
    else:
        pool = iter(view.pods.values())
    pod_rules = [r for r in rules if r.match.kind == "Pod"]
    if pod_rules and all(r.match.phase for r in pod_rules):
        phases = frozenset(ph for r in pod_rules for ph in r.match.phase or ())
        pool = (p for p in pool if p.phase in phases)
    return sorted(pool, key=lambda p: p.key)


def _incident(rule: schema.Rule, *, node: str) -> str:
    return rule.incident.format(rule=rule.name, node=node)


def _keep_cordoned(
    proposals: Iterable[Proposal], *, view: ClusterView, rules: schema.RuleSet, now: datetime
) -> list[Proposal]:
    """No uncordon while any rule that cordons (in any scope) still sees its condition on the
    node, even for less than its `for`: a GPU recovering on a NotReady node, or a node Ready
    again with a faulty GPU, stays cordoned instead of flipping every evaluation."""
    cordoning = [
        r for r in rules.rules if r.match.kind == "Node" and any(a.name == "cordon" for a in r.actions)
    ]
    out = []
    for p in proposals:
        node = view.nodes.get(p.node)
        if isinstance(p.action, actions.Uncordon) and node is not None:
            still = any(
                matching.node_finding(r, node=node, now=now, gpu=rules.gpu, ignore_for=True)
                for r in cordoning
            )
            if still:
                continue
        out.append(p)
    return out


def _dedupe(proposals: Iterable[Proposal]) -> list[Proposal]:
    """Two rules may ask for the same thing (both cordon a node): keep the first that may run."""
    chosen: dict[tuple[str, ...], Proposal] = {}
    for p in proposals:
        a = p.action
        key = (a.verb, a.kind, a.namespace, a.name, getattr(a, "key", ""))
        if key not in chosen or (chosen[key].held and not p.held):
            chosen[key] = p
    return list(chosen.values())


def sort_key(action: actions.Action) -> tuple[str, int, str, str, str, str]:
    return (
        action.incident,
        story.VERB_ORDER.get(action.verb, 8),
        action.kind,
        action.namespace,
        action.name,
        action.rule,
    )


def plan(
    *,
    view: ClusterView,
    rules: schema.RuleSet,
    state: EngineState,
    now: datetime,
    scope: str,
    node: str | None = None,
    touched: Collection[str] | None = None,
) -> actions.Plan:
    """What healer would do now. `now` must be timezone-aware; `scope` is one of `SCOPES`.

    `touched` (cluster scope): plan only the per-node rules (`is_local`), only for these nodes
    and their pods; the result is the full plan's actions and holds of those rules about those
    nodes. Ignored (a full plan) while `incremental(...)` is False.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    storm = guards.storm_status(view, guard=rules.guards.storm)
    near: frozenset[str] | None = None
    if touched is not None and scope == "cluster" and _incremental(storm=storm, state=state):
        near = frozenset(touched)
        chosen = [r for r in rules.rules if r.scope == "cluster" and is_local(r)]
        nodes = [view.nodes[n] for n in sorted(near) if n in view.nodes]
    else:
        chosen, nodes = _scoped(view=view, rules=rules, scope=scope, node=node)
    findings: list[story.Finding] = []
    proposals: list[Proposal] = []
    pods: list[Pod] | None = None
    for rule in chosen:
        if rule.match.kind == "Node":
            for n in nodes:
                found = matching.node_finding(rule, node=n, now=now, gpu=rules.gpu)
                if found is None:
                    continue
                incident = _incident(rule, node=n.name)
                subject = remedies.NodeSubject(
                    rule=rule,
                    node=n,
                    incident=incident,
                    what=matching.describe(n, finding=found),
                    view=view,
                    gpu=rules.gpu,
                )
                proposals.extend(remedies.for_node(subject))
                findings.append(story.Finding(rule=rule, incident=incident, node=n, node_finding=found))
        else:
            if pods is None:
                pods = _pods(view, nodes=nodes, scope=scope, rules=chosen, touched=near)
            for pod in pods:
                if not matching.pod_matches(rule, pod=pod, now=now):
                    continue
                incident = _incident(rule, node=pod.node_name)
                proposals.extend(remedies.for_pod(rule=rule, pod=pod, incident=incident, now=now))
                findings.append(story.Finding(rule=rule, incident=incident, pod=pod))
    ctx = guards.Context(view=view, rules=rules, state=state, now=now, storm=storm)
    proposals = _dedupe(guards.apply(_keep_cordoned(proposals, view=view, rules=rules, now=now), ctx))
    notes = story.notifications(
        findings=findings, proposals=proposals, ctx=ctx, announce_storm=scope != "node"
    )
    done = [p.action for p in proposals if not p.held] + notes
    held = [actions.Held(action=p.action, guard=p.guard, detail=p.detail) for p in proposals if p.held]
    return actions.Plan(
        actions=tuple(sorted(done, key=sort_key)),
        held=tuple(sorted(held, key=lambda h: (*sort_key(h.action), h.guard))),
    )
