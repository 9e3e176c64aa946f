"""The live executor: idempotent writes, healer's own cordon marks, and API errors as Outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import MemKube

from healer.effects.dryrun import DryRunExecutor
from healer.effects.live import LiveExecutor, event_reason, remediations_after
from healer.kube import errors
from healer.model import names
from healer.model.actions import (
    AddTaint,
    Cordon,
    Delete,
    Evict,
    ForceDelete,
    OutcomeStatus,
    RemoveTaint,
    SetCondition,
    Uncordon,
)
from healer.model.view import ObjectRef

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
NODE = "/api/v1/nodes/styx"
POD = "/api/v1/namespaces/apps/pods/web-1"
STYX = ObjectRef(kind="Node", name="styx")
WEB = ObjectRef(kind="Pod", namespace="apps", name="web-1", uid="u-1")


async def _no_sleep(_: float) -> None:
    return None


def executor(mem: MemKube) -> LiveExecutor:
    return LiveExecutor(mem, instance="tethys", clock=lambda: NOW, sleep=_no_sleep)


def node(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "styx", "uid": "n-1", "annotations": {}}, "spec": dict(spec), "status": {}}


def pod(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "apps", "uid": "u-1", **meta}, "spec": {}}


async def test_cordon_marks_it_as_healers_and_is_idempotent(mem: MemKube) -> None:
    mem.add(NODE, node())
    ex = executor(mem)
    first = await ex.execute(Cordon(target=STYX, rule="node-not-ready", reason="NotReady for 60s"))
    second = await ex.execute(Cordon(target=STYX, rule="node-not-ready", reason="NotReady for 60s"))

    assert (first.status, second.status) == (OutcomeStatus.APPLIED, OutcomeStatus.UNCHANGED)
    obj = mem.objects[NODE]
    assert obj["spec"]["unschedulable"] is True
    ann = obj["metadata"]["annotations"]
    assert ann[names.CORDONED_BY] == "node-not-ready"
    assert ann[names.CORDONED_AT] == "2026-11-27T05:00:00Z"
    assert json.loads(ann[names.REMEDIATIONS]) == ["2026-11-27T05:00:00Z"]
    assert len(mem.writes) == 1
    assert [e["reason"] for e in mem.events] == ["HealerCordon"]
    assert mem.events[0]["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "styx",
        "uid": "n-1",
    }
    assert mem.events[0]["metadata"]["namespace"] == "default"


async def test_cordon_leaves_someone_elses_cordon_unmarked(mem: MemKube) -> None:
    mem.add(NODE, node(unschedulable=True))
    out = await executor(mem).execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert "not by healer" in out.detail
    assert names.CORDONED_BY not in mem.objects[NODE]["metadata"]["annotations"]
    out = await executor(mem).execute(Uncordon(target=STYX, rule="r", reason="recovered"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert mem.objects[NODE]["spec"]["unschedulable"] is True
    assert mem.writes == []


async def test_uncordon_removes_only_healers_marks_and_keeps_the_budget(mem: MemKube) -> None:
    mem.add(NODE, node())
    ex = executor(mem)
    await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    mem.objects[NODE]["metadata"]["annotations"]["team"] = "infra"
    out = await ex.execute(Uncordon(target=STYX, rule="r", reason="Ready for 5m"))
    assert out.status is OutcomeStatus.APPLIED
    obj = mem.objects[NODE]
    assert "unschedulable" not in obj["spec"]
    ann = obj["metadata"]["annotations"]
    assert names.CORDONED_BY not in ann
    assert names.CORDONED_AT not in ann
    assert ann["team"] == "infra"
    assert names.REMEDIATIONS in ann
    again = await ex.execute(Uncordon(target=STYX, rule="r", reason="Ready for 5m"))
    assert again.status is OutcomeStatus.UNCHANGED
    assert [e["reason"] for e in mem.events] == ["HealerCordon", "HealerUncordon"]


def test_remediations_are_pruned_to_a_day() -> None:
    old = (NOW - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = remediations_after(json.dumps([old, recent, "garbage"]), now=NOW)
    assert json.loads(value) == [recent, "2026-11-27T05:00:00Z"]
    assert json.loads(remediations_after("not json", now=NOW)) == ["2026-11-27T05:00:00Z"]


async def test_conflict_rereads_and_retries(mem: MemKube) -> None:
    mem.add(NODE, node(taints=[{"key": "other", "effect": "NoSchedule"}]))
    mem.fail("PATCH", NODE, errors.Conflict("the object has been modified"))
    out = await executor(mem).execute(
        AddTaint(target=STYX, rule="gpu", reason="Xid 79", key=names.GPU_UNHEALTHY_TAINT)
    )
    assert out.status is OutcomeStatus.APPLIED
    assert [c[0] for c in mem.calls if not c[1].endswith("/events")] == ["GET", "PATCH", "GET", "PATCH"]
    keys = [t["key"] for t in mem.objects[NODE]["spec"]["taints"]]
    assert keys == ["other", names.GPU_UNHEALTHY_TAINT]


async def test_endless_conflict_is_a_retryable_failure(mem: MemKube) -> None:
    mem.add(NODE, node())
    mem.fail("PATCH", NODE, errors.Conflict("modified"), times=10)
    out = await executor(mem).execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable


async def test_taint_and_untaint_are_idempotent(mem: MemKube) -> None:
    mem.add(NODE, node())
    ex = executor(mem)
    taint = AddTaint(target=STYX, rule="gpu", reason="x", key=names.GPU_UNHEALTHY_TAINT)
    untaint = RemoveTaint(target=STYX, rule="gpu", reason="x", key=names.GPU_UNHEALTHY_TAINT)
    statuses = [(await ex.execute(a)).status for a in (taint, taint, untaint, untaint)]
    assert statuses == [
        OutcomeStatus.APPLIED,
        OutcomeStatus.UNCHANGED,
        OutcomeStatus.APPLIED,
        OutcomeStatus.UNCHANGED,
    ]
    assert mem.objects[NODE]["spec"]["taints"] == []
    assert [e["reason"] for e in mem.events] == ["HealerTaint", "HealerUntaint"]


async def test_server_errors_are_retried_then_reported(mem: MemKube) -> None:
    mem.add(NODE, node())
    mem.fail("PATCH", NODE, errors.ServerError("etcdserver: leader changed", status=500), times=2)
    out = await executor(mem).execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.APPLIED

    mem.add(NODE, node())
    mem.fail("GET", NODE, errors.Unreachable("connection refused"), times=5)
    out = await executor(mem).execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable
    assert "Unreachable" in out.detail


async def test_eviction_blocked_by_pdb_is_retryable_and_never_forced(mem: MemKube) -> None:
    mem.add(POD, pod())
    mem.pdb_blocks = True
    out = await executor(mem).execute(Evict(target=WEB, rule="gpu", reason="Xid 79"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable
    assert "PodDisruptionBudget" in out.detail
    assert [c[0] for c in mem.writes] == ["POST"]  # one eviction attempt: no retry loop, no delete
    assert POD in mem.objects
    assert mem.events == []

    mem.pdb_blocks = False
    out = await executor(mem).execute(Evict(target=WEB, rule="gpu", reason="Xid 79"))
    assert out.status is OutcomeStatus.APPLIED
    body = mem.writes[-1][2]
    assert body["kind"] == "Eviction"
    assert body["deleteOptions"] == {"preconditions": {"uid": "u-1"}}
    again = await executor(mem).execute(Evict(target=WEB, rule="gpu", reason="Xid 79"))
    assert again.status is OutcomeStatus.UNCHANGED
    assert again.detail == "already terminating"
    assert [e["reason"] for e in mem.events] == ["HealerEvict"]


async def test_force_delete_uses_grace_zero_and_uid_and_is_idempotent(mem: MemKube) -> None:
    mem.add(POD, pod(deletionTimestamp="2026-11-27T04:00:00Z"))
    ex = executor(mem)
    action = ForceDelete(target=WEB, rule="node-not-ready", reason="styx NotReady")
    first = await ex.execute(action)
    second = await ex.execute(action)
    assert (first.status, second.status) == (OutcomeStatus.APPLIED, OutcomeStatus.UNCHANGED)
    assert second.detail == "already gone"
    method, path, body = mem.writes[0]
    assert (method, path) == ("DELETE", POD)
    assert body["gracePeriodSeconds"] == 0
    assert body["preconditions"] == {"uid": "u-1"}
    ev = mem.events[0]
    assert ev["reason"] == "HealerForceDelete"
    assert ev["metadata"]["namespace"] == "apps"
    assert ev["involvedObject"]["uid"] == "u-1"


async def test_force_delete_never_hits_a_same_named_replacement(mem: MemKube) -> None:
    mem.add(POD, pod(uid="u-2"))  # the StatefulSet already made a new web-1
    out = await executor(mem).execute(ForceDelete(target=WEB, rule="r", reason="x"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert POD in mem.objects
    assert mem.events == []


async def test_delete_skips_terminating_pods(mem: MemKube) -> None:
    mem.add(POD, pod())
    ex = executor(mem)
    out = await ex.execute(Delete(target=WEB, rule="evicted-cleanup", reason="Evicted"))
    assert out.status is OutcomeStatus.APPLIED
    assert POD not in mem.objects
    out = await ex.execute(Delete(target=WEB, rule="evicted-cleanup", reason="Evicted"))
    assert out.status is OutcomeStatus.UNCHANGED


async def test_set_condition_keeps_transition_time_when_status_holds(mem: MemKube) -> None:
    old = {
        "type": names.GPU_CONDITION,
        "status": "False",
        "reason": "Xid79",
        "message": "GPU 0",
        "lastTransitionTime": "2026-11-27T04:00:00Z",
    }
    raw = node()
    raw["status"] = {"conditions": [{"type": "Ready", "status": "True"}, old]}
    mem.add(NODE, raw)
    ex = executor(mem)

    def cond(status: str, reason: str, message: str) -> SetCondition:
        return SetCondition(
            target=STYX, rule="gpu", reason="x", type=names.GPU_CONDITION, status=status,
            cond_reason=reason, message=message,
        )  # fmt: skip

    assert (await ex.execute(cond("False", "Xid79", "GPU 0"))).status is OutcomeStatus.UNCHANGED
    assert (await ex.execute(cond("False", "GpuLost", "GPU 0 lost"))).status is OutcomeStatus.APPLIED
    conds = {c["type"]: c for c in mem.objects[NODE]["status"]["conditions"]}
    assert conds[names.GPU_CONDITION]["lastTransitionTime"] == "2026-11-27T04:00:00Z"
    assert conds["Ready"]["status"] == "True"
    assert (await ex.execute(cond("True", "Healthy", ""))).status is OutcomeStatus.APPLIED
    conds = {c["type"]: c for c in mem.objects[NODE]["status"]["conditions"]}
    assert conds[names.GPU_CONDITION]["lastTransitionTime"] == "2026-11-27T05:00:00Z"
    assert mem.writes[0][1] == NODE + "/status"


async def test_missing_node_is_skipped_not_raised(mem: MemKube) -> None:
    out = await executor(mem).execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.SKIPPED


async def test_event_failure_does_not_fail_the_action(mem: MemKube) -> None:
    mem.add(NODE, node())
    mem.fail("POST", "/api/v1/namespaces/default/events", errors.Forbidden("events is forbidden"))
    out = await executor(mem).execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.APPLIED


async def test_dry_run_writes_nothing() -> None:
    out = await DryRunExecutor().execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.SKIPPED
    assert out.detail == "dry-run"


def test_event_reasons() -> None:
    assert event_reason("force-delete") == "HealerForceDelete"
    assert event_reason("set-condition") == "HealerSetCondition"
