"""The GPU fault loop through the real engine, runtime and live executor, over real HTTP.

FakeNvml -> NvmlSource -> GpuAgent -> LiveExecutor writes GPUHealthy -> the node role's
watch sees it -> the engine's `gpu-hardware-fault` rule plans taint + cordon (+ evictions,
held on the last GPU node) -> LiveExecutor writes them; then reset -> GPUHealthy=True ->
`gpu-recovered` untaints and uncordons, and the agent restarts the device plugin. The API
here is `tests/api/fakeapi.FakeApi` (fast, no control plane); tests/e2e/test_gpu.py runs the
same loop against the real control plane.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from healer.gpu.fake import FakeGpu, FakeNvml
from healer.model import names
from tests.api.fakeapi import FakeApi
from tests.gpu.harness import fast_rules, gpu_node, gpu_node_obj, until

NODE = "calypso"


def write_kubeconfig(path: Path, *, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "healer", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "healer"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


def pod_obj(
    name: str,
    *,
    namespace: str,
    gpus: int = 0,
    owner: tuple[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "o-1", "controller": True}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x", "resources": resources}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with FakeApi() as fake:
        yield fake


def node(api: FakeApi) -> dict[str, Any]:
    obj = api.get("nodes", ("", NODE))
    assert obj is not None
    return obj


def gpu_condition(api: FakeApi) -> tuple[str, str, str] | None:
    for c in node(api).get("status", {}).get("conditions", []):
        if c["type"] == names.GPU_CONDITION:
            return c["status"], c.get("reason", ""), c.get("message", "")
    return None


def quarantined(api: FakeApi) -> bool:
    n = node(api)
    taints = {t["key"] for t in n.get("spec", {}).get("taints") or []}
    return names.GPU_UNHEALTHY_TAINT in taints and bool(n["spec"].get("unschedulable"))


def released(api: FakeApi) -> bool:
    n = node(api)
    taints = {t["key"] for t in n.get("spec", {}).get("taints") or []}
    return names.GPU_UNHEALTHY_TAINT not in taints and not n["spec"].get("unschedulable")


def evictions(api: FakeApi) -> list[str]:
    return [r.path for r in api.requests if r.method == "POST" and r.path.endswith("/eviction")]


async def test_fatal_xid_quarantines_last_gpu_node_keeps_pods_and_recovery_releases(
    api: FakeApi, tmp_path: Path
) -> None:
    api.put("nodes", gpu_node_obj(NODE))
    api.put(
        "pods", pod_obj("triton-5d8f-abcde", namespace="apps", gpus=1, owner=("ReplicaSet", "triton-5d8f"))
    )
    api.put(
        "pods",
        pod_obj(
            "nvidia-device-plugin-ds-x1",
            namespace="kube-system",
            owner=("DaemonSet", "nvidia-device-plugin-ds"),
            labels={"name": "nvidia-device-plugin-ds"},
        ),
    )
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090-0")])
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server=api.url)
    async with gpu_node(
        kubeconfig=kubeconfig,
        node=NODE,
        rules_dir=fast_rules(tmp_path / "rules"),
        nvml=nvml,
        poll_interval=0.2,
    ) as h:
        await until(
            lambda: gpu_condition(api) and gpu_condition(api)[0] == "True",
            what="GPUHealthy=True",  # type: ignore[index]
            timeout_s=20,
        )
        nvml.inject_xid(0, 79)
        nvml.lose_gpu(0)
        await until(lambda: quarantined(api), what="taint + cordon", timeout_s=20)
        status, reason, message = gpu_condition(api)  # type: ignore[misc]
        assert (status, reason) == ("False", "Xid79")
        assert "GPU 0 GPU-4090-0 Xid79 class=reboot" in message
        assert node(api)["metadata"]["annotations"][names.CORDONED_BY] == "gpu-hardware-fault"
        # calypso is the only GPU node: the GPU pod stays (held by last-gpu-node), nothing evicted
        await until(
            lambda: any(held.guard == "last-gpu-node" for held in h.daemon.node_reconciler.last_plan.held),  # type: ignore[union-attr]
            what="eviction held by last-gpu-node",
            timeout_s=10,
        )
        assert evictions(api) == []

        # the device plugin marks the GPU unhealthy: allocatable drops
        api.put(
            "nodes",
            {
                **node(api),
                "status": {**node(api)["status"], "allocatable": {"cpu": "6", "nvidia.com/gpu": "0"}},
            },
        )
        # an operator reboots/resets: the GPU answers again; healthy_for (2 s) later it recovers
        nvml.reset_gpu(0)
        await until(
            lambda: gpu_condition(api) and gpu_condition(api)[0] == "True",
            what="GPUHealthy back to True",  # type: ignore[index]
            timeout_s=20,
        )
        await until(lambda: released(api), what="untaint + uncordon", timeout_s=20)
        assert names.CORDONED_BY not in (node(api)["metadata"].get("annotations") or {})
        # the device plugin pod was deleted so its DaemonSet recreates it and it re-registers the GPU
        await until(
            lambda: api.get("pods", ("kube-system", "nvidia-device-plugin-ds-x1")) is None,
            what="device plugin pod deleted",
            timeout_s=10,
        )
        assert api.get("pods", ("apps", "triton-5d8f-abcde")) is not None
        assert evictions(api) == []


async def test_gpu_pods_are_evicted_when_another_gpu_node_can_take_them(api: FakeApi, tmp_path: Path) -> None:
    """Another schedulable GPU node exists, so GPU pods go through the Eviction API.

    Production wiring: the node role watches its own Node and the other GPU-labelled Nodes.
    """
    api.put("nodes", gpu_node_obj(NODE))
    api.put("nodes", gpu_node_obj("calypso-2"))
    api.put(
        "pods", pod_obj("triton-5d8f-abcde", namespace="apps", gpus=1, owner=("ReplicaSet", "triton-5d8f"))
    )
    api.put("pods", pod_obj("csv-worker-1", namespace="apps", owner=("ReplicaSet", "csv")))
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090-0")])
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server=api.url)

    async with gpu_node(
        kubeconfig=kubeconfig,
        node=NODE,
        rules_dir=fast_rules(tmp_path / "rules"),
        nvml=nvml,
        poll_interval=0.2,
    ):
        await until(
            lambda: gpu_condition(api) and gpu_condition(api)[0] == "True",
            what="GPUHealthy=True",  # type: ignore[index]
            timeout_s=20,
        )
        nvml.inject_ecc(0, uncorrected=1)
        await until(lambda: quarantined(api), what="taint + cordon", timeout_s=20)
        assert gpu_condition(api)[1] == "EccDbe"  # type: ignore[index]
        await until(lambda: evictions(api), what="GPU pod evicted", timeout_s=20)
        assert evictions(api) == [
            "/api/v1/namespaces/apps/pods/triton-5d8f-abcde/eviction"
        ]  # not csv-worker-1
        other = api.get("nodes", ("", "calypso-2"))
        assert other is not None
        assert not other["spec"].get("taints")  # the node role acts on its own node only
        assert not other["spec"].get("unschedulable")
