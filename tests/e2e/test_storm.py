"""A storm: 3 of 6 nodes stop together. healer deletes nothing and says so once.

When several nodes vanish at once the likely cause is the network or the control plane, not
the nodes; force-deleting their pods then does harm. The storm guard (more than
max(1, 1/3 x 6) = 2 nodes unhealthy) holds every release and eviction and the notifier sends
one storm alert, to a real local HTTP receiver through apprise: while the storm lasts the
receiver gets exactly that one message (the per-node not-ready stories fold into it), and
when the nodes are back exactly one follow-up ("storm over"), even after healer uncordons
them (no per-node "ready again").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.e2e.healer_procs import (
    Healer,
    Healers,
    ensure_namespace,
    event_counts,
    healer_events,
    lease_holder,
)
from tests.e2e.receiver import Receiver, receiving
from tests.e2e.test_incident_healer import RELEASE_FOR_S, SLACK_S, T
from tests.support.controlplane import ControlPlane as E2EControlPlane
from tests.support.kube import node_condition, read_node
from tests.support.oceanid import CALYPSO, TETHYS, build_oceanid
from tests.support.wait import holds_for, wait_until

pytestmark = pytest.mark.e2e

EXTRA_WORKERS = ("nereus", "doris", "thetis")


async def _add_worker(control_plane: E2EControlPlane, api: client.ApiClient, name: str) -> None:
    try:
        await client.CoreV1Api(api).create_node(
            {
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                },
            }
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    await asyncio.to_thread(control_plane.add_node, name=name)

    async def ready() -> bool:
        return node_condition(await read_node(api, name=name)) == "True"

    await wait_until(ready, timeout_s=60, what=f"{name} Ready")


async def _all_pods(api: client.ApiClient) -> dict[tuple[str, str], str]:
    pods = await client.CoreV1Api(api).list_pod_for_all_namespaces()
    return {(p.metadata.namespace, p.metadata.name): p.metadata.uid for p in pods.items}


def _storm_alerts(arrivals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Storm *openings* (the recovery message, "lifted"/"over", is a different one)."""
    titles = [(a, str(a.get("title", "")).lower()) for a in arrivals]
    return [a for a, t in titles if "storm" in t and not any(w in t for w in ("lifted", "over"))]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as rx:
        yield rx


async def test_three_of_six_nodes_down_deletes_nothing_and_alerts_once(
    control_plane: E2EControlPlane,
    kube: client.ApiClient,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    url, arrivals = receiver.url, receiver.arrivals
    control_plane.reset()
    cluster = await build_oceanid(kube, agents=control_plane)
    for name in EXTRA_WORKERS:
        await _add_worker(control_plane, kube, name)
    down = (cluster.failed_node, *EXTRA_WORKERS[:2])
    await ensure_namespace(kube)
    before = await _all_pods(kube)
    env = {"HEALER_NOTIFY_URLS": url}
    healers = Healers(
        Healer(node=TETHYS, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path, env=env),
        Healer(node=CALYPSO, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path, env=env),
    )
    with healers:
        leader_id = await wait_until(lambda: lease_holder(kube), timeout_s=60, what="a leader")
        leader = healers.by_identity(leader_id)
        for name in down:
            control_plane.stop_kubelet(node=name)
        try:

            async def storm_held() -> bool:
                return leader.metric("healer_held_actions", guard="storm") > 0

            await wait_until(
                storm_held,
                timeout_s=T.node_grace_s + RELEASE_FOR_S + SLACK_S,
                what="the storm guard holding releases",
            )

            async def storm_alerted() -> bool:
                return len(_storm_alerts(arrivals)) >= 1

            await wait_until(storm_alerted, timeout_s=60, what="a storm alert at the receiver")

            async def nothing_deleted() -> bool:
                now = await _all_pods(kube)
                return all(now.get(key) == uid for key, uid in before.items())

            await holds_for(
                nothing_deleted, duration_s=30, what="no pod deleted during the storm", interval_s=2
            )
            during = list(arrivals)
        finally:
            for name in down:
                control_plane.start_kubelet(node=name)
        # while it lasted: the storm alert and nothing else (no per-node opening or update)
        assert len(during) == 1, receiver.titles()
        (storm,) = during
        assert _storm_alerts(during) == [storm]
        text = receiver.text(storm)
        assert all(name in text for name in down), text  # it names the unhealthy nodes
        assert "no pod" in text  # and says nothing is deleted

        async def uncordoned() -> bool:  # node-ready-again: Ready for 60 s, then healer uncordons
            nodes = [await read_node(kube, name=name) for name in down]
            return not any(n.spec.unschedulable for n in nodes)

        await wait_until(uncordoned, timeout_s=150, what="healer uncordons the nodes that came back")

        async def follow_up() -> dict[str, Any] | None:
            return arrivals[1] if len(arrivals) > 1 else None

        await wait_until(follow_up, timeout_s=60, what="the storm-over follow-up")

        async def one_follow_up() -> bool:
            return len(arrivals) == 2

        await holds_for(one_follow_up, duration_s=15, what="one follow-up, no per-node recovery")
        assert "storm over" in str(arrivals[1].get("title", "")).lower(), receiver.titles()

    counts = event_counts(await healer_events(kube))
    assert not [k for k in counts if k[0] in ("HealerForceDelete", "HealerEvict", "HealerDelete")]
    assert len(_storm_alerts(arrivals)) == 1, receiver.titles()
    print(f"\nstorm: {len(arrivals)} message(s) at the receiver: {[a.get('title') for a in arrivals]}")
