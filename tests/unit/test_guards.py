"""Guards: storm, protected nodes, per-node budget, cooldown, per-rule limit. Each held action
names the guard that stopped it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from healer.engine import planning
from healer.engine.state import EngineState
from healer.model import actions, names
from healer.model.view import Node
from healer.rules import schema
from tests.unit.builders import (
    NOW,
    RULES,
    cordoned_by,
    held,
    node,
    notes,
    plan,
    pod,
    remediations,
    rows,
    view,
)

CP = node("tethys", labels={names.CONTROL_PLANE_LABEL: "true"})
POD_VERBS = {"evict", "delete", "force-delete"}


def _down(name: str, **kw: object) -> Node:
    return node(name, ready="Unknown", for_s=3600, **kw)  # type: ignore[arg-type]


# --- storm ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("healthy", "down", "storm"),
    [
        (2, 1, False),  # Oceanid: 1 of 3 down, limit max(1, 1) = 1
        (1, 2, True),  # 2 of 3
        (0, 2, True),  # 2 of 2
        (1, 1, False),  # 1 of 2: limit max(1, 0) = 1
        (5, 3, True),  # 3 of 8: limit max(1, 2) = 2
        (6, 3, False),  # 3 of 9: limit 3
        (5, 4, True),  # 4 of 9
    ],
)
def test_storm_guard_threshold_is_max_1_or_a_third(healthy: int, down: int, storm: bool) -> None:
    nodes = [node(f"ok-{i}") for i in range(healthy)] + [_down(f"down-{i}") for i in range(down)]
    pods = tuple(pod(f"web-{i}", f"down-{i}") for i in range(down))
    p = plan(view(*nodes, pods=pods))
    removing = [a for a in p.actions if a.verb in POD_VERBS]
    storm_held = [h for h in p.held if h.guard == "storm"]
    assert bool(storm_held) is storm
    assert bool(removing) is not storm
    storm_notes = [n for n in notes(p) if n.incident == "storm"]
    assert len(storm_notes) == (1 if storm else 0)


def test_storm_still_cordons_but_deletes_and_evicts_nothing() -> None:
    evicted = pod("old", "ok-0", terminating=False, phase="Failed", reason="Evicted", finished_s=7200)
    v = view(node("ok-0"), _down("a"), _down("b"), pods=(pod("web", "a"), evicted))
    p = plan(v)
    assert {("cordon", "a"), ("cordon", "b")} <= rows(p)
    assert not [a for a in p.actions if a.verb in POD_VERBS]
    assert held(p)[("delete", "apps/old")] == "storm"
    assert held(p)[("force-delete", "apps/web")] == "storm"
    (storm_note,) = [n for n in notes(p) if n.incident == "storm"]
    assert "2 of 3 nodes unhealthy" in dict(storm_note.facts)["Why"]


def test_a_stale_view_raises_the_storm_guard() -> None:
    p = plan(view(CP, _down("styx"), node("calypso"), pods=(pod("web", "styx"),), synced=False))
    assert held(p)[("force-delete", "apps/web")] == "storm"
    assert "stale" in next(h.detail for h in p.held if h.guard == "storm")


def test_storm_guard_lifting_is_announced_once_told() -> None:
    v = view(node("ok"), _down("a"), _down("b"))
    first = plan(v)
    told = EngineState().after(
        outcomes=[actions.Outcome(action=n, status=actions.OutcomeStatus.APPLIED) for n in notes(first)],
        now=NOW,
    )
    again = plan(v, state=told)
    assert not [n for n in notes(again) if n.incident == "storm"]  # nothing new: not re-announced
    calm = plan(view(node("ok"), node("a"), node("b")), state=told)
    (lifted,) = [n for n in notes(calm) if n.incident == "storm"]
    assert lifted.stage is actions.Stage.RESOLVED


# --- protected --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        {names.CONTROL_PLANE_LABEL: "true"},
        {names.MASTER_LABEL: "true"},
        {names.PROTECTED: "true"},
    ],
)
def test_protected_and_control_plane_nodes_get_alerts_only(labels: dict[str, str]) -> None:
    tethys = _down("tethys", labels=labels)
    p = plan(view(tethys, node("styx"), node("calypso"), pods=(pod("coredns", "tethys"),)))
    assert rows(p) == set()
    assert held(p) == {("cordon", "tethys"): "protected", ("force-delete", "apps/coredns"): "protected"}
    (note,) = notes(p)
    facts = dict(note.facts)
    assert "alerts only" in facts["Held (protected)"]
    assert "kubectl cordon tethys" in facts["By hand"]


def test_protected_false_label_is_not_protected() -> None:
    p = plan(view(CP, _down("styx", labels={names.PROTECTED: "false"}), node("calypso")))
    assert ("cordon", "styx") in rows(p)


def test_protected_selectors_are_configurable() -> None:
    rules = RULES.model_copy(
        update={"guards": schema.Guards(protected=schema.ProtectedGuard(selectors=("tier=db",)))}
    )
    p = plan(view(CP, _down("styx", labels={"tier": "db"}), node("calypso")), rules=rules)
    assert held(p)[("cordon", "styx")] == "protected"
    # the control-plane label is no longer a selector in this policy
    p2 = plan(
        view(_down("tethys", labels={names.CONTROL_PLANE_LABEL: "true"}), node("a"), node("b")), rules=rules
    )
    assert ("cordon", "tethys") in rows(p2)


# --- budget -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "blocked"),
    [
        ((), False),
        ((3600, 7200), False),
        ((3600, 7200, 10800), True),
        ((3600, 7200, 90000), False),  # one is older than 24 h
        ((60, 120, 180, 240), True),
    ],
)
def test_budget_is_3_remediations_per_node_per_24h(times: tuple[float, ...], blocked: bool) -> None:
    styx = _down("styx", annotations=remediations(*times))
    p = plan(view(CP, styx, node("calypso"), pods=(pod("web", "styx"),)))
    if blocked:
        assert held(p) == {("cordon", "styx"): "budget", ("force-delete", "apps/web"): "budget"}
        (note,) = notes(p)
        facts = dict(note.facts)
        assert "over to a human" in facts["Held (budget)"]
        assert "kubectl cordon styx" in facts["By hand"]
        assert "kubectl delete pod -n apps web --grace-period=0 --force" in facts["By hand"]
        assert f"kubectl annotate node styx {names.REMEDIATIONS}-" in facts["Budget"]
    else:
        assert rows(p) == {("cordon", "styx"), ("force-delete", "apps/web")}


def test_a_remediation_in_progress_finishes_within_budget() -> None:
    """The third cordon was healer's: releasing that node's pods is the same remediation."""
    styx = _down(
        "styx",
        annotations={**remediations(60, 120, 180), **cordoned_by("node-not-ready")},
        unschedulable=True,
    )
    p = plan(view(CP, styx, node("calypso"), pods=(pod("web", "styx"),)))
    assert rows(p) == {("force-delete", "apps/web")}


def test_an_unreadable_budget_annotation_blocks_remediation() -> None:
    styx = _down("styx", annotations={names.REMEDIATIONS: "not json"})
    p = plan(view(CP, styx, node("calypso")))
    assert held(p)[("cordon", "styx")] == "budget"
    assert "unreadable" in p.held[0].detail


def test_undoing_is_never_held_by_the_budget() -> None:
    styx = node(
        "styx",
        for_s=600,
        annotations={**remediations(60, 120, 180), **cordoned_by("node-not-ready")},
        unschedulable=True,
    )
    p = plan(view(CP, styx, node("calypso")))
    assert ("uncordon", "styx") in rows(p)


# --- cooldown and limit -----------------------------------------------------------------------


def test_cooldown_holds_a_repeat_of_the_same_action_on_the_same_object() -> None:
    v = view(CP, _down("styx"), node("calypso"))
    first = plan(v)
    (cordon,) = [a for a in first.actions if a.verb == "cordon"]
    state = EngineState().after(
        outcomes=[actions.Outcome(action=cordon, status=actions.OutcomeStatus.APPLIED)], now=NOW
    )
    # the view has not caught up yet (styx still schedulable): held, not repeated
    soon = plan(v, state=state, now=NOW + timedelta(minutes=1))
    assert held(soon) == {("cordon", "styx"): "cooldown"}
    later = plan(v, state=state, now=NOW + timedelta(minutes=11))
    assert ("cordon", "styx") in rows(later)


def test_cooldown_held_actions_are_not_announced_again() -> None:
    v = view(CP, _down("styx"), node("calypso"))
    first = plan(v)
    state = EngineState().after(
        outcomes=[actions.Outcome(action=a, status=actions.OutcomeStatus.APPLIED) for a in first.actions],
        now=NOW,
    )
    assert notes(plan(v, state=state, now=NOW + timedelta(seconds=5))) == []


def test_limit_holds_what_exceeds_a_rules_max_actions() -> None:
    evicted = tuple(
        pod(f"old-{i}", "calypso", terminating=False, phase="Failed", reason="Evicted", finished_s=7200)
        for i in range(5)
    )
    rule = RULES.rule("evicted-cleanup").model_copy(update={"limits": schema.Limits(max_actions=2)})
    rules = RULES.model_copy(update={"rules": (rule,)})
    p = plan(view(CP, node("calypso"), pods=evicted), rules=rules)
    assert len([a for a in p.actions if a.verb == "delete"]) == 2
    assert sorted(held(p).values()) == ["limit"] * 3


def test_guard_chain_order_names_the_first_guard() -> None:
    """A protected node in a storm: `protected` is reported, not `storm`."""
    tethys = _down("tethys", labels={names.CONTROL_PLANE_LABEL: "true"})
    p = plan(view(tethys, _down("styx"), node("calypso"), pods=(pod("dns", "tethys"),)))
    assert held(p)[("force-delete", "apps/dns")] == "protected"


def test_plans_are_sorted_and_deterministic() -> None:
    v = view(
        CP,
        _down("styx"),
        _down("a"),
        node("b"),
        node("c"),
        node("d"),
        pods=(pod("w1", "styx"), pod("w2", "a")),
    )
    p1, p2 = plan(v), plan(v)
    assert p1 == p2
    keys = [planning.sort_key(a) for a in p1.actions]
    assert keys == sorted(keys)
