"""GPU faults on the real control plane: calypso (KWOK, nvidia.com/gpu: 1) loses its GPU.

healer's node role for calypso (daemon node role: own-node watches, the shipped rules with
short recovery times, live executor) runs beside the GPU agent on a fake NVML, exactly as
the runtime wires them (tests/gpu/harness.py). A fatal XID makes the agent publish
GPUHealthy=False; the engine's node-scoped `gpu-hardware-fault` rule taints and cordons
calypso; GPU pods are kept when calypso is the last GPU node (default `last_gpu_node: keep`)
or evicted through the Eviction API when another GPU node can run them; after a reset and
`recovery.healthy_for`, GPUHealthy=True and `gpu-recovered` untaints and uncordons.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from healer.gpu.fake import FakeGpu, FakeNvml
from healer.model import names
from tests.gpu.harness import fast_rules, gpu_node
from tests.support.kube import is_running, list_pods, manifest, node_condition, node_taint_keys, read_node
from tests.support.oceanid import CALYPSO, build_oceanid
from tests.support.wait import holds_for, wait_until

pytestmark = pytest.mark.e2e

TRITON = {"app": "triton"}
PLUGIN = {"name": "nvidia-device-plugin-ds"}
WITHIN_S = 30.0


async def _gpu_workloads(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment(
        "apps",
        manifest(
            {
                "metadata": {"name": "triton", "labels": TRITON},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": TRITON},
                    "template": {
                        "metadata": {"labels": TRITON},
                        "spec": {
                            "containers": [
                                {
                                    "name": "triton",
                                    "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                                }
                            ]
                        },
                    },
                },
            }
        ),
    )
    await apps.create_namespaced_daemon_set(
        "kube-system",
        manifest(
            {
                "metadata": {"name": "nvidia-device-plugin-daemonset", "labels": PLUGIN},
                "spec": {
                    "selector": {"matchLabels": PLUGIN},
                    "template": {
                        "metadata": {"labels": PLUGIN},
                        "spec": {
                            "nodeSelector": {"nvidia.com/gpu.present": "true"},
                            "tolerations": [{"operator": "Exists"}],
                            "priorityClassName": "system-node-critical",
                            "containers": [
                                {"name": "plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"}
                            ],
                        },
                    },
                },
            }
        ),
    )


async def _add_gpu_node(api: client.ApiClient, control_plane: Any, name: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/gpu": "true",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {"providerID": f"k3s://{name}"},
        "status": {
            "capacity": {"cpu": "6", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "1"},
            "allocatable": {"cpu": "5800m", "memory": "15Gi", "pods": "110", "nvidia.com/gpu": "1"},
        },
    }
    await client.CoreV1Api(api).create_node(manifest(body))
    await asyncio.to_thread(control_plane.add_node, name=name)

    async def ready() -> bool:
        return node_condition(await read_node(api, name=name)) == "True"

    await wait_until(ready, timeout_s=60, what=f"node {name} Ready")


async def _triton_on(api: client.ApiClient, node: str) -> list[Any] | None:
    pods = [p for p in await list_pods(api, namespace="apps", labels=TRITON) if is_running(p)]
    return pods if pods and all(p.spec.node_name == node for p in pods) else None


async def _quarantined(api: client.ApiClient) -> bool:
    node = await read_node(api, name=CALYPSO)
    return names.GPU_UNHEALTHY_TAINT in node_taint_keys(node) and bool(node.spec.unschedulable)


async def _released(api: client.ApiClient) -> bool:
    node = await read_node(api, name=CALYPSO)
    return names.GPU_UNHEALTHY_TAINT not in node_taint_keys(node) and not node.spec.unschedulable


async def _gpu_healthy(api: client.ApiClient) -> tuple[str, str, str] | None:
    node = await read_node(api, name=CALYPSO)
    for c in node.status.conditions or []:
        if c.type == names.GPU_CONDITION:
            return str(c.status), str(c.reason), str(c.message)
    return None


async def _status_is(api: client.ApiClient, status: str) -> tuple[str, str, str] | None:
    got = await _gpu_healthy(api)
    return got if got and got[0] == status else None


@pytest.fixture
async def oceanid_with_gpu_pods(control_plane: Any, kube: client.ApiClient) -> None:
    control_plane.reset()
    await build_oceanid(kube, agents=control_plane)
    await _gpu_workloads(kube)
    await wait_until(lambda: _triton_on(kube, CALYPSO), timeout_s=90, what="triton running on calypso")


async def test_fatal_xid_on_last_gpu_node_quarantines_keeps_pods_and_recovers(
    control_plane: Any, kube: client.ApiClient, oceanid_with_gpu_pods: None, tmp_path: Path
) -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-5c9e-4090")])
    async with gpu_node(
        kubeconfig=control_plane.kubeconfig,
        node=CALYPSO,
        rules_dir=fast_rules(tmp_path / "rules"),
        nvml=nvml,
        poll_interval=0.5,
    ) as h:
        await wait_until(lambda: _status_is(kube, "True"), timeout_s=WITHIN_S, what="GPUHealthy=True")
        triton_before = {p.metadata.uid for p in await list_pods(kube, namespace="apps", labels=TRITON)}

        nvml.inject_xid(0, 79)
        nvml.lose_gpu(0)
        await wait_until(
            lambda: _quarantined(kube),
            timeout_s=WITHIN_S,
            what="calypso tainted and cordoned",
            interval_s=0.2,
        )
        status, reason, message = await _gpu_healthy(kube)  # type: ignore[misc]
        assert (status, reason) == ("False", "Xid79")
        assert "GPU 0 GPU-5c9e-4090 Xid79 class=reboot" in message
        node = await read_node(kube, name=CALYPSO)
        assert node.metadata.annotations[names.CORDONED_BY] == "gpu-hardware-fault"

        # calypso is the only GPU node: the eviction is held and the pod keeps running there
        async def held() -> bool:
            rec = h.daemon.node_reconciler
            return rec is not None and any(x.guard == "last-gpu-node" for x in rec.last_plan.held)

        await wait_until(held, timeout_s=WITHIN_S, what="eviction held by last-gpu-node", interval_s=0.2)

        async def triton_untouched() -> bool:
            pods = await list_pods(kube, namespace="apps", labels=TRITON)
            return {p.metadata.uid for p in pods} == triton_before and all(is_running(p) for p in pods)

        await holds_for(triton_untouched, duration_s=5, what="triton kept on calypso")
        assert not [s for s in h.executor.done if s.action.verb == "evict"]

        # reset: the GPU answers again; after healthy_for (2 s) the condition and quarantine lift
        nvml.reset_gpu(0)
        await wait_until(lambda: _status_is(kube, "True"), timeout_s=WITHIN_S, what="GPUHealthy back to True")
        await wait_until(lambda: _released(kube), timeout_s=WITHIN_S, what="calypso untainted and uncordoned")
        node = await read_node(kube, name=CALYPSO)
        assert names.CORDONED_BY not in (node.metadata.annotations or {})


async def test_fatal_ecc_evicts_gpu_pods_when_another_gpu_node_can_run_them(
    control_plane: Any, kube: client.ApiClient, oceanid_with_gpu_pods: None, tmp_path: Path
) -> None:
    """A second GPU node (calypso-2) exists, so GPU pods move there through the Eviction API.

    Production wiring: the node role watches its own Node plus the other GPU-labelled Nodes
    (`nvidia.com/gpu.present=true`), so it knows calypso is not the last GPU node.
    """
    await _add_gpu_node(kube, control_plane, "calypso-2")
    nvml = FakeNvml([FakeGpu(uuid="GPU-5c9e-4090")])

    async with gpu_node(
        kubeconfig=control_plane.kubeconfig,
        node=CALYPSO,
        rules_dir=fast_rules(tmp_path / "rules"),
        nvml=nvml,
        poll_interval=0.5,
    ) as h:
        await wait_until(lambda: _status_is(kube, "True"), timeout_s=WITHIN_S, what="GPUHealthy=True")
        nvml.inject_ecc(0, uncorrected=2)
        await wait_until(
            lambda: _quarantined(kube), timeout_s=WITHIN_S, what="calypso quarantined", interval_s=0.2
        )
        assert (await _gpu_healthy(kube))[1] == "EccDbe"  # type: ignore[index]
        await wait_until(
            lambda: _triton_on(kube, "calypso-2"), timeout_s=90, what="triton running on calypso-2"
        )

        async def evicted() -> list[Any] | None:  # the write may return after its effect is visible
            return [s.action.target.key for s in h.executor.done if s.action.verb == "evict"] or None

        (key,) = await wait_until(evicted, timeout_s=WITHIN_S, what="the evict write returned")
        assert key.startswith("apps/triton-")
        # the device plugin (DaemonSet) is never evicted
        plugins = await list_pods(kube, namespace="kube-system", labels=PLUGIN)
        assert any(p.spec.node_name == CALYPSO and not p.metadata.deletion_timestamp for p in plugins)

        nvml.reset_gpu(0)  # volatile ECC counters restart: the reset is seen
        await wait_until(lambda: _status_is(kube, "True"), timeout_s=WITHIN_S, what="GPUHealthy back to True")
        await wait_until(lambda: _released(kube), timeout_s=WITHIN_S, what="calypso released")


async def test_dry_run_shows_the_gpu_chain_on_a_real_node_and_writes_nothing(
    control_plane: Any, kube: client.ApiClient, oceanid_with_gpu_pods: None, tmp_path: Path
) -> None:
    """`--dry-run` wiring: the agent's GPUHealthy=False is never written, yet the node role shows
    would taint, cordon and evict triton (calypso-2 can run it), each once, also after the watch
    delivers a changed calypso; recovery shows would untaint and uncordon. Nothing is written."""
    await _add_gpu_node(kube, control_plane, "calypso-2")
    triton_before = {p.metadata.uid for p in await list_pods(kube, namespace="apps", labels=TRITON)}
    nvml = FakeNvml([FakeGpu(uuid="GPU-5c9e-4090")])

    def did(h: Any, verb: str, prefix: str = CALYPSO) -> list[str]:
        return [
            s.action.target.key
            for s in h.executor.done
            if s.action.verb == verb and s.action.target.key.startswith(prefix)
        ]

    def gpu_seen(h: Any) -> str | None:
        node = h.view().nodes.get(CALYPSO)
        cond = node.condition(names.GPU_CONDITION) if node is not None else None
        return cond.status.value if cond is not None else None

    async with gpu_node(
        kubeconfig=control_plane.kubeconfig,
        node=CALYPSO,
        rules_dir=fast_rules(tmp_path / "rules"),
        nvml=nvml,
        poll_interval=0.5,
        dry_run=True,
    ) as h:
        await wait_until(
            lambda: _async(gpu_seen(h) == "True"), timeout_s=WITHIN_S, what="GPUHealthy=True (dry)"
        )
        rv_before = h.view().nodes[CALYPSO].resource_version
        nvml.inject_xid(0, 79)
        nvml.lose_gpu(0)
        await wait_until(
            lambda: _async(bool(did(h, "evict", "apps/triton-"))),
            timeout_s=WITHIN_S,
            what="would evict triton",
        )
        assert (len(did(h, "taint")), len(did(h, "cordon"))) == (1, 1)
        assert gpu_seen(h) == "False"
        # the real Node changes under it (an operator labels it); what dry-run would have written stays
        await client.CoreV1Api(kube).patch_node(CALYPSO, {"metadata": {"labels": {"team": "ml"}}})
        await wait_until(
            lambda: _async(h.view().nodes[CALYPSO].resource_version != rv_before),
            timeout_s=WITHIN_S,
            what="the Node update from the watch",
        )
        seen = h.view().nodes[CALYPSO]
        assert seen.labels.get("team") == "ml"
        assert gpu_seen(h) == "False"
        assert seen.has_taint(names.GPU_UNHEALTHY_TAINT)
        assert seen.cordoned_by_healer
        assert (len(did(h, "taint")), len(did(h, "cordon"))) == (1, 1)

        nvml.reset_gpu(0)
        await wait_until(
            lambda: _async(bool(did(h, "untaint")) and bool(did(h, "uncordon"))),
            timeout_s=WITHIN_S,
            what="would untaint and uncordon",
        )
        assert all(s.outcome.status.value == "skipped" for s in h.executor.done)

    node = await read_node(kube, name=CALYPSO)
    assert await _gpu_healthy(kube) is None
    assert names.GPU_UNHEALTHY_TAINT not in node_taint_keys(node)
    assert not node.spec.unschedulable
    assert names.CORDONED_BY not in (node.metadata.annotations or {})
    pods = await list_pods(kube, namespace="apps", labels=TRITON)
    assert {p.metadata.uid for p in pods} == triton_before
    assert all(is_running(p) for p in pods)


async def _async(value: Any) -> Any:
    return value
