"""GPU condition rules (taint + cordon + evict for hardware classes, alert for unknown, nothing
for application XIDs, recovery) and the Evicted-pod clean-up with its one summary message."""

from __future__ import annotations

import pytest

from healer.engine.state import EngineState
from healer.model import actions, names
from tests.unit.builders import (
    NOW,
    RULES,
    applied,
    apply,
    cordoned_by,
    held,
    node,
    notes,
    plan,
    pod,
    rows,
    view,
)

CP = node("tethys", labels={names.CONTROL_PLANE_LABEL: "true"})
TAINT = ("taint", "calypso")
CORDON = ("cordon", "calypso")
EVICT = ("evict", "apps/trainer")


def _calypso(reason: str, message: str = "GPU 0 GPU-5f2c uuid", **kw: object) -> object:
    return node("calypso", gpus=1, gpu=("False", reason, message), **kw)  # type: ignore[arg-type]


def _spare() -> object:
    return node("spare", gpus=1)


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        ("Xid79", "", {TAINT, CORDON, EVICT}),  # fallen off the bus: reboot class
        ("Xid48", "", {TAINT, CORDON, EVICT}),  # double-bit ECC: reset class
        ("EccDbe", "", {TAINT, CORDON, EVICT}),  # signal ecc-dbe: reset
        ("RowRemapFailure", "", {TAINT, CORDON, EVICT}),  # rma
        ("GpuLost", "", {TAINT, CORDON, EVICT}),  # reboot
        ("Xid13", "", set()),  # application: the agent logs it, no rule acts
        ("Xid63", "", set()),  # ignore
        ("Xid13", "GPU 0 class=reset (repeated 3 times)", {TAINT, CORDON, EVICT}),  # the agent escalated
        ("Xid999", "", set()),  # unknown: an alert, nothing else
    ],
)
def test_gpu_fault_classes(reason: str, message: str, expected: set[tuple[str, str]]) -> None:
    v = view(
        CP, _calypso(reason, message), _spare(), pods=(pod("trainer", "calypso", terminating=False, gpus=1),)
    )  # type: ignore[arg-type]
    p = plan(v)
    assert rows(p) == expected
    if reason == "Xid999":
        (note,) = notes(p)
        assert note.incident == "gpu/calypso"
        assert dict(note.facts)["GPU class"] == "unknown"


def test_gpu_taint_is_healers_and_no_schedule() -> None:
    v = view(CP, _calypso("Xid79"), _spare())  # type: ignore[arg-type]
    (taint,) = [a for a in plan(v).actions if isinstance(a, actions.AddTaint)]
    assert (taint.key, taint.effect) == (names.GPU_UNHEALTHY_TAINT, "NoSchedule")
    assert taint.incident == "gpu/calypso"


def test_gpu_pods_only_are_evicted_never_force_deleted() -> None:
    pods = (
        pod("trainer", "calypso", terminating=False, gpus=1),
        pod("web", "calypso", terminating=False),
        pod("plugin", "calypso", owner="DaemonSet", terminating=False, gpus=1),
        pod("notebook", "calypso", owner=None, terminating=False, gpus=1),
    )
    p = plan(view(CP, _calypso("Xid79"), _spare(), pods=pods))  # type: ignore[arg-type]
    assert not any(a.verb in ("force-delete", "delete") for a in p.actions)
    assert ("evict", "apps/trainer") in rows(p)
    assert ("evict", "apps/web") not in rows(p)
    assert held(p)[("evict", "apps/plugin")] == "eligibility"
    assert held(p)[("evict", "apps/notebook")] == "eligibility"


def test_the_last_gpu_node_keeps_its_pods() -> None:
    p = plan(view(CP, _calypso("Xid79"), pods=(pod("trainer", "calypso", terminating=False, gpus=1),)))  # type: ignore[arg-type]
    assert rows(p) == {TAINT, CORDON}
    assert held(p) == {EVICT: "last-gpu-node"}


def test_last_gpu_node_evict_policy_evicts_anyway() -> None:
    rules = RULES.model_copy(update={"gpu": RULES.gpu.model_copy(update={"last_gpu_node": "evict"})})
    p = plan(
        view(CP, _calypso("Xid79"), pods=(pod("trainer", "calypso", terminating=False, gpus=1),)), rules=rules
    )  # type: ignore[arg-type]
    assert EVICT in rows(p)


def test_gpu_recovery_lifts_healers_quarantine_and_resolves() -> None:
    calypso = node(
        "calypso",
        gpus=1,
        gpu=("True", "GpuHealthy", "GPU 0 healthy"),
        gpu_for_s=120,
        unschedulable=True,
        taints=(f"{names.GPU_UNHEALTHY_TAINT}:NoSchedule",),
        annotations=cordoned_by("gpu-hardware-fault"),
    )
    p = plan(view(CP, calypso))
    assert rows(p) == {("untaint", "calypso"), ("uncordon", "calypso")}
    (note,) = notes(p)
    assert (note.incident, note.stage) == ("gpu/calypso", actions.Stage.RESOLVED)
    order = [a.verb for a in p.actions]
    assert order.index("untaint") < order.index("uncordon") < order.index("notify")


def test_gpu_rules_are_node_scoped() -> None:
    v = view(CP, _calypso("Xid79"), _spare())  # type: ignore[arg-type]
    assert plan(v, scope="cluster").actions == ()
    assert TAINT in rows(plan(v, scope="node", node_name="calypso"))


# --- Evicted pods -----------------------------------------------------------------------------


def _evicted(name: str, node_name: str, finished_s: float, namespace: str = "apps") -> object:
    return pod(
        name,
        node_name,
        namespace=namespace,
        terminating=False,
        phase="Failed",
        reason="Evicted",
        message="The node was low on resource: ephemeral-storage. Threshold quantity: 1, available: 0.",
        finished_s=finished_s,
    )


def test_evicted_pods_older_than_an_hour_are_deleted_with_one_summary() -> None:
    pods = (
        _evicted("old-1", "calypso", 7200),
        _evicted("old-2", "calypso", 3700, namespace="flux-system"),
        _evicted("old-3", "styx", 3 * 3600),
        _evicted("fresh", "calypso", 1800),
        pod(
            "failed-not-evicted",
            "calypso",
            terminating=False,
            phase="Failed",
            reason="Error",
            finished_s=7200,
        ),
    )
    p = plan(view(CP, node("calypso"), node("styx"), pods=pods))  # type: ignore[arg-type]
    assert rows(p) == {("delete", "apps/old-1"), ("delete", "flux-system/old-2"), ("delete", "apps/old-3")}
    (note,) = notes(p)
    assert note.incident == "evicted-cleanup"
    assert note.target.kind == "Cluster"  # pods on two nodes
    facts = dict(note.facts)
    assert facts["Deleted"] == "3 Evicted pods finished more than 1h ago"
    assert facts["Per namespace"] == "apps: 2, flux-system: 1"
    pressure = [text for label, text in note.facts if label == "Node pressure"]
    assert [t.split(":")[0] for t in pressure] == ["calypso", "styx"]
    assert "ephemeral-storage" in pressure[0]


def test_evicted_pods_on_one_node_name_that_node() -> None:
    p = plan(view(CP, node("calypso"), pods=(_evicted("old-1", "calypso", 7200),)))  # type: ignore[arg-type]
    (note,) = notes(p)
    assert (note.target.kind, note.target.name) == ("Node", "calypso")


def test_each_clean_up_is_its_own_summary() -> None:
    first_round = view(CP, node("calypso"), pods=(_evicted("old-1", "calypso", 7200),))  # type: ignore[arg-type]
    first = plan(first_round)
    state = EngineState().after(outcomes=applied(first), now=NOW)
    assert notes(plan(apply(first_round, first), state=state)) == []
    second_round = view(CP, node("calypso"), pods=(_evicted("old-2", "calypso", 7200),))  # type: ignore[arg-type]
    (note,) = notes(plan(second_round, state=state))
    assert note.stage is actions.Stage.OPENED
    assert dict(note.facts)["Deleted"].startswith("1 Evicted pod")
