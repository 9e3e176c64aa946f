"""gpu_health by tables: signals + policy + now in, faults, condition and actions out (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healer.engine import gpu_health
from healer.engine.gpu_health import GpuClass
from healer.model import names
from healer.model.actions import Delete, Outcome, OutcomeStatus, SetCondition
from healer.model.events import GpuSignal, GpuSignalKind
from healer.model.view import Condition, ConditionStatus, Node, Owner, Pod
from healer.rules import schema

T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
NODE = "calypso"
GPU0 = gpu_health.Gpu(index=0, uuid="GPU-aaaa")
GPU1 = gpu_health.Gpu(index=1, uuid="GPU-bbbb")
POLICY = gpu_health.DEFAULT_POLICY


def sig(kind: GpuSignalKind, *, at: datetime = T0, gpu: gpu_health.Gpu = GPU0, **kw: object) -> GpuSignal:
    return GpuSignal(node=NODE, gpu_index=gpu.index, gpu_uuid=gpu.uuid, kind=kind, at=at, **kw)  # type: ignore[arg-type]


def xid(n: int, *, at: datetime = T0, gpu: gpu_health.Gpu = GPU0) -> GpuSignal:
    return sig(GpuSignalKind.XID, xid=n, at=at, gpu=gpu)


def healthy_start() -> gpu_health.GpuHealth:
    """A started agent whose node already says GPUHealthy=True."""
    state = gpu_health.start(node=NODE, gpus=[GPU0, GPU1], now=T0)
    first = gpu_health.step(state=state, signals=(), policy=POLICY, now=T0)
    assert [a.status for a in first.actions if isinstance(a, SetCondition)] == ["True"]
    return first.state


def conditions(step: gpu_health.Step) -> list[SetCondition]:
    return [a for a in step.actions if isinstance(a, SetCondition)]


def test_default_policy_is_the_rules_default() -> None:
    assert POLICY.xid_classes[79] is GpuClass.REBOOT
    assert POLICY.xid_classes[13] is GpuClass.APPLICATION
    assert POLICY.signal_classes[GpuSignalKind.ROW_REMAP_FAILURE] is GpuClass.RMA
    assert POLICY.healthy_for == timedelta(minutes=5)
    assert POLICY.repeat.count == 3


@pytest.mark.parametrize(
    ("number", "cls"),
    [
        (48, "reset"),
        (46, "reset"),
        (62, "reset"),
        (95, "reset"),
        (119, "reset"),
        (79, "reboot"),
        (4242, "unknown"),
    ],
)
def test_fault_xid_sets_condition_false_with_reason_and_class(number: int, cls: str) -> None:
    step = gpu_health.step(state=healthy_start(), signals=[xid(number)], policy=POLICY, now=T0)
    (cond,) = conditions(step)
    assert (cond.type, cond.status, cond.cond_reason) == (names.GPU_CONDITION, "False", f"Xid{number}")
    assert cond.target.kind == "Node"
    assert cond.target.name == NODE
    assert f"GPU 0 GPU-aaaa Xid{number} class={cls}" in cond.message
    assert cond.incident == f"gpu/{NODE}"


@pytest.mark.parametrize("number", [13, 31, 43, 45, 68])
def test_one_application_xid_is_only_logged(number: int) -> None:
    step = gpu_health.step(state=healthy_start(), signals=[xid(number)], policy=POLICY, now=T0)
    assert step.actions == ()
    assert step.state.healthy
    assert any(n.event == "gpu application fault" for n in step.notes)


@pytest.mark.parametrize("number", [63, 92, 94])
def test_ignored_xid_changes_nothing(number: int) -> None:
    step = gpu_health.step(state=healthy_start(), signals=[xid(number)], policy=POLICY, now=T0)
    assert step.actions == ()
    assert step.state.healthy


def test_same_application_xid_repeating_within_window_escalates() -> None:
    state = healthy_start()
    for minute in (0, 4):
        step = gpu_health.step(
            state=state,
            signals=[xid(13, at=T0 + timedelta(minutes=minute))],
            policy=POLICY,
            now=T0 + timedelta(minutes=minute),
        )
        assert step.actions == ()
        state = step.state
    third = T0 + timedelta(minutes=8)
    step = gpu_health.step(state=state, signals=[xid(13, at=third)], policy=POLICY, now=third)
    (cond,) = conditions(step)
    assert cond.status == "False"
    assert cond.cond_reason == "Xid13"
    assert "class=reset" in cond.message
    assert "repeated 3 times within 10m" in cond.message


def test_repeats_outside_window_or_on_other_gpu_or_other_xid_do_not_escalate() -> None:
    state = healthy_start()
    signals = [
        xid(13, at=T0),
        xid(13, at=T0 + timedelta(minutes=11)),  # the first fell out of the 10 m window
        xid(13, at=T0 + timedelta(minutes=12), gpu=GPU1),  # other GPU
        xid(31, at=T0 + timedelta(minutes=13)),  # other XID
    ]
    now = T0 + timedelta(minutes=13)
    step = gpu_health.step(state=state, signals=signals, policy=POLICY, now=now)
    assert step.actions == ()
    assert step.state.healthy


@pytest.mark.parametrize(
    ("kind", "reason", "cls"),
    [
        (GpuSignalKind.ECC_DBE, "EccDbe", "reset"),
        (GpuSignalKind.ROW_REMAP_PENDING, "RowRemapPending", "reset"),
        (GpuSignalKind.ROW_REMAP_FAILURE, "RowRemapFailure", "rma"),
        (GpuSignalKind.RETIRED_PAGES_PENDING, "RetiredPagesPending", "reset"),
        (GpuSignalKind.GPU_LOST, "GpuLost", "reboot"),
    ],
)
def test_polled_signals_map_through_signal_classes(kind: GpuSignalKind, reason: str, cls: str) -> None:
    step = gpu_health.step(state=healthy_start(), signals=[sig(kind, value=1)], policy=POLICY, now=T0)
    (cond,) = conditions(step)
    assert cond.status == "False"
    assert cond.cond_reason == reason
    assert f"class={cls}" in cond.message


@pytest.mark.parametrize("kind", [GpuSignalKind.THROTTLE, GpuSignalKind.THERMAL, GpuSignalKind.ECC_SBE])
def test_unclassified_signals_are_logged_only(kind: GpuSignalKind) -> None:
    step = gpu_health.step(state=healthy_start(), signals=[sig(kind, value=1)], policy=POLICY, now=T0)
    assert step.actions == ()
    assert step.state.healthy
    assert [n.event for n in step.notes] == ["gpu signal"]


def test_sbe_storm_escalates_when_policy_classes_sbe_as_application() -> None:
    policy = gpu_health.from_rules(
        schema.GpuPolicy(signal_classes={"ecc-sbe": "application", "ecc-dbe": "reset"})
    )
    storm = [sig(GpuSignalKind.ECC_SBE, value=50, at=T0 + timedelta(seconds=5 * i)) for i in range(3)]
    step = gpu_health.step(
        state=healthy_start(), signals=storm, policy=policy, now=T0 + timedelta(seconds=10)
    )
    (cond,) = conditions(step)
    assert cond.cond_reason == "EccSbe"
    assert "class=reset" in cond.message


def test_worst_fault_names_the_condition_and_comes_first_in_message() -> None:
    step = gpu_health.step(
        state=healthy_start(),
        signals=[xid(48, gpu=GPU0), sig(GpuSignalKind.ROW_REMAP_FAILURE, gpu=GPU1)],
        policy=POLICY,
        now=T0,
    )
    (cond,) = conditions(step)
    assert cond.cond_reason == "RowRemapFailure"
    assert cond.message.index("GPU 1 GPU-bbbb RowRemapFailure class=rma") < cond.message.index(
        "GPU 0 GPU-aaaa"
    )
    assert "RMA" in cond.message  # the human is told what to do


def test_same_fault_again_publishes_nothing_new() -> None:
    state = gpu_health.step(state=healthy_start(), signals=[xid(48)], policy=POLICY, now=T0).state
    again = gpu_health.step(
        state=state,
        signals=[xid(48, at=T0 + timedelta(seconds=1))],
        policy=POLICY,
        now=T0 + timedelta(seconds=1),
    )
    assert again.actions == ()


def test_escalation_within_one_gpu_upgrades_class() -> None:
    state = gpu_health.step(state=healthy_start(), signals=[xid(48)], policy=POLICY, now=T0).state
    step = gpu_health.step(
        state=state,
        signals=[sig(GpuSignalKind.GPU_LOST, at=T0 + timedelta(seconds=1))],
        policy=POLICY,
        now=T0 + timedelta(seconds=1),
    )
    (cond,) = conditions(step)
    assert cond.cond_reason == "GpuLost"
    assert "class=reboot" in cond.message


def _walk(state: gpu_health.GpuHealth, *events: tuple[float, GpuSignal | None]) -> list[gpu_health.Step]:
    """Feed (seconds after T0, signal) pairs one at a time; returns each step."""
    out = []
    for seconds, s in events:
        now = T0 + timedelta(seconds=seconds)
        step = gpu_health.step(state=state, signals=[s] if s else [], policy=POLICY, now=now)
        out.append(step)
        state = step.state
    return out


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_reset_class_recovers_only_after_reset_and_healthy_for() -> None:
    steps = _walk(
        healthy_start(),
        (0, xid(48)),
        (400, sig(GpuSignalKind.HEALTHY, at=at(400))),  # healthy long enough, but no reset seen
        (410, sig(GpuSignalKind.RESET, at=at(410))),
        (420, sig(GpuSignalKind.HEALTHY, at=at(420))),  # 420 s since the fault, reset seen
    )
    assert conditions(steps[0])[0].status == "False"
    assert steps[1].actions == ()
    assert not steps[1].state.healthy
    assert steps[2].actions == ()
    (cond,) = conditions(steps[3])
    assert cond.status == "True"
    assert cond.cond_reason == "GpuHealthy"
    assert "GPU 0 GPU-aaaa" in cond.message
    assert "GPU 1 GPU-bbbb" in cond.message


def test_recovery_waits_healthy_for_after_the_last_bad_signal() -> None:
    steps = _walk(
        healthy_start(),
        (0, sig(GpuSignalKind.GPU_LOST, at=at(0))),
        (5, sig(GpuSignalKind.GPU_LOST, at=at(5))),  # still lost on the next poll
        (10, sig(GpuSignalKind.RESET, at=at(10))),  # answers again
        (200, sig(GpuSignalKind.HEALTHY, at=at(200))),  # 195 s < 300 s
        (306, sig(GpuSignalKind.HEALTHY, at=at(306))),  # 301 s after the last bad signal
    )
    assert steps[3].actions == ()
    assert conditions(steps[4])[0].status == "True"


def test_a_new_fault_after_a_reset_needs_another_reset() -> None:
    steps = _walk(
        healthy_start(),
        (0, xid(48)),
        (10, sig(GpuSignalKind.RESET, at=at(10))),
        (20, xid(48, at=at(20))),
        (400, sig(GpuSignalKind.HEALTHY, at=at(400))),
    )
    assert not steps[-1].state.healthy
    assert steps[-1].actions == ()


def test_reset_before_the_fault_does_not_count() -> None:
    steps = _walk(
        healthy_start(),
        (0, sig(GpuSignalKind.RESET, at=at(0))),
        (1, xid(79, at=at(1))),
        (400, sig(GpuSignalKind.HEALTHY, at=at(400))),
    )
    assert not steps[-1].state.healthy


def test_unknown_xid_clears_after_healthy_for_without_reset() -> None:
    steps = _walk(
        healthy_start(),
        (0, xid(4242)),
        (100, sig(GpuSignalKind.HEALTHY, at=at(100))),
        (301, sig(GpuSignalKind.HEALTHY, at=at(301))),
    )
    assert "class=unknown" in conditions(steps[0])[0].message
    assert steps[1].actions == ()
    assert conditions(steps[2])[0].status == "True"


def _plugin(name: str, *, node: str = NODE, labels: dict[str, str] | None = None) -> Pod:
    return Pod(
        namespace="kube-system",
        name=name,
        uid=f"uid-{name}",
        node_name=node,
        phase="Running",
        labels=labels or {"name": "nvidia-device-plugin-ds"},
        owner=Owner(kind="DaemonSet", name="nvidia-device-plugin-daemonset"),
    )


def _recover(node: Node, pods: list[Pod]) -> gpu_health.Step:
    state = gpu_health.step(state=healthy_start(), signals=[xid(79)], policy=POLICY, now=T0).state
    state = gpu_health.step(
        state=state, signals=[sig(GpuSignalKind.RESET, at=at(5))], policy=POLICY, now=at(5)
    ).state
    return gpu_health.step(
        state=state,
        signals=[sig(GpuSignalKind.HEALTHY, at=at(301))],
        policy=POLICY,
        now=at(301),
        node=node,
        pods=pods,
    )


def test_recovery_restarts_device_plugin_when_allocatable_below_capacity() -> None:
    node = Node(name=NODE, gpu_capacity=1, gpu_allocatable=0)
    pods = [
        _plugin("nvidia-device-plugin-ds-abcde"),
        _plugin("nvidia-device-plugin-ds-other", node="tethys"),
        Pod(namespace="apps", name="triton", node_name=NODE, gpu_request=1),
    ]
    step = _recover(node, pods)
    deletes = [a for a in step.actions if isinstance(a, Delete)]
    assert [(d.target.namespace, d.target.name, d.target.uid) for d in deletes] == [
        ("kube-system", "nvidia-device-plugin-ds-abcde", "uid-nvidia-device-plugin-ds-abcde")
    ]
    assert conditions(step)[0].status == "True"


def test_recovery_leaves_device_plugin_alone_when_capacity_is_whole() -> None:
    step = _recover(
        Node(name=NODE, gpu_capacity=1, gpu_allocatable=1), [_plugin("nvidia-device-plugin-ds-x")]
    )
    assert not [a for a in step.actions if isinstance(a, Delete)]


def test_recovery_without_plugin_pod_warns() -> None:
    step = _recover(Node(name=NODE, gpu_capacity=1, gpu_allocatable=0), [])
    assert not [a for a in step.actions if isinstance(a, Delete)]
    assert any("device plugin" in n.event for n in step.notes)


def test_helm_labelled_plugin_is_found() -> None:
    pod = _plugin("nvidia-device-plugin-xyz", labels={"app.kubernetes.io/name": "nvidia-device-plugin"})
    step = _recover(Node(name=NODE, gpu_capacity=1, gpu_allocatable=0), [pod])
    assert [a.target.name for a in step.actions if isinstance(a, Delete)] == ["nvidia-device-plugin-xyz"]


def test_start_inherits_fault_from_node_condition() -> None:
    published = gpu_health.step(state=healthy_start(), signals=[xid(79)], policy=POLICY, now=T0)
    cond = conditions(published)[0]
    node = Node(
        name=NODE,
        conditions=(
            Condition(
                type=names.GPU_CONDITION,
                status=ConditionStatus.FALSE,
                reason=cond.cond_reason,
                message=cond.message,
                last_transition=T0,
            ),
        ),
    )
    restarted = gpu_health.start(node=NODE, gpus=[GPU0, GPU1], now=at(60), current=node)
    assert [(f.gpu.index, f.cls, f.reason, f.reset_seen) for f in restarted.faults] == [
        (0, "reboot", "Xid79", False)
    ]
    # nothing to publish: the node already says so
    assert gpu_health.step(state=restarted, signals=(), policy=POLICY, now=at(60)).actions == ()
    # without a reset it does not recover
    later = gpu_health.step(
        state=restarted, signals=[sig(GpuSignalKind.HEALTHY, at=at(1000))], policy=POLICY, now=at(1000)
    )
    assert later.actions == ()


def test_start_counts_a_reboot_after_the_fault_as_reset() -> None:
    cond = conditions(gpu_health.step(state=healthy_start(), signals=[xid(79)], policy=POLICY, now=T0))[0]
    node = Node(
        name=NODE,
        conditions=(
            Condition(
                type=names.GPU_CONDITION,
                status=ConditionStatus.FALSE,
                reason=cond.cond_reason,
                message=cond.message,
                last_transition=T0,
            ),
        ),
    )
    state = gpu_health.start(node=NODE, gpus=[GPU0, GPU1], now=at(600), current=node, boot_time=at(500))
    step = gpu_health.step(
        state=state, signals=[sig(GpuSignalKind.HEALTHY, at=at(901))], policy=POLICY, now=at(901)
    )
    assert conditions(step)[0].status == "True"


def test_failed_condition_write_is_asked_again() -> None:
    step = gpu_health.step(state=healthy_start(), signals=[xid(48)], policy=POLICY, now=T0)
    (cond,) = conditions(step)
    state = gpu_health.after(step.state, outcomes=[Outcome(action=cond, status=OutcomeStatus.FAILED)])
    again = gpu_health.step(state=state, signals=(), policy=POLICY, now=at(1))
    assert conditions(again)[0].status == "False"
    ok = gpu_health.after(again.state, outcomes=[Outcome(action=cond, status=OutcomeStatus.APPLIED)])
    assert gpu_health.step(state=ok, signals=(), policy=POLICY, now=at(2)).actions == ()


def test_polling_only_is_said_in_the_healthy_message() -> None:
    state = gpu_health.start(node=NODE, gpus=[GPU0], now=T0, events=False)
    (cond,) = conditions(gpu_health.step(state=state, signals=(), policy=POLICY, now=T0))
    assert "polling only" in cond.message


@pytest.mark.parametrize(("action", "cls"), [(1, "reset"), (2, "reboot"), (4, "reset")])
def test_driver_recovery_action_classifies_itself(action: int, cls: str) -> None:
    step = gpu_health.step(
        state=healthy_start(),
        signals=[sig(GpuSignalKind.RECOVERY_ACTION, value=action)],
        policy=POLICY,
        now=T0,
    )
    (cond,) = conditions(step)
    assert cond.cond_reason == "RecoveryAction"
    assert f"class={cls}" in cond.message


def test_xid_154_defers_to_the_polled_recovery_action() -> None:
    step = gpu_health.step(state=healthy_start(), signals=[xid(154)], policy=POLICY, now=T0)
    assert step.actions == ()
    assert step.state.healthy


def _inherited(message: str, reason: str) -> gpu_health.GpuHealth:
    node = Node(
        name=NODE,
        conditions=(
            Condition(
                type=names.GPU_CONDITION,
                status=ConditionStatus.FALSE,
                reason=reason,
                message=message,
                last_transition=T0,
            ),
        ),
    )
    return gpu_health.start(node=NODE, gpus=[GPU0, GPU1], now=at(60), current=node)


def test_operator_annotation_after_the_fault_counts_as_reset() -> None:
    (cond,) = conditions(gpu_health.step(state=healthy_start(), signals=[xid(48)], policy=POLICY, now=T0))
    assert names.GPU_RESET_AT in cond.message  # the operator is told how
    state = _inherited(cond.message, cond.cond_reason)
    stale = Node(name=NODE, annotations={names.GPU_RESET_AT: (T0 - timedelta(days=1)).isoformat()})
    before = gpu_health.step(
        state=state, signals=[sig(GpuSignalKind.HEALTHY, at=at(900))], policy=POLICY, now=at(900), node=stale
    )
    assert before.actions == ()  # a reset before the fault is no evidence
    acked = Node(name=NODE, annotations={names.GPU_RESET_AT: "2026-11-27T04:10:00Z"})
    after = gpu_health.step(
        state=before.state,
        signals=[sig(GpuSignalKind.HEALTHY, at=at(960))],
        policy=POLICY,
        now=at(960),
        node=acked,
    )
    assert conditions(after)[0].status == "True"


@pytest.mark.parametrize("value", ["yesterday", "2026-11-27T04:10:00"])
def test_unusable_reset_annotation_is_ignored_with_a_warning(value: str) -> None:
    (cond,) = conditions(gpu_health.step(state=healthy_start(), signals=[xid(48)], policy=POLICY, now=T0))
    state = _inherited(cond.message, cond.cond_reason)
    node = Node(name=NODE, annotations={names.GPU_RESET_AT: value})
    step = gpu_health.step(
        state=state, signals=[sig(GpuSignalKind.HEALTHY, at=at(900))], policy=POLICY, now=at(900), node=node
    )
    assert step.actions == ()
    assert [n.level for n in step.notes if "annotation" in n.event] == ["warning"]
