"""The styx incident again, this time with healer running: the proof that `healer run` heals.

Two `healer run` processes play the DaemonSet pods on tethys and calypso (one wins the
Lease). styx's kubelet stops. Upstream alone leaves styx's pods Terminating forever and never
replaces the StatefulSet pod (tests/e2e/test_incident_upstream.py); with healer:

- styx is cordoned, marked as healer's (`healer.io/cordoned-by`);
- the ReplicaSet pods are force-deleted and run on other nodes;
- the StatefulSet pod stays until the node is fenced (the test adds the out-of-service
  taint, as an operator who powered styx off would), then moves;
- the pod on a node-local volume is reported (held, "eligibility"), never force-deleted by
  healer; so is the bare pod;
- when styx comes back and stays Ready, healer uncordons it;
- the notifier (apprise to a real local json:// receiver) sends one opening story that names
  styx, the released pods and where they now run, the held StatefulSet pod with the fence
  command and the node-local-volume pod; the fence's result at most as one update; and
  exactly one recovery message once styx is back.

The control plane runs with upstream's default node timings here (50 s grace, 300 s
toleration), so what is measured is healer's doing, not a shortened taint eviction: the time
from the kubelet stop to all releasable pods Running elsewhere is printed (goal: < 120 s;
upstream alone: about 6 minutes, and never for the StatefulSet).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.e2e.healer_procs import (
    Healer,
    Healers,
    ensure_namespace,
    event_counts,
    healer_events,
    lease_holder,
)
from tests.e2e.receiver import Receiver, receiving
from tests.support.controlplane import FAST_TIMINGS, UPSTREAM_TIMINGS
from tests.support.controlplane import ControlPlane as E2EControlPlane
from tests.support.kube import is_running, is_terminating, list_pods, node_condition, read_node
from tests.support.oceanid import CALYPSO, TETHYS, OceanidCluster, Workload, build_oceanid
from tests.support.wait import holds_for, wait_until

pytestmark = pytest.mark.e2e

T = FAST_TIMINGS  # what the session's control plane runs with (the other healer e2e tests)
U = UPSTREAM_TIMINGS  # what this incident test runs with
CORDON_FOR_S = 30  # rules/nodes.yaml node-not-ready
RELEASE_FOR_S = 60  # rules/nodes.yaml node-not-ready-release
UNCORDON_FOR_S = 60  # rules/nodes.yaml node-ready-again
SLACK_S = 45  # 2 shared cores, a Go build running beside us
OUT_OF_SERVICE = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}


async def pods_of(api: client.ApiClient, w: Workload) -> list[Any]:
    return await list_pods(api, namespace=w.namespace, labels=w.labels)


async def uids_of(api: client.ApiClient, w: Workload) -> set[str]:
    return {p.metadata.uid for p in await pods_of(api, w)}


async def running_elsewhere(api: client.ApiClient, w: Workload, *, away_from: str, old: set[str]) -> bool:
    pods = await pods_of(api, w)
    return any(
        is_running(p) and p.spec.node_name not in (away_from, None) and p.metadata.uid not in old
        for p in pods
    )


async def set_out_of_service(api: client.ApiClient, node: str, *, on: bool) -> None:
    current = await read_node(api, name=node)
    taints = [
        {
            "key": t.key,
            "value": t.value,
            "effect": t.effect,
            **({"timeAdded": t.time_added} if t.time_added else {}),
        }
        for t in current.spec.taints or []
        if t.key != OUT_OF_SERVICE["key"]
    ]
    if on:
        taints.append(OUT_OF_SERVICE)
    await client.CoreV1Api(api).patch_node(node, {"spec": {"taints": taints}})


def held(healers: Healers, *, name: str, guard: str) -> bool:
    """Did a healer log a held action on `name` by `guard`?"""
    return any(
        e.get("event") == "held" and e.get("guard") == guard and str(e.get("target", "")).endswith(name)
        for h in healers.all
        for e in h.logs()
    )


async def start_healers(
    api: client.ApiClient, control_plane: E2EControlPlane, tmp_path: Path, *, notify_url: str = ""
) -> Healers:
    await ensure_namespace(api)
    env = {"HEALER_NOTIFY_URLS": notify_url} if notify_url else {}
    return Healers(
        Healer(node=TETHYS, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path, env=env),
        Healer(node=CALYPSO, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path, env=env),
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as rx:
        yield rx


def _kinds(rx: Receiver) -> list[str]:
    """Each message as opened / update / recovery (by its title)."""
    out = []
    for title in rx.titles():
        low = title.lower()
        out.append(
            "update" if low.startswith("update:") else "recovery" if "ready again" in low else "opened"
        )
    return out


async def _check_opening(
    api: client.ApiClient, cluster: OceanidCluster, *, text: str, old_names: dict[str, set[str]]
) -> None:
    """The opening story: styx, each released pod and where it runs now, what waits for a human."""
    styx = cluster.failed_node
    assert styx in text.splitlines()[0], text
    for w in cluster.movable_deployments:
        now_on = {
            p.spec.node_name for p in await pods_of(api, w) if is_running(p) and p.spec.node_name != styx
        }
        for name in old_names[w.name]:
            where = re.search(rf"{w.namespace}/{re.escape(name)} now runs on (\S+)", text)
            assert where is not None, f"{name} not reported as moved:\n{text}"
            assert where.group(1) in now_on, (where.group(1), now_on)
    (redis,) = old_names[cluster.statefulset.name]
    assert f"{cluster.statefulset.namespace}/{redis}" in text, text
    assert "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute" in text, text  # the fence command
    (pinned,) = old_names[cluster.pinned_deployment.name]
    assert f"{cluster.pinned_deployment.namespace}/{pinned}" in text, text


@pytest.fixture
def upstream_timings(control_plane: E2EControlPlane) -> Iterator[E2EControlPlane]:
    """The session's control plane restarted with upstream's node timings; FAST again after."""
    upstream = E2EControlPlane(
        timings=U, cp_dir=control_plane.cp_dir, extra_env=dict(control_plane.extra_env)
    )
    upstream.up()
    try:
        yield upstream
    finally:
        control_plane.reset()


async def test_healer_heals_the_styx_incident(
    upstream_timings: E2EControlPlane, kube: client.ApiClient, tmp_path: Path, receiver: Receiver
) -> None:
    control_plane = upstream_timings
    cluster: OceanidCluster = await build_oceanid(kube, agents=control_plane)
    styx = cluster.failed_node
    old = {w.name: await uids_of(kube, w) for w in cluster.on_failed_node}
    old_names = {w.name: {p.metadata.name for p in await pods_of(kube, w)} for w in cluster.on_failed_node}
    healers = await start_healers(kube, control_plane, tmp_path, notify_url=receiver.url)
    with healers:
        await wait_until(lambda: lease_holder(kube), timeout_s=60, what="a healer holding the Lease")

        t0 = time.monotonic()
        control_plane.stop_kubelet(node=styx)
        fenced = False
        timings: dict[str, float] = {}
        try:

            async def cordoned() -> bool:
                node = await read_node(kube, name=styx)
                marks = node.metadata.annotations or {}
                return (
                    bool(node.spec.unschedulable) and marks.get("healer.io/cordoned-by") == "node-not-ready"
                )

            await wait_until(
                cordoned,
                timeout_s=U.node_grace_s + CORDON_FOR_S + SLACK_S,
                what="healer cordoning styx",
            )
            timings["cordoned"] = time.monotonic() - t0

            async def released() -> bool:
                for w in cluster.movable_deployments:
                    if await uids_of(kube, w) & old[w.name]:  # the old pod is still there
                        return False
                    if not await running_elsewhere(kube, w, away_from=styx, old=old[w.name]):
                        return False
                return True

            await wait_until(
                released,
                timeout_s=U.node_grace_s + RELEASE_FOR_S + SLACK_S,
                what="ReplicaSet pods force-deleted and Running elsewhere",
            )
            timings["releasable pods running elsewhere"] = time.monotonic() - t0

            # not fenced yet: the StatefulSet pod, the node-local one and the bare pod all stay
            for w in (cluster.statefulset, cluster.pinned_deployment, cluster.bare_pod):
                assert await uids_of(kube, w) & old[w.name], f"{w.name} was removed from an unfenced node"
            await wait_until(
                lambda: _true(held(healers, name=f"{cluster.statefulset.name}-0", guard="eligibility")),
                timeout_s=30,
                what="redis-0 held for fencing",
            )
            pinned_old = next(iter(old[cluster.pinned_deployment.name]))
            pinned = [
                p for p in await pods_of(kube, cluster.pinned_deployment) if p.metadata.uid == pinned_old
            ]
            assert pinned, "the pod on styx's local volume must stay"
            assert held(healers, name=pinned[0].metadata.name, guard="eligibility")

            # one opening story, once the released pods run elsewhere (settle 10 s, deadline 90 s)
            async def opened() -> bool:
                return bool(receiver.arrivals)

            await wait_until(opened, timeout_s=90 + SLACK_S, what="the incident message at the receiver")
            assert _kinds(receiver) == ["opened"], receiver.titles()
            await _check_opening(kube, cluster, text=receiver.text(receiver.arrivals[0]), old_names=old_names)

            # the operator confirms styx is off
            await set_out_of_service(kube, styx, on=True)
            fenced = True
            t_fence = time.monotonic()
            await wait_until(
                lambda: running_elsewhere(
                    kube, cluster.statefulset, away_from=styx, old=old[cluster.statefulset.name]
                ),
                timeout_s=120,
                what="redis-0 Running elsewhere after fencing",
            )
            timings["statefulset running elsewhere after fencing"] = time.monotonic() - t_fence

            counts = event_counts(await healer_events(kube))
            assert counts.get(("HealerCordon", f"/{styx}")) == 1
            force_deleted = {obj for (reason, obj), n in counts.items() if reason == "HealerForceDelete"}
            assert all(n == 1 for (reason, _), n in counts.items() if reason == "HealerForceDelete")
            assert not any(cluster.pinned_deployment.name in obj for obj in force_deleted)
            assert not any(cluster.bare_pod.name in obj for obj in force_deleted)
            assert sum(1 for obj in force_deleted if obj.startswith("apps/csv-ingestion-worker")) == 1
            assert sum(1 for obj in force_deleted if obj.startswith("apps/project-bootstrapper")) == 1
        finally:
            if fenced:
                await set_out_of_service(kube, styx, on=False)
            control_plane.start_kubelet(node=styx)

        async def uncordoned() -> bool:
            node = await read_node(kube, name=styx)
            marks = node.metadata.annotations or {}
            return (
                node_condition(node) == "True"
                and not node.spec.unschedulable
                and "healer.io/cordoned-by" not in marks
            )

        await wait_until(uncordoned, timeout_s=UNCORDON_FOR_S + 60 + SLACK_S, what="healer uncordoning styx")
        counts = event_counts(await healer_events(kube))
        assert counts.get(("HealerUncordon", f"/{styx}")) == 1
        for w in cluster.movable_deployments:
            assert not any(is_terminating(p) for p in await pods_of(kube, w))

        async def recovered() -> bool:
            return "recovery" in _kinds(receiver)

        await wait_until(recovered, timeout_s=30, what="the recovery message at the receiver")
        await holds_for(
            lambda: _true(_kinds(receiver).count("recovery") == 1), duration_s=10, what="one recovery"
        )
        kinds = _kinds(receiver)
        # one incident message, one recovery: that the fence moved redis-0 is told in the recovery
        assert kinds == ["opened", "recovery"], receiver.titles()
        recovery = receiver.text(receiver.arrivals[-1])
        assert "redis-0 now runs on" in recovery, recovery
        assert styx in receiver.titles()[-1]

    print()
    profile = f"upstream timings: node grace {U.node_grace_s}s, toleration {U.toleration_s}s"
    print(f"styx incident with healer ({profile})")
    for what, seconds in timings.items():
        print(f"  {what:<48} {seconds:6.1f} s")


async def _true(value: bool) -> bool:
    return value
