"""The dry-run executor answers for every verb and needs no API at all, so it cannot write.

What it would have written on Nodes (`NodeWrites`) is laid over the views healer plans from,
computed as the live executor computes its writes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from structlog.testing import capture_logs

from healer.effects.dryrun import DryRunExecutor, NodeWrites
from healer.model import names
from healer.model.actions import (
    AddTaint,
    Cordon,
    Evict,
    ForceDelete,
    OutcomeStatus,
    RemoveTaint,
    SetCondition,
    Uncordon,
)
from healer.model.view import ClusterView, Condition, ConditionStatus, Node, ObjectRef, Taint

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
NODE = "calypso"
REF = ObjectRef(kind="Node", name=NODE, uid="uid-1")
GPU = names.GPU_CONDITION


def node(*, uid: str = "uid-1", rv: str = "1", extra: tuple[Condition, ...] = (), **kw: object) -> Node:
    ready = Condition(type="Ready", status=ConditionStatus.TRUE, last_transition=T0 - timedelta(days=1))
    return Node(name=NODE, uid=uid, resource_version=rv, conditions=(ready, *extra), **kw)  # type: ignore[arg-type]


def view(*nodes: Node) -> ClusterView:
    return ClusterView(nodes=MappingProxyType({n.name: n for n in nodes}))


def gpu(status: str, reason: str, message: str = "") -> SetCondition:
    return SetCondition(
        target=ObjectRef(kind="Node", name=NODE),  # the agent's: no uid
        rule="gpu-agent",
        reason=message,
        incident=f"gpu/{NODE}",
        type=GPU,
        status=status,
        cond_reason=reason,
        message=message or reason,
    )


TAINT = AddTaint(
    target=REF, rule="gpu-hardware-fault", reason="x", key=names.GPU_UNHEALTHY_TAINT, effect="NoSchedule"
)
CORDON = Cordon(target=REF, rule="gpu-hardware-fault", reason="x")


async def test_dry_run_skips_every_action() -> None:
    ex = DryRunExecutor()
    for action in (
        Cordon(target=ObjectRef(kind="Node", name="styx"), rule="r", reason="x"),
        ForceDelete(target=ObjectRef(kind="Pod", namespace="apps", name="p", uid="u"), rule="r", reason="x"),
    ):
        out = await ex.execute(action)
        assert out.status is OutcomeStatus.SKIPPED
        assert out.detail == "dry-run"
    # it holds no API client: only where to record Node writes, and a clock
    assert list(inspect.signature(DryRunExecutor).parameters) == ["writes", "clock"]


async def test_executor_records_node_writes_and_still_skips() -> None:
    writes = NodeWrites()
    ex = DryRunExecutor(writes=writes, clock=lambda: T0)
    pod = ObjectRef(kind="Pod", namespace="apps", name="triton-1", uid="p1")
    for action in (gpu("False", "Xid79"), Evict(target=pod, rule="gpu-hardware-fault", reason="x")):
        assert (await ex.execute(action)).status is OutcomeStatus.SKIPPED
    assert NODE in writes
    assert writes.written(NODE) == {"conditions": {GPU: ("False", "Xid79")}}
    assert len(writes.apply(view(node())).pods) == 0  # pods are never laid over


def test_no_writes_gives_the_view_itself() -> None:
    writes = NodeWrites()
    v = view(node())
    assert writes.apply(v) is v
    assert not writes.record(
        Evict(target=ObjectRef(kind="Pod", name="p", namespace="a"), rule="r", reason=""), now=T0
    )
    assert writes.apply(v) is v


def test_condition_survives_node_updates_and_recovery_replaces_it() -> None:
    writes = NodeWrites()
    writes.apply(view(node()), caller="node")
    assert writes.record(gpu("False", "Xid79", "GPU 0 GPU-a Xid79 class=reboot"), now=T0)
    first = writes.apply(view(node()), caller="node")
    cond = first.nodes[NODE].condition(GPU)
    assert cond is not None
    assert (cond.status, cond.reason, cond.last_transition) == (ConditionStatus.FALSE, "Xid79", T0)
    assert first.nodes[NODE].ready is ConditionStatus.TRUE  # the Node's own conditions stay
    # the watch delivers a newer Node without the condition (a label changed): still there
    updated = node(rv="2", labels=MappingProxyType({"team": "ml"}))
    again = writes.apply(view(updated), caller="node")
    assert again.nodes[NODE].resource_version == "2"
    assert again.nodes[NODE].labels == {"team": "ml"}
    assert again.nodes[NODE].condition(GPU) == cond
    # the same fault again: unchanged, as the live write would be
    assert not writes.record(
        gpu("False", "Xid79", "GPU 0 GPU-a Xid79 class=reboot"), now=T0 + timedelta(seconds=5)
    )
    # another fault, same status: the transition time holds
    assert writes.record(gpu("False", "EccDbe"), now=T0 + timedelta(minutes=1))
    held = writes.apply(view(updated), caller="node").nodes[NODE].condition(GPU)
    assert held is not None
    assert held.last_transition == T0
    assert held.reason == "EccDbe"
    # recovery: True replaces the False, from now
    back = T0 + timedelta(minutes=10)
    assert writes.record(gpu("True", "GpuHealthy"), now=back)
    healthy = writes.apply(view(updated), caller="node").nodes[NODE].condition(GPU)
    assert healthy is not None
    assert (healthy.status, healthy.reason, healthy.last_transition) == (
        ConditionStatus.TRUE,
        "GpuHealthy",
        back,
    )


def test_a_field_the_node_itself_shows_is_no_longer_laid_over() -> None:
    writes = NodeWrites()
    writes.record(gpu("True", "GpuHealthy"), now=T0)
    own = Condition(type=GPU, status=ConditionStatus.TRUE, reason="GpuHealthy", message="GpuHealthy")
    caught_up = node(extra=(own,))
    assert writes.apply(view(caught_up)).nodes[NODE] is caught_up
    assert NODE not in writes


def test_cordon_and_taint_are_written_as_live_writes_them_and_recovery_undoes_them() -> None:
    writes = NodeWrites()
    base = node(annotations=MappingProxyType({names.REMEDIATIONS: json.dumps(["2026-11-27T07:00:00Z"])}))
    writes.apply(view(base), caller="node")
    assert writes.record(TAINT, now=T0)
    assert writes.record(CORDON, now=T0)
    n = writes.apply(view(base), caller="node").nodes[NODE]
    assert n.unschedulable
    assert n.cordoned_by_healer
    assert n.annotations[names.CORDONED_BY] == "gpu-hardware-fault"
    assert n.annotations[names.CORDONED_AT] == "2026-11-27T08:00:00Z"
    assert json.loads(n.annotations[names.REMEDIATIONS]) == ["2026-11-27T07:00:00Z", "2026-11-27T08:00:00Z"]
    assert n.taints == (Taint(key=names.GPU_UNHEALTHY_TAINT, effect="NoSchedule"),)
    # planned again against that view, nothing is written again
    assert not writes.record(TAINT, now=T0 + timedelta(seconds=5))
    assert not writes.record(CORDON, now=T0 + timedelta(seconds=5))
    # recovery
    assert writes.record(
        RemoveTaint(target=REF, rule="gpu-recovered", reason="x", key=names.GPU_UNHEALTHY_TAINT), now=T0
    )
    assert writes.record(Uncordon(target=REF, rule="gpu-recovered", reason="x"), now=T0)
    after = writes.apply(view(base), caller="node").nodes[NODE]
    assert not after.unschedulable
    assert not after.taints
    assert names.CORDONED_BY not in after.annotations
    assert len(json.loads(after.annotations[names.REMEDIATIONS])) == 2  # the budget remembers, as live
    assert not writes.record(Uncordon(target=REF, rule="gpu-recovered", reason="x"), now=T0)


def test_an_operators_cordon_is_not_healers() -> None:
    writes = NodeWrites()
    writes.apply(view(node(unschedulable=True)))
    assert not writes.record(CORDON, now=T0)
    assert not writes.record(Uncordon(target=REF, rule="r", reason="x"), now=T0)
    assert NODE not in writes


def test_a_deleted_or_recreated_node_keeps_nothing() -> None:
    writes = NodeWrites()
    writes.apply(view(node()))
    writes.record(CORDON, now=T0)
    writes.forget(NODE, uid="uid-other")  # not the Node we wrote on
    assert NODE in writes
    writes.forget(NODE, uid="uid-1")
    assert NODE not in writes
    writes.record(CORDON, now=T0)
    fresh = node(uid="uid-2")
    assert writes.apply(view(fresh)).nodes[NODE] is fresh
    assert NODE not in writes


def test_apply_is_cached_per_view_and_writes() -> None:
    writes = NodeWrites()
    v = view(node())
    writes.apply(v, caller="node")
    writes.record(CORDON, now=T0)
    a = writes.apply(v, caller="node")
    assert a is not v
    assert writes.apply(v, caller="node") is a
    writes.record(TAINT, now=T0)
    b = writes.apply(v, caller="node")
    assert b is not a
    assert b.nodes[NODE].taints
    assert dataclasses.replace(b, nodes=v.nodes) == v  # only the nodes differ


def test_subscribers_hear_of_changes_only() -> None:
    writes = NodeWrites()
    heard: list[str] = []
    writes.subscribe(heard.append)
    writes.record(CORDON, now=T0)
    writes.record(CORDON, now=T0)
    assert heard == [NODE]


async def test_a_node_write_that_would_change_the_node_again_is_logged_at_info() -> None:
    writes = NodeWrites()
    ex = DryRunExecutor(writes=writes, clock=lambda: T0)
    untaint = RemoveTaint(target=REF, rule="gpu-recovered", reason="x", key=names.GPU_UNHEALTHY_TAINT)
    with capture_logs() as logs:
        for action in (TAINT, TAINT, untaint, TAINT):
            await ex.execute(action)
    levels = [(e["action"], e["log_level"]) for e in logs if e["event"] == "would act"]
    assert levels == [("taint", "info"), ("taint", "debug"), ("untaint", "info"), ("taint", "info")]
