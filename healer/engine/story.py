"""One message per incident per plan: what happened, why, what healer does, what it cannot.

The notifier renders `Notify.facts` (label, text) lines; this module decides what they say,
so the plan, the chat alert and the logs tell the same story. An incident is told again only
when something it has not yet told appears (`Notify.covers` vs `EngineState.told`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from healer.engine import guards, matching, release
from healer.engine.proposals import Proposal
from healer.model import actions, names
from healer.model.view import Node, ObjectRef, Pod
from healer.rules import schema

CLUSTER = ObjectRef(kind="Cluster", name="cluster")
# execution order within an incident: quarantine first, then move pods, then undo, then tell
VERB_ORDER = {
    "taint": 0,
    "cordon": 1,
    "set-condition": 2,
    "evict": 3,
    "force-delete": 4,
    "delete": 5,
    "untaint": 6,
    "uncordon": 7,
    "notify": 9,
}
STORM_INCIDENT = "storm"
_SEVERITY = {"info": 0, "warning": 1, "critical": 2}
_LABEL = {
    "cordon": "Cordon",
    "uncordon": "Uncordon",
    "taint": "Taint",
    "untaint": "Untaint",
    "force-delete": "Release",
    "evict": "Evict",
    "delete": "Delete",
    "set-condition": "Set condition",
}


_DOES = {"cordon": "no new pods are scheduled there", "uncordon": "schedulable again"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """A rule that matched a node (with its condition) or a pod."""

    rule: schema.Rule
    incident: str
    node: Node | None = None
    node_finding: matching.NodeFinding | None = None
    pod: Pod | None = None


def _subject(action: actions.Action) -> str:
    t = action.target
    if isinstance(action, actions.AddTaint | actions.RemoveTaint):
        return f"{t.name} {action.key}" + (
            f":{action.effect}" if isinstance(action, actions.AddTaint) else ""
        )
    return t.key


def _by_hand(action: actions.Action) -> str:
    t = action.target
    match action:
        case actions.Cordon():
            return f"kubectl cordon {t.name}"
        case actions.Uncordon():
            return f"kubectl uncordon {t.name}"
        case actions.AddTaint():
            return f"kubectl taint nodes {t.name} {action.key}={action.value}:{action.effect}"
        case actions.RemoveTaint():
            return f"kubectl taint nodes {t.name} {action.key}-"
        case actions.ForceDelete():
            return f"kubectl delete pod -n {t.namespace} {t.name} --grace-period=0 --force"
        case actions.Evict() | actions.Delete():
            return f"kubectl delete pod -n {t.namespace} {t.name}"
        case _:
            return ""


def _action_facts(props: Sequence[Proposal], *, ctx: guards.Context) -> list[tuple[str, str]]:
    """Done first (in execution order), then what cannot be done and why, then what to do by hand."""
    facts: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    held: dict[tuple[str, str], list[Proposal]] = {}
    for p in sorted(props, key=lambda p: planning_order(p.action)):
        a = p.action
        if not p.held:
            facts.append((_LABEL.get(a.verb, a.verb), f"{_subject(a)}: {_DOES.get(a.verb, a.reason)}"))
        elif p.guard in ("eligibility", "last-gpu-node"):
            label = "Not released" if isinstance(a, actions.ForceDelete) else "Not evicted"
            refused.append((label, f"{_subject(a)}: {p.detail}"))
        elif p.guard != "cooldown":
            held.setdefault((p.guard, p.detail), []).append(p)
    facts.extend(refused)
    for (guard, detail), group in held.items():
        what = ", ".join(f"{g.action.verb} {_subject(g.action)}" for g in group)
        facts.append((f"Held ({guard})", f"{detail}: {what}" if detail else what))
    fence_nodes = sorted({p.node for p in props if p.needs_fence and p.guard == "eligibility"})
    for name in fence_nodes:
        node = ctx.view.nodes.get(name)
        if node is not None and not node.is_fenced:
            facts.append(
                ("Fence", f"once {name} is confirmed powered off, run: {release.fence_command(name)}")
            )
    manual = [p for p in props if p.guard in ("budget", "protected") and _by_hand(p.action)]
    if manual:
        cmds = list(dict.fromkeys(_by_hand(p.action) for p in manual))
        facts.append(("By hand", "; ".join(cmds)))
    for name in sorted({p.node for p in props if p.guard == "budget"}):
        facts.append(
            ("Budget", f"to give healer {name} back: kubectl annotate node {name} {names.REMEDIATIONS}-")
        )
    return facts


def planning_order(action: actions.Action) -> tuple[int, str, str, str]:
    return (VERB_ORDER.get(action.verb, 8), action.kind, action.namespace, action.name)


def _node_facts(findings: Sequence[Finding]) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    seen = set()
    for f in findings:
        if f.node is None or f.node_finding is None:
            continue
        cond = f.node_finding.condition
        if (f.node.name, cond.type) in seen:
            continue
        seen.add((f.node.name, cond.type))
        facts.append(("What", f"{f.node.name}: {matching.describe(f.node, finding=f.node_finding)}"))
        if cond.message:
            facts.append(("Why", cond.message))
        if f.node_finding.gpu_class:
            facts.append(("GPU class", f.node_finding.gpu_class))
        if not f.rule.actions:
            facts.append(("Action", "none: healer only reports this"))
    return facts


def _pod_facts(
    findings: Sequence[Finding], *, props: Sequence[Proposal], ctx: guards.Context
) -> list[tuple[str, str]]:
    """A summary, not a list: counts per namespace, and the pressure that evicted them."""
    pods = [f.pod for f in findings if f.pod is not None]
    deleted = {p.action.target.key for p in props if not p.held}
    held = [p for p in props if p.held and p.guard != "cooldown"]
    rule = findings[0].rule
    window = schema.format_duration(rule.match.finished_for) if rule.match.finished_for else ""
    kind = f"{rule.match.reason} " if rule.match.reason else ""
    facts = [
        ("Deleted", f"{len(deleted)} {kind}pods" + (f" finished more than {window} ago" if window else ""))
    ]
    per_ns = Counter(p.namespace for p in pods if p.ref.key in deleted)
    if per_ns:
        facts.append(("Per namespace", ", ".join(f"{ns}: {n}" for ns, n in sorted(per_ns.items()))))
    causes: dict[str, set[str]] = {}
    for p in pods:
        first = p.message.split(".")[0].strip()
        if first:
            causes.setdefault(p.node_name or "?", set()).add(first)
    for node_name in sorted(causes):
        node = ctx.view.nodes.get(node_name)
        now_pressure = (
            [c.type for c in node.conditions if c.type.endswith("Pressure") and c.status.value == "True"]
            if node
            else []
        )
        state = f" (now: {', '.join(now_pressure)})" if now_pressure else " (no pressure now)" if node else ""
        facts.append(("Node pressure", f"{node_name}: {'; '.join(sorted(causes[node_name]))}{state}"))
    if held:
        facts.extend(_action_facts(held, ctx=ctx))
    return facts


def _target(findings: Sequence[Finding]) -> ObjectRef:
    nodes = {f.node.name if f.node else (f.pod.node_name if f.pod else "") for f in findings}
    if len(nodes) == 1:
        (name,) = nodes
        for f in findings:
            if f.node is not None:
                return ObjectRef(kind="Node", name=f.node.name, uid=f.node.uid)
        if name:
            return ObjectRef(kind="Node", name=name)
    return CLUSTER


def _incident_notify(
    incident: str, *, findings: Sequence[Finding], props: Sequence[Proposal], ctx: guards.Context
) -> actions.Notify | None:
    telling = [f for f in findings if f.rule.notify is not None]
    if not telling:
        return None
    opened = [f for f in telling if f.rule.notify and f.rule.notify.stage == "opened"]
    chosen = opened or telling
    resolved = not opened
    alert_only = any(not f.rule.actions for f in chosen)
    props = [p for p in props if p.guard != "cooldown"]
    covers = frozenset(p.cover for p in props)
    told = ctx.state.told.get(incident)
    is_open = told is not None and told.stage is not actions.Stage.RESOLVED
    if resolved:
        if not props and not is_open:
            return None
        if told is not None and not is_open and covers <= told.covers:
            return None
        stage = actions.Stage.RESOLVED
    else:
        if not props and not alert_only:
            return None
        if is_open and told is not None and covers <= told.covers:
            return None
        stage = actions.Stage.UPDATED if is_open else actions.Stage.OPENED
        if all(f.pod is not None for f in chosen):
            stage = actions.Stage.OPENED  # each clean-up is a story of its own, nothing to resolve
    lead = max(chosen, key=lambda f: _SEVERITY[f.rule.notify.severity if f.rule.notify else "info"])
    spec = lead.rule.notify
    assert spec is not None
    target = _target(chosen)
    title = spec.title.format(node=target.name if target.kind == "Node" else "", rule=lead.rule.name)
    pods = [f for f in chosen if f.pod is not None]
    facts = (
        _pod_facts(pods, props=props, ctx=ctx)
        if pods and len(pods) == len(chosen)
        else [
            *_node_facts(chosen),
            *_action_facts(props, ctx=ctx),
        ]
    )
    tags = sorted({t for f in chosen if f.rule.notify for t in f.rule.notify.tags})
    return actions.Notify(
        target=target,
        rule=lead.rule.name,
        reason=title,
        incident=incident,
        title=title,
        stage=stage,
        severity=actions.Severity(spec.severity),
        tags=tuple(tags),
        facts=tuple(facts),
        covers=tuple(sorted(covers)),
    )


def _storm_notify(props: Sequence[Proposal], *, ctx: guards.Context) -> actions.Notify | None:
    storm = ctx.storm
    told = ctx.state.told.get(STORM_INCIDENT)
    is_open = told is not None and told.stage is not actions.Stage.RESOLVED
    if not storm.up:
        if not is_open:
            return None
        title = "Storm guard lifted: healer may release and evict pods again"
        return actions.Notify(
            target=CLUSTER,
            rule="storm-guard",
            reason=title,
            incident=STORM_INCIDENT,
            title=title,
            stage=actions.Stage.RESOLVED,
            severity=actions.Severity.INFO,
            tags=("storm",),
            facts=(("Unhealthy", ", ".join(storm.unhealthy) or "none"),),
        )
    held = [p for p in props if p.guard == "storm"]
    covers = frozenset({f"unhealthy Node/{n}" for n in storm.unhealthy} | {p.cover for p in held})
    if is_open and told is not None and covers <= told.covers:
        return None
    title = "Storm guard up: healer deletes and evicts nothing"
    facts = [("Why", storm.detail)]
    if held:
        facts.append(("Held", ", ".join(f"{p.action.verb} {_subject(p.action)}" for p in held)))
    facts.append(("Next", "check the network and the API server; healer resumes by itself when it clears"))
    return actions.Notify(
        target=CLUSTER,
        rule="storm-guard",
        reason=storm.detail,
        incident=STORM_INCIDENT,
        title=title,
        stage=actions.Stage.UPDATED if is_open else actions.Stage.OPENED,
        severity=actions.Severity.CRITICAL,
        tags=("storm",),
        facts=tuple(facts),
        covers=tuple(sorted(covers)),
    )


def notifications(
    *, findings: Sequence[Finding], proposals: Sequence[Proposal], ctx: guards.Context, announce_storm: bool
) -> list[actions.Action]:
    by_incident: dict[str, list[Finding]] = {}
    for f in findings:
        by_incident.setdefault(f.incident, []).append(f)
    props: dict[str, list[Proposal]] = {}
    for p in proposals:
        props.setdefault(p.action.incident, []).append(p)
    out: list[actions.Action] = []
    for incident, group in by_incident.items():
        note = _incident_notify(incident, findings=group, props=props.get(incident, []), ctx=ctx)
        if note is not None:
            out.append(note)
    if announce_storm:
        note = _storm_notify(proposals, ctx=ctx)
        if note is not None:
            out.append(note)
    return out
