"""Re-planning after the plan was carried out yields nothing new: no second cordon, no delete
of a pod already gone, no second message about an incident nothing new happened in."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from healer.engine.state import EngineState
from healer.model import actions, names
from healer.model.view import ObjectRef
from healer.snapshot import load
from tests.unit.builders import NOW, REPO, applied, apply, node, notes, plan, pod, rows, view

CP = node("tethys", labels={names.CONTROL_PLANE_LABEL: "true"})


def test_oceanid_after_its_plan_is_applied_plans_nothing_new() -> None:
    v = load(REPO / "examples" / "oceanid.yaml")
    first = plan(v)
    assert rows(first)
    state = EngineState().after(outcomes=applied(first), now=NOW)
    after = apply(v, first)
    second = plan(after, state=state, now=NOW + timedelta(seconds=5))
    assert second.actions == ()
    # what could not be released stays held, for the same reasons
    assert {(h.action.target.key, h.guard) for h in second.held} == {
        (h.action.target.key, h.guard) for h in first.held
    }


def test_without_memory_a_finished_remediation_is_neither_redone_nor_retold() -> None:
    """A new leader (empty state) reads healer's progress from the cluster itself."""
    v = view(CP, node("styx", ready="Unknown", for_s=600), node("calypso"), pods=(pod("web", "styx"),))
    first = plan(v)
    second = plan(apply(v, first))
    assert rows(second) == set()
    assert [n.incident for n in notes(second)] == []  # nothing releasable left and nothing held


def test_a_failed_notify_is_told_again() -> None:
    v = view(
        CP,
        node("styx", ready="Unknown", for_s=600),
        node("calypso"),
        pods=(pod("sts-0", "styx", owner="StatefulSet"),),
    )
    first = plan(v)
    failed = EngineState().after(outcomes=applied(first, status=actions.OutcomeStatus.FAILED), now=NOW)
    assert notes(plan(apply(v, first), state=failed))


def test_something_new_in_an_open_incident_is_an_update() -> None:
    v = view(
        CP,
        node("styx", ready="Unknown", for_s=600),
        node("calypso"),
        pods=(pod("sts-0", "styx", owner="StatefulSet"),),
    )
    first = plan(v)
    state = EngineState().after(outcomes=applied(first), now=NOW)
    v2 = apply(v, first)
    fenced = {**v2.nodes["styx"].annotations, names.FENCED: "true"}
    v3 = view(
        replace(v2.nodes["styx"], annotations=fenced), CP, node("calypso"), pods=tuple(v2.pods.values())
    )
    third = plan(v3, state=state)
    assert rows(third) == {("force-delete", "apps/sts-0")}
    (note,) = notes(third)
    assert note.stage is actions.Stage.UPDATED


def test_recovery_after_an_opened_incident_resolves_once() -> None:
    down = view(CP, node("styx", ready="Unknown", for_s=600), node("calypso"))
    first = plan(down)
    state = EngineState().after(outcomes=applied(first), now=NOW)
    cordoned = apply(down, first)
    back = view(
        CP,
        node(
            "styx",
            ready="True",
            for_s=120,
            unschedulable=True,
            annotations=dict(cordoned.nodes["styx"].annotations),
        ),
        node("calypso"),
    )
    recovery = plan(back, state=state)
    assert rows(recovery) == {("uncordon", "styx")}
    (resolved,) = notes(recovery)
    assert resolved.stage is actions.Stage.RESOLVED
    state2 = state.after(outcomes=applied(recovery), now=NOW)
    assert plan(apply(back, recovery), state=state2).actions == ()


def test_engine_state_forgets_old_cooldowns() -> None:
    v = view(CP, node("styx", ready="Unknown", for_s=600), node("calypso"))
    state = EngineState().after(outcomes=applied(plan(v)), now=NOW)
    assert state.done
    assert not state.after(outcomes=[], now=NOW + timedelta(days=8)).done


def test_engine_state_forgets_resolved_incidents_after_a_week() -> None:
    note = actions.Notify(
        target=ObjectRef(kind="Node", name="styx"),
        rule="node-ready-again",
        reason="back",
        incident="node-not-ready/styx",
        title="back",
        stage=actions.Stage.RESOLVED,
    )
    state = EngineState().after(
        outcomes=[actions.Outcome(action=note, status=actions.OutcomeStatus.SKIPPED)], now=NOW
    )
    assert "node-not-ready/styx" in state.told
    assert "node-not-ready/styx" in state.after(outcomes=[], now=NOW + timedelta(days=6)).told
    assert "node-not-ready/styx" not in state.after(outcomes=[], now=NOW + timedelta(days=8)).told
