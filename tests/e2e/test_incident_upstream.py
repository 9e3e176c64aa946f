"""The styx incident, reproduced on a real control plane with healer absent.

This is the baseline healer is judged against: what upstream Kubernetes does, by itself, when a
worker's kubelet dies. Pods are marked for deletion but stay Terminating forever, Deployments
recover, the StatefulSet does not. The other tests prove the failure verbs of hack/cp.sh do
what the healer e2e tests will rely on.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.controlplane import FAST_TIMINGS, ControlPlane
from tests.support.kube import (
    is_running,
    is_terminating,
    list_pods,
    manifest,
    node_condition,
    node_lease_renew_time,
    node_taint_keys,
    read_node,
)
from tests.support.oceanid import OceanidCluster, Workload, build_oceanid, wait_pods_running
from tests.support.wait import holds_for, wait_until

pytestmark = pytest.mark.e2e

T = FAST_TIMINGS
# Node goes Unknown after the grace period (+ one monitor period); pods are deleted once the
# unreachable taint has been there for the toleration; allow generous slack for a 2-core CI box.
UNKNOWN_WITHIN_S = T.node_grace_s + T.node_monitor_period_s + 30
EVICTED_WITHIN_S = T.toleration_s + 30
ABSENCE_WINDOW_S = 30.0


async def _pods(api: client.ApiClient, w: Workload) -> list[Any]:
    return await list_pods(api, namespace=w.namespace, labels=w.labels)


async def _node_ready(api: client.ApiClient, node: str) -> str | None:
    return node_condition(await read_node(api, name=node))


async def test_kubelet_death_leaves_pods_terminating_and_statefulset_unreplaced(
    control_plane: ControlPlane, kube: client.ApiClient
) -> None:
    control_plane.reset()
    cluster: OceanidCluster = await build_oceanid(kube, agents=control_plane)
    styx = cluster.failed_node
    before = {w.name: [p.metadata.name for p in await _pods(kube, w)] for w in cluster.on_failed_node}
    (old_sts_pod,) = await _pods(kube, cluster.statefulset)
    old_sts_uid = old_sts_pod.metadata.uid
    daemon_pod = next(p for p in await _pods(kube, cluster.daemonsets[0]) if p.spec.node_name == styx)

    control_plane.stop_kubelet(node=styx)
    try:

        async def unknown() -> bool:
            return await _node_ready(kube, styx) == "Unknown"

        await wait_until(unknown, timeout_s=UNKNOWN_WITHIN_S, what="styx Ready=Unknown")

        async def tainted() -> bool:  # node lifecycle's tainting pass follows the status update
            node = await read_node(kube, name=styx)
            return {"node.kubernetes.io/unreachable"} <= node_taint_keys(node)

        await wait_until(tainted, timeout_s=30, what="styx tainted unreachable")

        async def all_marked() -> bool:
            for w in cluster.on_failed_node:
                pods = {p.metadata.name: p for p in await _pods(kube, w)}
                if not all(name in pods and is_terminating(pods[name]) for name in before[w.name]):
                    return False
            return True

        await wait_until(all_marked, timeout_s=EVICTED_WITHIN_S, what="styx's pods marked for deletion")

        for w in cluster.movable_deployments:
            moved = await wait_pods_running(kube, w, count=1, timeout_s=60)
            assert all(p.spec.node_name not in (styx, None) for p in moved)

        async def pinned_replacement_pending() -> bool:
            pods = await _pods(kube, cluster.pinned_deployment)
            return any(
                not is_terminating(p) and p.status.phase == "Pending" and not p.spec.node_name for p in pods
            )

        await wait_until(
            pinned_replacement_pending,
            timeout_s=60,
            what="label-studio replacement Pending (its local volume is on styx)",
        )

        sts = cluster.statefulset

        async def statefulset_still_stuck() -> bool:
            pods = await _pods(kube, sts)
            # Still exactly the old redis-0 object, Terminating: no replacement under any name.
            return len(pods) == 1 and pods[0].metadata.uid == old_sts_uid and is_terminating(pods[0])

        async def everything_still_stuck() -> bool:
            for w in cluster.on_failed_node:
                live = {p.metadata.name: p for p in await _pods(kube, w)}
                if not all(name in live and is_terminating(live[name]) for name in before[w.name]):
                    return False
            return await statefulset_still_stuck()

        polls = await holds_for(
            everything_still_stuck,
            duration_s=ABSENCE_WINDOW_S,
            what="stuck Terminating pods and no StatefulSet replacement",
        )
        assert polls >= 10
        sts_obj = await client.AppsV1Api(kube).read_namespaced_stateful_set(sts.name, sts.namespace)
        assert not sts_obj.status.ready_replicas

        # DaemonSet pods tolerate `unreachable` forever: never evicted, just stale.
        ds_pod = await client.CoreV1Api(kube).read_namespaced_pod(
            daemon_pod.metadata.name, daemon_pod.metadata.namespace
        )
        assert not is_terminating(ds_pod)
    finally:
        control_plane.start_kubelet(node=styx)

    # The kubelet coming back is what upstream waits for: it finalises the pods, and only then
    # does the StatefulSet controller recreate redis-0.
    async def ready() -> bool:
        return await _node_ready(kube, styx) == "True"

    await wait_until(ready, timeout_s=60, what="styx Ready again")
    (new_sts_pod,) = await wait_pods_running(kube, cluster.statefulset, count=1, timeout_s=90)
    assert new_sts_pod.metadata.uid != old_sts_uid


async def _scratch_node(control_plane: ControlPlane, kube: client.ApiClient, name: str) -> None:
    """A bare KWOK node of our own, so these tests do not disturb each other or Oceanid."""
    core = client.CoreV1Api(kube)
    try:
        await core.create_node(
            manifest(
                {
                    "metadata": {
                        "name": name,
                        "labels": {"kubernetes.io/hostname": name, "kwok.test/scratch": "true"},
                    },
                    "spec": {"taints": [{"key": "kwok.test/scratch", "effect": "NoSchedule"}]},
                    "status": {
                        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    },
                }
            )
        )
        control_plane.add_node(name=name)
    except ApiException as exc:
        if exc.status != 409:  # already there from an earlier test in this session
            raise

    async def ready() -> bool:
        return await _node_ready(kube, name) == "True"

    await wait_until(ready, timeout_s=60, what=f"{name} Ready")


async def test_notready_reports_false_while_lease_renews(
    control_plane: ControlPlane, kube: client.ApiClient
) -> None:
    node = "scratch-notready"
    await _scratch_node(control_plane, kube, node)
    control_plane.notready(node=node)
    try:

        async def not_ready() -> bool:
            return await _node_ready(kube, node) == "False"

        await wait_until(not_ready, timeout_s=30, what=f"{node} Ready=False")
        renewed_at = await node_lease_renew_time(kube, node=node)

        async def lease_renewed() -> bool:
            return bool(await node_lease_renew_time(kube, node=node) > renewed_at)

        await wait_until(lease_renewed, timeout_s=T.lease_duration_s, what="lease renewal while NotReady")
        assert await _node_ready(kube, node) == "False"
        taints = node_taint_keys(await read_node(kube, name=node))
        assert "node.kubernetes.io/unreachable" not in taints
    finally:
        control_plane.ready(node=node)

    async def ready() -> bool:
        return await _node_ready(kube, node) == "True"

    await wait_until(ready, timeout_s=30, what=f"{node} Ready again")


async def test_stuck_label_keeps_pod_terminating_on_healthy_node(
    control_plane: ControlPlane, kube: client.ApiClient
) -> None:
    node = "scratch-stuck"
    await _scratch_node(control_plane, kube, node)
    core = client.CoreV1Api(kube)
    namespace = "default"

    def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "busybox:1.36"}],
                "tolerations": [{"key": "kwok.test/scratch", "operator": "Exists"}],
            },
        }

    await core.create_namespaced_pod(
        namespace, manifest(pod("stuck", {"app": "stuck", "kwok.test/stuck": "true"}))
    )
    await core.create_namespaced_pod(namespace, manifest(pod("normal", {"app": "normal"})))

    async def running(name: str) -> bool:
        return is_running(await core.read_namespaced_pod(name, namespace))

    for name in ("stuck", "normal"):
        await wait_until(functools.partial(running, name), timeout_s=30, what=f"pod {name} Running")
        await core.delete_namespaced_pod(name, namespace)

    async def gone(name: str) -> bool:
        try:
            await core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    await wait_until(lambda: gone("normal"), timeout_s=30, what="unlabelled pod finalised by kwok")

    async def still_terminating() -> bool:
        return is_terminating(await core.read_namespaced_pod("stuck", namespace))

    await holds_for(still_terminating, duration_s=10, what="stuck pod Terminating on a Ready node")
    assert await _node_ready(kube, node) == "True"

    # Removing the label releases it, which also proves the stage (not something else) held it.
    await core.patch_namespaced_pod("stuck", namespace, {"metadata": {"labels": {"kwok.test/stuck": None}}})
    await wait_until(lambda: gone("stuck"), timeout_s=30, what="stuck pod finalised once unlabelled")


async def test_stop_and_start_kubelet_round_trip(control_plane: ControlPlane, kube: client.ApiClient) -> None:
    node = "scratch-stopped"
    await _scratch_node(control_plane, kube, node)
    control_plane.stop_kubelet(node=node)
    try:
        assert "stopped" in next(
            line for line in control_plane.status().splitlines() if f"kwok-{node}" in line
        )

        async def unknown() -> bool:
            return await _node_ready(kube, node) == "Unknown"

        await wait_until(unknown, timeout_s=UNKNOWN_WITHIN_S, what=f"{node} Unknown")
    finally:
        control_plane.start_kubelet(node=node)

    async def ready() -> bool:
        node_obj = await read_node(kube, name=node)
        return node_condition(node_obj) == "True" and "node.kubernetes.io/unreachable" not in node_taint_keys(
            node_obj
        )

    await wait_until(ready, timeout_s=60, what=f"{node} Ready and untainted after SIGCONT")
