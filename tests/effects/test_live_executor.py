"""The live executor over HTTP: idempotent writes, healer's own cordon marks, errors as Outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from healer.effects.live import LiveExecutor, event_reason, remediations_after
from healer.kube import client
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
from tests.api.fakeapi import FakeApi, Recorded

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
NODE = "/api/v1/nodes/styx"
POD = "/api/v1/namespaces/apps/pods/web-1"
STYX = ObjectRef(kind="Node", name="styx")
WEB = ObjectRef(kind="Pod", namespace="apps", name="web-1", uid="u-1")


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def ex(kube: client.Kube) -> LiveExecutor:
    return LiveExecutor(kube, instance="tethys", clock=lambda: NOW, sleep=_no_sleep)


def put_node(fake: FakeApi, **spec: Any) -> dict[str, Any]:
    return fake.put(
        "nodes",
        {
            "kind": "Node",
            "metadata": {"name": "styx", "uid": "n-1", "annotations": {}},
            "spec": dict(spec),
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    )


def put_pod(fake: FakeApi, **meta: Any) -> dict[str, Any]:
    return fake.put(
        "pods",
        {"kind": "Pod", "metadata": {"name": "web-1", "namespace": "apps", "uid": "u-1", **meta}, "spec": {}},
    )


def styx(fake: FakeApi) -> dict[str, Any]:
    obj = fake.get("nodes", ("", "styx"))
    assert obj is not None
    return obj


def writes(fake: FakeApi) -> list[Recorded]:
    return [r for r in fake.requests if r.method != "GET" and not r.path.endswith("/events")]


def events(fake: FakeApi) -> list[dict[str, Any]]:
    return list(fake.store("events").objects.values())


def reasons(fake: FakeApi) -> list[str]:
    return [e["reason"] for e in events(fake)]


async def test_cordon_marks_it_as_healers_and_is_idempotent(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    first = await ex.execute(Cordon(target=STYX, rule="node-not-ready", reason="NotReady for 60s"))
    second = await ex.execute(Cordon(target=STYX, rule="node-not-ready", reason="NotReady for 60s"))

    assert (first.status, second.status) == (OutcomeStatus.APPLIED, OutcomeStatus.UNCHANGED)
    obj = styx(fake)
    assert obj["spec"]["unschedulable"] is True
    ann = obj["metadata"]["annotations"]
    assert ann[names.CORDONED_BY] == "node-not-ready"
    assert ann[names.CORDONED_AT] == "2026-11-27T05:00:00Z"
    assert json.loads(ann[names.REMEDIATIONS]) == ["2026-11-27T05:00:00Z"]
    assert len(writes(fake)) == 1
    assert reasons(fake) == ["HealerCordon"]
    event = events(fake)[0]
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "styx", "uid": "n-1"}
    assert event["metadata"]["namespace"] == "default"
    assert event["type"] == "Warning"


async def test_cordon_leaves_someone_elses_cordon_alone(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake, unschedulable=True)
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert "not by healer" in out.detail
    assert names.CORDONED_BY not in styx(fake)["metadata"]["annotations"]
    out = await ex.execute(Uncordon(target=STYX, rule="r", reason="recovered"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert styx(fake)["spec"]["unschedulable"] is True
    assert writes(fake) == []


async def test_uncordon_removes_only_healers_marks_and_keeps_the_budget(
    fake: FakeApi, ex: LiveExecutor
) -> None:
    put_node(fake)
    await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    obj = styx(fake)
    obj["metadata"]["annotations"]["team"] = "infra"
    fake.put("nodes", obj)
    out = await ex.execute(Uncordon(target=STYX, rule="r", reason="Ready for 5m"))
    assert out.status is OutcomeStatus.APPLIED
    obj = styx(fake)
    assert "unschedulable" not in obj["spec"]
    ann = obj["metadata"]["annotations"]
    assert names.CORDONED_BY not in ann
    assert names.CORDONED_AT not in ann
    assert ann["team"] == "infra"
    assert names.REMEDIATIONS in ann
    again = await ex.execute(Uncordon(target=STYX, rule="r", reason="Ready for 5m"))
    assert again.status is OutcomeStatus.UNCHANGED
    assert sorted(reasons(fake)) == ["HealerCordon", "HealerUncordon"]


def test_remediations_are_pruned_to_a_day() -> None:
    old = (NOW - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = remediations_after(json.dumps([old, recent, "garbage"]), now=NOW)
    assert json.loads(value) == [recent, "2026-11-27T05:00:00Z"]
    assert json.loads(remediations_after("not json", now=NOW)) == ["2026-11-27T05:00:00Z"]


async def test_conflict_rereads_and_retries(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake, taints=[{"key": "other", "effect": "NoSchedule"}])
    fake.fail(409, method="PATCH", path=NODE, reason="Conflict")
    out = await ex.execute(AddTaint(target=STYX, rule="gpu", reason="Xid 79", key=names.GPU_UNHEALTHY_TAINT))
    assert out.status is OutcomeStatus.APPLIED
    node_calls = [r.method for r in fake.requests if r.path == NODE]
    assert node_calls == ["GET", "PATCH", "GET", "PATCH"]
    keys = [t["key"] for t in styx(fake)["spec"]["taints"]]
    assert keys == ["other", names.GPU_UNHEALTHY_TAINT]


async def test_a_write_in_between_is_not_overwritten(fake: FakeApi, ex: LiveExecutor) -> None:
    """A real stale resourceVersion (not a scripted 409): the other writer's taint survives."""
    put_node(fake)
    stale = styx(fake)["metadata"]["resourceVersion"]
    obj = styx(fake)
    obj["spec"]["taints"] = [{"key": "someone-else", "effect": "NoSchedule"}]
    fake.put("nodes", obj)
    assert styx(fake)["metadata"]["resourceVersion"] != stale
    out = await ex.execute(AddTaint(target=STYX, rule="gpu", reason="x", key=names.GPU_UNHEALTHY_TAINT))
    assert out.status is OutcomeStatus.APPLIED
    assert {t["key"] for t in styx(fake)["spec"]["taints"]} == {"someone-else", names.GPU_UNHEALTHY_TAINT}


async def test_endless_conflict_is_a_retryable_failure(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    fake.fail(409, method="PATCH", path=NODE, times=None)
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable
    assert "unschedulable" not in styx(fake)["spec"]


async def test_taint_and_untaint_are_idempotent(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    taint = AddTaint(target=STYX, rule="gpu", reason="x", key=names.GPU_UNHEALTHY_TAINT)
    untaint = RemoveTaint(target=STYX, rule="gpu", reason="x", key=names.GPU_UNHEALTHY_TAINT)
    statuses = [(await ex.execute(a)).status for a in (taint, taint, untaint, untaint)]
    assert statuses == [
        OutcomeStatus.APPLIED,
        OutcomeStatus.UNCHANGED,
        OutcomeStatus.APPLIED,
        OutcomeStatus.UNCHANGED,
    ]
    assert styx(fake)["spec"]["taints"] == []
    assert sorted(reasons(fake)) == ["HealerTaint", "HealerUntaint"]


async def test_server_errors_are_retried_then_reported(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    fake.fail(500, method="PATCH", path=NODE, times=2)
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.APPLIED
    assert [r.method for r in fake.requests if r.path == NODE].count("PATCH") == 3

    fake.fail(503, method="GET", path="/api/v1/nodes/calypso", times=None)
    out = await ex.execute(Cordon(target=ObjectRef(kind="Node", name="calypso"), rule="r", reason="x"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable
    assert "ServerError" in out.detail


async def test_unreachable_api_is_a_retryable_failure(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    await fake.down()
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable
    assert "Unreachable" in out.detail


async def test_throttling_429_is_retried_for_ordinary_writes(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    fake.fail(429, method="PATCH", path=NODE, retry_after=1)
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.APPLIED


async def test_eviction_blocked_by_pdb_is_retryable_and_never_forced(fake: FakeApi, ex: LiveExecutor) -> None:
    put_pod(fake)
    fake.pdb_blocked.add(("apps", "web-1"))
    out = await ex.execute(Evict(target=WEB, rule="gpu", reason="Xid 79"))
    assert out.status is OutcomeStatus.FAILED
    assert out.retryable
    assert "PodDisruptionBudget" in out.detail
    assert [(r.method, r.path) for r in writes(fake)] == [("POST", POD + "/eviction")]  # no retry, no delete
    assert fake.get("pods", ("apps", "web-1")) is not None
    assert events(fake) == []

    fake.pdb_blocked.clear()
    out = await ex.execute(Evict(target=WEB, rule="gpu", reason="Xid 79"))
    assert out.status is OutcomeStatus.APPLIED
    body = writes(fake)[-1].body
    assert body["kind"] == "Eviction"
    assert body["deleteOptions"] == {"preconditions": {"uid": "u-1"}}
    again = await ex.execute(Evict(target=WEB, rule="gpu", reason="Xid 79"))
    assert again.status is OutcomeStatus.UNCHANGED
    assert reasons(fake) == ["HealerEvict"]


async def test_evicting_a_terminating_pod_changes_nothing(fake: FakeApi, ex: LiveExecutor) -> None:
    put_pod(fake, deletionTimestamp="2026-11-27T04:00:00Z")
    out = await ex.execute(Evict(target=WEB, rule="gpu", reason="x"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert out.detail == "already terminating"
    assert writes(fake) == []


async def test_force_delete_uses_grace_zero_and_uid_and_is_idempotent(
    fake: FakeApi, ex: LiveExecutor
) -> None:
    put_pod(fake, deletionTimestamp="2026-11-27T04:00:00Z")
    action = ForceDelete(target=WEB, rule="node-not-ready", reason="styx NotReady")
    first = await ex.execute(action)
    second = await ex.execute(action)
    assert (first.status, second.status) == (OutcomeStatus.APPLIED, OutcomeStatus.UNCHANGED)
    assert second.detail == "already gone"
    deletes = [r for r in writes(fake) if r.method == "DELETE"]
    assert deletes[0].path == POD
    assert deletes[0].body["gracePeriodSeconds"] == 0
    assert deletes[0].body["preconditions"] == {"uid": "u-1"}
    assert fake.get("pods", ("apps", "web-1")) is None
    [event] = events(fake)
    assert event["reason"] == "HealerForceDelete"
    assert event["metadata"]["namespace"] == "apps"
    assert event["involvedObject"]["uid"] == "u-1"


async def test_force_delete_never_hits_a_same_named_replacement(fake: FakeApi, ex: LiveExecutor) -> None:
    put_pod(fake, uid="u-2")  # the StatefulSet already made a new web-1
    out = await ex.execute(ForceDelete(target=WEB, rule="r", reason="x"))
    assert out.status is OutcomeStatus.UNCHANGED
    assert fake.get("pods", ("apps", "web-1")) is not None
    assert events(fake) == []


async def test_delete_skips_terminating_pods(fake: FakeApi, ex: LiveExecutor) -> None:
    put_pod(fake)
    out = await ex.execute(Delete(target=WEB, rule="evicted-cleanup", reason="Evicted"))
    assert out.status is OutcomeStatus.APPLIED
    assert fake.get("pods", ("apps", "web-1")) is None
    out = await ex.execute(Delete(target=WEB, rule="evicted-cleanup", reason="Evicted"))
    assert out.status is OutcomeStatus.UNCHANGED


async def test_set_condition_keeps_transition_time_when_status_holds(fake: FakeApi, ex: LiveExecutor) -> None:
    obj = put_node(fake)
    obj["status"]["conditions"].append(
        {
            "type": names.GPU_CONDITION,
            "status": "False",
            "reason": "Xid79",
            "message": "GPU 0",
            "lastTransitionTime": "2026-11-27T04:00:00Z",
        }
    )
    fake.put("nodes", obj)

    def cond(status: str, reason: str, message: str) -> SetCondition:
        return SetCondition(
            target=STYX,
            rule="gpu",
            reason="x",
            type=names.GPU_CONDITION,
            status=status,
            cond_reason=reason,
            message=message,
        )

    assert (await ex.execute(cond("False", "Xid79", "GPU 0"))).status is OutcomeStatus.UNCHANGED
    assert (await ex.execute(cond("False", "GpuLost", "GPU 0 lost"))).status is OutcomeStatus.APPLIED
    conds = {c["type"]: c for c in styx(fake)["status"]["conditions"]}
    assert conds[names.GPU_CONDITION]["lastTransitionTime"] == "2026-11-27T04:00:00Z"
    assert conds[names.GPU_CONDITION]["reason"] == "GpuLost"
    assert conds["Ready"]["status"] == "True"
    assert (await ex.execute(cond("True", "Healthy", ""))).status is OutcomeStatus.APPLIED
    conds = {c["type"]: c for c in styx(fake)["status"]["conditions"]}
    assert conds[names.GPU_CONDITION]["lastTransitionTime"] == "2026-11-27T05:00:00Z"
    assert writes(fake)[0].path == NODE + "/status"


async def test_missing_node_is_skipped_not_raised(ex: LiveExecutor) -> None:
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.SKIPPED


async def test_event_failure_does_not_fail_the_action(fake: FakeApi, ex: LiveExecutor) -> None:
    put_node(fake)
    fake.fail(403, method="POST", path="/events", times=None)
    out = await ex.execute(Cordon(target=STYX, rule="r", reason="x"))
    assert out.status is OutcomeStatus.APPLIED
    assert styx(fake)["spec"]["unschedulable"] is True


def test_event_reasons() -> None:
    assert event_reason("force-delete") == "HealerForceDelete"
    assert event_reason("set-condition") == "HealerSetCondition"
