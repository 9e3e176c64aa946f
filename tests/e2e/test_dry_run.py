"""`healer run --dry-run` through the whole styx incident writes nothing.

Both healers run in dry-run while styx's kubelet is stopped for longer than every rule's
`for:`. They must decide exactly what the live daemon would (the logs say "would act" for
the cordon and the force-deletes), and the cluster must show no trace of healer: styx
not cordoned by us, no `healer.io/` annotation, no Event with a `Healer` reason, every pod
that existed before still there (same uid).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client

from tests.e2e.healer_procs import Healer, Healers, ensure_namespace, healer_events, lease_holder
from tests.e2e.test_incident_healer import RELEASE_FOR_S, SLACK_S, T
from tests.support.controlplane import ControlPlane as E2EControlPlane
from tests.support.kube import read_node
from tests.support.oceanid import CALYPSO, TETHYS, build_oceanid
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


async def _all_pods(api: client.ApiClient) -> dict[tuple[str, str], str]:
    pods = await client.CoreV1Api(api).list_pod_for_all_namespaces()
    return {(p.metadata.namespace, p.metadata.name): p.metadata.uid for p in pods.items}


async def test_dry_run_writes_nothing(
    control_plane: E2EControlPlane, kube: client.ApiClient, tmp_path: Path
) -> None:
    control_plane.reset()
    cluster = await build_oceanid(kube, agents=control_plane)
    styx = cluster.failed_node
    await ensure_namespace(kube)
    before_node = await read_node(kube, name=styx)
    before_pods = await _all_pods(kube)
    healers = Healers(
        Healer(node=TETHYS, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path, dry_run=True),
        Healer(node=CALYPSO, kubeconfig=control_plane.kubeconfig, log_dir=tmp_path, dry_run=True),
    )
    with healers:
        await wait_until(lambda: lease_holder(kube), timeout_s=60, what="a dry-run leader")
        control_plane.stop_kubelet(node=styx)
        try:

            async def would_release() -> bool:
                verbs = {
                    e.get("action")
                    for h in healers.all
                    for e in h.logs()
                    if e.get("event") == "would act" and e.get("name") in (styx, *(n for _, n in before_pods))
                }
                return {"cordon", "force-delete"} <= verbs

            await wait_until(
                would_release,
                timeout_s=T.node_grace_s + RELEASE_FOR_S + SLACK_S,
                what="dry-run healers deciding to cordon and force-delete",
            )
            # the leader plans from its would-be cordon (dry-run's Node writes), as it would from a
            # written one: styx is cordoned once, not again every tick until the release is due
            cordons = sum(
                h.metric("healer_actions_total", verb="cordon", outcome="skipped") for h in healers.all
            )
            # read while the healers run (a stopped one's /metrics reads as 0): the skipped
            # force-deletes prove the figures are live, so "none applied" means something
            force_skipped = sum(
                h.metric("healer_actions_total", verb="force-delete", outcome="skipped") for h in healers.all
            )
            applied = sum(
                h.metric("healer_actions_total", verb=verb, outcome="applied")
                for h in healers.all
                for verb in ("cordon", "force-delete")
            )
            after_node = await read_node(kube, name=styx)
            after_pods = await _all_pods(kube)
            events = await healer_events(kube)
        finally:
            control_plane.start_kubelet(node=styx)

    assert cordons == 1
    assert force_skipped >= 1
    assert applied == 0
    assert not after_node.spec.unschedulable
    assert before_node.spec.unschedulable == after_node.spec.unschedulable
    marks = {k for k in (after_node.metadata.annotations or {}) if k.startswith("healer.io/")}
    assert marks == set()
    assert events == []
    gone = {key for key, uid in before_pods.items() if after_pods.get(key) != uid}
    # taint eviction (upstream, 10 s toleration) may have *replaced* ReplicaSet pods, but with the
    # kubelet stopped nobody can finalise the old ones: every pod from before is still there
    assert gone == set(), f"pods deleted during a dry run: {sorted(gone)}"
    dry = [e for h in healers.all for e in h.logs() if e.get("event") == "would act"]
    assert all(e.get("dry_run") is True for e in dry)
    print(f"\ndry run: {len(dry)} actions logged as 'would act', 0 written")
