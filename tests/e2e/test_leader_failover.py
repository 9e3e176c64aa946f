"""The leader dies mid-remediation: the other healer takes over within the lease and repeats nothing.

The leader cordons styx (step one of the incident) and is then SIGKILLed: no drain, no Lease
release, exactly a crashed pod. The follower must win the Lease once it expires (15 s
duration, 2 s retry) and finish the job (release the ReplicaSet pods) without a second
cordon: the progress is in styx's annotations, not in the dead process. Kubernetes Events
are the ledger: one HealerCordon on styx, one HealerForceDelete per pod.
"""

from __future__ import annotations

import time
from pathlib import Path

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
from tests.e2e.test_incident_healer import (
    CORDON_FOR_S,
    RELEASE_FOR_S,
    SLACK_S,
    T,
    pods_of,
    running_elsewhere,
    uids_of,
)
from tests.support.controlplane import ControlPlane as E2EControlPlane
from tests.support.kube import read_node
from tests.support.oceanid import CALYPSO, TETHYS, build_oceanid
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

LEASE_DURATION_S = 15.0
RETRY_S = 2.0


async def test_follower_takes_over_and_repeats_nothing(
    control_plane: E2EControlPlane, kube: client.ApiClient, tmp_path: Path
) -> None:
    control_plane.reset()
    cluster = await build_oceanid(kube, agents=control_plane)
    styx = cluster.failed_node
    old = {w.name: await uids_of(kube, w) for w in cluster.movable_deployments}
    await ensure_namespace(kube)
    healers = Healers(
        Healer(node=TETHYS, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path),
        Healer(node=CALYPSO, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path),
    )
    with healers:
        first = await wait_until(lambda: lease_holder(kube), timeout_s=60, what="a leader")
        leader = healers.by_identity(first)
        follower = next(h for h in healers.all if h is not leader)
        control_plane.stop_kubelet(node=styx)
        try:

            async def cordoned() -> bool:
                node = await read_node(kube, name=styx)
                return bool(node.spec.unschedulable) and "healer.io/cordoned-by" in (
                    node.metadata.annotations or {}
                )

            await wait_until(
                cordoned, timeout_s=T.node_grace_s + CORDON_FOR_S + SLACK_S, what="styx cordoned"
            )
            for w in cluster.movable_deployments:  # mid-remediation: nothing released yet
                assert await uids_of(kube, w) & old[w.name]

            leader.kill()
            killed_at = time.monotonic()

            async def taken_over() -> bool:
                return await lease_holder(kube) == follower.identity

            await wait_until(taken_over, timeout_s=LEASE_DURATION_S + 3 * RETRY_S + SLACK_S, what="takeover")
            takeover_s = time.monotonic() - killed_at

            async def released() -> bool:
                for w in cluster.movable_deployments:
                    if await uids_of(kube, w) & old[w.name]:
                        return False
                    if not await running_elsewhere(kube, w, away_from=styx, old=old[w.name]):
                        return False
                return True

            await wait_until(
                released, timeout_s=RELEASE_FOR_S + SLACK_S, what="the new leader releasing pods"
            )
        finally:
            control_plane.start_kubelet(node=styx)

        counts = event_counts(await healer_events(kube))
        assert counts.get(("HealerCordon", f"/{styx}")) == 1
        deletes = {obj: n for (reason, obj), n in counts.items() if reason == "HealerForceDelete"}
        assert deletes, "the new leader released the pods"
        assert all(n == 1 for n in deletes.values()), deletes
        assert follower.metric("healer_actions_total", verb="cordon", outcome="applied") == 0
        assert follower.metric("healer_actions_total", verb="force-delete", outcome="applied") >= 1
        assert follower.metric("healer_leader") == 1
        for w in cluster.movable_deployments:
            assert len(await pods_of(kube, w)) >= 1

    print()
    print(
        f"leader killed -> follower holds the Lease after {takeover_s:.1f} s (lease {LEASE_DURATION_S:.0f} s)"
    )
    assert takeover_s <= LEASE_DURATION_S + 2 * RETRY_S + 5, f"takeover took {takeover_s:.1f} s"
