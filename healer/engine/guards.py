"""Guards: plain functions that take proposals and hold the ones that must not happen.

Each guard is `(proposals, context) -> proposals`, composed in `CHAIN` like a pipeline;
a held proposal keeps the first guard that stopped it. Order matters only for which name
is reported: protected, storm, budget, cooldown, limit. Eligibility (which pods may be
released at all) is decided when the proposal is made, in `release`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from healer.engine import matching
from healer.engine.proposals import Proposal
from healer.engine.state import EngineState
from healer.model import actions, names
from healer.model.view import ClusterView, ConditionStatus, Node
from healer.rules import schema

POD_REMOVING = frozenset({"evict", "delete", "force-delete"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Storm:
    up: bool
    unhealthy: tuple[str, ...]
    nodes: int
    threshold: int
    stale: bool

    @property
    def detail(self) -> str:
        if self.stale:
            return "healer's view of the API is stale; no pod is deleted or evicted until it is fresh"
        return (
            f"{len(self.unhealthy)} of {self.nodes} nodes unhealthy ({', '.join(self.unhealthy)}), more than "
            f"{self.threshold}: no pod is deleted or evicted anywhere"
        )


def storm_status(view: ClusterView, *, guard: schema.StormGuard) -> Storm:
    if view.not_ready is not None:  # kept by the store as node events come
        unhealthy = tuple(sorted(view.not_ready))
    else:
        true = ConditionStatus.TRUE
        unhealthy = tuple(sorted(n.name for n in view.nodes.values() if n.ready is not true))
    threshold = guard.threshold(len(view.nodes))
    return Storm(
        up=(not view.synced) or len(unhealthy) > threshold,
        unhealthy=unhealthy,
        nodes=len(view.nodes),
        threshold=threshold,
        stale=not view.synced,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    view: ClusterView
    rules: schema.RuleSet
    state: EngineState
    now: datetime
    storm: Storm


Guard = Callable[[Sequence[Proposal], Context], list[Proposal]]


def _hold(p: Proposal, *, guard: str, detail: str) -> Proposal:
    return dataclasses.replace(p, guard=guard, detail=detail)


def protected_reason(node: Node, *, guards: schema.Guards) -> str:
    sel = matching.node_selected(node, selectors=guards.protected.selectors)
    if not sel:
        return ""
    if sel in (names.CONTROL_PLANE_LABEL, names.MASTER_LABEL):
        return f"{node.name} is a control-plane node: alerts only"
    return f"{node.name} is protected ({sel}): alerts only"


def protected(proposals: Sequence[Proposal], ctx: Context) -> list[Proposal]:
    out = []
    for p in proposals:
        node = ctx.view.nodes.get(p.node)
        why = protected_reason(node, guards=ctx.rules.guards) if node and p.mutating and not p.held else ""
        out.append(_hold(p, guard="protected", detail=why) if why else p)
    return out


def storm(proposals: Sequence[Proposal], ctx: Context) -> list[Proposal]:
    if not ctx.storm.up:
        return list(proposals)
    return [
        _hold(p, guard="storm", detail=ctx.storm.detail)
        if p.action.verb in POD_REMOVING and not p.held
        else p
        for p in proposals
    ]


def remediation_times(node: Node) -> list[datetime] | None:
    """The node's `healer.io/remediations` times; None when the annotation is unreadable."""
    raw = node.annotations.get(names.REMEDIATIONS)
    if not raw:
        return []
    try:
        values = json.loads(raw)
        if not isinstance(values, list):
            return None
        return [datetime.fromisoformat(v) for v in values]
    except (ValueError, TypeError):
        return None


def budget_left(node: Node, *, guard: schema.BudgetGuard, now: datetime) -> tuple[int, str]:
    """(remediations left in the window, why none are left)."""
    times = remediation_times(node)
    if times is None:
        return 0, f"{names.REMEDIATIONS} on {node.name} is unreadable; healer will not count on it"
    recent = [t for t in times if now - t <= guard.window and (t.tzinfo is not None)]
    left = guard.max - len(recent)
    if left > 0:
        return left, ""
    window = schema.format_duration(guard.window)
    return (
        0,
        f"{node.name} was remediated {len(recent)} times in {window} (budget {guard.max}): over to a human",
    )


def budget(proposals: Sequence[Proposal], ctx: Context) -> list[Proposal]:
    """A node out of budget gets no new quarantine (cordon, taint); pods of a node healer already
    cordoned are still released or evicted: that finishes the remediation the cordon counted."""
    out = []
    for p in proposals:
        node = ctx.view.nodes.get(p.node)
        if p.held or not p.mutating or p.rule is None or not p.rule.remediates or node is None:
            out.append(p)
            continue
        if node.cordoned_by_healer and not isinstance(p.action, actions.Cordon | actions.AddTaint):
            out.append(p)
            continue
        left, why = budget_left(node, guard=ctx.rules.guards.budget, now=ctx.now)
        out.append(_hold(p, guard="budget", detail=why) if left <= 0 else p)
    return out


def cooldown(proposals: Sequence[Proposal], ctx: Context) -> list[Proposal]:
    out = []
    for p in proposals:
        last = ctx.state.last_done(p.action) if p.mutating and not p.held and p.rule else None
        if last is not None and p.rule is not None and ctx.now - last < p.rule.cooldown:
            left = p.rule.cooldown - (ctx.now - last)
            out.append(
                _hold(
                    p,
                    guard="cooldown",
                    detail=f"done {matching.ago(ctx.now - last)} ago; again in {matching.ago(left)}",
                )
            )
        else:
            out.append(p)
    return out


def limit(proposals: Sequence[Proposal], ctx: Context) -> list[Proposal]:
    counts: dict[str, int] = {}
    out = []
    for p in proposals:
        cap = p.rule.limits.max_actions if p.rule else None
        if cap is None or p.held or not p.mutating or p.rule is None:
            out.append(p)
            continue
        counts[p.rule.name] = counts.get(p.rule.name, 0) + 1
        if counts[p.rule.name] > cap:
            out.append(_hold(p, guard="limit", detail=f"{p.rule.name} plans at most {cap} actions at a time"))
        else:
            out.append(p)
    return out


CHAIN: tuple[Guard, ...] = (protected, storm, budget, cooldown, limit)


def apply(proposals: Sequence[Proposal], ctx: Context) -> list[Proposal]:
    out = list(proposals)
    for guard in CHAIN:
        out = guard(out, ctx)
    return out
