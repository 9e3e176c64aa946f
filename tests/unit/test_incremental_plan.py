"""The leader's incremental plan decides what a full plan decides (hypothesis, generated clusters):

- planning only the touched nodes yields exactly the full plan's actions and holds of the
  per-node rules about those nodes (the cluster-wide rules are left to full plans);
- what a full plan decides about an untouched node does not depend on changes to the touched
  ones, so the next full plan (the tick) still holds everything an incremental plan skipped;
- while the storm guard is up or its incident is open, a plan with `touched` is a full plan.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from healer.engine import planning, story
from healer.engine.state import EngineState, Told
from healer.model import actions
from healer.model.view import ClusterView, Pod
from healer.rules import schema
from tests.unit.builders import NOW, RULES, node, pod, view
from tests.unit.test_guard_properties import SETTINGS, clusters


def _per_node_cleanup(rules: schema.RuleSet) -> schema.RuleSet:
    """The shipped rules with the evicted-pod clean-up made per node (its own incident per
    node, no limit), so a per-node Pod rule is planned incrementally too."""
    changed = [
        r.model_copy(update={"incident": "cleanup/{node}", "limits": schema.Limits()})
        if r.name == "evicted-cleanup"
        else r
        for r in rules.rules
    ]
    return rules.model_copy(update={"rules": changed})


PER_NODE = _per_node_cleanup(RULES)


def _full(v: ClusterView, *, state: EngineState, rules: schema.RuleSet = RULES) -> actions.Plan:
    return planning.plan(view=v, rules=rules, state=state, now=NOW, scope="cluster")


def _incremental(
    v: ClusterView, *, state: EngineState, touched: frozenset[str], rules: schema.RuleSet = RULES
) -> actions.Plan:
    return planning.plan(view=v, rules=rules, state=state, now=NOW, scope="cluster", touched=touched)


def _local_rules(rules: schema.RuleSet = RULES) -> frozenset[str]:
    return frozenset(r.name for r in rules.rules if planning.is_local(r))


def _node_about(a: actions.Action, v: ClusterView) -> str | None:
    """The node an action is about: its target Node, or the node of its target Pod."""
    if a.target.kind == "Node":
        return a.target.name
    p = v.pods.get((a.target.namespace, a.target.name))
    return p.node_name if p else None


def _restricted(
    p: actions.Plan, v: ClusterView, *, nodes: frozenset[str], rules: schema.RuleSet
) -> actions.Plan:
    """The per-node rules' actions and holds about `nodes`."""
    local = _local_rules(rules)

    def within(a: actions.Action) -> bool:
        return a.rule in local and _node_about(a, v) in nodes

    return actions.Plan(
        actions=tuple(a for a in p.actions if within(a)),
        held=tuple(h for h in p.held if within(h.action)),
    )


@st.composite
def states(draw: st.DrawFn) -> EngineState:
    """No memory, or a storm told (open or resolved), or a node incident told as opened."""
    told: dict[str, Told] = {}
    storm = draw(st.sampled_from([None, actions.Stage.OPENED, actions.Stage.RESOLVED]))
    if storm is not None:
        told[story.STORM_INCIDENT] = Told(stage=storm, at=NOW - timedelta(minutes=5))
    if draw(st.booleans()):
        told["node-not-ready/n0"] = Told(stage=actions.Stage.OPENED, at=NOW - timedelta(minutes=5))
    return EngineState(told=told)


@SETTINGS
@given(clusters(), st.data(), states(), st.sampled_from([RULES, PER_NODE]))
def test_incremental_plan_is_the_full_plan_about_the_touched_nodes(
    v: ClusterView, data: st.DataObject, state: EngineState, rules: schema.RuleSet
) -> None:
    touched = frozenset(data.draw(st.sets(st.sampled_from(sorted(v.nodes)))))
    full = _full(v, state=state, rules=rules)
    inc = _incremental(v, state=state, touched=touched, rules=rules)
    if planning.incremental(view=v, rules=rules, state=state):
        assert inc == _restricted(full, v, nodes=touched, rules=rules)
    else:
        assert inc == full


@SETTINGS
@given(clusters(), clusters(), st.data())
def test_changes_to_touched_nodes_change_no_decision_about_the_others(
    before: ClusterView, other: ClusterView, data: st.DataObject
) -> None:
    """`after` is `before` with the touched nodes (and their pods) replaced: the full plan of
    `after` decides about every untouched node what the full plan of `before` did, so skipping
    them between ticks drops nothing the next full plan would not decide the same way."""
    touched = frozenset(data.draw(st.sets(st.sampled_from(sorted(before.nodes)))))
    nodes = {
        name: (other.nodes[name] if name in touched and name in other.nodes else n)
        for name, n in before.nodes.items()
    }
    pods: list[Pod] = [p for p in before.pods.values() if p.node_name not in touched]
    pods += [replace(p, name=f"q-{p.name}") for p in other.pods.values() if p.node_name in touched]
    after = ClusterView.of(
        nodes=list(nodes.values()),
        pods=pods,
        pvs=list(before.pvs.values()),
        pvcs=list(before.pvcs.values()),
        synced=before.synced,
    )
    state = EngineState()
    rules_ok = all(planning.incremental(view=x, rules=RULES, state=state) for x in (before, after))
    if not rules_ok:
        return  # the storm guard moved: the plan is full anyway (see the test above)
    untouched = frozenset(before.nodes) - touched
    assert _restricted(_full(after, state=state), after, nodes=untouched, rules=RULES) == _restricted(
        _full(before, state=state), before, nodes=untouched, rules=RULES
    )


def test_a_storm_makes_every_plan_full() -> None:
    """With the storm guard up, `touched` is ignored: its alert covers what it holds everywhere."""
    v = view(
        node("a", ready="False", for_s=600),
        node("b", ready="False", for_s=600),
        node("c"),
        pods=(pod("x", "a", owner="ReplicaSet"), pod("y", "b", owner="ReplicaSet")),
    )
    assert not planning.incremental(view=v, rules=RULES, state=EngineState())
    full = _full(v, state=EngineState())
    assert [h for h in full.held if h.guard == "storm"]
    assert _incremental(v, state=EngineState(), touched=frozenset({"c"})) == full


def test_a_lifted_storm_still_open_makes_the_plan_full() -> None:
    v = view(
        node("a", ready="False", for_s=600),
        node("b"),
        node("c"),
        pods=(pod("x", "a", owner="ReplicaSet"),),
    )
    lifted = EngineState(told={story.STORM_INCIDENT: Told(stage=actions.Stage.OPENED, at=NOW)})
    full = _full(v, state=lifted)
    assert [a.target.name for a in full.actions if a.verb == "force-delete"] == ["x"]
    assert _incremental(v, state=lifted, touched=frozenset({"c"})) == full


def test_which_shipped_rules_are_per_node() -> None:
    """Per-node incidents plan per node; the evicted-pod clean-up (one incident, a limit of 200
    per plan) is planned over the whole cluster every time."""
    assert _local_rules() >= {"node-not-ready", "node-not-ready-release", "node-ready-again"}
    cleanup = next(r for r in RULES.rules if r.name == "evicted-cleanup")
    assert not planning.is_local(cleanup)
    assert not planning.is_local(cleanup.model_copy(update={"incident": "cleanup/{node}"}))
    assert "evicted-cleanup" in _local_rules(PER_NODE)


def test_cluster_wide_rules_are_left_to_full_plans() -> None:
    """An old Evicted pod on a touched node: the clean-up (one incident, a limit across the
    cluster) is decided by the next full plan, not by the incremental one."""
    v = view(
        node("a"),
        node("b", ready="False", for_s=600),
        node("c"),
        pods=(
            pod("old", "a", phase="Failed", reason="Evicted", finished_s=7200, terminating=False),
            pod("web", "b", owner="ReplicaSet"),
        ),
    )
    full = _full(v, state=EngineState())
    assert {(a.verb, a.target.name) for a in full.actions if a.verb != "notify"} == {
        ("delete", "old"),
        ("cordon", "b"),
        ("force-delete", "web"),
    }
    inc = _incremental(v, state=EngineState(), touched=frozenset({"a", "b"}))
    assert {(a.verb, a.target.name) for a in inc.actions if a.verb != "notify"} == {
        ("cordon", "b"),
        ("force-delete", "web"),
    }
